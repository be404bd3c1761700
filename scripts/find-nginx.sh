#!/usr/bin/env bash
# Copies the nginx binary the module was built against to $2, using the
# nginx-sys build directory that cargo reported in $1 (its JSON messages).
# With NGINX_BUILD_DIR/NGINX_SOURCE_DIR, that is the user's own build dir.
set -euo pipefail
messages=$1 dest=$2

build_dir=${NGINX_BUILD_DIR:-}
if [ -z "$build_dir" ] && [ -n "${NGINX_SOURCE_DIR:-}" ]; then
  build_dir=$NGINX_SOURCE_DIR/objs
fi
if [ -z "$build_dir" ]; then
  out_dir=$(grep -o '"package_id":"[^"]*nginx-sys[^"]*"[^}]*"out_dir":"[^"]*"' "$messages" \
    | grep -o '"out_dir":"[^"]*"' | tail -n 1 | cut -d'"' -f4)
  build_dir=$out_dir/objs
fi

if [ -x "$build_dir/nginx" ]; then
  cp "$build_dir/nginx" "$dest"
else
  echo "find-nginx: no nginx binary in $build_dir (build nginx there to run the tests)" >&2
  rm -f "$dest"
fi
