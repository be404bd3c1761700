#!/usr/bin/env bash
# Installs the Debian packages the build and tests need, if any is missing.
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -euo pipefail

missing=()
for pkg in "$@"; do
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

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo (Rust >= 1.81) not found; install it with rustup (https://rustup.rs) and retry" >&2
  exit 1
fi
