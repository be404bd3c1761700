#!/usr/bin/env bash
# make e2e-deb: the Debian package from `make deb` through its whole life on
# this machine, as root, against Debian's own nginx:
#
#   1. apt-get install ./objs/libnginx-mod-http-auth-oauth2-token_*.deb (which
#      installs nginx too if it is missing); the module's files are where
#      dpkg -L says, the modules-enabled link points at the load_module snippet,
#      `nginx -t` passes with the system nginx.conf, which now loads the module,
#      and a directive of the module is accepted through that snippet alone;
#   2. the whole end-to-end suite against /usr/sbin/nginx and the installed .so;
#   3. apt-get remove: the files are gone, the link is renamed *.removed (as
#      Debian's own module packages do; nginx.conf's "modules-enabled/*.conf"
#      does not match it), the package stays in state config-files, nginx -t;
#   4. reinstall (the link comes back from *.removed) and remove again;
#   5. apt-get purge: nothing of the package is left, nginx -t.
#
# Exits non-zero at the first step that fails; the package is then purged
# (E2E_DEB_KEEP=1 leaves it installed for a look). Starting or reloading the
# system nginx service is left to apt and nginx's own trigger, as on any
# install; the suite runs nginx instances of its own on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=libnginx-mod-http-auth-oauth2-token
module=ngx_http_auth_oauth2_token_module
so=/usr/lib/nginx/modules/$module.so
available=/usr/share/nginx/modules-available/mod-http-auth-oauth2-token.conf
enabled=/etc/nginx/modules-enabled/50-mod-http-auth-oauth2-token.conf
log=objs/deb/e2e-deb.log
export DEBIAN_FRONTEND=noninteractive

step() { printf '\ne2e-deb: == %s\n' "$*"; }
ok()   { echo "e2e-deb: ok: $*"; }
fail() { echo "e2e-deb: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (apt-get install/remove/purge)"
shopt -s nullglob
debs=(objs/"${pkg}"_*.deb)
shopt -u nullglob
[ ${#debs[@]} -eq 1 ] || fail "expected one objs/${pkg}_*.deb, found ${#debs[@]}: run make deb"
deb=${debs[0]}
version=$(dpkg-deb -f "$deb" Version)
mkdir -p "$(dirname "$log")"
: >"$log"

status() { dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | tr -d ' ' || true; }
apt_get() {  # apt-get with its chatter in the log, shown on failure
  echo "+ apt-get $*" >>"$log"
  apt-get -o Dpkg::Use-Pty=0 "$@" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; fail "apt-get $* (log: $log)"; }
}
nginx_t() {  # nginx -t with the system configuration
  local out
  out=$(nginx -t 2>&1) || { echo "$out" >&2; fail "nginx -t ($1)"; }
  ok "nginx -t ($1)"
}

finished=0
cleanup() {
  if [ "$finished" -eq 0 ] && [ -n "$(status)" ] && [ "${E2E_DEB_KEEP:-0}" != 1 ]; then
    echo "e2e-deb: purging $pkg after the failure (E2E_DEB_KEEP=1 keeps it)" >&2
    apt-get -o Dpkg::Use-Pty=0 purge -y "$pkg" >>"$log" 2>&1 || true
  fi
}
trap cleanup EXIT

if [ -n "$(status)" ]; then
  step "a previous $pkg is on the machine (state $(status)): purging it first"
  apt_get purge -y "$pkg"
fi
[ ! -e "$enabled" ] && [ ! -L "$enabled" ] && [ ! -L "$enabled.removed" ] ||
  fail "$enabled (or .removed) exists without the package: left by hand? remove it first"
had_nginx=$(dpkg-query -W -f='${Version}' nginx 2>/dev/null || true)

# ---- 1. install ---------------------------------------------------------------------------------
step "apt-get install ./$deb (nginx: ${had_nginx:-not installed, apt brings it})"
apt_get install -y "./$deb"
[ "$(status)" = ii ] || fail "$pkg is in state '$(status)' after install, not ii"
[ "$(dpkg-query -W -f='${Version}' "$pkg")" = "$version" ] || fail "installed version is not $version"
ok "$pkg $version installed, nginx $(dpkg-query -W -f='${Version}' nginx)"

mapfile -t files < <(dpkg -L "$pkg")
echo "e2e-deb: dpkg -L $pkg:"
printf '    %s\n' "${files[@]}"
for f in "$so" "$available" "/usr/share/doc/$pkg/copyright" "/usr/share/doc/$pkg/changelog.Debian.gz"; do
  printf '%s\n' "${files[@]}" | grep -qxF "$f" || fail "dpkg -L does not list $f"
  [ -f "$f" ] || fail "$f is listed but missing"
done
grep -qxF "load_module modules/$module.so;" "$available" || fail "$available has no load_module line"
[ -L "$enabled" ] && [ "$(readlink "$enabled")" = "$available" ] ||
  fail "$enabled is not a link to $available"
ok "$so, $available, and $enabled -> $available"

nginx_t "system nginx.conf with the module enabled"
# The system configuration as nginx parses it includes the snippet.
dump=$(nginx -T 2>/dev/null) || fail "nginx -T"
grep -qxF "load_module modules/$module.so;" <<<"$dump" ||
  fail "nginx -T: the system configuration does not load the module"
ok "nginx -T: the system configuration loads modules/$module.so"

# One of the module's directives, known through the enabled snippet and only through it.
conf=$(mktemp -d)
trap 'rm -rf "$conf"; cleanup' EXIT
for with in yes no; do
  {
    [ $with = yes ] && echo "include /etc/nginx/modules-enabled/*.conf;"
    cat <<CONF
pid $conf/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:1;
        location / { auth_oauth2_token_introspect off; }
    }
}
CONF
  } >"$conf/nginx-$with.conf"
done
out=$(nginx -t -c "$conf/nginx-yes.conf" 2>&1) || { echo "$out" >&2; fail "nginx -t: auth_oauth2_token_introspect through modules-enabled"; }
out=$(nginx -t -c "$conf/nginx-no.conf" 2>&1) && fail "nginx -t accepted auth_oauth2_token_introspect without the module"
grep -q 'unknown directive "auth_oauth2_token_introspect"' <<<"$out" || { echo "$out" >&2; fail "without the module: not the expected error"; }
ok "auth_oauth2_token_introspect is accepted with modules-enabled/*.conf, unknown without"

# ---- 2. the end-to-end suite ----------------------------------------------------------------------
# E2E_DEB_TESTS narrows it (e.g. "t/010-introspection.t") when debugging this script.
read -ra tests <<<"${E2E_DEB_TESTS:--r t/}"
step "prove -j2 ${tests[*]} against /usr/sbin/nginx and $so"
TEST_NGINX_BINARY=/usr/sbin/nginx TEST_NGINX_MODULE=$so prove -j2 "${tests[@]}" ||
  fail "the end-to-end suite failed against the installed module"

# ---- 3. remove ----------------------------------------------------------------------------------
step "apt-get remove $pkg"
apt_get remove -y "$pkg"
[ "$(status)" = rc ] || fail "$pkg is in state '$(status)' after remove, not rc (config-files)"
for f in "${files[@]}"; do
  [ -d "$f" ] && continue   # directories may be shared (/usr/lib/nginx/modules, ...)
  [ ! -e "$f" ] || fail "$f is still there after remove"
done
[ ! -e "$enabled" ] && [ ! -L "$enabled" ] || fail "$enabled is still there after remove"
[ -L "$enabled.removed" ] || fail "$enabled.removed missing after remove (prerm renames the link)"
ok "files gone; state rc; $(basename "$enabled").removed left dangling, as Debian's modules do"
nginx_t "after remove"
dump=$(nginx -T 2>/dev/null) || fail "nginx -T after remove"
! grep -qF "$module" <<<"$dump" || fail "nginx -T still mentions $module after remove"
ok "nginx -T no longer loads the module"

# A reinstall after a remove enables the module again (postinst turns the
# *.removed link back), as Debian's module packages do; then remove it again.
step "apt-get install ./$deb again (after remove), then remove"
apt_get install -y "./$deb"
[ "$(status)" = ii ] || fail "$pkg is in state '$(status)' after the reinstall"
[ -L "$enabled" ] && [ ! -L "$enabled.removed" ] || fail "the reinstall did not restore $enabled from .removed"
nginx_t "reinstalled, enabled again"
apt_get remove -y "$pkg"
[ "$(status)" = rc ] && [ -L "$enabled.removed" ] || fail "second remove: state '$(status)', or no .removed link"
ok "reinstall restored the link, second remove renamed it again"

# ---- 5. purge -----------------------------------------------------------------------------------
step "apt-get purge $pkg"
apt_get purge -y "$pkg"
[ -z "$(status)" ] || [ "$(status)" = un ] || fail "$pkg is in state '$(status)' after purge"
left=()
for f in "${files[@]}" "$enabled" "$enabled.removed" "/usr/share/doc/$pkg" "/usr/share/lintian/overrides/$pkg"; do
  case $f in /usr/share/doc/"$pkg"*|/usr/share/lintian/overrides/"$pkg"|"$enabled"*) ;; *) [ -d "$f" ] && continue ;; esac
  if [ -e "$f" ] || [ -L "$f" ]; then left+=("$f"); fi
done
[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
# The directories go too unless another package still has files in them (nginx
# itself ships none in /usr/lib/nginx/modules on Debian 12).
echo "e2e-deb: after purge:"
for d in /etc/nginx/modules-enabled /usr/share/nginx/modules-available /usr/lib/nginx/modules; do
  if [ -d "$d" ]; then
    echo "    $d: $(ls -A "$d" | tr '\n' ' ')"
  else
    echo "    $d: no such directory"
  fi
done
ok "nothing of $pkg left: no .so, no modules-available file, no modules-enabled link"
nginx_t "after purge"

finished=1
echo
echo "e2e-deb: PASS ($deb: install, nginx -t, the suite, remove, purge)"
