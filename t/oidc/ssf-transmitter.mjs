// A Shared Signals transmitter for the tests (t/22x): Security Event
// Tokens (RFC 8417) signed by the npm `jose` package with a key it also
// publishes as a JWK Set. Reads JSON on stdin:
//   {keyfile, jwksfile, sets: [{claims, header, keyfile, raw_payload, unsigned}]}
// keyfile: a private JWK file, made (an ES256 key pair) when missing; its
// public half is written to jwksfile as a JWK Set. A set is signed with
// ES256, `typ: secevent+jwt` and the key's `kid`; `header` overrides
// header members, `keyfile` signs with another key (made when missing),
// `raw_payload` signs those bytes instead of the claims, `unsigned` makes
// an `alg: none` JWS. Prints a JSON array of the compact SETs.
//
// `node ssf-transmitter.mjs serve PORT JWKSFILE READYFILE` instead serves
// the transmitter's jwks_uri: GET /jwks answers JWKSFILE as it is at that
// moment (a key rotation is a new file), anything else 404; READYFILE is
// written once it listens on 127.0.0.1:PORT.

import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:http';
import * as jose from 'jose';

if (process.argv[2] === 'serve') {
  const [port, jwksfile, readyfile] = process.argv.slice(3);
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/jwks') {
      res.writeHead(404).end();
      return;
    }
    const body = readFileSync(jwksfile);
    res.writeHead(200, { 'Content-Type': 'application/jwk-set+json' }).end(body);
  });
  server.listen(Number(port), '127.0.0.1', () => writeFileSync(readyfile, 'ready'));
} else {
  await sign();
}

async function sign() {
  const input = JSON.parse(readFileSync(0, 'utf8'));

  async function keyOf(file) {
    let jwk;
    if (existsSync(file)) {
      jwk = JSON.parse(readFileSync(file, 'utf8'));
    } else {
      const pair = await jose.generateKeyPair('ES256', { extractable: true });
      jwk = await jose.exportJWK(pair.privateKey);
      jwk.kid = await jose.calculateJwkThumbprint(jwk, 'sha256');
      writeFileSync(file, JSON.stringify(jwk));
    }
    const { d, ...pub } = jwk;
    return { key: await jose.importJWK(jwk, 'ES256'), pub, kid: jwk.kid };
  }

  const main = await keyOf(input.keyfile);
  if (input.jwksfile) {
    writeFileSync(input.jwksfile, JSON.stringify({ keys: [{ ...main.pub, alg: 'ES256', use: 'sig' }] }));
  }

  const b64u = (bytes) => Buffer.from(bytes).toString('base64url');
  const out = [];
  for (const spec of input.sets ?? []) {
    const signer = spec.keyfile ? await keyOf(spec.keyfile) : main;
    const header = { alg: 'ES256', kid: signer.kid, typ: 'secevent+jwt', ...(spec.header ?? {}) };
    for (const [name, value] of Object.entries(header)) if (value === null) delete header[name];
    const payload = new TextEncoder().encode(spec.raw_payload ?? JSON.stringify(spec.claims));
    if (spec.unsigned) {
      out.push(`${b64u(JSON.stringify({ ...header, alg: 'none' }))}.${b64u(payload)}.`);
      continue;
    }
    out.push(await new jose.CompactSign(payload).setProtectedHeader(header).sign(signer.key));
  }
  process.stdout.write(JSON.stringify(out));
}
