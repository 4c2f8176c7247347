#!/usr/bin/env bash
# The first README command: install what is missing, build, and run chatd on its embedded
# default (no Redis, no Kafka). Extra arguments go to chatd, e.g. scripts/run.sh --port 8090.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh build
scripts/build.sh
exec build/src/app/chatd "$@"
