#!/usr/bin/env bash
# make deb: packages the module that `make debian` built against Debian's
# nginx (objs/debian/) as objs/libnginx-mod-http-auth-oauth2-token_VERSION_ARCH.deb,
# laid out like Debian's own libnginx-mod-* packages:
#
#   /usr/lib/nginx/modules/ngx_http_auth_oauth2_token_module.so   (stripped)
#   /usr/share/nginx/modules-available/mod-http-auth-oauth2-token.conf
#   /etc/nginx/modules-enabled/50-mod-http-auth-oauth2-token.conf (postinst's link)
#   /usr/share/doc/libnginx-mod-http-auth-oauth2-token/           (docs, examples,
#                                                                  copyright, changelog)
#
# Depends: the nginx ABI the installed nginx Provides (nginx-abi-1.22.1-7 on
# Debian 12; must match nginx-dev's, which the module was compiled against)
# plus what dpkg-shlibdeps finds for the libraries the .so links. The version
# is Cargo.toml's, with Debian revision DEB_REVISION (default 1). Built with
# dpkg's own tools (dpkg-shlibdeps, dpkg-gencontrol, dpkg-deb), no debhelper,
# no fakeroot (--root-owner-group); lintian runs last unless LINTIAN=0.
# The packaging files are in packaging/debian/.
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=libnginx-mod-http-auth-oauth2-token
module=ngx_http_auth_oauth2_token_module
so=objs/debian/$module.so
pkgdir=packaging/debian
stage=objs/deb
root=$stage/root
doc=$root/usr/share/doc/$pkg

die() { echo "deb: $*" >&2; exit 1; }

[ -f "$so" ] || die "$so missing: run make debian first"
for tool in dpkg-deb dpkg-gencontrol dpkg-shlibdeps dpkg-parsechangelog strip; do
  command -v "$tool" >/dev/null || die "$tool not found (packages dpkg-dev, binutils)"
done

# ---- version: Cargo.toml's [package] version, Debian-ised ------------------------
upstream=$(awk '/^\[/{p=($0=="[package]")} p && /^version *=/ {gsub(/^version *= *"|".*$/,""); print; exit}' Cargo.toml)
[ -n "$upstream" ] || die "no [package] version in Cargo.toml"
# semver pre-release 1.0.0-rc.1 sorts before 1.0.0; Debian needs 1.0.0~rc.1 for that.
upstream=${upstream/-/\~}
version=$upstream-${DEB_REVISION:-1}

# ---- the nginx ABI -------------------------------------------------------------------
# Debian's nginx Provides nginx-abi-<upstream>-<n>; every module package Depends on it,
# so apt refuses to keep a module next to an nginx it cannot load into. dh_nginx reads
# the same name from nginx-dev's debian/libnginx-mod.abisubstvars: the module must have
# been compiled from a source tree of that ABI, so the copy make debian compiled against
# (objs/debian/nginx-src/, made once per nginx version) and nginx-dev must agree with it.
abi=$(dpkg-query -W -f='${Provides}' nginx 2>/dev/null | tr ',' '\n' | sed -n 's/^ *\(nginx-abi-[^ ]*\).*/\1/p' | head -n1)
[ -n "$abi" ] || die "the installed nginx package Provides no nginx-abi-*: install Debian's nginx"
for tree in /usr/share/nginx/src objs/debian/nginx-src; do
  f=$tree/debian/libnginx-mod.abisubstvars
  [ -f "$f" ] || continue
  tree_abi=$(sed -n 's/^nginx:abi=//p' "$f")
  [ "$tree_abi" = "$abi" ] ||
    die "nginx Provides $abi but $tree is $tree_abi: install nginx and nginx-dev of the same version, rm -rf objs/debian, make debian"
done

# ---- staging tree ----------------------------------------------------------------------
umask 022
rm -rf "$stage"
mkdir -p "$stage/debian" "$root/DEBIAN" "$root/usr/lib/nginx/modules" \
         "$root/usr/share/nginx/modules-available" "$doc/examples"

# dpkg-gencontrol and dpkg-shlibdeps work on a debian/ directory: a copy of
# packaging/debian/ with a changelog entry for this version on top if the
# packaging's changelog has none yet (a version bump in Cargo.toml alone).
cp "$pkgdir/control" "$stage/debian/control"
changelog_version=$(dpkg-parsechangelog -l "$pkgdir/changelog" -SVersion)
if [ "$changelog_version" = "$version" ]; then
  cp "$pkgdir/changelog" "$stage/debian/changelog"
else
  echo "deb: warning: $pkgdir/changelog ends at $changelog_version, not $version; adding a generated entry (add a real one)" >&2
  maint=$(sed -n 's/^Maintainer: //p' "$pkgdir/control")
  when=$(git log -1 --format=%aD 2>/dev/null || date -R)
  {
    printf '%s (%s) UNRELEASED; urgency=medium\n\n' "$pkg" "$version"
    printf '  * Build of upstream version %s (no packaging changelog entry yet).\n\n' "$upstream"
    printf ' -- %s  %s\n\n' "$maint" "$when"
    cat "$pkgdir/changelog"
  } >"$stage/debian/changelog"
fi
# Reproducible: every file at the changelog's date (below), no gzip timestamps.
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$stage/debian/changelog" -STimestamp)
export SOURCE_DATE_EPOCH

# The module, stripped as dh_strip does.
install -m 0644 "$so" "$root/usr/lib/nginx/modules/$module.so"
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
  "$root/usr/lib/nginx/modules/$module.so"
install -m 0644 "$pkgdir/mod-http-auth-oauth2-token.conf" "$root/usr/share/nginx/modules-available/"

# Documentation: files over 4 KiB compressed (as dh_compress does), examples as they are.
for f in README.md DIRECTIVES.md SECURITY.md ARCHITECTURE.md; do
  install -m 0644 "$f" "$doc/$f"
  if [ "$(stat -c %s "$f")" -gt 4096 ]; then gzip -9n "$doc/$f"; fi
done
install -m 0644 nginx-conf/*.conf "$doc/examples/"
install -D -m 0644 "$pkgdir/lintian-overrides" "$root/usr/share/lintian/overrides/$pkg"
gzip -9nc "$stage/debian/changelog" >"$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"

# debian/copyright, with a paragraph per Rust crate linked into the .so: the crates
# cargo tree reports for the build's features on the host target, without build
# dependencies and proc-macros (they run at compile time, nothing of them is linked).
host=$(rustc -vV | sed -n 's/^host: //p')
cargo tree -e normal,no-proc-macro --no-default-features --features export-modules \
  --target "$host" --prefix none --no-dedupe -f '{p}' >"$stage/crates.txt"
cargo metadata --format-version 1 --no-default-features --features export-modules \
  --filter-platform "$host" >"$stage/metadata.json"
python3 - "$pkgdir/copyright" "$stage/crates.txt" "$stage/metadata.json" >"$doc/copyright" <<'PY'
import json, os, re, sys

static, crates_txt, metadata = sys.argv[1:]
text = open(static, encoding="utf-8").read().rstrip("\n") + "\n"
paras = text.split("\n\n")
defined = {p.split("\n", 1)[0][len("License: "):].strip() for p in paras if p.startswith("License: ")}

pkgs = {(p["name"], p["version"]): p for p in json.load(open(metadata))["packages"]}
root_name = None
wanted = []
for line in open(crates_txt):
    m = re.match(r"(\S+) v(\S+)", line.strip())
    if not m:
        continue
    key = (m.group(1), m.group(2))
    if root_name is None:
        root_name = key  # the first line is the module itself, covered by Files: *
        continue
    if key not in wanted:
        wanted.append(key)

def dep5_license(spdx, name):
    s = spdx.replace("/", " OR ")
    # "(A OR B) AND C" -> "A or B, and C": DEP-5 has no parentheses, its lowest
    # precedence operator is ", and".
    m = re.fullmatch(r"\(([^()]*)\) AND (.*)", s)
    if m:
        s = m.group(1) + ", and " + m.group(2)
    if "(" in s or ")" in s:
        sys.exit(f"deb: cannot express the license of {name} ({spdx}) in DEP-5: extend scripts/build-deb.sh")
    return re.sub(r" OR ", " or ", re.sub(r" AND ", " and ", s))

def notices(pkg):
    d = os.path.dirname(pkg["manifest_path"])
    found = []
    for f in sorted(os.listdir(d)):
        if not re.match(r"(?i)(licen[cs]e|copying|unlicense|copyright)", f):
            continue
        try:
            lines = open(os.path.join(d, f), encoding="utf-8", errors="replace").read().splitlines()
        except IsADirectoryError:
            continue
        for l in lines:
            l = l.strip()
            if re.match(r"(?i)copyright\s*(\(c\)|©)?\s*\d{4}", l) and l not in found:
                found.append(l)
    found = list(dict.fromkeys(re.sub(r"(?i)^copyright\s*(\(c\)|©)?\s*", "", l) for l in found))
    if not found:
        authors = [re.sub(r"\s*<[^>]*>", "", a) for a in pkg.get("authors") or []]
        found = [", ".join(authors) if authors else f"the {pkg['name']} authors"]
    return found

out = []
for key in wanted:
    pkg = pkgs.get(key)
    if pkg is None:
        sys.exit(f"deb: {key[0]} {key[1]} is not in cargo metadata")
    spdx = pkg.get("license")
    if not spdx:
        sys.exit(f"deb: {key[0]} {key[1]} declares no SPDX license: write its paragraph by hand")
    lic = dep5_license(spdx, key[0])
    for short in re.split(r",? (?:or|and) ", lic):
        if short not in defined:
            sys.exit(f"deb: {key[0]} is under {short}, which {static} has no License paragraph for")
    cr = notices(pkg)
    src = pkg.get("repository") or f"https://crates.io/crates/{key[0]}"
    out.append(f"Files: vendor/{key[0]}-{key[1]}/*\nCopyright: " + "\n ".join(cr) +
               f"\nLicense: {lic}\nComment: crates.io {key[0]} {key[1]}, {src}")

# Files paragraphs go before the stand-alone License paragraphs.
first_license = next(i for i, p in enumerate(paras) if p.startswith("License: "))
paras[first_license:first_license] = out
sys.stdout.write("\n\n".join(p.rstrip("\n") for p in paras) + "\n")
PY
chmod 0644 "$doc/copyright"

# ---- control ------------------------------------------------------------------------------
for script in postinst prerm postrm; do
  install -m 0755 "$pkgdir/$script" "$root/DEBIAN/$script"
done
(
  cd "$stage"
  dpkg-shlibdeps -Tdebian/substvars "root/usr/lib/nginx/modules/$module.so"
  dpkg-gencontrol -p"$pkg" -Proot -Tdebian/substvars -V"nginx:abi=$abi"
)
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
   xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

# Every file at the changelog's date: the same tree gives the same .deb.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

arch=$(sed -n 's/^Architecture: //p' "$root/DEBIAN/control")
deb=objs/${pkg}_${version}_${arch}.deb
rm -f objs/"${pkg}"_*.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "built $deb ($(sed -n 's/^Depends: //p' "$root/DEBIAN/control"))"

if [ "${LINTIAN:-1}" != 0 ]; then
  command -v lintian >/dev/null || die "lintian not found (make deb installs it; LINTIAN=0 skips it)"
  # Errors and warnings fail the build; info and pedantic tags are shown only. What
  # remains is justified in packaging/debian/lintian-overrides (shipped, as Debian does).
  rc=0
  report=$(lintian --display-level '>=pedantic' --fail-on error,warning "$deb" 2>&1) || rc=$?
  grep -v '^running with root privileges is not recommended!$' <<<"$report" || true
  [ "$rc" -eq 0 ] || die "lintian: errors or warnings in $deb (above)"
  echo "lintian: no errors or warnings"
fi
