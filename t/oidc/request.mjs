// HTTPS client for t/lib/OIDCProvider.pm (Perl's core modules have no TLS).
// Reads a JSON array of requests on stdin, sends them one after the other,
// each on a new connection, and prints a JSON array of responses:
//   request:  {method, url, headers: [[name, value], ...], body (string),
//              (a host header is sent as given; TLS then checks "localhost")
//              ca, cert, key (PEM file paths; cert/key: a TLS client certificate)}
//   response: {status, headers: {lower-case name: value}, body} or {error}
// The server certificate is verified against `ca` (when given).

import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

const input = JSON.parse(readFileSync(0, 'utf8'));

function send(req) {
  return new Promise((resolve) => {
    const url = new URL(req.url);
    const lib = url.protocol === 'https:' ? https : http;
    const headers = {};
    for (const [name, value] of req.headers ?? []) headers[name.toLowerCase()] = value;
    if (req.body !== undefined) headers['content-length'] = Buffer.byteLength(req.body);
    const r = lib.request(url, {
      method: req.method ?? 'GET',
      headers,
      agent: false,
      ca: req.ca ? readFileSync(req.ca) : undefined,
      cert: req.cert ? readFileSync(req.cert) : undefined,
      key: req.key ? readFileSync(req.key) : undefined,
      // A Host header of the request's own would become the TLS server name
      // (and fail verification): verify the server as "localhost" (a SAN of
      // the test server certificate) instead.
      ...(headers.host ? { servername: 'localhost' } : {}),
      timeout: 10000,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({
        status: res.statusCode,
        headers: res.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      }));
    });
    r.on('timeout', () => r.destroy(new Error('timeout')));
    r.on('error', (e) => resolve({ error: String(e.message || e) }));
    if (req.body !== undefined) r.write(req.body);
    r.end();
  });
}

const out = [];
for (const req of input) out.push(await send(req));
process.stdout.write(JSON.stringify(out));
