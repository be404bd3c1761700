#!/usr/bin/env python3
"""Test IdP and echo backend for the end-to-end suite.

One process serves two ports:
  --idp-port      introspection/token endpoints (any POST path) plus the
                  /__control/ API the tests use to choose answers and read
                  what was received;
  --backend-port  an echo backend answering every request with the request
                  it received, as JSON.

Answers are chosen per token (the `token` form field, else `subject_token`)
with POST /__control/setup {"TOKEN": BEHAVIOUR, ...}. A BEHAVIOUR is an
object, or a list of objects used for the 1st, 2nd, ... call (the last one
repeats). Fields: status (200), json, body, content_type, headers, delay
(seconds), mode: hang | close | reset | truncate | oversize (size) | garbage.
A key "PATH TOKEN" (e.g. "/token t1") answers only requests to that path and
wins over "TOKEN"; tokens without a behaviour get the one under "*", or
200 {"active": false}.
"""
import argparse
import json
import socket
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"behaviours": {}, "calls": {}, "requests": {"idp": [], "backend": []}}


def record(role, handler, body):
    entry = {
        "method": handler.command,
        "path": handler.path,
        "headers": [[k, v] for k, v in handler.headers.items()],
        "body": body.decode("latin-1"),
    }
    with LOCK:
        STATE["requests"][role].append(entry)


class Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write; no Nagle delay against nginx's delayed ACKs.
    disable_nagle_algorithm = True
    wbufsize = -1

    def log_message(self, *args):
        pass

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status, body, content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            # Say so, or a client like nginx keeps the connection for reuse.
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class Idp(Base):
    def do_GET(self):
        if self.path.startswith("/__control/requests"):
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            role = query.get("role", ["idp"])[0]
            with LOCK:
                body = json.dumps(STATE["requests"][role]).encode()
            return self.send(200, body)
        body = self.read_body()
        record("idp", self, body)
        self.send(405, b'{"error":"method_not_allowed"}')

    def do_POST(self):
        body = self.read_body()
        if self.path == "/__control/setup":
            with LOCK:
                STATE["behaviours"] = json.loads(body or b"{}")
                STATE["calls"] = {}
                STATE["requests"] = {"idp": [], "backend": []}
            return self.send(200, b"{}")
        if self.path == "/__control/reset":
            with LOCK:
                STATE["behaviours"], STATE["calls"] = {}, {}
                STATE["requests"] = {"idp": [], "backend": []}
            return self.send(200, b"{}")
        record("idp", self, body)
        form = urllib.parse.parse_qs(body.decode("latin-1"), keep_blank_values=True)
        token = (form.get("token") or form.get("subject_token") or [None])[0]
        with LOCK:
            behaviours = STATE["behaviours"]
            path = urllib.parse.urlparse(self.path).path
            behaviour = behaviours.get(f"{path} {token}", behaviours.get(token, behaviours.get("*")))
            n = STATE["calls"].get(token, 0)
            STATE["calls"][token] = n + 1
        if isinstance(behaviour, list):
            behaviour = behaviour[min(n, len(behaviour) - 1)]
        self.answer(behaviour or {"json": {"active": False}})

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
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
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
            prefix, suffix = b'{"active":true,"pad":"', b'"}'
            body = prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix
            return self.send(200, body)
        status = int(b.get("status", 200))
        if "json" in b:
            body = json.dumps(b["json"]).encode()
        else:
            body = b.get("body", "").encode()
        self.send(status, body, b.get("content_type", "application/json"), b.get("headers"))


class Backend(Base):
    def echo(self):
        body = self.read_body()
        record("backend", self, body)
        answer = {
            "method": self.command,
            "uri": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
        }
        self.send(200, json.dumps(answer).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = echo


def serve(port, handler):
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.request_queue_size = 512
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idp-port", type=int, required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    parser.add_argument("--ready-file")
    args = parser.parse_args()
    ThreadingHTTPServer.request_queue_size = 512
    serve(args.idp_port, Idp)
    serve(args.backend_port, Backend)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write("ready\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
