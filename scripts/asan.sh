#!/usr/bin/env bash
# make asan: the end-to-end suite against nginx and the module both built with
# AddressSanitizer.
#
#   scripts/asan.sh [prove arguments]     (default: -j2 -r t/)
#
# The module: nightly rustc with -Zsanitizer=address, --target given so that
# build scripts and proc-macros (host code) stay uninstrumented, in
# target/asan (the normal build in target/release is left alone). nginx: the
# vendored nginx-sys build, with NGX_CFLAGS/NGX_LDFLAGS adding
# -fsanitize=address (gcc; its libasan is the runtime the module's
# instrumentation binds to when nginx loads it) and NGX_DEBUG_PALLOC, which
# makes every pool allocation a malloc of its own, so that ASan sees the
# bounds of what the module reads and writes in nginx's pools. The configure
# flags are the normal build's (.cargo/config.toml).
#
# Every process of nginx (master, workers, `nginx -t`) writes an ASan report to
# a file of its own in a log directory (ASAN_OPTIONS log_path): nginx
# redirects a worker's stderr into an error.log that the harness deletes with
# its prefix, and a worker that dies is replaced by the master without a test
# necessarily failing. After the suite, any report there fails the run, and
# is printed.
#
# ASAN_EXTRA_OPTIONS  appended to the ASAN_OPTIONS below
# ASAN_TOOLCHAIN      the nightly toolchain (default +nightly)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLCHAIN=${ASAN_TOOLCHAIN:-+nightly}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
TARGET_DIR=$PWD/target/asan
OUT=objs/asan
MODULE=ngx_http_auth_oauth2_token_module

if ! cargo "$TOOLCHAIN" --version >/dev/null 2>&1; then
  if [ "$TOOLCHAIN" = +nightly ] && command -v rustup >/dev/null 2>&1; then
    echo "asan: installing the nightly toolchain (-Zsanitizer needs it)"
    rustup toolchain install nightly --profile minimal
  else
    echo "asan: -Zsanitizer needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
  fi
fi

mkdir -p "$OUT"
start=$(date +%s)
echo "asan: building nginx and the module with AddressSanitizer in $TARGET_DIR"
# line-tables-only: reports name file and line in the module; legacy symbol
# mangling: libasan's symbolizer (gcc's) demangles it, not Rust's v0 scheme.
RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes -Csymbol-mangling-version=legacy -Zunstable-options" \
NGX_CFLAGS="-O1 -g -fsanitize=address -fno-omit-frame-pointer -DNGX_DEBUG_PALLOC=1" \
NGX_LDFLAGS="-fsanitize=address" \
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
CARGO_TARGET_DIR=$TARGET_DIR \
  cargo "$TOOLCHAIN" build --release --target "$TRIPLE" \
  --message-format=json-render-diagnostics >"$OUT/cargo-build.json"
cp "$TARGET_DIR/$TRIPLE/release/lib$MODULE.so" "$OUT/$MODULE.so"
scripts/find-nginx.sh "$OUT/cargo-build.json" "$OUT/nginx"
[ -x "$OUT/nginx" ] || { echo "asan: no nginx binary was built" >&2; exit 1; }
# (grep -c, not grep -q: under pipefail nm's SIGPIPE would fail the test.)
if [ "$(nm -D "$OUT/nginx" | grep -c ' __asan_init$')" -eq 0 ]; then
  echo "asan: $OUT/nginx is not built with AddressSanitizer" >&2
  exit 1
fi
if [ "$(nm -D "$OUT/$MODULE.so" | grep -c ' U __asan_report_')" -eq 0 ]; then
  echo "asan: $OUT/$MODULE.so is not instrumented" >&2
  exit 1
fi
built=$(date +%s)
echo "asan: built in $((built - start))s ($("$OUT/nginx" -v 2>&1))"

# Writable by the workers, which run as nobody when the suite runs as root.
logs=$(mktemp -d /tmp/oauth2-asan.XXXXXX)
chmod 1777 "$logs"
trap 'rm -rf "$logs"' EXIT

# halt_on_error (the default) and abort_on_error: the first error ends the
# process with SIGABRT, which nginx's master logs as a worker crash.
# detect_stack_use_after_return: also stack frames used after they returned.
# detect_leaks=0: see the note in README.md (nginx's own exit paths).
export ASAN_OPTIONS="log_path=$logs/asan:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1:detect_leaks=0${ASAN_EXTRA_OPTIONS:+:$ASAN_EXTRA_OPTIONS}"
export TEST_NGINX_BINARY=$PWD/$OUT/nginx
export TEST_NGINX_MODULE=$PWD/$OUT/$MODULE.so

[ $# -gt 0 ] || set -- -j2 -r t/
echo "asan: prove $* (ASAN_OPTIONS=$ASAN_OPTIONS)"
status=0
prove "$@" || status=$?
finished=$(date +%s)

rm -rf "$OUT/reports"
reports=$(find "$logs" -type f -name 'asan.*' | sort)
if [ -n "$reports" ]; then
  mkdir -p "$OUT/reports"
  for report in $reports; do
    cp "$report" "$OUT/reports/"
    echo "==== $report"
    cat "$report"
  done
  echo "asan: $(echo "$reports" | wc -l) AddressSanitizer report(s), kept in $OUT/reports/" >&2
  status=1
fi
echo "asan: build $((built - start))s, suite $((finished - built))s"
if [ "$status" -ne 0 ]; then
  echo "asan: FAILED" >&2
  exit 1
fi
echo "asan: the suite passed, 0 AddressSanitizer reports"
