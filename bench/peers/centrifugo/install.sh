#!/usr/bin/env bash
# Installs Centrifugo 6.9.1 from the Go module proxy into a cache outside the repository and
# prints the binary's path. Environment: BENCH_CACHE (default ~/.cache/chatd-bench).
set -euo pipefail
CACHE=${BENCH_CACHE:-$HOME/.cache/chatd-bench}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
export GOPATH=$CACHE/gopath GOMODCACHE=$CACHE/gopath/pkg/mod GOCACHE=$CACHE/gocache GOBIN=$CACHE/bin
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
BIN=$GOBIN/centrifugo
# `go install` leaves the version string empty (the release sets it by -ldflags): a stamp says which.
if [[ ! -x $BIN || $(cat "$BIN.version" 2>/dev/null) != v6.9.1 ]]; then
  mkdir -p "$GOBIN"
  "$GO" install github.com/centrifugal/centrifugo/v6@v6.9.1 >&2
  echo v6.9.1 > "$BIN.version"
fi
echo "$BIN"
