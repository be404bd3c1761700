// A real OAuth 2.0 authorization server for the module's interop tests: npm
// oidc-provider (pinned in package.json / package-lock.json), over HTTPS on a
// loopback port, with RFC 7662 introspection, an RFC 8693 token-exchange grant,
// and one client per client-authentication method. t/lib/OIDCProvider.pm makes
// the keys and certificates, starts this, and reads the ready file.
//
//   node t/oidc/provider.mjs [--port N]        (0, the default: any free port)
//
// Settings (environment):
//   OIDC_PORT            the port, when --port is not given (0: any free port)
//   OIDC_HOST            the address to listen on (default 127.0.0.1)
//   OIDC_TLS_KEY         the server's private key (PEM); with OIDC_TLS_CERT, the
//   OIDC_TLS_CERT        provider serves HTTPS and asks every client for a
//                        certificate (requestCert, not required); without them,
//                        plain HTTP and the two TLS clients are left out
//   OIDC_TLS_CA          the CA (PEM) tls_client_auth certificates must chain to
//   OIDC_PKJWT_JWKS      a public JWK set (JSON file) for the private_key_jwt
//                        client; without it that client is left out
//   OIDC_SELF_SIGNED_CERT  the self-signed certificate (PEM) of the
//                        self_signed_tls_client_auth client (in its JWKS x5c)
//   OIDC_TLS_CLIENT_DN   the tls_client_auth client's subject DN (RFC 4514;
//                        default "CN=gw-tls,O=oauth2-test")
//   OIDC_TOKEN_SUB       the `sub` of client_credentials tokens (default alice)
//   OIDC_TOKEN_TTL       their lifetime in seconds (default 600)
//   OIDC_JWT_RESOURCE    a resource indicator (RFC 8707): a client_credentials
//                        grant with resource=<it> gets a JWT access token
//                        (RFC 9068, ES256, aud = the resource); without it,
//                        resource indicators are off and every token is opaque
//   OIDC_LOG_FILE        also append every recorded request here (JSON lines)
//   OIDC_READY_FILE      written (atomically) once listening: JSON with the
//                        issuer, port, pid, endpoints and clients (ids, methods,
//                        secrets)
//
// A ready line "oidc-provider ready <issuer>" goes to stdout as well.
//
// Test-only routes (not part of oidc-provider):
//   GET  /__test/log            every token/introspection request so far, oldest
//                               first (see record() for the fields); ?since=SEQ
//                               gives those after SEQ
//   POST /__test/log/clear      forget them
//   POST /__test/revoke         form token=...: destroys an issued token (it
//                               introspects inactive afterwards)
//   GET  /__test/health         200 "ok"

import { readFileSync, appendFileSync, writeFileSync, renameSync, existsSync } from 'node:fs';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';

import Provider, { errors } from 'oidc-provider';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const ASSERTION_REPLAYED = 'client assertion tokens must only be used once';

// ---- settings --------------------------------------------------------------

const env = process.env;
let port = Number(env.OIDC_PORT ?? 0);
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === '--port') port = Number(process.argv[++i]);
  else if (process.argv[i].startsWith('--port=')) port = Number(process.argv[i].slice(7));
  else throw new Error(`unknown argument ${process.argv[i]}`);
}
if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('bad port');
const host = env.OIDC_HOST || '127.0.0.1';
const tls = Boolean(env.OIDC_TLS_KEY && env.OIDC_TLS_CERT);
const tokenSub = env.OIDC_TOKEN_SUB || 'alice';
const tokenTtl = Number(env.OIDC_TOKEN_TTL || 600);
const tlsClientDn = env.OIDC_TLS_CLIENT_DN || 'CN=gw-tls,O=oauth2-test';
const jwtResource = env.OIDC_JWT_RESOURCE || '';

// ---- clients ---------------------------------------------------------------
// oidc-provider 9 has one method per client for every endpoint
// (token_endpoint_auth_method also governs introspection and revocation).

const noBrowser = { redirect_uris: [], response_types: [] };
const clients = [
  {
    // Issues the access tokens the tests send through nginx.
    client_id: 'token-issuer',
    client_secret: 'issuer-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    scope: 'orders:read orders:write',
    ...noBrowser,
  },
  {
    // A secret with characters RFC 6749 §2.3.1 form-urlencoding changes: the
    // provider decodes Basic credentials strictly, so a gateway that does not
    // encode gets 400 invalid_request, not 200.
    client_id: 'gw-basic',
    client_secret: 'b4sic:s3cr+t/=%&?',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [TOKEN_EXCHANGE],
    scope: 'orders:read orders:write',
    ...noBrowser,
  },
  {
    client_id: 'gw-post',
    client_secret: 'p0st s3cr+t&=%',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: [TOKEN_EXCHANGE],
    scope: 'orders:read orders:write',
    ...noBrowser,
  },
  {
    // The HS256 key is the secret's UTF-8 bytes (48 of them).
    client_id: 'gw-secret-jwt',
    client_secret: 'hs256-shared-secret-0123456789abcdefghijklmnopqr',
    token_endpoint_auth_method: 'client_secret_jwt',
    token_endpoint_auth_signing_alg: 'HS256',
    grant_types: [TOKEN_EXCHANGE],
    scope: 'orders:read orders:write',
    ...noBrowser,
  },
];
if (env.OIDC_PKJWT_JWKS) {
  clients.push({
    // No token_endpoint_auth_signing_alg: any asymmetric alg of
    // enabledJWA.clientAuthSigningAlgValues (RS256, PS256, ES256, Ed25519,
    // EdDSA by default) with a key of this set.
    client_id: 'gw-private-key-jwt',
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: JSON.parse(readFileSync(env.OIDC_PKJWT_JWKS, 'utf8')),
    grant_types: [TOKEN_EXCHANGE],
    scope: 'orders:read orders:write',
    ...noBrowser,
  });
}
if (tls) {
  clients.push({
    client_id: 'gw-tls',
    token_endpoint_auth_method: 'tls_client_auth',
    tls_client_auth_subject_dn: tlsClientDn,
    grant_types: [TOKEN_EXCHANGE],
    scope: 'orders:read orders:write',
    ...noBrowser,
  });
  if (env.OIDC_SELF_SIGNED_CERT) {
    const cert = new crypto.X509Certificate(readFileSync(env.OIDC_SELF_SIGNED_CERT));
    clients.push({
      client_id: 'gw-self-signed-tls',
      token_endpoint_auth_method: 'self_signed_tls_client_auth',
      jwks: { keys: [{ ...cert.publicKey.export({ format: 'jwk' }), x5c: [cert.raw.toString('base64')] }] },
      grant_types: [TOKEN_EXCHANGE],
      scope: 'orders:read orders:write',
      ...noBrowser,
    });
  }
}

// ---- mTLS: the peer certificate of the TLS connection itself ------------------

// RFC 4514 string ("CN=a,O=b") or Node's X509Certificate.subject ("O=b\nCN=a")
// as a sorted list of "type=value", types upper-cased: equal DNs compare equal
// whatever the order they are written in (enough for these tests' DNs).
function dnParts(dn, separator) {
  return dn.split(separator).map((s) => s.trim()).filter(Boolean)
    .map((rdn) => {
      const i = rdn.indexOf('=');
      return `${rdn.slice(0, i).trim().toUpperCase()}=${rdn.slice(i + 1).trim()}`;
    })
    .sort()
    .join(',');
}

const peerCertificate = (ctx) => ctx.socket?.getPeerX509Certificate?.() ?? undefined;

const mTLS = {
  enabled: tls,
  tlsClientAuth: tls,
  selfSignedTlsClientAuth: tls,
  certificateBoundAccessTokens: false,
  getCertificate: peerCertificate,
  // requestCert with rejectUnauthorized off: the handshake accepts any
  // certificate, and `authorized` says whether it chains to OIDC_TLS_CA.
  certificateAuthorized: (ctx) => ctx.socket?.authorized === true,
  certificateSubjectMatches(ctx, property, expected) {
    const cert = peerCertificate(ctx);
    if (!cert) return false;
    switch (property) {
      case 'tls_client_auth_subject_dn':
        return dnParts(cert.subject, '\n') === dnParts(expected, ',');
      default:
        throw new Error(`${property} is not supported by this test provider`);
    }
  },
};

// ---- the provider ------------------------------------------------------------

const server = tls
  ? https.createServer({
    key: readFileSync(env.OIDC_TLS_KEY),
    cert: readFileSync(env.OIDC_TLS_CERT),
    ca: env.OIDC_TLS_CA ? readFileSync(env.OIDC_TLS_CA) : undefined,
    requestCert: true,
    rejectUnauthorized: false,
  })
  : http.createServer();

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, host, resolve);
});
port = server.address().port;
const issuer = `${tls ? 'https' : 'http'}://${host}:${port}`;

// The signing keys: one made now, or (OIDC_SIGNING_KEYS_FILE) those of the
// file, with a new one first when OIDC_NEW_SIGNING_KID names it (a key
// rotation across a restart: the new key signs, the old one stays in the
// JWK Set); the file is written back.
const newSigningKey = (kid) => ({
  ...crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }),
  alg: 'ES256',
  use: 'sig',
  kid,
});
let signingKeys = [];
if (env.OIDC_SIGNING_KEYS_FILE && existsSync(env.OIDC_SIGNING_KEYS_FILE)) {
  signingKeys = JSON.parse(readFileSync(env.OIDC_SIGNING_KEYS_FILE, 'utf8')).keys;
}
if (env.OIDC_NEW_SIGNING_KID || signingKeys.length === 0) {
  signingKeys.unshift(newSigningKey(env.OIDC_NEW_SIGNING_KID || 'test-signing'));
}
if (env.OIDC_SIGNING_KEYS_FILE) {
  writeFileSync(env.OIDC_SIGNING_KEYS_FILE, JSON.stringify({ keys: signingKeys }));
}

const provider = new Provider(issuer, {
  clients,
  clientAuthMethods: [
    'client_secret_basic',
    'client_secret_post',
    'client_secret_jwt',
    'private_key_jwt',
    ...(tls ? ['tls_client_auth', 'self_signed_tls_client_auth'] : []),
  ],
  scopes: ['openid', 'orders:read', 'orders:write'],
  jwks: { keys: signingKeys },
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  ttl: {
    AccessToken: () => tokenTtl,
    ClientCredentials: () => tokenTtl,
    Grant: () => tokenTtl,
    Session: () => tokenTtl,
    Interaction: () => tokenTtl,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Any authenticated (confidential) client may introspect any token: the
      // gateway clients check tokens issued to token-issuer.
      allowedPolicy: async (ctx, client) => client.clientAuthMethod !== 'none',
    },
    revocation: { enabled: false },
    mTLS,
    // JWT access tokens for one resource server only, when asked for.
    resourceIndicators: {
      enabled: Boolean(jwtResource),
      defaultResource: async () => undefined,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource !== jwtResource) throw new errors.InvalidTarget();
        return {
          scope: 'orders:read orders:write',
          audience: resource,
          accessTokenTTL: tokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
    // RFC 9449: a token request with a DPoP proof gets a DPoP-bound token
    // (token_type DPoP, cnf.jkt in its introspection answer); without one,
    // a bearer token as before.
    dPoP: { enabled: true },
  },
  // client_credentials tokens have no subject in oidc-provider: give them one.
  // Exchanged access tokens carry what the grant put in token.extra.
  extraTokenClaims: async (ctx, token) => (token.kind === 'ClientCredentials'
    ? { sub: tokenSub }
    : token.extra),
  clientBasedCORS: () => false,
  renderError: async (ctx, out) => { ctx.type = 'json'; ctx.body = out; },
});

// ---- RFC 8693 token exchange ---------------------------------------------------
// Minimal: the subject token must be an active access token of this provider
// (a client_credentials token or one issued by this grant); the new token is an
// AccessToken for the subject's `sub`, with the requested `audience` (one) and
// `scope` (a subset of the subject token's), and act.sub = the exchanging client.

async function tokenExchange(ctx) {
  const { params, client } = ctx.oidc;
  if (!params.subject_token) throw new errors.InvalidRequest('missing required parameter \'subject_token\'');
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`requested_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  if (params.actor_token) throw new errors.InvalidRequest('actor_token is not supported');

  const subject = await provider.AccessToken.find(params.subject_token)
    ?? await provider.ClientCredentials.find(params.subject_token);
  if (!subject?.isValid) throw new errors.InvalidGrant('subject_token is not an active access token');

  const sub = subject.accountId ?? subject.extra?.sub;
  if (!sub) throw new errors.InvalidGrant('subject_token has no subject');

  let { scope } = subject;
  if (params.scope) {
    const granted = new Set((subject.scope || '').split(' '));
    const missing = params.scope.split(' ').filter((s) => s && !granted.has(s));
    if (missing.length) throw new errors.InvalidScope('requested scope exceeds the subject token\'s', missing.join(' '));
    scope = params.scope;
  }

  const token = new provider.AccessToken({ accountId: sub, client, scope, gty: 'token_exchange' });
  if (params.audience) token.setAudience(params.audience);
  token.extra = { act: { sub: client.clientId } };
  ctx.oidc.entity('AccessToken', token);
  const value = await token.save();

  ctx.body = {
    access_token: value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    ...(scope ? { scope } : {}),
  };
}

provider.registerGrantType(TOKEN_EXCHANGE, tokenExchange, [
  'subject_token', 'subject_token_type', 'requested_token_type',
  'audience', 'resource', 'scope', 'actor_token', 'actor_token_type',
]);

// ---- what each request brought ---------------------------------------------------

const log = [];
let seq = 0;

// The error oidc-provider answered with, its internal detail included (the
// response only says "client authentication failed").
for (const event of ['grant.error', 'introspection.error', 'server_error']) {
  provider.on(event, (ctx, err) => { ctx.state.oidcError = err; });
}

function decodeJwtPart(part) {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

function basicClientId(authorization) {
  const m = /^basic\s+(\S+)$/i.exec(authorization || '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return undefined;
  try {
    return decodeURIComponent(decoded.slice(0, i).replace(/\+/g, '%20'));
  } catch {
    return decoded.slice(0, i);
  }
}

// One record per request to a provider route: what the client presented, how
// it was authenticated (when it was), and how the provider answered.
function record(ctx, started) {
  const body = ctx.oidc?.body ?? {};
  const err = ctx.state.oidcError;
  const client = ctx.oidc?.client;
  const authorization = ctx.get('authorization');
  const entry = {
    seq: ++seq,
    time: new Date(started).toISOString(),
    ms: Date.now() - started,
    method: ctx.method,
    path: ctx.path,
    route: ctx.oidc?.route,
    host: ctx.get('host'),
    status: ctx.status,
    content_type: ctx.response.get('content-type') || undefined,
    grant_type: body.grant_type,
    token_type_hint: body.token_type_hint,
    audience: body.audience,
    scope: body.scope,
    resource: body.resource,
    subject_token_type: body.subject_token_type,
    requested_token_type: body.requested_token_type,
    has_token: body.token !== undefined,
    has_subject_token: body.subject_token !== undefined,
    authorization_scheme: authorization ? authorization.split(' ')[0] : undefined,
    basic_client_id: basicClientId(authorization),
    body_client_id: body.client_id,
    has_client_secret: body.client_secret !== undefined,
    client_assertion_type: body.client_assertion_type,
    client_secret_empty: body.client_secret === '' ? true : undefined,
    // the method the request's shape says it used (as oidc-provider reads it:
    // an empty client_secret counts as none)
    presented_auth: authorization ? 'client_secret_basic'
      : body.client_secret ? 'client_secret_post'
        : body.client_assertion !== undefined ? 'client_assertion'
          : peerCertificate(ctx) ? 'tls_client_certificate' : 'none',
    // the client the provider looked up, and its registered method
    client_id: client?.clientId,
    auth_method: client?.clientAuthMethod,
    client_authenticated: Boolean(client) && err?.error !== 'invalid_client'
      && !(err?.error === 'invalid_request' && /client|authorization header/.test(err.error_description ?? '')),
    error: err?.error ?? ctx.body?.error,
    error_description: err?.error_description ?? ctx.body?.error_description,
    error_detail: err?.error_detail,
    active: ctx.oidc?.route === 'introspection' ? ctx.body?.active : undefined,
    issued_token: ctx.oidc?.route === 'token' && ctx.status === 200 ? true : undefined,
  };
  if (typeof body.client_assertion === 'string') {
    const [h, p] = body.client_assertion.split('.');
    const header = decodeJwtPart(h) ?? {};
    const payload = decodeJwtPart(p) ?? {};
    entry.assertion = {
      alg: header.alg, kid: header.kid, typ: header.typ,
      iss: payload.iss, sub: payload.sub, aud: payload.aud, jti: payload.jti,
      iat: payload.iat, nbf: payload.nbf, exp: payload.exp,
    };
    entry.jti = payload.jti;
    entry.assertion_replayed = err?.error_detail === ASSERTION_REPLAYED;
  }
  const cert = peerCertificate(ctx);
  if (cert) {
    entry.tls_client_cert = {
      subject: cert.subject.split('\n').join(', '),
      issuer: cert.issuer.split('\n').join(', '),
      authorized: ctx.socket.authorized === true,
      authorization_error: ctx.socket.authorizationError ? String(ctx.socket.authorizationError) : undefined,
      'x5t#S256': crypto.hash('sha256', cert.raw, 'base64url'),
    };
  }
  for (const k of Object.keys(entry)) if (entry[k] === undefined) delete entry[k];
  log.push(entry);
  if (env.OIDC_LOG_FILE) appendFileSync(env.OIDC_LOG_FILE, `${JSON.stringify(entry)}\n`);
}

provider.use(async (ctx, next) => {
  const started = Date.now();
  try {
    await next();
  } finally {
    if (ctx.oidc?.route) record(ctx, started);
  }
});

// ---- test-only routes, then the provider ----------------------------------------

function readForm(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

function send(res, status, value) {
  const body = typeof value === 'string' ? value : JSON.stringify(value);
  res.writeHead(status, {
    'content-type': typeof value === 'string' ? 'text/plain' : 'application/json',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

async function testRoute(req, res, url) {
  if (req.method === 'GET' && url.pathname === '/__test/health') return send(res, 200, 'ok');
  if (req.method === 'GET' && url.pathname === '/__test/log') {
    const since = Number(url.searchParams.get('since') || 0);
    return send(res, 200, log.filter((e) => e.seq > since));
  }
  if (req.method === 'POST' && url.pathname === '/__test/log/clear') {
    const cleared = log.length;
    log.length = 0;
    return send(res, 200, { cleared, seq });
  }
  if (req.method === 'POST' && url.pathname === '/__test/revoke') {
    const value = (await readForm(req)).get('token') || '';
    let revoked = false;
    for (const model of [provider.AccessToken, provider.ClientCredentials]) {
      const token = await model.find(value);
      if (token) {
        await token.destroy();
        revoked = true;
      }
    }
    return send(res, 200, { revoked });
  }
  return send(res, 404, { error: 'no such test route' });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname.startsWith('/__test/')) {
    testRoute(req, res, url).catch((e) => send(res, 500, { error: String(e) }));
  } else {
    callback(req, res);
  }
});

const ready = {
  issuer,
  port,
  pid: process.pid,
  tls,
  oidc_provider: JSON.parse(readFileSync(new URL('./node_modules/oidc-provider/package.json', import.meta.url))).version,
  node: process.version,
  endpoints: {
    token: `${issuer}/token`,
    introspection: `${issuer}/token/introspection`,
    discovery: `${issuer}/.well-known/openid-configuration`,
  },
  token_sub: tokenSub,
  clients: clients.map((c) => ({
    client_id: c.client_id,
    method: c.token_endpoint_auth_method,
    client_secret: c.client_secret,
    grant_types: c.grant_types,
    tls_client_auth_subject_dn: c.tls_client_auth_subject_dn,
  })),
};
if (env.OIDC_READY_FILE) {
  writeFileSync(`${env.OIDC_READY_FILE}.tmp`, JSON.stringify(ready, null, 2));
  renameSync(`${env.OIDC_READY_FILE}.tmp`, env.OIDC_READY_FILE);
}
process.stdout.write(`oidc-provider ready ${issuer}\n`);

for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(signal, () => { server.close(); process.exit(0); });
}
