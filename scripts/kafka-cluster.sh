#!/usr/bin/env bash
# A replicated Apache Kafka cluster on loopback: 3 brokers (KRaft, each broker + controller in one
# JVM, a 3-voter quorum), built on scripts/kafka.sh (same cached jars), for tests and for trying
# chatd on a broker that survives losing one machine:
#
#   scripts/kafka-cluster.sh start --dir D --port P [--fresh]
#       brokers 1, 2, 3 on 127.0.0.1:P, P+1, P+2 (controllers on P+3, P+4, P+5), data in D/b1..b3;
#       waits until all three run, prints the bootstrap list 127.0.0.1:P,127.0.0.1:P+1,127.0.0.1:P+2
#   scripts/kafka-cluster.sh stop --dir D                 SIGTERM every broker (SIGKILL after a bound)
#   scripts/kafka-cluster.sh kill-broker --dir D --broker N    SIGKILL broker N (1..3), as a crash
#   scripts/kafka-cluster.sh start-broker --dir D --broker N   start broker N again on its data
#
# Topics get replication factor 3 and min.insync.replicas 2 by default, so acks=all means "on
# at least two brokers" and the cluster keeps taking writes with one broker down. Start chatd
# with --kafka <the printed list> --kafka-replication 3.
# KAFKA_HEAP_MAX (default 384m here) bounds each JVM's heap.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kafka_sh=$here/kafka.sh
export KAFKA_HEAP_MAX=${KAFKA_HEAP_MAX:-384m}
brokers=3

die() { echo "kafka-cluster.sh: $*" >&2; exit 1; }

cmd=${1:-}; shift || true
dir= port= fresh=0 broker=
while (($#)); do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --broker) broker=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ -n $dir ]] || die "--dir is required"

# The cluster's shape, written by start and read by start-broker: base port and cluster id.
layout=$dir/cluster.env

voters() {  # base port
  local v=() i
  for ((i = 1; i <= brokers; i++)); do v+=("$i@127.0.0.1:$(($1 + brokers + i - 1))"); done
  local IFS=,; echo "${v[*]}"
}

bootstrap() {  # base port
  local b=() i
  for ((i = 1; i <= brokers; i++)); do b+=("127.0.0.1:$(($1 + i - 1))"); done
  local IFS=,; echo "${b[*]}"
}

start_one() {  # broker number; base port and cluster id from the layout
  local n=$1
  # shellcheck disable=SC1090
  source "$layout"
  "$kafka_sh" start --dir "$dir/b$n" --port $((base_port + n - 1)) --node-id "$n" \
    --controller-port $((base_port + brokers + n - 1)) --voters "$(voters "$base_port")" \
    --cluster-id "$cluster_id" --replication "$brokers" >/dev/null
}

start() {
  [[ -n $port ]] || die "--port is required"
  "$kafka_sh" fetch
  if ((fresh)) && [[ -d $dir ]]; then stop; rm -rf "$dir"; fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ ! -f $layout ]]; then
    local id=-
    while [[ $id == -* ]]; do id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='); done
    printf 'base_port=%s\ncluster_id=%s\n' "$port" "$id" >"$layout"
  fi
  # shellcheck disable=SC1090
  source "$layout"
  [[ $base_port == "$port" ]] || die "$dir was made for --port $base_port"
  # Together: a broker finishes starting only once a majority of the quorum is up.
  local pids=() i failed=0
  for ((i = 1; i <= brokers; i++)); do start_one "$i" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if ((failed)); then stop; die "not every broker started (logs: $dir/b*/logs)"; fi
  echo "kafka-cluster.sh: $brokers brokers ready (logs: $dir/b*/logs)" >&2
  bootstrap "$port"
}

stop() {
  local pids=() i
  for ((i = 1; i <= brokers; i++)); do
    [[ -d $dir/b$i ]] || continue
    "$kafka_sh" stop --dir "$dir/b$i" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || true; done
}

one_broker() {
  [[ $broker =~ ^[1-9]$ ]] && ((broker <= brokers)) || die "--broker must be 1..$brokers"
  [[ -f $layout ]] || die "no cluster in $dir (start it first)"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  kill-broker) one_broker; "$kafka_sh" kill --dir "$dir/b$broker" ;;
  start-broker) one_broker; start_one "$broker" ;;
  *) echo "usage: kafka-cluster.sh start --dir D --port P [--fresh] | stop --dir D |" \
          "kill-broker --dir D --broker N | start-broker --dir D --broker N" >&2; exit 2 ;;
esac
