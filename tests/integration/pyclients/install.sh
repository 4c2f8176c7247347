#!/usr/bin/env bash
# Installs requirements.txt from PyPI for python3 into a cache outside git.
# Usage: install.sh install   (idempotent)   |   install.sh site   (prints the directory)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py_version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
req_hash=$(sha256sum "$here/requirements.txt" | cut -c1-12)
site="${XDG_CACHE_HOME:-$HOME/.cache}/chatd-pyclients/site-$py_version-$req_hash"

case "${1:-install}" in
  site) echo "$site" ;;
  install)
    if [ -f "$site/.installed" ]; then exit 0; fi
    echo "pyclients: installing $(grep -v '^#' "$here/requirements.txt" | xargs) into $site"
    rm -rf "$site" && mkdir -p "$site"
    python3 -m pip install --disable-pip-version-check --no-warn-script-location --root-user-action=ignore -q \
      --target "$site" -r "$here/requirements.txt"
    touch "$site/.installed" ;;
  *) echo "usage: $0 [install|site]" >&2; exit 2 ;;
esac
