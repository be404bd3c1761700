#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, if any is missing.
# As root it runs apt-get; otherwise it prints the exact command and fails.
# A word pypi:NAME==VERSION is a PyPI package instead, installed (after the
# Debian packages, with python3-pip's `python3 -m pip`) into objs/pypi of this
# tree with --target: nothing of the system's Python changes, no root needed.
set -euo pipefail

debian=()
pypi=()
for word in "$@"; do
  case "$word" in
    pypi:*) pypi+=("${word#pypi:}") ;;
    *) debian+=("$word") ;;
  esac
done

missing=()
for pkg in ${debian[@]+"${debian[@]}"}; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    echo "deps: installing ${missing[*]}"
    sh -c "$cmd" >/dev/null
  else
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    echo "deps: run as root:  $cmd" >&2
    exit 1
  fi
fi

if [ ${#pypi[@]} -gt 0 ]; then
  target="$(cd "$(dirname "$0")/.." && pwd)/objs/pypi"
  for spec in "${pypi[@]}"; do
    name="${spec%%==*}" version="${spec#*==}"
    # Installed already when its dist-info of that version is there (the
    # dist-info's name has "_" where the package's has "-").
    [ -d "$target/${name//-/_}-$version.dist-info" ] && continue
    echo "deps: installing $spec from PyPI into objs/pypi"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --root-user-action=ignore \
      --target "$target" "$spec"
  done
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo (Rust >= 1.81) not found; install it with rustup (https://rustup.rs) and retry" >&2
  exit 1
fi
