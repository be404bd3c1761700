#!/usr/bin/env bash
# make demo: nginx with the module, the test IdP and an echo backend on
# loopback; shows one call allowed and two denied, then waits for Ctrl-C
# (or stops at once when not run from a terminal).
set -euo pipefail
cd "$(dirname "$0")/.."

GATEWAY_PORT=${DEMO_GATEWAY_PORT:-8080}
IDP_PORT=${DEMO_IDP_PORT:-9001}
BACKEND_PORT=${DEMO_BACKEND_PORT:-9002}
prefix=$(mktemp -d /tmp/oauth2-demo.XXXXXX)
mkdir -p "$prefix/logs"

idp_pid=""
cleanup() {
  [ -f "$prefix/logs/nginx.pid" ] && objs/nginx -p "$prefix" -c nginx.conf -s stop 2>/dev/null || true
  [ -n "$idp_pid" ] && kill "$idp_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$prefix"
  echo "demo stopped"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

python3 t/idp/test_idp.py --idp-port "$IDP_PORT" --backend-port "$BACKEND_PORT" \
  --ready-file "$prefix/idp.ready" >"$prefix/logs/idp.log" 2>&1 &
idp_pid=$!
for _ in $(seq 100); do [ -f "$prefix/idp.ready" ] && break; sleep 0.1; done
[ -f "$prefix/idp.ready" ] || { echo "test IdP did not start; see $prefix/logs/idp.log" >&2; exit 1; }

# The IdP knows one active token; any other token is inactive.
curl -sf -X POST "http://127.0.0.1:$IDP_PORT/__control/setup" -d '{
  "demo-token-alice": {"json": {"active": true, "sub": "alice", "scope": "orders:read",
                                "client_id": "demo-app", "exp": 4102444800}}
}' >/dev/null

cat >"$prefix/nginx.conf" <<CONF
load_module $PWD/objs/ngx_http_auth_oauth2_token_module.so;
worker_processes 1;
error_log logs/error.log notice;
pid logs/nginx.pid;
events { worker_connections 256; }
http {
    access_log logs/access.log;
    upstream idp { server 127.0.0.1:$IDP_PORT; keepalive 8; }
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 8; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {
        listen 127.0.0.1:$GATEWAY_PORT;
        auth_oauth2_token_client_id api-gateway;
        auth_oauth2_token_client_secret demo-secret;
        location /api/ {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_endpoint /_oauth2_introspect;
            proxy_set_header X-User \$oauth2_token_sub;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }
        location = /_oauth2_introspect {
            internal;
            proxy_pass http://idp/introspect;
        }
        location = /metrics {
            allow 127.0.0.1;
            deny all;
            auth_oauth2_token_metrics;
        }
    }
}
CONF
objs/nginx -p "$prefix" -c nginx.conf

show() {
  echo
  printf '$'; printf ' %q' "$@"; echo
  "$@" -s -i | sed -e 's/^/  /'
  echo
}

echo "gateway http://127.0.0.1:$GATEWAY_PORT  IdP :$IDP_PORT  backend :$BACKEND_PORT  (prefix $prefix)"
echo "== allowed: the IdP says demo-token-alice is active; the backend sees X-User: alice"
show curl "http://127.0.0.1:$GATEWAY_PORT/api/orders" -H 'Authorization: Bearer demo-token-alice'
echo "== denied: the IdP says this token is not active"
show curl "http://127.0.0.1:$GATEWAY_PORT/api/orders" -H 'Authorization: Bearer revoked-token'
echo "== denied: no token at all"
show curl "http://127.0.0.1:$GATEWAY_PORT/api/orders"
echo "== the module's metrics after these three calls (Prometheus text format; excerpt)"
echo
curl -sf "http://127.0.0.1:$GATEWAY_PORT/metrics" \
  | grep -E '^oauth2_token_(requests_total|idp_requests_total|idp_request_duration_seconds_count)' \
  | grep -v ' 0$' | sed -e 's/^/  /'
echo

if [ -t 0 ]; then
  echo "Running. Try the curl lines above; Ctrl-C stops nginx, the IdP and the backend."
  while true; do sleep 3600; done
fi
