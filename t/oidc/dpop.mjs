// DPoP proofs for the tests (t/18x), made by the npm `dpop` package (RFC
// 9449 proofs as clients make them) and, for the proofs a client must not
// send, by the npm `jose` package. Reads JSON on stdin:
//   {keyfile, alg, proofs: [{htm, htu, token, nonce, ...overrides}]}
// keyfile: a private JWK file, made (extractable key pair of `alg`) when
// missing. A proof without overrides is dpop.generateProof's; overrides
// (iat, jti, ath, typ, alg: "none" | "HS256", private: true, drop: [claim])
// make it with jose's CompactSign instead. Prints
//   {jkt: RFC 7638 thumbprint of the public key, proofs: [compact JWS...]}

import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createHash, randomUUID } from 'node:crypto';
import * as DPoP from 'dpop';
import * as jose from 'jose';

const input = JSON.parse(readFileSync(0, 'utf8'));
const alg = input.alg ?? 'ES256';

let privateJwk;
if (existsSync(input.keyfile)) {
  privateJwk = JSON.parse(readFileSync(input.keyfile, 'utf8'));
} else {
  const pair = await DPoP.generateKeyPair(alg, { extractable: true });
  privateJwk = await jose.exportJWK(pair.privateKey);
  writeFileSync(input.keyfile, JSON.stringify(privateJwk));
}
const { d, p, q, dp, dq, qi, ...publicJwk } = privateJwk;
const keyPair = {
  privateKey: await jose.importJWK(privateJwk, alg),
  publicKey: await jose.importJWK(publicJwk, alg),
};
const jkt = await jose.calculateJwkThumbprint(publicJwk, 'sha256');

const b64u = (bytes) => Buffer.from(bytes).toString('base64url');
const ath = (token) => b64u(createHash('sha256').update(token).digest());

async function custom(spec) {
  const header = { typ: spec.typ ?? 'dpop+jwt', alg: spec.alg ?? alg, jwk: spec.private ? privateJwk : publicJwk };
  const claims = {
    jti: spec.jti ?? randomUUID(),
    htm: spec.htm,
    htu: spec.htu,
    iat: spec.iat ?? Math.floor(Date.now() / 1000),
    ath: spec.ath ?? ath(spec.token),
    ...(spec.nonce ? { nonce: spec.nonce } : {}),
  };
  for (const name of spec.drop ?? []) delete claims[name];
  const payload = new TextEncoder().encode(JSON.stringify(claims));
  if (header.alg === 'none') {
    return `${b64u(JSON.stringify(header))}.${b64u(payload)}.`;
  }
  if (header.alg === 'HS256') {
    const secret = new TextEncoder().encode('a secret of thirty-two bytes at least');
    return new jose.CompactSign(payload).setProtectedHeader({ ...header, jwk: { kty: 'oct', k: b64u(secret) } }).sign(secret);
  }
  return new jose.CompactSign(payload).setProtectedHeader(header).sign(keyPair.privateKey);
}

const proofs = [];
for (const spec of input.proofs ?? []) {
  const { htm, htu, token, nonce, ...overrides } = spec;
  if (Object.keys(overrides).length === 0) {
    proofs.push(await DPoP.generateProof(keyPair, htu, htm, nonce, token));
  } else {
    proofs.push(await custom(spec));
  }
}
process.stdout.write(JSON.stringify({ jkt, proofs }));
