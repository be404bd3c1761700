#!/usr/bin/env bash
# make soak: does a gateway worker's memory stay flat over many introspections?
#
# A second nginx plays IdP and backend (fixed answers), so the measured
# gateway worker (worker_processes 1) does nothing but the module's work.
# wrk drives requests with one active token; every request is one
# introspection subrequest. The worker's RSS is read after a warm-up and
# after each round, until SOAK_REQUESTS requests have been served.
set -euo pipefail
cd "$(dirname "$0")/.."

TOTAL=${SOAK_REQUESTS:-100000}
CONNECTIONS=${SOAK_CONNECTIONS:-50}
GW_PORT=${SOAK_GATEWAY_PORT:-18480}
IDP_PORT=${SOAK_IDP_PORT:-18481}
BACKEND_PORT=${SOAK_BACKEND_PORT:-18482}
NGINX=objs/nginx
MODULE=$PWD/objs/ngx_http_auth_oauth2_token_module.so

work=$(mktemp -d /tmp/oauth2-soak.XXXXXX)
mkdir -p "$work/idp/logs" "$work/gw/logs"
stop() {
  for p in gw idp; do
    [ -f "$work/$p/logs/nginx.pid" ] && $NGINX -p "$work/$p" -c nginx.conf -s stop 2>/dev/null || true
  done
  sleep 0.3
  rm -rf "$work"
}
trap stop EXIT

cat >"$work/idp/nginx.conf" <<CONF
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$IDP_PORT;
        location /introspect {
            default_type application/json;
            return 200 '{"active":true,"sub":"alice","scope":"read","client_id":"app","exp":4102444800}';
        }
    }
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location / { return 200 "ok\n"; }
    }
}
CONF

cat >"$work/gw/nginx.conf" <<CONF
load_module $MODULE;
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    upstream idp { server 127.0.0.1:$IDP_PORT; keepalive 64; }
    upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {
        listen 127.0.0.1:$GW_PORT;
        location / {
            auth_oauth2_token_introspect on;
            auth_oauth2_token_introspect_endpoint /_introspect;
            auth_oauth2_token_client_id gw;
            auth_oauth2_token_client_secret s3cret;
            proxy_set_header X-User \$oauth2_token_sub;
            proxy_pass http://backend;
        }
        location = /_introspect {
            internal;
            proxy_pass http://idp/introspect;
        }
    }
}
CONF

$NGINX -p "$work/idp" -c nginx.conf
$NGINX -p "$work/gw" -c nginx.conf
sleep 0.5
worker=$(pgrep -P "$(cat "$work/gw/logs/nginx.pid")" | head -n 1)
rss() { awk '/^VmRSS/ {print $2}' "/proc/$worker/status"; }
url=http://127.0.0.1:$GW_PORT/api

run_wrk() { # seconds -> prints "requests non2xx"
  wrk -t1 -c"$CONNECTIONS" -d"${1}s" -H 'Authorization: Bearer soak-token' "$url" 2>&1 |
    awk '/requests in/ {r=$1} /Non-2xx/ {n=$NF} END {print r+0, n+0}'
}

read -r warm warm_errors < <(run_wrk 3)
rss_start=$(rss)
served=0 errors=$warm_errors
echo "warm-up: $warm requests, worker RSS ${rss_start} kB"
while [ "$served" -lt "$TOTAL" ]; do
  read -r n e < <(run_wrk 5)
  served=$((served + n)) errors=$((errors + e))
  echo "served $served introspections, worker RSS $(rss) kB"
done
rss_end=$(rss)
echo "result: $served requests after warm-up, $errors non-2xx, RSS ${rss_start} kB -> ${rss_end} kB (growth $((rss_end - rss_start)) kB)"
grep -E '\[(alert|crit|emerg)\]' "$work/gw/logs/error.log" && { echo "soak: alerts in the error log" >&2; exit 1; }
[ "$errors" -eq 0 ] || { echo "soak: $errors requests failed" >&2; exit 1; }
