#!/usr/bin/env bash
# Builds the Debian package into build-pkg/: chatd for prefix /usr, stripped, with the web pages
# and the systemd unit. Assumes scripts/build.sh has run (it builds the pages' vendor bundles).
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
# The vendor bundles are part of the pages; refuse to package pages that cannot chat.
[ -f web/assets/vendor/stomp.umd.min.js ] && [ -f web/assets/vendor/sockjs.min.js ] ||
  { echo "package: web/assets/vendor is empty; run scripts/build.sh first" >&2; exit 1; }
cmake -S . -B build-pkg -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
  -DBUILD_TESTING=OFF -DCHATD_WERROR=ON >/dev/null
ninja -C build-pkg chatd >/dev/null
(cd build-pkg && cpack -G DEB >/dev/null)
ls -1t build-pkg/chatd_*.deb | head -n 1
