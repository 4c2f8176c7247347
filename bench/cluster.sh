#!/usr/bin/env bash
# Two chatd nodes on one Redis vs on a Redis Cluster of 1, 2 and 3 shards, and on one Kafka
# broker vs three (issue 11), with the same load; writes a table to BENCHMARKS.md:
#
#   bench/cluster.sh [--quick] [--no-write] [--engines single,single4,cluster1,cluster2,cluster3,kafka1,kafka3]
#
# single4 is one Redis with four nodes (what one more subscribing node costs the engine);
# kafka1 / kafka3 are one broker (scripts/kafka.sh) and three (scripts/kafka-cluster.sh, topic
# replication 3, min.insync.replicas 2) with the rooms in a small Redis store.
# Per engine: the nodes (--bus redis --store redis, --threads 1 each) and every Redis process
# are pinned to core 0, the generator (bench/loadgen) to core 1. Rooms of MEMBERS members
# alternate nodes, so every message crosses the engine to both nodes. Two runs per engine: a
# fixed common rate (cross-node latency at equal load) and max (window 4 per sender). Server
# CPU comes from /proc over the measured window: the chatd nodes' summed (deliveries per chatd
# CPU-second) and each Redis process's own (engine CPU per message, per shard). On a 2-core box
# more shards cannot add capacity (they share core 0): read this as what each message costs
# where, which is what the capacity arithmetic in the README needs.
# Environment: CHATD_BIN (default build-bench/chatd's Release build), BENCH_PORT_BASE (22500).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CMDLINE="bench/cluster.sh${*:+ $*}"
QUICK=0 WRITE=1 ENGINES=single,single4,cluster1,cluster2,cluster3,kafka1,kafka3
while (($#)); do
  case $1 in
    --quick) QUICK=1 ;;
    --no-write) WRITE=0 ;;
    --engines) ENGINES=$2; shift ;;
    -h|--help) sed -n 2,20p "$0"; exit 0 ;;
    *) echo "cluster.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

SERVER_CPU=0 GEN_CPU=1
(( $(nproc) >= 2 )) || GEN_CPU=0
LOADGEN=$ROOT/build-bench/loadgen/chatd_loadgen
CHATD=${CHATD_BIN:-$ROOT/build-bench/chatd/src/app/chatd}
# Capacity, not people: the flood and abuse limits stay off (as in bench/run.sh).
export CHATD_SEND_RATE=0 CHATD_ROOM_SEND_RATE=0 CHATD_MAX_CONNECTIONS_PER_ADDRESS=0 CHATD_ROOM_CREATE_PER_MINUTE=0
# Below 22768: a Redis Cluster node also listens on port+10000, which must stay under the
# ephemeral range (32768+) where the generator's own connections would already hold it.
PORT=${BENCH_PORT_BASE:-22500}
WORK=$(mktemp -d /tmp/chatd-bench-cluster.XXXXXX)
OUT=$ROOT/build-bench/results
mkdir -p "$OUT"
RESULTS=$OUT/cluster-$(date -u +%Y%m%dT%H%M%SZ).jsonl
: >"$RESULTS"
if ((QUICK)); then ROOMS=50 MEMBERS=10 RATE=200 WARMUP=1 DURATION=3
else ROOMS=500 MEMBERS=10 RATE=1000 WARMUP=2 DURATION=10; fi
NODE_PIDS=()

log() { printf '[cluster-bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

cleanup() {
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  stop_engine
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {  # port seconds
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

if [[ ! -x $LOADGEN ]] || [[ -n $(find bench/loadgen -newer "$LOADGEN" -name '*.cpp' 2>/dev/null) ]]; then
  log "building chatd_loadgen"
  { cmake -G Ninja -S bench/loadgen -B build-bench/loadgen -DCMAKE_BUILD_TYPE=Release >/dev/null &&
    ninja -j2 -C build-bench/loadgen >/dev/null; } || { echo "cluster.sh: loadgen build failed" >&2; exit 1; }
fi
if [[ -z ${CHATD_BIN:-} ]]; then
  log "building chatd (Release)"
  { cmake -G Ninja -S . -B build-bench/chatd -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null &&
    ninja -j2 -C build-bench/chatd chatd >/dev/null; } || { echo "cluster.sh: chatd build failed" >&2; exit 1; }
fi
command -v redis-server >/dev/null || { echo "cluster.sh: redis-server not installed" >&2; exit 1; }

# Starts engine $1; sets BUS_FLAGS (chatd's engine flags), ENGINE_PIDS (comma-separated: the
# processes whose CPU per message is reported) and NODES.
start_engine() {
  local rport=$PORT
  PORT=$((PORT + 10))
  NODES=2
  if [[ $1 == single || $1 == single4 || $1 == kafka* ]]; then
    taskset -c $SERVER_CPU redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize yes --pidfile "$WORK/redis.pid" --logfile "$WORK/redis-$rport.log"
    wait_port "$rport" 10 || return 1
    local n=0
    while [[ ! -s $WORK/redis.pid ]] && ((n++ < 50)); do sleep 0.1; done  # written after the port opens
    URL=redis://127.0.0.1:$rport
    ENGINE_PIDS=$(cat "$WORK/redis.pid")
    BUS_FLAGS=(--bus redis --store redis --redis "$URL")
    [[ $1 == single4 ]] && NODES=4
  fi
  if [[ $1 == kafka1 ]]; then
    local kport=$PORT
    PORT=$((PORT + 10))
    timeout 300 taskset -c $SERVER_CPU scripts/kafka.sh start --fresh --port "$kport" --dir "$WORK/kafka" \
      >"$WORK/kafka.log" 2>&1 || return 1
    ENGINE_PIDS=$(cat "$WORK/kafka/kafka.pid")  # the broker only: the store's Redis is idle here
    BUS_FLAGS=(--bus kafka --kafka "127.0.0.1:$kport" --kafka-topic bench --store redis --redis "$URL")
  elif [[ $1 == kafka3 ]]; then
    local kport=$PORT brokers
    PORT=$((PORT + 10))
    brokers=$(timeout 300 scripts/kafka-cluster.sh start --fresh --dir "$WORK/kc" --port "$kport" 2>"$WORK/kafka.log") || return 1
    local pids=()
    for f in "$WORK"/kc/b*/kafka.pid; do
      taskset -acp $SERVER_CPU "$(cat "$f")" >/dev/null
      pids+=("$(cat "$f")")
    done
    ENGINE_PIDS=$(IFS=,; echo "${pids[*]}")
    BUS_FLAGS=(--bus kafka --kafka "$brokers" --kafka-topic bench --kafka-replication 3 --store redis --redis "$URL")
  elif [[ $1 == cluster* ]]; then
    local n=${1#cluster}
    URL=$(scripts/redis-cluster.sh start --dir "$WORK/rc" --port "$rport" --primaries "$n" --replicas 0) || return 1
    local pids=()
    for f in "$WORK"/rc/*/redis.pid; do
      taskset -acp $SERVER_CPU "$(cat "$f")" >/dev/null
      pids+=("$(cat "$f")")
    done
    ENGINE_PIDS=$(IFS=,; echo "${pids[*]}")
    BUS_FLAGS=(--bus redis --store redis --redis "$URL")
  fi
}

stop_engine() {
  if [[ -d $WORK/kafka ]]; then timeout 60 scripts/kafka.sh stop --dir "$WORK/kafka" >/dev/null 2>&1; rm -rf "$WORK/kafka"; fi
  if [[ -d $WORK/kc ]]; then timeout 90 scripts/kafka-cluster.sh stop --dir "$WORK/kc" >/dev/null 2>&1; rm -rf "$WORK/kc"; fi
  # Waits for the exit: a Redis still shutting down would delete the next one's pid file.
  if [[ -f $WORK/redis.pid ]]; then
    local pid n=0
    pid=$(cat "$WORK/redis.pid")
    kill "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null && ((n++ < 100)); do sleep 0.1; done
    rm -f "$WORK/redis.pid"
  fi
  if [[ -d $WORK/rc ]]; then scripts/redis-cluster.sh stop --dir "$WORK/rc" >/dev/null 2>&1; rm -rf "$WORK/rc"; fi
}

# Starts NODES nodes on the engine; sets NODE_PORTS and NODE_PIDS.
start_nodes() {
  NODE_PIDS=() NODE_PORTS=()
  for n in $(seq "$NODES"); do
    local p=$PORT
    PORT=$((PORT + 1))
    mkdir -p "$WORK/node-$n"
    taskset -c $SERVER_CPU "$CHATD" --port "$p" --address 127.0.0.1 --threads 1 --data-dir "$WORK/node-$n" \
      --node-id "bench-$n" "${BUS_FLAGS[@]}" >"$WORK/node-$n.log" 2>&1 &
    NODE_PIDS+=($!) NODE_PORTS+=("$p")
    wait_port "$p" 20 || { log "node $n did not start: $(tail -n 2 "$WORK/node-$n.log")"; return 1; }
  done
  # Kafka: the bus must be up (topic created, partitions assigned) before rooms get traffic.
  for p in "${NODE_PORTS[@]}"; do
    local deadline=$((SECONDS + 60))
    until [[ $( { exec 3<>"/dev/tcp/127.0.0.1/$p"; } 2>/dev/null || exit 1
                printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && timeout 2 head -n 1 <&3) == *" 200 "* ]]; do
      ((SECONDS < deadline)) || { log "node on $p never healthy"; return 1; }
      sleep 0.5
    done
  done
}

stop_nodes() {
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  NODE_PIDS=()
}

# run ENGINE SCENARIO loadgen-args...: one generator run, its JSON line into RESULTS.
run() {
  local engine=$1 scen=$2; shift 2
  local json
  local ports pids
  ports=$(IFS=,; echo "${NODE_PORTS[*]}")
  pids=$(IFS=,; echo "${NODE_PIDS[*]}")
  json=$(timeout 300 taskset -c $GEN_CPU "$LOADGEN" --ports "$ports" --mode rooms \
           --conns $((ROOMS * MEMBERS)) --rooms "$ROOMS" --size 100 --warmup "$WARMUP" --duration "$DURATION" \
           --server-pids "$pids" --engine-pids "$ENGINE_PIDS" \
           --label "$engine/$scen" "$@" 2>"$WORK/lg.err")
  grep -E 'loadgen: (sent|latency|server)' "$WORK/lg.err" | sed "s|^|  $engine/$scen |" >&2
  [[ -n $json ]] || { log "$engine/$scen: generator failed: $(tail -n 2 "$WORK/lg.err" | tr '\n' ' ')"; return 1; }
  printf '{"engine":"%s","scenario":"%s","r":%s}\n' "$engine" "$scen" "$json" >>"$RESULTS"
  sleep 1
}

log "results: $RESULTS; load: $ROOMS rooms x $MEMBERS members on 2 nodes, fixed rate $RATE msg/s and max"
for engine in ${ENGINES//,/ }; do
  log "== $engine"
  if ! start_engine "$engine"; then log "SKIP $engine: the engine did not start"; stop_engine; continue; fi
  if start_nodes; then
    run "$engine" fixed --rate "$RATE"
    run "$engine" max --rate 0 --window 4
  fi
  stop_nodes
  stop_engine
done

python3 - "$RESULTS" "$CMDLINE" "$ROOMS" "$MEMBERS" "$RATE" "$WRITE" <<'PY'
import json, os, subprocess, sys, datetime
path, cmdline, rooms, members, rate, write = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
def get(engine, scen):
    return next((r["r"] for r in rows if r["engine"] == engine and r["scenario"] == scen), None)
names = {"single": "one Redis", "single4": "one Redis, 4 nodes", "cluster1": "Redis Cluster, 1 shard",
         "cluster2": "Redis Cluster, 2 shards", "cluster3": "Redis Cluster, 3 shards",
         "kafka1": "Kafka, 1 broker", "kafka3": "Kafka, 3 brokers (RF 3)"}
engines = [e for e in names if any(r["engine"] == e for r in rows)]
lines = []
lines.append("| engine | run | msgs/s in | deliveries/s | p50 | p99 | deliveries per chatd CPU-s | engine CPU per message, all shards | busiest shard's share | lost |")
lines.append("|---|---|---|---|---|---|---|---|---|---|")
for e in engines:
    for scen in ("fixed", "max"):
        r = get(e, scen)
        if not r: continue
        eng = [x for x in r.get("engine_cpu_s", []) if x >= 0]
        tot = sum(eng)
        per_msg = f"{tot / r['sent'] * 1e6:.1f} µs" if r["sent"] and eng else "–"
        share = f"{max(eng) / tot * 100:.0f} %" if tot > 0 and len(eng) > 1 else ("100 %" if eng else "–")
        label = f"fixed {int(float(rate)):,}/s" if scen == "fixed" else "max"
        lines.append(f"| {names[e]} | {label} | {r['sent_per_s']:,.0f} | {r['deliveries_per_s']:,.0f} | "
                     f"{r['p50_us']/1000:.2f} ms | {r['p99_us']/1000:.2f} ms | {r['deliveries_per_cpu_s']:,.0f} | "
                     f"{per_msg} | {share} | {r['lost'] + r['undelivered']} |")
table = "\n".join(lines)
print(table)
if write != "1":
    sys.exit(0)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
load = open("/proc/loadavg").read().split()[:3]
now = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
section = f"""## {now}: engines past one machine: Redis vs Redis Cluster of 1, 2, 3 shards, Kafka 1 vs 3 brokers (issue 11)

`{cmdline}` at `{commit}{' (with uncommitted changes)' if dirty else ''}`; load average {' '.join(load)} when written.
Two chatd nodes (`--threads 1`; four for "4 nodes") and every engine process pinned to core 0,
the generator to core 1; {rooms} rooms × {members} members alternating nodes, one sender per
room, 100-byte messages; one run each (a fixed rate, then max with a window of 4 per sender).
Engine CPU is the engine processes' utime+stime over the window divided by the messages sent:
what one message costs the engine (Redis: the publish function's `INCR`, `XADD` and
`SPUBLISH`/`PUBLISH` plus the delivery to each subscribed node; Kafka: the brokers' JVMs,
replication included, the rooms' Redis left out). At the fixed rate it includes the engine's
idle work (timers, cluster gossip, the JVMs), so the max row is the per-message cost. Every
server shares one core, so more shards add no capacity here: this shows cost, not scale; the
README's "Several machines" uses it per shard. The test brokers run with C1 only
(`-XX:TieredStopAtLevel=1`, to start fast) and small heaps: Kafka's CPU per message is an upper
bound. Latencies swing with whatever else the machine runs (compare the load average with its 2
cores); the CPU per message is the figure to carry over. Lost counts seq gaps plus messages not
delivered by the end of the drain.

{table}

"""
bm = open("BENCHMARKS.md").read()
marker = "\n## "
i = bm.find(marker)
bm = bm[:i + 1] + section + bm[i + 1:] if i >= 0 else bm + "\n" + section
open("BENCHMARKS.md", "w").write(bm)
print("written to BENCHMARKS.md", file=sys.stderr)
PY
