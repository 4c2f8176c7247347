#!/usr/bin/env bash
# Builds SpringClients (pom.xml: Spring's STOMP client from Maven Central) into a cache outside
# git, with its classpath in <dir>/classpath.
# Usage: install.sh install   (idempotent)   |   install.sh site   (prints the directory)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hash=$(cd "$here" && find pom.xml src -type f | sort | xargs sha256sum | sha256sum | cut -c1-12)
site="${XDG_CACHE_HOME:-$HOME/.cache}/chatd-javaclients/$hash"

case "${1:-install}" in
  site) echo "$site" ;;
  install)
    if [ -f "$site/.installed" ]; then exit 0; fi
    command -v mvn >/dev/null && command -v javac >/dev/null ||
      { echo "javaclients: needs mvn and a JDK (scripts/install-deps.sh test installs them)" >&2; exit 1; }
    echo "javaclients: building Spring's STOMP client check into $site"
    rm -rf "$site" && mkdir -p "$site"
    cp -r "$here/pom.xml" "$here/src" "$site/"
    (cd "$site" && mvn -q -B -DskipTests package >build.log 2>&1 &&
       mvn -q -B dependency:build-classpath -Dmdep.outputFile=deps.txt >>build.log 2>&1) ||
      { tail -n 30 "$site/build.log" >&2; exit 1; }
    echo "$site/target/classes:$(cat "$site/deps.txt")" >"$site/classpath"
    touch "$site/.installed" ;;
  *) echo "usage: $0 [install|site]" >&2; exit 2 ;;
esac
