#!/usr/bin/env bash
# make debian: builds the module against Debian's own nginx (package nginx,
# 1.22.1 on bookworm) using the source tree and configure flags that
# nginx-dev ships, and leaves objs/debian/ngx_http_auth_oauth2_token_module.so,
# which `load_module` accepts in /usr/sbin/nginx.
set -euo pipefail
cd "$(dirname "$0")/.."

src=/usr/share/nginx/src
out=objs/debian
tree=$out/nginx-src

[ -f "$src/conf_flags" ] || { echo "debian: $src/conf_flags missing: install nginx-dev" >&2; exit 1; }

version=$(/usr/sbin/nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
stamp=$out/.configured-$version
if [ ! -f "$stamp" ]; then
  rm -rf "$out"
  mkdir -p "$out"
  cp -a "$src" "$tree"
  (
    cd "$tree"
    # shellcheck disable=SC1091
    . ./conf_flags
    ./configure "${NGX_CONF_FLAGS[@]}" >../configure.log 2>&1
  ) || { echo "debian: configure failed, see $out/configure.log" >&2; exit 1; }
  touch "$stamp"
fi

# A target directory of its own: the bindings differ from the vendored build's.
NGINX_SOURCE_DIR=$PWD/$tree CARGO_TARGET_DIR=$PWD/target/debian \
  cargo build --release --no-default-features --features export-modules
cp target/debian/release/libngx_http_auth_oauth2_token_module.so "$out/ngx_http_auth_oauth2_token_module.so"

# Prove it loads into Debian's own binary.
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
mkdir -p "$check/logs"
cat >"$check/nginx.conf" <<CONF
load_module $PWD/$out/ngx_http_auth_oauth2_token_module.so;
error_log stderr notice;
pid logs/nginx.pid;
events {}
http {
    client_body_temp_path $check/body;
    proxy_temp_path $check/proxy;
    fastcgi_temp_path $check/fastcgi;
    uwsgi_temp_path $check/uwsgi;
    scgi_temp_path $check/scgi;
    access_log off;
    server {
        listen 127.0.0.1:1;
        location / { auth_oauth2_token_introspect off; }
    }
}
CONF
/usr/sbin/nginx -t -q -p "$check" -c nginx.conf -g 'daemon off;' 2>&1 | grep -v '^$' || true
/usr/sbin/nginx -t -q -p "$check" -c nginx.conf
echo "built $out/ngx_http_auth_oauth2_token_module.so for Debian's nginx $version (loads into /usr/sbin/nginx)"
