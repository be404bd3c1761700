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

# The peer's nginx.conf. $1: IdP port, $2: backend port, $3: the phantom JWT.
# The IdP logs one line per call to logs/idp.log, so runs can count calls.
bench_peer_conf() {
  cat <<CONF
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 4096; }
http {
    log_format calls "\$uri";
    server {
        listen 127.0.0.1:$1;
        access_log logs/idp.log calls;
        location /introspect {
            default_type application/json;
            return 200 '{"active":true,"sub":"6f1c2a52-8d4e-4b7a-9a35-0c8f1d2e3b4a","scope":"openid profile orders:read","client_id":"web-app-1234","exp":4102444800}';
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
bench_shared_http() {
  cat <<CONF
    upstream redis { server 127.0.0.1:$1; keepalive 64; }
    auth_oauth2_token_redis redis key_file=$2;
CONF
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
