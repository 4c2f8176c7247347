#!/usr/bin/env bash
# Benchmarks chatd against its peers (a Spring Boot STOMP chat server, RabbitMQ Web-STOMP,
# Centrifugo 6.9.1 and a STOMP-less WebSocket broadcast ceiling) with bench/loadgen, and writes
# the medians as a table to BENCHMARKS.md (issues 6 and 15).
#
#   bench/run.sh [--quick] [--reps N] [--targets chatd,spring,rabbitmq,centrifugo,ceiling]
#                [--scenarios idle,fanout,bursts,rooms] [--no-two-node] [--two-node-only] [--no-write]
#
# Every server runs pinned to core 0 and the generator to core 1; each server is started fresh
# for each scenario (for the idle ones, for each repetition, so RSS starts from a clean process).
# Every step is bounded by `timeout`. Environment: CHATD_BIN (default: a Release build in
# build-bench/chatd), BENCH_COMMON_RATE (msgs/s of the same-rate run),
# BENCH_TWO_NODE_RATE (msgs/s of the two-node fixed-rate run, default 2000), BENCH_PORT_BASE
# (default 21000), BENCH_OUT (default build-bench/results).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CMDLINE="bench/run.sh $*"
QUICK=0 REPS=3 TARGETS="chatd,spring,rabbitmq,centrifugo,ceiling" TWO_NODE=1 SINGLE=1 WRITE=1
SCENARIOS="idle,fanout,bursts,rooms"  # the one-server scenarios; a full table needs them all
while (($#)); do
  case $1 in
    --quick) QUICK=1; REPS=1 ;;
    --reps) REPS=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    --no-two-node) TWO_NODE=0 ;;
    --two-node-only) SINGLE=0 TARGETS=chatd ;;
    --no-write) WRITE=0 ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

SERVER_CPU=0
GEN_CPU=1
(( $(nproc) >= 2 )) || GEN_CPU=0
LOADGEN=$ROOT/build-bench/loadgen/chatd_loadgen
CHATD=${CHATD_BIN:-$ROOT/build-bench/chatd/src/app/chatd}
# The bench measures capacity: one load-generator connection sends far past a person's rate,
# so chatd's flood limits (issue 13) are off here, through their environment variables.
# The generator is one sender on few loopback addresses: the abuse limits meant for people stay off.
export CHATD_SEND_RATE=0 CHATD_ROOM_SEND_RATE=0 CHATD_MAX_CONNECTIONS_PER_ADDRESS=0 CHATD_ROOM_CREATE_PER_MINUTE=0
SPRING_JAR=$ROOT/bench/peers/spring/target/spring-peer.jar
CENTRIFUGO="" CEILING=""
OUT=${BENCH_OUT:-$ROOT/build-bench/results}
mkdir -p "$OUT"
RESULTS=$OUT/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl
: > "$RESULTS"
WORK=$(mktemp -d /tmp/chatd-bench.XXXXXX)
PORT=${BENCH_PORT_BASE:-21000}
PIDS=()

if ((QUICK)); then
  IDLE_SMALL=1000 IDLE_BIG=2000 HOLD=2
  FANOUT_SUBS=200 ROOMS=100 MEMBERS=10 WARMUP=1 DURATION=3 CONNECT_TIMEOUT=60 WARM_STEP=2 WARM_MIN=2 WARM_MAX=4 COMMON_RATE=100 TWO_NODE_RATE=200
else
  IDLE_SMALL=10000 IDLE_BIG=18000 HOLD=5
  FANOUT_SUBS=1000 ROOMS=1000 MEMBERS=10 WARMUP=3 DURATION=10 CONNECT_TIMEOUT=240 WARM_STEP=5 WARM_MIN=3 WARM_MAX=16 COMMON_RATE=1000 TWO_NODE_RATE=2000
fi
COMMON_RATE=${BENCH_COMMON_RATE:-$COMMON_RATE}
TWO_NODE_RATE=${BENCH_TWO_NODE_RATE:-$TWO_NODE_RATE}
LG_TIMEOUT=$((CONNECT_TIMEOUT + WARMUP + DURATION + 60))  # connect + run + drain (<=5 s) + margin

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for d in "$WORK"/rabbit-*; do [[ -d $d ]] && bench/peers/rabbitmq/rabbit.sh stop "$d" >/dev/null 2>&1; done
  [[ -d $WORK/kafka ]] && timeout 60 scripts/kafka.sh stop --dir "$WORK/kafka" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- building ----

build() {
  log "building chatd_loadgen"
  cmake -G Ninja -S bench/loadgen -B build-bench/loadgen -DCMAKE_BUILD_TYPE=Release >/dev/null &&
    ninja -j2 -C build-bench/loadgen >/dev/null || { echo "run.sh: loadgen build failed" >&2; exit 1; }
  build-bench/loadgen/chatd_loadgen_selftest >/dev/null || { echo "run.sh: loadgen selftest failed" >&2; exit 1; }
  if [[ ,$TARGETS, == *,chatd,* && -z ${CHATD_BIN:-} ]]; then
    log "building chatd (Release)"
    { cmake -G Ninja -S . -B build-bench/chatd -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null &&
      ninja -j2 -C build-bench/chatd chatd >/dev/null; } || log "chatd build failed: chatd scenarios will be skipped"
  fi
  # The Go peers come from the Go module proxy into a cache outside the repository.
  if [[ ,$TARGETS, == *,centrifugo,* ]]; then
    log "installing Centrifugo 6.9.1 (go install)"
    CENTRIFUGO=$(timeout 1200 bench/peers/centrifugo/install.sh 2> "$WORK/centrifugo-install.log") ||
      { CENTRIFUGO=""; log "Centrifugo install failed: $(tail -n 1 "$WORK/centrifugo-install.log")"; }
  fi
  if [[ ,$TARGETS, == *,ceiling,* ]]; then
    log "building the ceiling peer (go build)"
    CEILING=$(timeout 600 bench/peers/ceiling/install.sh 2> "$WORK/ceiling-install.log") ||
      { CEILING=""; log "ceiling build failed: $(tail -n 1 "$WORK/ceiling-install.log")"; }
  fi
  if [[ ,$TARGETS, == *,spring,* ]]; then
    if [[ ! -f $SPRING_JAR || -n $(find bench/peers/spring/src bench/peers/spring/pom.xml -newer "$SPRING_JAR" 2>/dev/null) ]]; then
      log "building the Spring peer (mvn package)"
      (cd bench/peers/spring && timeout 900 mvn -q -B -DskipTests package >/dev/null) || log "Spring peer build failed"
    fi
  fi
}

# ---- servers ----

next_port() { PORT=$((PORT + 10)); }

# Waits until 127.0.0.1:$1 accepts and pid $2 is alive, for at most $3 seconds.
wait_port() {
  local deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# Starts target $1 (chatd | spring | rabbitmq) on a fresh port, pinned to the server core;
# extra arguments go to chatd. Sets SRV_PID, SRV_PORT, LG_ARGS; on failure sets SKIP_REASON.
start_target() {
  local name=$1; shift
  next_port
  SRV_PORT=$PORT SKIP_REASON=""
  case $name in
    chatd)
      [[ -x $CHATD ]] || { SKIP_REASON="no chatd binary at $CHATD"; return 1; }
      local dir=$WORK/chatd-$SRV_PORT
      mkdir -p "$dir"
      # One worker thread: the server gets exactly one core, like the peers.
      taskset -c $SERVER_CPU "$CHATD" --port "$SRV_PORT" --threads 1 --data-dir "$dir" "$@" \
        > "$dir/log" 2>&1 &
      SRV_PID=$!
      PIDS+=("$SRV_PID")
      wait_port "$SRV_PORT" "$SRV_PID" 30 ||
        { SKIP_REASON="chatd $* did not start: $(tail -n 1 "$dir/log")"; stop_target; return 1; }
      LG_ARGS=(--port "$SRV_PORT")
      ;;
    spring)
      [[ -f $SPRING_JAR ]] || { SKIP_REASON="no Spring jar (mvn package failed?)"; return 1; }
      taskset -c $SERVER_CPU java -jar "$SPRING_JAR" --server.port="$SRV_PORT" > "$WORK/spring-$SRV_PORT.log" 2>&1 &
      SRV_PID=$!
      PIDS+=("$SRV_PID")
      wait_port "$SRV_PORT" "$SRV_PID" 120 || { SKIP_REASON="Spring peer did not start"; stop_target; return 1; }
      # The simple broker sends no RECEIPT for SUBSCRIBE: ready once subscribed.
      LG_ARGS=(--port "$SRV_PORT" --sub-receipt no)
      ;;
    rabbitmq)
      [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || { SKIP_REASON="rabbitmq-server not installed"; return 1; }
      # Two tries, the second on fresh ports: a node once failed to come up right after the
      # 18k-connection node. The reason is printed either way.
      local dir try
      for try in 1 2; do
        dir=$WORK/rabbit-$SRV_PORT
        timeout 180 taskset -c $SERVER_CPU bench/peers/rabbitmq/rabbit.sh start "$dir" "$SRV_PORT" \
          > "$WORK/rabbit-start.log" 2>&1 && break
        log "RabbitMQ did not start on $SRV_PORT: $(tail -n 3 "$WORK/rabbit-start.log" "$dir/log/stdout" 2>/dev/null | tr '\n' ' ')"
        timeout 90 bench/peers/rabbitmq/rabbit.sh stop "$dir" >/dev/null 2>&1
        ((try == 2)) && { SKIP_REASON="RabbitMQ did not start twice"; return 1; }
        next_port
        SRV_PORT=$PORT
      done
      SRV_PID=$(cat "$dir/beam.pid")
      RABBIT_DIR=$dir
      LG_ARGS=(--port "$SRV_PORT" --path /ws --sub-prefix /topic/ --send-dest '/topic/{room}'
               --body-format raw --room-source names --login guest --passcode guest)
      ;;
    centrifugo|ceiling)
      local bin=$CENTRIFUGO args
      [[ $name == ceiling ]] && bin=$CEILING
      [[ -n $bin && -x $bin ]] || { SKIP_REASON="no $name binary (install failed?)"; return 1; }
      if [[ $name == centrifugo ]]; then
        sed "s/\"port\": 8000/\"port\": $SRV_PORT/" bench/peers/centrifugo/config.json > "$WORK/centrifugo-$SRV_PORT.json"
        args=(-c "$WORK/centrifugo-$SRV_PORT.json")
        LG_ARGS=(--port "$SRV_PORT" --path /connection/websocket --protocol centrifugo --room-source names)
      else
        args=(--port "$SRV_PORT")
        LG_ARGS=(--port "$SRV_PORT" --path / --protocol raw --room-source names)
      fi
      # One core, like chatd's one worker thread.
      GOMAXPROCS=1 taskset -c $SERVER_CPU "$bin" "${args[@]}" > "$WORK/$name-$SRV_PORT.log" 2>&1 &
      SRV_PID=$!
      PIDS+=("$SRV_PID")
      wait_port "$SRV_PORT" "$SRV_PID" 30 || { SKIP_REASON="$name did not start: $(tail -n 1 "$WORK/$name-$SRV_PORT.log")"; stop_target; return 1; }
      ;;
  esac
  SRV_NAME=$name
  return 0
}

# Stops the server started last, within bounded time.
stop_target() {
  if [[ ${SRV_NAME:-} == rabbitmq ]]; then
    timeout 90 bench/peers/rabbitmq/rabbit.sh stop "$RABBIT_DIR" >/dev/null 2>&1
    rm -rf "$RABBIT_DIR"
  else
    kill "$SRV_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SRV_PID" 2>/dev/null
    wait "$SRV_PID" 2>/dev/null
  fi
  SRV_NAME=""
}

# ---- measuring ----

# run_lg TARGET SCENARIO REP [loadgen args...]: one generator run; its JSON goes to RESULTS.
# The server PIDs to sample are in SRV_PIDS (default: SRV_PID).
run_lg() {
  local target=$1 scen=$2 rep=$3; shift 3
  local json
  json=$(timeout $LG_TIMEOUT taskset -c $GEN_CPU "$LOADGEN" "${LG_ARGS[@]}" \
           --server-pids "${SRV_PIDS:-$SRV_PID}" --label "$target/$scen" --warmup "$WARMUP" \
           --duration "$DURATION" --connect-timeout "$CONNECT_TIMEOUT" "$@" 2> "$WORK/lg.err")
  local rc=$?
  grep -E 'loadgen: (conns|sent|latency|server|generator)' "$WORK/lg.err" | sed "s|^|  $target/$scen#$rep |" >&2
  if [[ -z $json ]]; then
    log "$target/$scen#$rep: generator failed (rc $rc): $(tail -n 2 "$WORK/lg.err" | tr '\n' ' ')"
    skip "$target" "$scen" "generator failed (rc $rc)"
    return 1
  fi
  printf '{"target":"%s","scenario":"%s","rep":%d,"r":%s}\n' "$target" "$scen" "$rep" "$json" >> "$RESULTS"
  sleep 1  # let the server settle (close sockets, drain queues) before the next run
}

# Warms the server with the scenario's own load ($@: loadgen arguments) in timed steps until its
# throughput stops rising: at least WARM_MIN steps, then until a step is no more than 3 % above
# the best before it, at most WARM_MAX steps. The JVM peer runs interpreted code at first and
# compiles its hot paths over tens of seconds; a native server is flat from the first step, so it
# gets the minimum. Each step is one JSON line (scenario "warm-<scenario>", rep = step): the curve.
warm_until_flat() {
  local target=$1 scen=$2; shift 2
  local step best=0 rate json
  for step in $(seq "$WARM_MAX"); do
    json=$(timeout $((WARM_STEP + CONNECT_TIMEOUT + 60)) taskset -c $GEN_CPU "$LOADGEN" "${LG_ARGS[@]}"              --server-pids "${SRV_PIDS:-$SRV_PID}" --label "$target/warm-$scen" --warmup 0              --duration "$WARM_STEP" --drain 2 --connect-timeout "$CONNECT_TIMEOUT" "$@" 2> /dev/null)
    [[ -n $json ]] || { log "$target/$scen: warm-up step $step failed"; sleep 1; continue; }
    printf '{"target":"%s","scenario":"warm-%s","rep":%d,"r":%s}\n' "$target" "$scen" "$step" "$json" >> "$RESULTS"
    rate=$(python3 -c 'import json,sys; print(int(json.loads(sys.argv[1])["deliveries_per_s"]))' "$json")
    log "$target/$scen: warm-up step $step: $rate deliveries/s"
    sleep 1
    if ((step >= WARM_MIN && rate * 100 <= best * 103)); then return 0; fi
    ((rate > best)) && best=$rate
  done
  log "$target/$scen: still rising after $WARM_MAX warm-up steps"
}

skip() {
  log "SKIP $1/$2: $3"
  printf '{"target":"%s","scenario":"%s","skipped":%s}\n' "$1" "$2" \
    "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$3")" >> "$RESULTS"
}

# Median of field $3 over the runs of target $1, scenario $2 (0 when none).
median_of() {
  python3 - "$RESULTS" "$1" "$2" "$3" <<'PY'
import json, statistics, sys
path, t, s, f = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
v = [r["r"][f] for r in rows if r.get("target") == t and r.get("scenario") == s and "r" in r]
print(statistics.median(v) if v else 0)
PY
}

scenario_idle() {
  local target=$1 n=$2 scen="idle-$(( $2 / 1000 ))k"
  for rep in $(seq "$REPS"); do
    start_target "$target" || { skip "$target" "$scen" "$SKIP_REASON"; return; }
    sleep 1  # let start-up settle before the RSS baseline
    run_lg "$target" "$scen" "$rep" --mode idle --conns "$n" --warmup 0 --duration "$HOLD" --drain 0
    stop_target
  done
}

scenario_fanout() {
  local target=$1 scen=fanout
  start_target "$target" || { skip "$target" "$scen" "$SKIP_REASON"; return; }
  local args=(--mode fanout --conns "$FANOUT_SUBS" --rooms 1 --size 100 --window 32 --senders-per-room 4)
  warm_until_flat "$target" "$scen" "${args[@]}"
  for rep in $(seq "$REPS"); do
    # Four senders keep the room busy enough that the server, not one sender's round trip, is the limit.
    run_lg "$target" "$scen" "$rep" "${args[@]}"
  done
  stop_target
}

# Issue 15's shape: one sender, bursts of N (20, then single messages), the next burst once every
# subscriber has the last; the server's writes (system calls, and sends completed on its io_uring)
# are counted with perf stat over each run (connection set-up included: about 3 per connection,
# under 1 % of a run's writes).
scenario_fanout_bursts() {
  local target=$1 burst scen
  for burst in 20 1; do
    scen=fanout-b$burst
    start_target "$target" || { skip "$target" "$scen" "$SKIP_REASON"; return; }
    local args=(--mode fanout --conns "$FANOUT_SUBS" --rooms 1 --size 100 --senders-per-room 1 --burst "$burst")
    warm_until_flat "$target" "$scen" "${args[@]}"
    for rep in $(seq "$REPS"); do
      local perf_pid="" perf_out=$WORK/perf-$target-$scen-$rep.txt
      if command -v perf >/dev/null; then
        perf stat -x, -e 'syscalls:sys_enter_sendmsg,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto,io_uring:io_uring_complete' \
          -p "$SRV_PID" -o "$perf_out" > /dev/null 2>&1 &
        perf_pid=$!
      fi
      run_lg "$target" "$scen" "$rep" "${args[@]}"
      local ok=$?
      if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null
        wait "$perf_pid" 2>/dev/null
        # Adds writes per subscriber per burst to this run's JSON line.
        ((ok == 0)) && python3 - "$RESULTS" "$perf_out" "$burst" <<'PY'
import json, sys
path, perf, burst = sys.argv[1], sys.argv[2], int(sys.argv[3])
writes = sum(int(p[0]) for p in (l.strip().split(",") for l in open(perf)) if len(p) > 2 and p[0].isdigit())
lines = open(path).read().splitlines()
row = json.loads(lines[-1])
d = row["r"].get("delivered_total", 0)
row["r"]["server_writes"] = writes
row["r"]["writes_per_sub_burst"] = writes / (d / burst) if d else -1
lines[-1] = json.dumps(row)
open(path, "w").write("\n".join(lines) + "\n")
PY
      fi
    done
    stop_target
  done
}

# Many rooms: the maximum first, then fixed rates at 25/50/75 % of this target's own median max.
scenario_rooms() {
  local target=$1
  start_target "$target" || { skip "$target" rooms-max "$SKIP_REASON"; return; }
  # The ceiling's rooms are URL paths: each connection upgrades on /<its room>.
  [[ $target == ceiling ]] && LG_ARGS+=(--path "/{room}")
  # A fifth of the rooms: the same code paths, without connecting 10,000 clients per step.
  warm_until_flat "$target" rooms-max --mode rooms --conns $((ROOMS * MEMBERS / 5)) --rooms $((ROOMS / 5)) \
    --size 100 --rate 0 --window 4
  local conns=$((ROOMS * MEMBERS))
  for rep in $(seq "$REPS"); do
    run_lg "$target" rooms-max "$rep" --mode rooms --conns $conns --rooms $ROOMS --size 100 --rate 0 --window 4
  done
  local max
  max=$(median_of "$target" rooms-max sent_per_s)
  if [[ ${max%.*} -le 0 ]]; then
    skip "$target" rooms-rate "no maximum measured"
  else
    for pct in 25 50 75; do
      local rate
      rate=$(python3 -c "print(round($max * $pct / 100))")
      for rep in $(seq "$REPS"); do
        run_lg "$target" "rooms-$pct" "$rep" --mode rooms --conns $conns --rooms $ROOMS --size 100 --rate "$rate"
      done
    done
  fi
  # One rate for every target, so latencies compare at equal absolute load.
  for rep in $(seq "$REPS"); do
    run_lg "$target" rooms-common "$rep" --mode rooms --conns $conns --rooms $ROOMS --size 100 --rate "$COMMON_RATE"
  done
  stop_target
}

# Two chatd nodes sharing rooms through an engine; members of each room alternate nodes.
# Redis: rooms in Redis (created on node A, found by node B), messages over Redis pub/sub.
# Kafka: messages over Kafka; rooms in one embedded store file both nodes open, created on A
# before B starts (the embedded store reads its file at start-up).
scenario_two_nodes() {
  local engine=$1 scen="2nodes-$1"
  [[ -x $CHATD ]] || { skip chatd "$scen" "no chatd binary"; return; }
  command -v redis-server >/dev/null || { skip chatd "$scen" "redis-server not installed"; return; }
  if [[ $engine == kafka ]]; then
    [[ -x scripts/kafka.sh ]] || { skip chatd "$scen" "scripts/kafka.sh not on this branch yet"; return; }
    timeout 900 scripts/kafka.sh fetch > "$WORK/kafka.log" 2>&1 ||
      { skip chatd "$scen" "could not fetch the Kafka jars: $(tail -n 1 "$WORK/kafka.log")"; return; }
  fi
  next_port
  local rport=$PORT engine_pid
  taskset -c $SERVER_CPU redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    > "$WORK/redis.log" 2>&1 &
  engine_pid=$!
  PIDS+=("$engine_pid")
  wait_port "$rport" "$engine_pid" 10 || { skip chatd "$scen" "redis-server did not start"; return; }
  local flags=()
  if [[ $engine == redis ]]; then
    flags+=(--store redis --redis "redis://127.0.0.1:$rport" --bus redis)
  else
    next_port
    local kport=$PORT
    if ! timeout 180 taskset -c $SERVER_CPU scripts/kafka.sh start --port "$kport" --dir "$WORK/kafka" --fresh \
         >> "$WORK/kafka.log" 2>&1; then
      skip chatd "$scen" "Kafka did not start: $(tail -n 1 "$WORK/kafka.log")"
      kill "$engine_pid" 2>/dev/null; wait "$engine_pid" 2>/dev/null
      return
    fi
    # The rooms in the Redis beside it, as README's two-node Kafka set-up has them: an embedded
    # store serves one process (its data dir is locked).
    flags+=(--bus kafka --kafka "127.0.0.1:$kport" --store redis --redis "redis://127.0.0.1:$rport")
  fi
  local pa porta
  if start_target chatd "${flags[@]}"; then
    pa=$SRV_PID porta=$SRV_PORT
    SRV_NAME=""  # keep node A running while B starts
    local ids=""
    if [[ $engine == kafka ]]; then
      ids=$(for i in $(seq 0 $((ROOMS - 1))); do
              curl -s -m 5 -X POST "http://127.0.0.1:$porta/chat/room?name=bench-$i"; echo
            done | python3 -c 'import json,sys; print(",".join(json.loads(l)["roomId"] for l in sys.stdin if l.strip()))')
    fi
    if start_target chatd "${flags[@]}"; then
      LG_ARGS=(--ports "$porta,$SRV_PORT")
      [[ -n $ids ]] && LG_ARGS+=(--room-ids "$ids")
      SRV_PIDS="$pa,$SRV_PID"
      warm_until_flat chatd "$scen-max" --mode rooms --conns $((ROOMS * MEMBERS / 5)) --rooms $((ROOMS / 5)) \
        --size 100 --rate 0 --window 4
      local conns=$((ROOMS * MEMBERS)) max rate
      for rep in $(seq "$REPS"); do
        run_lg chatd "$scen-max" "$rep" --mode rooms --conns $conns --rooms $ROOMS --size 100 --rate 0 --window 4
      done
      max=$(median_of chatd "$scen-max" sent_per_s)
      rate=$(python3 -c "print(max(1, round($max * 0.5)))")
      for rep in $(seq "$REPS"); do
        run_lg chatd "$scen-50" "$rep" --mode rooms --conns $conns --rooms $ROOMS --size 100 --rate "$rate"
      done
      # Issue 15's latency target is at one fixed rate, the same for both engines.
      for rep in $(seq "$REPS"); do
        run_lg chatd "$scen-fixed" "$rep" --mode rooms --conns $conns --rooms $ROOMS --size 100 --rate "$TWO_NODE_RATE"
      done
      unset SRV_PIDS
      stop_target
    else
      skip chatd "$scen" "$SKIP_REASON"
    fi
    SRV_PID=$pa SRV_NAME=chatd
    stop_target
  else
    skip chatd "$scen" "$SKIP_REASON"
  fi
  [[ $engine == kafka ]] && timeout 120 scripts/kafka.sh stop --dir "$WORK/kafka" >/dev/null 2>&1
  kill "$engine_pid" 2>/dev/null
  wait "$engine_pid" 2>/dev/null
}

# ---- main ----

wants() { [[ ,$SCENARIOS, == *,$1,* ]]; }

build
log "results: $RESULTS (server core $SERVER_CPU, generator core $GEN_CPU, $REPS repetition(s))"
((SINGLE)) && for target in ${TARGETS//,/ }; do
  log "== $target"
  wants idle && scenario_idle "$target" "$IDLE_SMALL"
  wants idle && scenario_idle "$target" "$IDLE_BIG"
  wants fanout && scenario_fanout "$target"
  wants bursts && scenario_fanout_bursts "$target"
  wants rooms && scenario_rooms "$target"
done
if ((TWO_NODE)) && [[ ,$TARGETS, == *,chatd,* ]]; then
  scenario_two_nodes redis
  scenario_two_nodes kafka
fi

report_args=(--results "$RESULTS" --command "$CMDLINE" --quick "$QUICK" --reps "$REPS")
((WRITE)) && report_args+=(--write "$ROOT/BENCHMARKS.md")
python3 bench/report.py "${report_args[@]}"
