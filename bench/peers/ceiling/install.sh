#!/usr/bin/env bash
# Builds the ceiling peer (main.go, lesismal/nbio from the Go module proxy) into a cache outside
# the repository and prints the binary's path. Environment: BENCH_CACHE (default ~/.cache/chatd-bench).
set -euo pipefail
cd "$(dirname "$0")"
CACHE=${BENCH_CACHE:-$HOME/.cache/chatd-bench}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
export GOPATH=$CACHE/gopath GOMODCACHE=$CACHE/gopath/pkg/mod GOCACHE=$CACHE/gocache GOTOOLCHAIN=local
BIN=$CACHE/bin/ceiling
if [[ ! -x $BIN || main.go -nt $BIN || go.mod -nt $BIN ]]; then
  mkdir -p "$(dirname "$BIN")"
  "$GO" build -o "$BIN" . >&2
fi
echo "$BIN"
