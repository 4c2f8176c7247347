#!/usr/bin/env bash
# A real Redis Cluster on loopback (Debian's redis-server 7), for tests, benchmarks and trying
# chatd on several shards:
#
#   scripts/redis-cluster.sh start --dir D --port P [--primaries N] [--replicas R] [--password PW]
#       starts N*(R+1) redis-server processes on ports P, P+1, ... (N=3, R=1 by default; N of 1
#       or 2 only with R=0, as benchmarks use them), joins
#       them with `redis-cli --cluster create`, waits until the cluster is ok on every node, and
#       prints the chatd URL: redis+cluster://127.0.0.1:P,127.0.0.1:P+1,...
#   scripts/redis-cluster.sh stop --dir D      SIGTERM, then SIGKILL after a bound; wipes nothing
#
# The cluster bus uses port+10000, so P+N*(R+1)+10000 must stay below 65536 (P < 55000 is safe).
# cluster-node-timeout is 2000 ms (CHATD_REDIS_NODE_TIMEOUT) and replicas take over however old
# their data (cluster-replica-validity-factor 0): a killed primary's replica takes over within
# a few seconds, which is what the tests exercise. cluster-require-full-coverage no keeps the
# other shards serving while one has no primary (chat in their rooms never stops); use it in
# production too. start returns once every replica is in sync.
set -euo pipefail

die() { echo "redis-cluster.sh: $*" >&2; exit 1; }
command -v redis-server >/dev/null || die "redis-server not found (scripts/install-deps.sh test installs it)"

cmd=${1:-}; shift || true
dir= port= primaries=3 replicas=1 password=
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --primaries) primaries=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    --password) password=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ -n $dir ]] || die "--dir is required"
node_timeout=${CHATD_REDIS_NODE_TIMEOUT:-2000}

cli() {  # port args...
  local p=$1; shift
  if [[ -n $password ]]; then REDISCLI_AUTH=$password redis-cli -p "$p" "$@"
  else redis-cli -p "$p" "$@"; fi
}

stop() {
  shopt -s nullglob
  local pids=()
  for f in "$dir"/*/redis.pid; do
    local pid; pid=$(cat "$f")
    if grep -qa redis-server "/proc/$pid/cmdline" 2>/dev/null; then kill "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  for _ in $(seq 1 50); do
    local left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [[ $left == 0 ]] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

start() {
  [[ -n $port ]] || die "--port is required"
  local total=$((primaries * (replicas + 1)))
  (( port + total + 10000 < 65536 )) || die "--port too high: the cluster bus uses port+10000"
  (( primaries >= 3 || replicas == 0 )) || die "replicas need at least 3 primaries (redis-cli --cluster create)"
  (( primaries >= 1 )) || die "--primaries must be at least 1"
  mkdir -p "$dir"
  local addrs=() urls=()
  for i in $(seq 0 $((total - 1))); do
    local p=$((port + i)) d="$dir/$((port + i))"
    rm -rf "$d"; mkdir -p "$d"
    local args=(--port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$d/nodes.conf"
                --cluster-node-timeout "$node_timeout" --cluster-replica-validity-factor 0
                --cluster-require-full-coverage no
                --repl-diskless-sync-delay 0 --save "" --appendonly no --dir "$d"
                --logfile "$d/redis.log" --pidfile "$d/redis.pid" --daemonize yes)
    if [[ -n $password ]]; then args+=(--requirepass "$password" --masterauth "$password"); fi
    redis-server "${args[@]}"
    addrs+=("127.0.0.1:$p"); urls+=("127.0.0.1:$p")
  done
  for a in "${addrs[@]}"; do
    local p=${a##*:} ok=0
    for _ in $(seq 1 100); do
      if [[ $(cli "$p" ping 2>/dev/null) == PONG ]]; then ok=1; break; fi
      sleep 0.05
    done
    [[ $ok == 1 ]] || die "redis-server on port $p did not start (log: $dir/$p/redis.log)"
  done
  if ((primaries >= 3)); then
    cli "$port" --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes >"$dir/create.log" 2>&1 ||
      { cat "$dir/create.log" >&2; die "redis-cli --cluster create failed"; }
  else
    # redis-cli refuses fewer than 3 primaries; 1 or 2 shards (benchmarks compare them) are
    # set up by hand: even slot ranges, distinct config epochs, then the nodes meet.
    local i
    for ((i = 0; i < primaries; i++)); do
      local p=$((port + i))
      cli "$p" cluster addslotsrange $((16384 * i / primaries)) $((16384 * (i + 1) / primaries - 1)) >/dev/null
      cli "$p" cluster set-config-epoch $((i + 1)) >/dev/null
      ((i == 0)) || cli "$p" cluster meet 127.0.0.1 "$port" >/dev/null
    done
  fi
  # Every node must agree the cluster is ok (all slots served) before anyone uses it.
  for a in "${addrs[@]}"; do
    local p=${a##*:} ok=0
    for _ in $(seq 1 200); do
      if cli "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then ok=1; break; fi
      sleep 0.05
    done
    [[ $ok == 1 ]] || die "node $p never reported cluster_state:ok"
  done
  # A replica that has not finished its first sync cannot take over: wait for every link.
  local want=$((primaries * replicas)) up=0
  for _ in $(seq 1 200); do
    up=0
    for a in "${addrs[@]}"; do
      cli "${a##*:}" info replication 2>/dev/null | grep -q '^master_link_status:up' && up=$((up + 1))
    done
    [[ $up == "$want" ]] && break
    sleep 0.05
  done
  [[ $up == "$want" ]] || die "only $up of $want replicas finished their first sync"
  local IFS=,
  local auth=
  [[ -n $password ]] && auth=":$password@"
  echo "redis+cluster://$auth${urls[*]}"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop --dir D [--port P] [--primaries N] [--replicas R] [--password PW]" ;;
esac
