#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, broker + controller in one JVM) for tests and CI.
#
#   scripts/kafka.sh fetch                     resolve the pinned jars from Maven Central (cached)
#   scripts/kafka.sh start --port P --dir D [--fresh]
#                                              format D (first time only), start, wait, print the
#                                              pid; --fresh first stops a broker left in D, wipes D
#   scripts/kafka.sh stop --dir D              SIGTERM, then SIGKILL after a bound
#   scripts/kafka.sh kill --dir D              SIGKILL at once (a crash)
#
# One member of a replicated cluster (scripts/kafka-cluster.sh drives these): start also takes
#   --node-id N --controller-port C --voters 1@host:c1,2@host:c2,... --cluster-id ID --replication R
# (R > 1: internal topics get R replicas and new topics default to R, min.insync.replicas 2).
#
# The jars live outside git in ${CHATD_CACHE:-$HOME/.cache/chatd}/kafka-<version>/libs.
# Restarting with the same --dir keeps the data and the controller port, so a test can bounce
# the broker.
set -euo pipefail

KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}   # 4.x runs on Java 17 and still speaks librdkafka 2.0's protocol versions
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${CHATD_CACHE:-$HOME/.cache/chatd}/kafka-$KAFKA_VERSION
libs=$cache/libs
start_timeout=${KAFKA_START_TIMEOUT:-90}   # seconds until the broker must answer (a loaded 2-core CI box is slow)
stop_timeout=${KAFKA_STOP_TIMEOUT:-20}     # seconds of SIGTERM grace before SIGKILL
# Tests start many short-lived brokers: the client compiler only (starts in half the time) and a
# small heap. KAFKA_JVM=server runs it as Kafka's own kafka-server-start.sh does (1 GiB heap, both
# JIT compilers, G1 aiming at 20 ms pauses), as a real deployment would (on this 2-core bench it
# measured worse: BENCHMARKS.md).
case ${KAFKA_JVM:-test} in
  test) jvm_opts=(-Xms128m -Xmx"${KAFKA_HEAP_MAX:-512m}" -XX:+UseG1GC -XX:TieredStopAtLevel=1) ;;
  server) jvm_opts=(-Xms1g -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
                    -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15) ;;
  *) echo "kafka.sh: KAFKA_JVM is test or server, not '$KAFKA_JVM'" >&2; exit 2 ;;
esac

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
  if [[ -f $libs/.complete ]]; then return 0; fi
  command -v mvn >/dev/null || die "mvn not found (scripts/install-deps.sh test installs it)"
  echo "kafka.sh: fetching Apache Kafka $KAFKA_VERSION jars into $libs" >&2
  local tmp=$cache/libs.tmp.$$
  rm -rf "$tmp"; mkdir -p "$tmp"
  local t0=$SECONDS
  if ! mvn -B -f "$here/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
       dependency:copy-dependencies -DoutputDirectory="$tmp" >"$cache/fetch.log" 2>&1; then
    tail -n 40 "$cache/fetch.log" >&2
    rm -rf "$tmp"; die "maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (log: $cache/fetch.log)"
  fi
  touch "$tmp/.complete"
  rm -rf "$libs"; mv "$tmp" "$libs"
  echo "kafka.sh: fetched in $((SECONDS - t0)) s" >&2
}

# Prints a TCP port on 127.0.0.1, other than $1, that nothing listens on now (a small race, as
# always). Below Linux's ephemeral range (32768+), so no client socket holds it during a restart.
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    if [[ $p != "$1" ]] && ! port_open "$p"; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether the pid recorded in dir $1 is still our broker (not a recycled pid).
alive() {
  [[ -f $1/kafka.pid ]] || return 1
  grep -qa kafka.Kafka "/proc/$(cat "$1/kafka.pid")/cmdline" 2>/dev/null
}

classpath() { local IFS=:; local jars=("$libs"/*.jar); echo "${jars[*]}"; }

write_config() {  # dir port controller_port node_id voters replication
  local dir=$1 port=$2 cport=$3 node=$4 voters=$5 rf=$6
  local isr=1
  ((rf > 1)) && isr=2  # acks=all then means "on at least 2 brokers"; one may be down
  cat >"$dir/server.properties" <<PROPS
# Written by scripts/kafka.sh: one combined broker + controller for tests, tuned to start fast.
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.retention.hours=1
log.segment.bytes=16777216
PROPS
  if ((rf > 1)); then
    cat >>"$dir/server.properties" <<PROPS
# A replicated test cluster on one box: notice a dead broker within seconds, not the defaults'
# 9-18 s, so a leader killed mid-chat is replaced quickly. Never elect an out-of-sync replica.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
replica.lag.time.max.ms=10000
unclean.leader.election.enable=false
PROPS
  fi
}

start() {
  local port="" dir="" fresh=0 node=1 cport="" voters="" cluster_id="" rf=1
  while (($#)); do
    case $1 in
      --port) port=$2; shift 2 ;;
      --dir) dir=$2; shift 2 ;;
      --fresh) fresh=1; shift ;;
      --node-id) node=$2; shift 2 ;;
      --controller-port) cport=$2; shift 2 ;;
      --voters) voters=$2; shift 2 ;;
      --cluster-id) cluster_id=$2; shift 2 ;;
      --replication) rf=$2; shift 2 ;;
      *) die "start: unknown argument $1" ;;
    esac
  done
  [[ -n $port && -n $dir ]] || die "usage: kafka.sh start --port P --dir D"
  command -v java >/dev/null || die "java not found (Kafka $KAFKA_VERSION needs Java 17+)"
  fetch
  if ((fresh)) && [[ -d $dir ]]; then stop --dir "$dir"; rm -rf "$dir"; fi
  mkdir -p "$dir/logs"
  dir=$(cd "$dir" && pwd)
  if alive "$dir"; then die "a broker already runs from $dir (pid $(cat "$dir/kafka.pid"))"; fi
  if port_open "$port"; then die "port $port is already in use"; fi

  local cp; cp=$(classpath)
  local jvm=(java "${jvm_opts[@]}" -Djava.awt.headless=true
             -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" -Dkafka.logs.dir="$dir/logs"
             -cp "$cp")
  # A restart on the same dir keeps the controller port and the formatted storage.
  if [[ -z $cport ]]; then
    if [[ -f $dir/controller.port ]]; then cport=$(cat "$dir/controller.port")
    else cport=$(free_port "$port"); fi
  fi
  echo "$cport" >"$dir/controller.port"
  [[ -n $voters ]] || voters="$node@127.0.0.1:$cport"
  write_config "$dir" "$port" "$cport" "$node" "$voters" "$rf"
  if [[ ! -f $dir/data/meta.properties ]]; then
    # Like Kafka's own Uuid.randomUuid(): never a leading '-', which the tool reads as an option.
    [[ -n $cluster_id ]] || cluster_id=-
    while [[ $cluster_id == -* ]]; do
      cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    "${jvm[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
      >"$dir/logs/format.log" 2>&1 || { cat "$dir/logs/format.log" >&2; die "storage format failed"; }
  fi

  local t0=$SECONDS
  [[ -f $dir/logs/server.log ]] && mv -f "$dir/logs/server.log" "$dir/logs/server.log.1"  # keep the last run's
  nohup "${jvm[@]}" kafka.Kafka "$dir/server.properties" >"$dir/logs/stdout.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/kafka.pid"
  # Ready once the port accepts and the broker has logged that it finished starting.
  local deadline=$((SECONDS + start_timeout))
  until port_open "$port" && grep -q "Kafka Server started" "$dir/logs/server.log"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$dir/logs/server.log" "$dir/logs/stdout.log" >&2 || true
      rm -f "$dir/kafka.pid"; die "broker exited during start-up"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$dir/logs/server.log" >&2 || true
      stop --dir "$dir"; die "broker not ready within ${start_timeout} s"
    fi
    sleep 0.2
  done
  echo "kafka.sh: broker on 127.0.0.1:$port ready in $((SECONDS - t0)) s (logs: $dir/logs)" >&2
  echo "$pid"
}

# stop: SIGTERM, then SIGKILL after a bound. With --kill: SIGKILL at once, as a crash would (no
# controlled shutdown, no leadership handed over first).
stop() {
  local dir="" sig=TERM
  while (($#)); do
    case $1 in
      --dir) dir=$2; shift 2 ;;
      --kill) sig=KILL; shift ;;
      *) die "stop: unknown argument $1" ;;
    esac
  done
  [[ -n $dir ]] || die "usage: kafka.sh stop --dir D"
  [[ -f $dir/kafka.pid ]] || return 0
  local pid; pid=$(cat "$dir/kafka.pid")
  if alive "$dir" && kill -"$sig" "$pid" 2>/dev/null; then
    local deadline=$((SECONDS + stop_timeout))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "kafka.sh: broker $pid ignored SIGTERM for ${stop_timeout} s; killing" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$dir/kafka.pid"
}

cmd=${1:-}; shift || true
case $cmd in
  fetch) fetch ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  kill) stop --kill "$@" ;;
  *) echo "usage: kafka.sh fetch | start --port P --dir D | stop --dir D | kill --dir D" >&2; exit 2 ;;
esac
