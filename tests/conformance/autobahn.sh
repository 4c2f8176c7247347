#!/usr/bin/env bash
# Autobahn|Testsuite's fuzzingclient against ws_echo (chatd's net::Server and WsSession, the
# session code /ws-stomp runs on, with a test-only echo application): cases 1-7, 9 and 10. Passes
# when no case is FAILED (in behavior or in closing behavior); NON-STRICT, INFORMATIONAL and
# UNIMPLEMENTED are allowed (Autobahn's own verdicts for what RFC 6455 leaves open, e.g. failing
# fast on bad UTF-8 rather than at the message's end). Prints the counts per case group.
#
#   tests/conformance/autobahn.sh install           # PyPI autobahntestsuite for Python 2.7
#   tests/conformance/autobahn.sh WS_ECHO OUT_DIR [CASES...]   # run (default cases below)
#
# autobahntestsuite runs on Python 2.7 only, which Debian 12 no longer packages: pyenv's 2.7.18
# (PYENV_VERSION) is used, the package installed with pip --target into a cache outside git
# (AUTOBAHN_CACHE). Without Python 2.7 the run is skipped (exit 77), saying so.
set -uo pipefail
PY_VERSION=${AUTOBAHN_PYTHON_VERSION:-2.7.18}
CACHE=${AUTOBAHN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chatd-autobahn}
SITE=$CACHE/site-$PY_VERSION
PIN=autobahntestsuite==25.10.1

python27() { PYENV_VERSION=$PY_VERSION python2.7 "$@"; }

install() {
  if ! python27 -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
    echo "autobahn: no Python 2.7 (pyenv $PY_VERSION) here; autobahntestsuite needs it" >&2
    return 77
  fi
  if [ -f "$SITE/.installed-$PIN" ]; then return 0; fi
  # pip for 2.7: pyenv's build carries one; else ensurepip (bundled, no network).
  python27 -m pip --version >/dev/null 2>&1 || python27 -m ensurepip --user >/dev/null || return 1
  rm -rf "$SITE" && mkdir -p "$SITE"
  echo "autobahn: installing $PIN for Python $PY_VERSION into $SITE"
  python27 -m pip install --disable-pip-version-check --no-warn-script-location -q --target "$SITE" "$PIN" || return 1
  touch "$SITE/.installed-$PIN"
}

if [ "${1:-}" = install ]; then install; exit $?; fi

ECHO=${1:?usage: autobahn.sh WS_ECHO OUT_DIR [CASES...]}
OUT=${2:?usage: autobahn.sh WS_ECHO OUT_DIR [CASES...]}
shift 2
CASES=("$@")
((${#CASES[@]})) || CASES=("1.*" "2.*" "3.*" "4.*" "5.*" "6.*" "7.*" "9.*" "10.*")

install
rc=$?
if [ $rc = 77 ]; then echo "SKIPPED: Autobahn conformance needs Python 2.7 (pyenv $PY_VERSION)"; exit 77; fi
[ $rc = 0 ] || { echo "autobahn: could not install $PIN" >&2; exit 1; }

rm -rf "$OUT" && mkdir -p "$OUT"
# A free port: the kernel picks one, we hand it to ws_echo.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ECHO" --port "$PORT" > "$OUT/ws_echo.log" 2>&1 &
ECHO_PID=$!
trap 'kill $ECHO_PID 2>/dev/null; wait $ECHO_PID 2>/dev/null' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

python3 - "$OUT" "$PORT" "${CASES[@]}" <<'PY'
import json, sys
out, port, cases = sys.argv[1], sys.argv[2], sys.argv[3:]
json.dump({"outdir": out + "/reports", "servers": [{"agent": "chatd", "url": "ws://127.0.0.1:%s" % port}],
           "cases": cases, "exclude-cases": [], "exclude-agent-cases": {}}, open(out + "/fuzzingclient.json", "w"))
PY

start=$(date +%s)
(cd "$OUT" && timeout 800 env PYENV_VERSION=$PY_VERSION python2.7 -c "
import site, sys
site.addsitedir('$SITE')
sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', 'fuzzingclient.json']
from autobahntestsuite.wstest import run
run()" > wstest.log 2>&1)
wrc=$?
echo "autobahn: wstest ran $(( $(date +%s) - start )) s (exit $wrc); log in $OUT/wstest.log"

python3 - "$OUT/reports/index.json" <<'PY'
import json, sys, collections
try:
    index = json.load(open(sys.argv[1]))
except Exception as e:
    print("autobahn: no report (%s)" % e); sys.exit(1)
rows = collections.OrderedDict()
failed = []
for agent, cases in index.items():
    for cid, r in sorted(cases.items(), key=lambda kv: [int(x) for x in kv[0].split(".")]):
        group = cid.split(".")[0]
        counts = rows.setdefault(group, collections.Counter())
        counts[r["behavior"]] += 1
        counts["cases"] += 1
        if r["behavior"] == "FAILED" or r.get("behaviorClose") == "FAILED":
            failed.append("%s (%s / close %s)" % (cid, r["behavior"], r.get("behaviorClose")))
kinds = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
print("| case group | cases | " + " | ".join(kinds) + " |")
print("|---|---|" + "---|" * len(kinds))
total = collections.Counter()
for g, c in rows.items():
    total.update(c)
    print("| %s | %d | " % (g, c["cases"]) + " | ".join(str(c[k]) for k in kinds) + " |")
print("| all | %d | " % total["cases"] + " | ".join(str(total[k]) for k in kinds) + " |")
if failed:
    print("autobahn: FAILED cases: " + ", ".join(failed)); sys.exit(1)
if not total["cases"]:
    print("autobahn: no case ran"); sys.exit(1)
print("autobahn: 0 FAILED")
PY
