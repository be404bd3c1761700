#!/usr/bin/env python3
"""Test IdP and echo backend for the end-to-end suite (Python 3 stdlib only).

    python3 t/idp/test_idp.py --idp-port P --backend-port Q [--ready-file F]

One process serves two ports, both HTTP/1.1 with keep-alive:

  --idp-port      the IdP: any non-control POST path (/introspect, /token, ...)
                  is recorded and answered according to the behaviour chosen
                  for its token; /__control/ is the API the harness drives.
  --backend-port  an echo backend: every request is recorded and answered
                  200 application/json {"method", "uri", "headers", "body"}.

Readiness: once both ports listen, "ready idp=P backend=Q" is printed and,
with --ready-file, F is created (atomically). The process exits by itself
when its parent goes away.

Control API (on the IdP port; control requests are never recorded)
  POST /__control/setup     JSON object TOKEN -> BEHAVIOUR; replaces the
                            behaviours, resets recorded requests and counters
  POST /__control/reset     no behaviours, no records, no counters
  GET  /__control/requests?role=idp|backend
                            JSON array of recorded requests, oldest first:
                            {"method", "path" (with query), "headers":
                            [[name, value], ...] in received order,
                            "body" (latin-1 string), "version"}
  GET  /__control/ping      200 {"ok": true}

Choosing a behaviour: the form body's `token` field, else `subject_token`
(RFC 8693 token exchange). A key "PATH TOKEN" (e.g. "/token t1") applies only
to requests on that path and wins over "TOKEN"; then "TOKEN"; then "*";
otherwise the answer is 200 {"active": false}.

BEHAVIOUR is an object, or a list of objects: the n-th call (0-based) for
that token gets element min(n, len - 1). Object fields, all optional:
  status        HTTP status (200)
  json          a value sent as the JSON body
  body          a raw string body (when there is no json)
  content_type  Content-Type (application/json)
  headers       extra response headers: {"Name": "value"} or [["Name", "v"], ...]
  delay         seconds (float) to wait before answering (any mode)
  mode          hang      read the request, never answer; the socket stays open
                          until the client closes it or 120 s pass
                close     close the connection (FIN) without a response
                reset     abort the connection with a TCP RST, no response
                truncate  headers announce 100 bytes more than the body sent,
                          then close
                oversize  a valid JSON body of `size` bytes (70000):
                          {"active":true,"pad":"xxx..."}
                garbage   a non-HTTP line instead of a response, then close
"""
import argparse
import http.client
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Phantom tokens of up to 64 KiB arrive in one Authorization line; the
# standard library's limit (65536 bytes per line) would refuse them.
http.client._MAXLINE = 1 << 20

LOCK = threading.Lock()
STATE = {"behaviours": {}, "calls": {}, "requests": {"idp": [], "backend": []}}
DEFAULT_ANSWER = {"json": {"active": False}}


def reset_state(behaviours=None):
    with LOCK:
        STATE["behaviours"] = behaviours or {}
        STATE["calls"] = {}
        STATE["requests"] = {"idp": [], "backend": []}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, *args, **kwargs):
        self.abort_ids = set()
        self.abort_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def abort_on_close(self, sock):
        """Close this connection with a RST: SO_LINGER 0 and no shutdown()."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self.abort_lock:
            self.abort_ids.add(id(sock))

    def shutdown_request(self, request):
        with self.abort_lock:
            abort = id(request) in self.abort_ids
            self.abort_ids.discard(id(request))
        if abort:
            # shutdown(SHUT_WR) would send a FIN before the RST.
            self.close_request(request)
        else:
            super().shutdown_request(request)


class Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write, with no Nagle delay.
    disable_nagle_algorithm = True
    wbufsize = -1
    role = None

    def log_message(self, *args):
        pass

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size)
                self.rfile.readline(65537)  # CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def record(self, body):
        entry = {
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
        }
        with LOCK:
            STATE["requests"][self.role].append(entry)

    def send(self, status, body, content_type="application/json", headers=None):
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        pairs = headers.items() if isinstance(headers, dict) else (headers or [])
        for name, value in pairs:
            self.send_header(name, str(value))
        if self.close_connection:
            # Say so, or a client like nginx keeps the connection for reuse.
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()


class Idp(Base):
    role = "idp"

    def control(self, body):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/__control/setup" and self.command == "POST":
            try:
                behaviours = json.loads(body or b"{}")
            except ValueError as e:
                return self.send(400, json.dumps({"error": str(e)}).encode())
            if not isinstance(behaviours, dict):
                return self.send(400, b'{"error":"setup takes a JSON object"}')
            reset_state(behaviours)
            return self.send(200, b"{}")
        if url.path == "/__control/reset" and self.command == "POST":
            reset_state()
            return self.send(200, b"{}")
        if url.path == "/__control/requests" and self.command == "GET":
            role = urllib.parse.parse_qs(url.query).get("role", ["idp"])[0]
            if role not in ("idp", "backend"):
                return self.send(400, b'{"error":"role is idp or backend"}')
            with LOCK:
                answer = json.dumps(STATE["requests"][role]).encode()
            return self.send(200, answer)
        if url.path == "/__control/ping":
            return self.send(200, b'{"ok":true}')
        return self.send(404, b'{"error":"unknown control request"}')

    def handle_any(self):
        body = self.read_body()
        if self.path.startswith("/__control/"):
            return self.control(body)
        self.record(body)
        if self.command != "POST":
            return self.send(405, b'{"error":"method_not_allowed"}', headers={"Allow": "POST"})
        form = urllib.parse.parse_qs(body.decode("latin-1"), keep_blank_values=True)
        token = (form.get("token") or form.get("subject_token") or [None])[0]
        path = urllib.parse.urlparse(self.path).path
        with LOCK:
            behaviours = STATE["behaviours"]
            behaviour = behaviours.get(f"{path} {token}")
            if behaviour is None:
                behaviour = behaviours.get(token) if token is not None else None
            if behaviour is None:
                behaviour = behaviours.get("*")
            n = STATE["calls"].get(token, 0)
            STATE["calls"][token] = n + 1
        if isinstance(behaviour, list):
            behaviour = behaviour[min(n, len(behaviour) - 1)] if behaviour else None
        self.answer(behaviour or DEFAULT_ANSWER)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    def answer(self, b):
        if b.get("delay"):
            time.sleep(float(b["delay"]))
        mode = b.get("mode")
        if mode == "hang":
            self.close_connection = True
            self.connection.settimeout(120)
            try:
                while self.connection.recv(4096):
                    pass
            except OSError:
                pass
            return
        if mode == "close":
            self.close_connection = True
            return
        if mode == "reset":
            self.close_connection = True
            self.server.abort_on_close(self.connection)
            return
        if mode == "garbage":
            self.close_connection = True
            self.wfile.write(b"this is not HTTP at all\r\n\r\n")
            return
        if mode == "truncate":
            self.close_connection = True
            body = b'{"active": true, "sub": "trunc'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body)
            return
        if mode == "oversize":
            size = int(b.get("size", 70000))
            head, tail = b'{"active":true,"pad":"', b'"}'
            body = head + b"x" * max(0, size - len(head) - len(tail)) + tail
            return self.send(int(b.get("status", 200)), body, b.get("content_type", "application/json"),
                             b.get("headers"))
        if mode is not None:
            return self.send(500, json.dumps({"error": f"test IdP: unknown mode {mode!r}"}).encode())
        if "json" in b:
            body = json.dumps(b["json"]).encode()
        else:
            body = str(b.get("body", "")).encode("latin-1")
        self.send(int(b.get("status", 200)), body, b.get("content_type", "application/json"),
                  b.get("headers"))


class Backend(Base):
    role = "backend"

    def echo(self):
        body = self.read_body()
        self.record(body)
        answer = {
            "method": self.command,
            "uri": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
        }
        self.send(200, json.dumps(answer).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = echo


def serve(port, handler):
    server = Server(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idp-port", type=int, required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    parser.add_argument("--ready-file")
    args = parser.parse_args()
    parent = os.getppid()
    serve(args.idp_port, Idp)
    serve(args.backend_port, Backend)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.rename(tmp, args.ready_file)
    print(f"ready idp={args.idp_port} backend={args.backend_port}", flush=True)
    # Exit when the harness that started us is gone, however it ended.
    while os.getppid() == parent:
        time.sleep(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
