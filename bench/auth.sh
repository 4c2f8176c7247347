#!/usr/bin/env bash
# --auth jwt's cost, measured against --auth none in one sitting (issue 10):
#   - CONNECT rate on one core: N connections open and CONNECT (each with a token in `passcode`
#     for jwt), counted per server CPU-second spent connecting (load-independent) and per
#     wall-second (load-dependent, shown for reference);
#   - idle memory per connection once they are all held.
# Modes: none, HS256 (--jwt-secret-file), RS256 (2048-bit key in a JWKS, by kid). Each rep runs
# every mode on a fresh chatd pinned to core 0 (--threads 1), the generator on core 1; modes
# alternate within a rep so load drifts hit all alike; the table holds medians.
#
#   bench/auth.sh [--conns N] [--reps R] [--no-write]
# Writes the table between the "auth-bench" markers in BENCHMARKS.md (unless --no-write).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CONNS=5000 REPS=3 WRITE=1
while (($#)); do
  case $1 in
    --conns) CONNS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --no-write) WRITE=0; shift ;;
    *) echo "usage: bench/auth.sh [--conns N] [--reps R] [--no-write]" >&2; exit 2 ;;
  esac
done
CHATD=${CHATD_BIN:-$ROOT/build/src/app/chatd}
LOADGEN=$ROOT/build-bench/loadgen/chatd_loadgen
[[ -x $CHATD ]] || { echo "no chatd at $CHATD: run scripts/build.sh (or set CHATD_BIN)" >&2; exit 1; }
if [[ ! -x $LOADGEN ]]; then
  cmake -S bench/loadgen -B build-bench/loadgen -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C build-bench/loadgen chatd_loadgen >/dev/null
fi
export CHATD_MAX_CONNECTIONS_PER_ADDRESS=0  # one generator on few loopback addresses

WORK=$(mktemp -d /tmp/chatd-auth-bench.XXXXXX)
SRV_PID=""
cleanup() {
  if [[ -n $SRV_PID ]]; then kill -9 "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Keys and tokens (node:crypto): an HS256 secret, an RSA key published as a one-key JWKS.
node --input-type=module - "$WORK" <<'JS'
import { createHmac, generateKeyPairSync, sign, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
const dir = process.argv[2];
const b64 = (b) => Buffer.from(b).toString('base64url');
const secret = randomBytes(32).toString('hex');
writeFileSync(`${dir}/secret`, secret);
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
writeFileSync(`${dir}/jwks.json`, JSON.stringify({ keys: [{ ...rsa.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'RS256' }] }));
const claims = b64(JSON.stringify({ sub: 'bench', name: 'bench', exp: Math.floor(Date.now() / 1000) + 86400 }));
const hs = `${b64('{"alg":"HS256","typ":"JWT"}')}.${claims}`;
writeFileSync(`${dir}/hs256.jwt`, `${hs}.${b64(createHmac('sha256', secret).update(hs).digest())}`);
const rs = `${b64('{"alg":"RS256","typ":"JWT","kid":"k1"}')}.${claims}`;
writeFileSync(`${dir}/rs256.jwt`, `${rs}.${b64(sign('sha256', Buffer.from(rs), rsa.privateKey))}`);
JS

PORT=${BENCH_PORT_BASE:-23000}
RESULTS=$WORK/results.jsonl
: > "$RESULTS"

# run_mode MODE REP: one chatd, one idle run of CONNS connections.
run_mode() {
  local mode=$1 rep=$2 args=() pass=()
  case $mode in
    none) ;;
    hs256) args=(--auth jwt --jwt-secret-file "$WORK/secret"); pass=(--login bench --passcode "$(cat "$WORK/hs256.jwt")") ;;
    rs256) args=(--auth jwt --jwt-jwks-file "$WORK/jwks.json"); pass=(--login bench --passcode "$(cat "$WORK/rs256.jwt")") ;;
  esac
  PORT=$((PORT + 1))
  mkdir -p "$WORK/data-$PORT"
  taskset -c 0 "$CHATD" --port "$PORT" --address 127.0.0.1 --threads 1 --data-dir "$WORK/data-$PORT" "${args[@]}" \
    > "$WORK/chatd-$PORT.log" 2>&1 &
  SRV_PID=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  sleep 1  # start-up settles before the RSS baseline
  local json
  json=$(timeout 300 taskset -c 1 "$LOADGEN" --port "$PORT" --mode idle --conns "$CONNS" --warmup 0 --duration 3 \
           --drain 0 --connect-timeout 120 --server-pids "$SRV_PID" --label "auth/$mode" "${pass[@]}" 2>"$WORK/lg.err") ||
    { echo "auth/$mode#$rep: generator failed: $(tail -n 2 "$WORK/lg.err")" >&2; }
  [[ -n $json ]] && printf '{"mode":"%s","rep":%d,"r":%s}\n' "$mode" "$rep" "$json" >> "$RESULTS"
  kill "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
  sleep 1
}

for rep in $(seq "$REPS"); do
  for mode in none hs256 rs256; do
    echo "auth bench: rep $rep/$REPS, $mode, $CONNS connections" >&2
    run_mode "$mode" "$rep"
  done
done

TABLE=$(python3 - "$RESULTS" "$CONNS" "$REPS" <<'PY'
import json, statistics, sys
path, conns, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(l) for l in open(path) if l.strip()]
def med(mode, f):
    v = [f(r["r"]) for r in rows if r["mode"] == mode and r["r"].get("conns_held", 0) == conns]
    return (statistics.median(v), len(v)) if v else (float("nan"), 0)
cpu_rate = lambda r: r["conns_ok"] / r["server_cpu_connect_s"] if r.get("server_cpu_connect_s", -1) > 0 else float("nan")
wall_rate = lambda r: r["conns_ok"] / r["connect_s"] if r.get("connect_s", 0) > 0 else float("nan")
rss = lambda r: r["server_rss_per_conn_kb"]
base_cpu, base_rss = med("none", cpu_rate)[0], med("none", rss)[0]
print(f"| auth | runs | CONNECTs per server CPU-s | vs none | CONNECTs per wall-s | idle RSS per connection (KiB) | vs none |")
print("|---|---|---|---|---|---|---|")
for mode, label in (("none", "`--auth none`"), ("hs256", "jwt HS256"), ("rs256", "jwt RS256 (2048-bit, JWKS)")):
    c, n = med(mode, cpu_rate)
    w, _ = med(mode, wall_rate)
    m, _ = med(mode, rss)
    print(f"| {label} | {n} | {c:,.0f} | {c / base_cpu:.2f}× | {w:,.0f} | {m:.2f} | {m / base_rss:.2f}× |")
PY
)
echo "$TABLE"
if ((WRITE)); then
  python3 - "$ROOT/BENCHMARKS.md" "$CONNS" "$REPS" "$TABLE" <<'PY'
import datetime, re, sys
path, conns, reps, table = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
section = f"""<!-- auth-bench:start -->
## Authentication cost (issue 10), {datetime.date.today().isoformat()}

`bench/auth.sh --conns {conns} --reps {reps}`: chatd on one core (`--threads 1`, core 0), the
generator on core 1; {conns} connections each open a WebSocket and CONNECT (jwt: the token in
`passcode`), then are held idle. Modes alternate within each repetition; medians of {reps}. The
machine is shared and loaded while this runs, so the per-CPU-second rate and the ratios are the
figures to read; the per-wall-second rate moves with the load.

{table}
<!-- auth-bench:end -->"""
text = open(path).read()
if "<!-- auth-bench:start -->" in text:
    text = re.sub(r"<!-- auth-bench:start -->.*?<!-- auth-bench:end -->", lambda _: section, text, flags=re.S)
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
  echo "wrote BENCHMARKS.md" >&2
fi
