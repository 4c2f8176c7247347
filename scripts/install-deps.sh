#!/usr/bin/env bash
# Installs what chatd needs to build, run and test, and nothing already present.
# Usage: scripts/install-deps.sh [build|test|bench|fuzz]   (default: build)
set -euo pipefail
what=${1:-build}

build_pkgs=(g++ cmake ninja-build pkg-config ccache
            libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
            libhiredis-dev librdkafka-dev libsqlite3-dev libssl-dev liburing-dev nodejs npm)
test_pkgs=(libgtest-dev redis-server chromium default-jdk-headless maven
           fonts-nanum fonts-noto-color-emoji  # Korean and emoji glyphs for browser screenshots
           dpkg-dev systemd  # the .deb test: dpkg-shlibdeps for its Depends, systemd-analyze for the unit
           iproute2          # ss: the keepalive test reads chatd's socket timers
           haproxy           # the load balancer test (deploy/haproxy.cfg in front of 3 nodes)
           clang libclang-rt-14-dev)  # the fuzz targets run in CI (ctest -L fuzz): libFuzzer
bench_pkgs=(libbenchmark-dev rabbitmq-server linux-perf)
# libFuzzer ships with clang's compiler-rt (CHATD_FUZZ=ON); `test` has them too.
fuzz_pkgs=(clang libclang-rt-14-dev)

pkgs=("${build_pkgs[@]}")
case "$what" in
  build) ;;
  test)  pkgs+=("${test_pkgs[@]}") ;;
  bench) pkgs+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  fuzz)  pkgs+=("${fuzz_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|bench|fuzz]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  # node, npm, java and mvn may come from outside Debian on some machines: accept them if on PATH.
  case "$p" in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    default-jdk-headless) command -v javac >/dev/null && continue ;;  # Kafka runs on it, javaclients compile
    maven) command -v mvn >/dev/null && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Autobahn|Testsuite (ctest -L conformance) from PyPI for pyenv's Python 2.7, cached outside
# git; where there is no Python 2.7 the test reports itself skipped and says why.
if [ "$what" = test ] || [ "$what" = bench ]; then
  "$(dirname "$0")/../tests/conformance/autobahn.sh" install || echo "install-deps: Autobahn not installed (see above)"
  # stomp.py for python3 (tests/integration/stomp_py.test.mjs), cached outside git the same way.
  "$(dirname "$0")/../tests/integration/pyclients/install.sh" install || echo "install-deps: stomp.py not installed (see above)"
  # Spring's STOMP client (tests/integration/spring_client.test.mjs), built from Maven Central.
  "$(dirname "$0")/../tests/integration/javaclients/install.sh" install || echo "install-deps: the Spring client not built (see above)"
fi
