#!/usr/bin/env bash
# Alternating before/after runs of bench/run.sh's two-node fixed-rate scenario (issue 15's
# "two nodes via Redis at a fixed 2,000 msg/s: p99"): redis-server and two chatd nodes
# (--threads 1, --bus redis --store redis) pinned to core 0, bench/loadgen to core 1, 1000 rooms
# x 10 members alternating nodes, one sender per room, 100-byte messages. p99 on a shared machine
# swings with whatever else runs, so the configurations take turns, N rounds, and the medians are
# printed; each run also prints the generator's send lag and the context switches per second of
# the three server processes (counted from /proc over the window).
#
# With --engine embedded it is one chatd node on its default engine (issue 15's "rooms 1000 x 10
# at a fixed rate: p99"), the same rooms and generator; --rates runs each rate in every round.
# With --engine kafka the nodes talk through a fresh scripts/kafka.sh broker (on core 0 too; rooms
# in the Redis beside it, as bench/run.sh has them), warmed by 10 s at the measured rate before each run;
# KAFKA_JVM is that broker's JVM set-up, test (the default) or server (see scripts/kafka.sh).
#
#   bench/two-node-ab.sh [--reps N] [--engine redis|embedded|kafka] [--rates R1,R2,...] NAME=CHATD_BIN[:LOADGEN_BIN[:POLL[:KAFKA_JVM]]] ...
#
# POLL is the generator's --poll: block (the default, as bench/run.sh) or busy (it never sleeps,
# so no delivery has to wake it: on one machine that wake-up is paid by the server's core).
# An empty LOADGEN_BIN is the default one: `fast=build/chatd::busy`.
#
# Environment: BENCH_TWO_NODE_RATE (the default rate, 2000), BENCH_PORT_BASE (default 21500),
# BENCH_OUT (default build-bench/results). The loadgen defaults to build-bench/loadgen/chatd_loadgen.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REPS=3 ENGINE=redis RATES=${BENCH_TWO_NODE_RATE:-2000}
while [[ ${1:-} == --* ]]; do
  case $1 in
    --reps) REPS=$2 ;;
    --engine) ENGINE=$2 ;;
    --rates) RATES=$2 ;;
    *) sed -n 2,21p "$0"; exit 2 ;;
  esac
  shift 2
done
[[ $ENGINE == redis || $ENGINE == embedded || $ENGINE == kafka ]] || { echo "--engine: redis, embedded or kafka" >&2; exit 2; }
(($# >= 1)) || { sed -n 2,21p "$0"; exit 2; }
PORT=${BENCH_PORT_BASE:-21500}
OUT=${BENCH_OUT:-$ROOT/build-bench/results}
mkdir -p "$OUT"
RESULTS=$OUT/two-node-ab-$(date -u +%Y%m%dT%H%M%SZ).jsonl
export CHATD_SEND_RATE=0 CHATD_ROOM_SEND_RATE=0 CHATD_MAX_CONNECTIONS_PER_ADDRESS=0 CHATD_ROOM_CREATE_PER_MINUTE=0
WORK=$(mktemp -d /tmp/chatd-ab.XXXXXX)
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null; done
  PIDS=()
  if [[ -f $WORK/kafka/kafka.pid ]]; then timeout 60 "$ROOT/scripts/kafka.sh" stop --dir "$WORK/kafka" >/dev/null 2>&1; fi
}
trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

wait_port() {  # port pid
  for _ in $(seq 150); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# Sums voluntary + involuntary context switches over every thread of the given pids.
switches() {
  local n=0 p t
  for p in "$@"; do
    for t in /proc/"$p"/task/*/status; do
      n=$((n + $(awk '/ctxt_switches/ {s += $2} END {print s + 0}' "$t" 2>/dev/null || echo 0)))
    done
  done
  echo "$n"
}

# one_run_embedded NAME CHATD LOADGEN RATE: one fresh node on the embedded engine, one generator run.
one_run_embedded() {
  local name=$1 chatd=$2 lg=$3 rate=$4 port=$PORT a
  PORT=$((PORT + 10))
  rm -rf "$WORK/a" && mkdir -p "$WORK/a"
  taskset -c 0 "$chatd" --port "$port" --threads 1 --data-dir "$WORK/a" > "$WORK/a.log" 2>&1 &
  a=$!; PIDS+=("$a")
  wait_port "$port" "$a" || { echo "$name: chatd did not start: $(tail -n 1 "$WORK/a.log")"; stop_all; return 1; }
  measure "$name" "$lg" "$rate" "$port" "$a"
}

# one_run NAME CHATD LOADGEN RATE: one fresh Redis (and Kafka) and two fresh nodes, one
# generator run.
one_run() {
  local name=$1 chatd=$2 lg=$3 rate=$4 rport=$PORT a b r
  [[ $ENGINE == embedded ]] && { one_run_embedded "$@"; return; }
  PORT=$((PORT + 10))
  taskset -c 0 redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no > "$WORK/redis.log" 2>&1 &
  r=$!; PIDS+=("$r")
  wait_port "$rport" "$r" || { echo "$name: redis-server did not start"; stop_all; return 1; }
  local flags=(--threads 1 --store redis --bus redis --redis "redis://127.0.0.1:$rport")
  LG_EXTRA=()
  if [[ $ENGINE == kafka ]]; then
    local kport=$((rport + 3))
    if ! KAFKA_JVM=${KAFKA_JVM_OF:-test} timeout 180 taskset -c 0 "$ROOT/scripts/kafka.sh" start --port "$kport" \
         --dir "$WORK/kafka" --fresh > "$WORK/kafka.log" 2>&1; then
      echo "$name: Kafka did not start: $(tail -n 1 "$WORK/kafka.log")"; stop_all; return 1
    fi
    flags=(--threads 1 --store redis --redis "redis://127.0.0.1:$rport" --bus kafka --kafka "127.0.0.1:$kport")
  fi
  mkdir -p "$WORK/a" "$WORK/b"
  taskset -c 0 "$chatd" --port $((rport + 1)) --data-dir "$WORK/a" "${flags[@]}" > "$WORK/a.log" 2>&1 &
  a=$!; PIDS+=("$a")
  wait_port $((rport + 1)) "$a" || { echo "$name: node A did not start: $(tail -n 1 "$WORK/a.log")"; stop_all; return 1; }
  if [[ $ENGINE == kafka ]]; then
    # Rooms made on node A before B starts, as bench/run.sh does for Kafka.
    local ids
    ids=$(for i in $(seq 0 999); do curl -s -m 5 -X POST "http://127.0.0.1:$((rport + 1))/chat/room?name=ab-$i"; echo; done |
          python3 -c 'import json,sys; print(",".join(json.loads(l)["roomId"] for l in sys.stdin if l.strip()))')
    LG_EXTRA=(--room-ids "$ids")
  fi
  taskset -c 0 "$chatd" --port $((rport + 2)) --data-dir "$WORK/b" "${flags[@]}" > "$WORK/b.log" 2>&1 &
  b=$!; PIDS+=("$b")
  wait_port $((rport + 2)) "$b" || { echo "$name: node B did not start: $(tail -n 1 "$WORK/b.log")"; stop_all; return 1; }
  if [[ $ENGINE == kafka ]]; then
    # The broker's JIT (and both nodes' first records) warm at the measured rate first; at full
    # rate the broker would still be working off the backlog in the window.
    timeout 120 taskset -c 1 "$lg" --ports "$((rport + 1)),$((rport + 2))" --warmup 0 --duration 10 \
      --connect-timeout 120 --mode rooms --conns 2000 --rooms 200 --size 100 --rate "$rate" \
      "${LG_EXTRA[@]}" > /dev/null 2>&1
    sleep 1
  fi
  measure "$name" "$lg" "$rate" "$((rport + 1)),$((rport + 2))" "$a,$b" "$r"
}

# measure NAME LOADGEN RATE PORTS CHATD_PIDS [OTHER_PIDS...]: the generator run against
# running servers, then stops them; context switches count every pid given.
measure() {
  local name=$1 lg=$2 rate=$3 ports=$4 chatd_pids=$5
  shift 5
  local all=(${chatd_pids//,/ } "$@")
  : > "$WORK/lg.err"
  # Context switches over the measured window: from 0.5 s into it to its last second.
  (
    for _ in $(seq 2400); do grep -q "connected in" "$WORK/lg.err" && break; sleep 0.05; done
    sleep 3.6; s0=$(switches "${all[@]}"); sleep 9; s1=$(switches "${all[@]}")
    echo $(((s1 - s0) / 9)) > "$WORK/switches"
  ) &
  local watcher=$!
  timeout 300 taskset -c 1 "$lg" --ports "$ports" --server-pids "$chatd_pids" --label "$name@$rate" \
    --warmup 3 --duration 10 --connect-timeout 120 --mode rooms --conns 10000 --rooms 1000 --size 100 \
    --rate "$rate" ${POLL:+--poll "$POLL"} "${LG_EXTRA[@]}" > "$WORK/lg.json" 2> "$WORK/lg.err"
  wait "$watcher"
  stop_all
  [[ -s $WORK/lg.json ]] || { echo "$name: generator failed: $(tail -n 2 "$WORK/lg.err" | tr '\n' ' ')"; return 1; }
  python3 - "$WORK/lg.json" "$(cat "$WORK/switches")" "$name@$rate" "$RESULTS" <<'PY'
import json, sys
path, sw, name, results = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
r = json.load(open(path))
r["server_switches_per_s"] = sw
open(results, "a").write(json.dumps({"config": name, "r": r}) + "\n")
print(f"{name:>10}: p50 {r['p50_us']/1000:.2f} p90 {r['p90_us']/1000:.2f} p99 {r['p99_us']/1000:.2f} "
      f"p99.9 {r['p999_us']/1000:.2f} ms; send lag p99 {r.get('send_lag_p99_us', -1000)/1000:.2f} ms (-1: not measured); "
      f"chatd cpu {r['server_cpu_s']:.2f} s; switches {sw}/s; lost {r['lost']} undelivered {r['undelivered']}")
PY
}

for rep in $(seq "$REPS"); do
  for rate in ${RATES//,/ }; do
    for cfg in "$@"; do
      name=${cfg%%=*} bins=${cfg#*=}
      IFS=: read -r chatd lg POLL KAFKA_JVM_OF <<< "$bins"
      [[ -n $lg ]] || lg=$ROOT/build-bench/loadgen/chatd_loadgen
      [[ ${POLL:-block} == block || $POLL == busy ]] || { echo "$name: POLL is block or busy, not '$POLL'" >&2; exit 2; }
      printf '[%s load %s] round %d ' "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1 /proc/loadavg)" "$rep"
      one_run "$name" "$chatd" "$lg" "$rate"
    done
  done
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
names = list(dict.fromkeys(r["config"] for r in rows))
lag = lambda us: "n/a (generator before send lag)" if us < 0 else f"{us / 1000:.2f} ms"
print(f"\nmedians ({sys.argv[1]}):")
for n in names:
    v = [r["r"] for r in rows if r["config"] == n]
    m = lambda k: statistics.median(x.get(k, -1) for x in v)
    print(f"{n:>10}: runs {len(v)}, p50 {m('p50_us')/1000:.2f} ms, p90 {m('p90_us')/1000:.2f} ms, "
          f"p99 {m('p99_us')/1000:.2f} ms (each: {', '.join('%.2f' % (x['p99_us']/1000) for x in v)}), "
          f"p99.9 {m('p999_us')/1000:.2f} ms, send lag p99 {lag(m('send_lag_p99_us'))}, "
          f"chatd cpu {m('server_cpu_s'):.2f} s, switches {m('server_switches_per_s'):.0f}/s")
PY
