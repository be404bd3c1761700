# Sourced by bench.sh and bench-instructions.sh, so that both measure the same
# thing: the peer nginx (a fast IdP with fixed answers, and the backend), the
# phantom JWT it issues, the no-module auth_request recipe and the module's
# locations. Caches keep entries for an hour: every entry must outlive a run.

# A ~900-byte compact JWS: RS256 header, realistic claims padded to size,
# 256 bytes of fake signature (the module checks the shape, not the signature).
bench_phantom_jwt() {
  python3 - <<'PY'
import base64, json
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
header = {"alg": "RS256", "typ": "at+jwt", "kid": "bench-key-1"}
claims = {"iss": "https://idp.example.com/realms/bench", "aud": "orders-api",
          "sub": "6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a", "client_id": "web-app-1234",
          "scope": "openid profile orders:read", "iat": 1700000000, "exp": 4102444800,
          "jti": "0b9a8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d", "email": "alice@example.com",
          "roles": ["orders-reader", "profile-reader"], "pad": ""}
signature = b64(bytes(i * 7 % 256 for i in range(256)))
jwt = ""
while len(jwt) < 900:
    jwt = ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), signature])
    claims["pad"] += "x"
print(jwt)
PY
}

# The peer's nginx.conf. $1: IdP port, $2: backend port, $3: the phantom JWT,
# $4: the DPoP key's thumbprint and $5 the client certificate's (cnf.jkt and
# cnf["x5t#S256"] of the sender-constrained rows' introspection answers), $6:
# more top-level configuration (bench.sh's TLS front, bench_tls_front).
# The IdP logs one line per call to logs/idp.log, so runs can count calls.
bench_peer_conf() {
  cat <<CONF
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 4096; }
${6:-}
http {
    log_format calls "\$uri";
    server {
        listen 127.0.0.1:$1;
        access_log logs/idp.log calls;
        location /introspect {
            default_type application/json;
            return 200 '{"active":true,"sub":"6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a","scope":"openid profile orders:read","client_id":"web-app-1234","exp":4102444800}';
        }
        location /introspect-dpop {
            default_type application/json;
            return 200 '{"active":true,"sub":"6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a","scope":"openid profile orders:read","client_id":"web-app-1234","exp":4102444800,"cnf":{"jkt":"$4"}}';
        }
        location /introspect-mtls {
            default_type application/json;
            return 200 '{"active":true,"sub":"6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a","scope":"openid profile orders:read","client_id":"web-app-1234","exp":4102444800,"cnf":{"x5t#S256":"$5"}}';
        }
        location /introspect-jwt {
            default_type application/jwt;
            return 200 '$3';
        }
        location /token {
            default_type application/json;
            return 200 '{"access_token":"exchanged.eyJzdWIiOiJhbGljZSJ9.sig","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}';
        }
    }
    server {
        listen 127.0.0.1:$2;
        access_log off;
        location / { return 200 "ok\n"; }
    }
}
CONF
}

# The classic no-module recipe: auth_request to the IdP, optionally cached
# (needs a proxy_cache_path keys_zone=recipe). A location-level
# proxy_set_header drops the http-level Connection "", hence its repetition.
bench_recipe_locations() {
  cat <<'CONF'
        location /recipe-cached/ {
            auth_request /_recipe_check_cached;
            proxy_pass http://backend;
        }
        location /recipe-nocache/ {
            auth_request /_recipe_check;
            proxy_pass http://backend;
        }
        location = /_recipe_check {
            internal;
            proxy_method POST;
            proxy_pass_request_body off;
            proxy_set_header Content-Type application/x-www-form-urlencoded;
            proxy_set_header Connection "";
            proxy_set_body "token=$http_authorization";
            proxy_pass http://idp/introspect;
        }
        location = /_recipe_check_cached {
            internal;
            proxy_method POST;
            proxy_pass_request_body off;
            proxy_set_header Content-Type application/x-www-form-urlencoded;
            proxy_set_header Connection "";
            proxy_set_body "token=$http_authorization";
            proxy_cache recipe;
            proxy_cache_methods POST;
            proxy_cache_key $http_authorization;
            proxy_cache_valid 200 1h;
            proxy_pass http://idp/introspect;
        }
CONF
}

# The module's http-level directives.
bench_module_http() {
  cat <<'CONF'
    auth_oauth2_token_client_id gw;
    auth_oauth2_token_client_secret s3cret;
    auth_oauth2_token_introspect_endpoint /_introspect;
    auth_oauth2_token_token_endpoint /_token;
CONF
}

# The shared tier (Redis on port $1, fleet secret in file $2): http level.
# With $3 = cluster: the Redis Cluster of bench_cluster_start, whose first
# port is $1 (its three nodes are the seeds).
# keepalive is the idle connections kept for all the servers together: 64
# per node, as the one Redis of row 10 has.
bench_shared_http() {
  local servers="server 127.0.0.1:$1;" keepalive=64
  [ "${3:-}" = cluster ] && servers="$servers server 127.0.0.1:$(( $1 + 1 )); server 127.0.0.1:$(( $1 + 2 ));" keepalive=192
  cat <<CONF
    upstream redis { $servers keepalive $keepalive; }
    auth_oauth2_token_redis redis key_file=$2 ${3:-};
CONF
}

# A Redis Cluster of three primaries (no replicas) for the cluster row, in
# directory $1, on ports $2..$2+2 (the cluster bus on $2+3..$2+5), on CPU
# $3: started, joined (redis-cli --cluster create) and ready.
bench_cluster_start() {
  local nodes=() i port
  for i in 0 1 2; do
    port=$(( $2 + i ))
    mkdir -p "$1/node$i"
    taskset -c "$3" redis-server --bind 127.0.0.1 --port $port --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-port $(( $2 + 3 + i )) --save '' --appendonly no \
      --dir "$1/node$i" --daemonize yes --logfile "$1/node$i/redis.log" >/dev/null
    nodes+=("127.0.0.1:$port")
  done
  for i in 0 1 2; do
    for _ in $(seq 100); do
      [ "$(redis-cli -p $(( $2 + i )) ping 2>/dev/null)" = PONG ] && break
      sleep 0.1
    done
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$1/create.log" 2>&1 ||
    { cat "$1/create.log" >&2; return 1; }
  for _ in $(seq 100); do
    local ok=0
    for i in 0 1 2; do
      redis-cli -p $(( $2 + i )) cluster info 2>/dev/null | grep -q 'cluster_state:ok' && ok=$(( ok + 1 ))
    done
    [ $ok = 3 ] && return 0
    sleep 0.1
  done
  echo "bench: the Redis Cluster on ports $2..$(( $2 + 2 )) is not ready" >&2
  return 1
}

bench_cluster_stop() { # $1: the first port
  local i
  for i in 0 1 2; do redis-cli -p $(( $1 + i )) shutdown nosave >/dev/null 2>&1 || true; done
}

# Locations on the shared tier: /shared/ with a zone too small to hold the
# tokens (the shared tier answers nearly every request), /fleet/ with a zone
# of its own for the two-gateway count, and the internal Redis location.
bench_shared_locations() {
  cat <<'CONF'
        location /shared/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_cache zone=shared_l1:32k max_ttl=1h;
            auth_oauth2_token_shared_cache /_oauth2_redis;
            proxy_pass http://backend;
        }
        location /fleet/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_cache zone=fleet_l1:4m max_ttl=1h;
            auth_oauth2_token_cache_vary fleet;
            auth_oauth2_token_shared_cache /_oauth2_redis;
            proxy_pass http://backend;
        }
        location = /_oauth2_redis { internal; auth_oauth2_token_redis_pass; }
CONF
}

# Client keys for the private_key_jwt scenarios, into directory $1.
bench_client_keys() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1/client-es256.pem" 2>/dev/null
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1/client-rs256.pem" 2>/dev/null
  chmod 644 "$1"/client-*.pem
}

# The module's locations. $1: size of the introspection zone (it must hold
# every token of the many-tokens scenario), $2: 1 to add the phantom location,
# $3: a directory with bench_client_keys' keys to add the private_key_jwt ones,
# $4: 1 to add the expiry-storm locations.
bench_module_locations() {
  cat <<CONF
        location /introspect-cached/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_cache zone=introspected:$1 max_ttl=1h;
            proxy_pass http://backend;
        }
        location /introspect-nocache/ {
            auth_oauth2_token_introspect on;
            proxy_pass http://backend;
        }
        location /exchange-cached/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_cache zone=introspected:$1 max_ttl=1h;
            auth_oauth2_token_exchange on;
            auth_oauth2_token_exchange_cache zone=exchanged:40m max_ttl=1h;
            auth_oauth2_token_audience orders-api;
            proxy_pass http://backend;
        }
        location = /_introspect { internal; proxy_pass http://idp/introspect; }
        location = /_token { internal; proxy_pass http://idp/token; }
CONF
  # The expiry storm ($4 = 1): a thousand tokens whose entries reach max_ttl
  # together, without and with refresh ahead.
  [ "${4:-}" = 1 ] && cat <<'CONF'
        location /storm/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_cache zone=storm:4m max_ttl=3s;
            proxy_pass http://backend;
        }
        location /storm-refresh/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_cache zone=storm_refresh:4m max_ttl=3s refresh=50%;
            proxy_pass http://backend;
        }
CONF
  if [ -n "${3:-}" ]; then
    for alg in es256 rs256; do
      cat <<CONF
        location /pkjwt-$alg/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_client_auth private_key_jwt;
            auth_oauth2_token_client_key_file $3/client-$alg.pem;
            auth_oauth2_token_client_assertion_audience https://idp.example/token;
            proxy_pass http://backend;
        }
CONF
    done
  fi
  [ "$2" = 1 ] || return 0
  cat <<'CONF'
        location /phantom-cached/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_phantom on;
            auth_oauth2_token_introspect_endpoint /_introspect_jwt;
            auth_oauth2_token_introspect_cache zone=phantoms:8m max_ttl=1h;
            proxy_pass http://backend;
        }
        location = /_introspect_jwt { internal; proxy_pass http://idp/introspect-jwt; }
CONF
}

# ---- the JWT, DPoP and mTLS rows (issues 23 and 24) ----------------------------

# Node.js and t/oidc's npm packages (dpop, jose), installed from the lockfile by
# the test harness's own routine when missing.
bench_npm_deps() {
  perl -It/lib -MOIDCProvider -e 'my $why = oidc_provider_unavailable(); die "bench: $why\n" if $why' >&2
}

# The issuer's signing keys (openssl) and their public JWK Set, into directory $1:
# jwt-rs256.pem (RSA 2048, kid bench-rs256), jwt-es256.pem (P-256, kid
# bench-es256), jwt-jwks.json.
bench_jwt_keys() {
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1/jwt-rs256.pem" 2>/dev/null
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1/jwt-es256.pem" 2>/dev/null
  node --input-type=module - "$1" >"$1/jwt-jwks.json" <<'JS'
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
const dir = process.argv[2];
const keys = ['RS256', 'ES256'].map((alg) => {
  const jwk = createPublicKey(readFileSync(`${dir}/jwt-${alg.toLowerCase()}.pem`)).export({ format: 'jwk' });
  return { ...jwk, kid: `bench-${alg.toLowerCase()}`, alg, use: 'sig' };
});
process.stdout.write(JSON.stringify({ keys }));
JS
}

# $3 distinct JWT access tokens (RFC 9068: typ at+jwt) of about 800 bytes, signed
# with $2 (RS256 or ES256) by the key of bench_jwt_keys in $1, one a line on stdout.
# Signed by Node's crypto (OpenSSL): openssl's command line would take minutes.
BENCH_JWT_ISSUER=https://idp.example.com/realms/bench
bench_jwt_tokens() {
  node --input-type=module - "$1" "$2" "$3" "$BENCH_JWT_ISSUER" <<'JS'
import { createPrivateKey, sign, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
const [dir, alg, count, iss] = process.argv.slice(2);
const key = createPrivateKey(readFileSync(`${dir}/jwt-${alg.toLowerCase()}.pem`));
const b64 = (x) => Buffer.from(x).toString('base64url');
const header = b64(JSON.stringify({ alg, typ: 'at+jwt', kid: `bench-${alg.toLowerCase()}` }));
const signatureChars = alg === 'RS256' ? 342 : 86;
const now = Math.floor(Date.now() / 1000);
const lines = [];
for (let i = 0; i < Number(count); i++) {
  const claims = { iss, aud: 'orders-api', sub: randomUUID(), client_id: 'web-app-1234',
    scope: 'openid profile orders:read', iat: now, exp: 4102444800, jti: randomUUID(),
    email: 'alice@example.com', roles: ['orders-reader', 'profile-reader'], pad: '' };
  const room = Math.floor((800 - header.length - signatureChars - 2) * 3 / 4);
  claims.pad = 'x'.repeat(Math.max(0, room - JSON.stringify(claims).length));
  const input = `${header}.${b64(JSON.stringify(claims))}`;
  const signature = sign('sha256', Buffer.from(input), alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key);
  lines.push(`${input}.${b64(signature)}`);
}
process.stdout.write(lines.join('\n') + '\n');
JS
}

# The DPoP client's ES256 key pair, made by the npm dpop package (t/oidc/dpop.mjs)
# into JWK file $1; prints its RFC 7638 thumbprint (cnf.jkt).
bench_dpop_key() {
  echo "{\"keyfile\": \"$1\", \"alg\": \"ES256\"}" | node t/oidc/dpop.mjs |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["jkt"])'
}

# $4 DPoP proofs (dpop.generateProof: fresh jti and iat, htm GET, htu $2, ath of
# token $3) by the key in JWK file $1, one a line into file $5.
bench_dpop_proofs() {
  python3 -c 'import json, sys; key, htu, token, n = sys.argv[1:]
print(json.dumps({"keyfile": key, "alg": "ES256", "proofs": [{"htm": "GET", "htu": htu, "token": token}] * int(n)}))' \
    "$1" "$2" "$3" "$4" | node t/oidc/dpop.mjs |
    python3 -c 'import json, sys; sys.stdout.write("\n".join(json.load(sys.stdin)["proofs"]) + "\n")' >"$5"
}

# Puts $2 revocations on the Shared Signals list of the gateway on port $3: SETs
# of 4 events whose subjects are aliases of 8 opaque ids each, signed by the
# transmitter key of directory $1 (ssf.jwk, t/oidc/ssf-transmitter.mjs), pushed
# to /_bench_ssf over one connection until the metrics page $4 counts $2.
bench_ssf_fill() {
  local sets=$(( $2 / 32 + 1 ))
  python3 - "$1" "$sets" <<'PY' | node t/oidc/ssf-transmitter.mjs >"$1/ssf-sets.json"
import json, sys, time
work, sets = sys.argv[1], int(sys.argv[2])
types = ["https://schemas.openid.net/secevent/caep/event-type/credential-change",
         "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
         "https://schemas.openid.net/secevent/risc/event-type/account-purged",
         "https://schemas.openid.net/secevent/risc/event-type/credential-compromise"]
now = int(time.time())
specs = [{"claims": {"iss": "https://idp.bench", "aud": "https://gw.bench", "iat": now, "jti": f"bench-{i}",
          "events": {t: {"subject": {"format": "aliases", "identifiers": [
              {"format": "opaque", "id": f"user-{i}-{e}-{a}"} for a in range(8)]}} for e, t in enumerate(types)}}}
         for i in range(sets)]
print(json.dumps({"keyfile": f"{work}/ssf.jwk", "sets": specs}))
PY
  python3 - "$1/ssf-sets.json" "$2" "$3" "$4" <<'PY'
import http.client, json, re, sys, urllib.request
sets, want, port, metrics = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def held():
    text = urllib.request.urlopen(metrics).read().decode()
    return int(re.search(r"^oauth2_token_ssf_revocations (\d+)$", text, re.M).group(1))
conn = http.client.HTTPConnection("127.0.0.1", port)
for n, s in enumerate(sets):
    if n % 64 == 0 and held() >= want:
        break
    conn.request("POST", "/_bench_ssf", s, {"Content-Type": "application/secevent+jwt"})
    r = conn.getresponse()
    r.read()
    if r.status != 202:
        sys.exit(f"bench_ssf_fill: a push got {r.status}")
print(f"  the list holds {held()} revocations")
PY
}

# A server certificate and a client certificate (self-signed P-256, openssl) into
# directory $1; prints the client certificate's x5t#S256 (cnf of the mTLS row).
bench_tls_certs() {
  for name in server client; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -keyout "$1/tls-$name.key" -out "$1/tls-$name.crt" -subj "/CN=bench-$name" 2>/dev/null
  done
  chmod 644 "$1"/tls-*.key
  openssl x509 -in "$1/tls-client.crt" -outform DER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\n'
}

# wrk cannot present a client certificate: a stream{} front (in the peer, on the
# load CPU) takes wrk's plain connections and opens one mTLS connection to the
# gateway for each, with the client certificate of directory $1. $2 $3 ...: pairs
# of front port and gateway TLS port.
bench_tls_front() {
  local dir=$1; shift
  echo "stream {"
  while [ $# -ge 2 ]; do
    cat <<CONF
    server {
        listen 127.0.0.1:$1;
        proxy_pass 127.0.0.1:$2;
        proxy_ssl on;
        proxy_ssl_certificate $dir/tls-client.crt;
        proxy_ssl_certificate_key $dir/tls-client.key;
    }
CONF
    shift 2
  done
  echo "}"
}

# The gateways' TLS server{}: port $1, certificates of directory $2, client
# certificates asked for (optional_no_ca: the binding is to the certificate
# itself), /plain/ on both gateways; $3 = 1 (the module's gateway) adds the
# certificate-bound token's location.
bench_tls_server() {
  cat <<CONF
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate $2/tls-server.crt;
        ssl_certificate_key $2/tls-server.key;
        ssl_verify_client optional_no_ca;
        location /plain/ { proxy_pass http://backend; }
CONF
  [ "$3" = 1 ] && cat <<'CONF'
        location /mtls-cached/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_endpoint /_introspect_mtls;
            auth_oauth2_token_introspect_cache zone=mtls_bound:1m max_ttl=1h;
            proxy_pass http://backend;
        }
        location = /_introspect_mtls { internal; proxy_pass http://idp/introspect-mtls; }
CONF
  echo "    }"
}

# The module's JWT and DPoP locations, with bench_jwt_keys' key set in directory
# $1, and the metrics the scripts read to check that every request of a row did
# what the row says (a signature check, a cache hit, a valid proof). JWT tokens
# are checked locally (no IdP); /jwt-cached/'s zone holds them all. The
# audience is the issuer's (audience=): auth_oauth2_token_require_audience
# would add `aud` to the http block's claim lists, and every introspection
# answer of the other rows would then be read in full. The DPoP
# window is 120s so that proofs made before a run stay fresh through it; the
# replay store holds 512k proofs (each is kept for the window).
bench_jwt_dpop_locations() {
  local jwt
  for jwt in rs256 es256 cached; do
    cat <<CONF
        location /jwt-$jwt/ {
            auth_oauth2_token_jwt on;
            auth_oauth2_token_jwt_issuer $BENCH_JWT_ISSUER audience=orders-api;
            auth_oauth2_token_jwt_keys_file $1/jwt-jwks.json;
$([ $jwt = cached ] && echo "            auth_oauth2_token_jwt_cache zone=jwt:32m max_ttl=1h;")
            proxy_pass http://backend;
        }
CONF
  done
  cat <<'CONF'
        location /dpop-cached/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_endpoint /_introspect_dpop;
            auth_oauth2_token_introspect_cache zone=dpop_bound:1m max_ttl=1h;
            auth_oauth2_token_dpop_window 120s;
            auth_oauth2_token_dpop_replay_zone dpop_replay:64m;
            proxy_pass http://backend;
        }
        location = /_introspect_dpop { internal; proxy_pass http://idp/introspect-dpop; }
        location = /_bench_metrics { auth_oauth2_token_metrics; }
CONF
}

# Counters of the module's metrics page at $1 (a URL) that the rows check, as
# "name value" lines: jwt_verified, jwt_hit, dpop_valid, dpop_hit, mtls_hit.
bench_metrics() {
  curl -sf "$1" | awk '
    /^oauth2_token_jwt_checks_total\{result="verified"\}/ { v["jwt_verified"] = $NF }
    /^oauth2_token_dpop_proofs_total\{result="valid"\}/ { v["dpop_valid"] = $NF }
    /^oauth2_token_cache_lookups_total\{zone="jwt",result="hit"\}/ { v["jwt_hit"] = $NF }
    /^oauth2_token_cache_lookups_total\{zone="dpop_bound",result="hit"\}/ { v["dpop_hit"] = $NF }
    /^oauth2_token_cache_lookups_total\{zone="mtls_bound",result="hit"\}/ { v["mtls_hit"] = $NF }
    END { for (k in v) print k, v[k] }'
}
