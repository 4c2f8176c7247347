#!/usr/bin/env bash
# Builds chatd into build/ and the browser pages' vendor bundles into web/assets/vendor/.
# Assumes scripts/install-deps.sh has run. Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache hits across clones: paths under the repository are hashed relative to it.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"

# npm ci only when the lock file changed since the last install (it wipes node_modules).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  node scripts/build-web.mjs >/dev/null
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCHATD_WERROR=ON "$@" >/dev/null
ninja -C build
