#!/usr/bin/env bash
# Three chatd nodes on one Redis behind HAProxy (deploy/haproxy.cfg), on loopback, to try the
# load-balanced setup with one command:
#
#   scripts/lb-cluster.sh start --dir D --port P
#       HAProxy on 127.0.0.1:P, chatd nodes on P+1, P+2, P+3 (--bus redis --store redis),
#       redis-server on P+4 (append-only file in D); prints http://127.0.0.1:P
#   scripts/lb-cluster.sh restart-node --dir D --node N    SIGTERM node N (it drains), start it
#                                                            again, wait until it is healthy
#   scripts/lb-cluster.sh rolling-restart --dir D           restart-node 1, 2, 3, each once
#                                                            HAProxy has it back in rotation
#   scripts/lb-cluster.sh stop --dir D
#
# CHATD_BIN picks the binary (default build/src/app/chatd); logs are D/*.log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${CHATD_BIN:-$repo/build/src/app/chatd}

die() { echo "lb-cluster.sh: $*" >&2; exit 1; }

cmd=${1:-}; shift || true
dir= port= node=
while (($#)); do
  case $1 in
    --dir) dir=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --node) node=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[[ -n $dir ]] || die "--dir is required"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits (bounded) until $1 succeeds; $2 names it for the error.
wait_for() {
  local deadline=$((SECONDS + 30))
  until eval "$1"; do
    ((SECONDS < deadline)) || die "$2 not within 30 s"
    sleep 0.2
  done
}

# Whether GET /healthz on 127.0.0.1:$1 answers 200 (bash's /dev/tcp: no curl needed).
healthy() {
  local status
  status=$( { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || exit 1
            printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && timeout 2 head -n 1 <&3)
  [[ $status == *" 200 "* ]]
}

# HAProxy's view of server chatd/nN ("UP", "DOWN", ...), from its admin socket.
lb_state() {
  python3 - "$dir/haproxy.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
out = b""
while chunk := s.recv(65536): out += chunk
lines = out.decode().splitlines(); cols = lines[0].lstrip("# ").split(",")
for l in lines[1:]:
    f = l.split(",")
    if len(f) > cols.index("status") and f[0] == "chatd" and f[1] == "n" + sys.argv[2]: print(f[cols.index("status")])
PY
}

start_node() {  # N
  local n=$1
  # shellcheck disable=SC1091
  source "$dir/ports.env"
  local p=$((base + n))
  mkdir -p "$dir/n$n"
  nohup "$bin" --port "$p" --address 127.0.0.1 --data-dir "$dir/n$n" --web-root "$repo/web" --node-id "n$n" \
    --bus redis --store redis --redis "redis://127.0.0.1:$((base + 4))" --trusted-proxies 127.0.0.1 \
    >>"$dir/n$n.log" 2>&1 </dev/null &
  echo $! >"$dir/n$n.pid"
  wait_for "healthy $p" "node $n healthy on $p"
}

stop_pid() {  # pidfile
  [[ -f $1 ]] || return 0
  local pid; pid=$(cat "$1")
  if kill -TERM "$pid" 2>/dev/null; then
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

start() {
  [[ -n $port ]] || die "--port is required"
  [[ -x $bin ]] || die "no chatd at $bin (scripts/build.sh, or set CHATD_BIN)"
  command -v haproxy >/dev/null || die "haproxy not found (scripts/install-deps.sh test installs it)"
  command -v redis-server >/dev/null || die "redis-server not found"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  for p in $port $((port + 1)) $((port + 2)) $((port + 3)) $((port + 4)); do
    port_open "$p" && die "port $p is in use"
  done
  echo "base=$port" >"$dir/ports.env"
  redis-server --port $((port + 4)) --bind 127.0.0.1 --dir "$dir" --appendonly yes --save '' \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  wait_for "port_open $((port + 4))" "redis-server"
  for n in 1 2 3; do start_node "$n"; done
  CHATD_LB_BIND=127.0.0.1:$port CHATD_LB_SOCKET=$dir/haproxy.sock CHATD_NODE1=127.0.0.1:$((port + 1)) \
    CHATD_NODE2=127.0.0.1:$((port + 2)) CHATD_NODE3=127.0.0.1:$((port + 3)) \
    haproxy -D -p "$dir/haproxy.pid" -f "$repo/deploy/haproxy.cfg" >>"$dir/haproxy.log" 2>&1
  for n in 1 2 3; do wait_for "[[ \$(lb_state $n) == UP ]]" "HAProxy seeing node $n up"; done
  echo "lb-cluster.sh: HAProxy on 127.0.0.1:$port in front of nodes on $((port + 1))-$((port + 3)), redis on $((port + 4))" >&2
  echo "http://127.0.0.1:$port"
}

restart_node() {  # N
  local n=$1 t0=$SECONDS
  [[ $n =~ ^[123]$ ]] || die "--node must be 1, 2 or 3"
  stop_pid "$dir/n$n.pid"
  start_node "$n"
  wait_for "[[ \$(lb_state $n) == UP ]]" "HAProxy seeing node $n up again"
  echo "lb-cluster.sh: node $n drained, restarted and back in rotation in $((SECONDS - t0)) s" >&2
}

stop() {
  stop_pid "$dir/haproxy.pid"
  for n in 1 2 3; do stop_pid "$dir/n$n.pid"; done
  stop_pid "$dir/redis.pid"
}

case $cmd in
  start) start ;;
  restart-node) restart_node "$node" ;;
  rolling-restart) for n in 1 2 3; do restart_node "$n"; done ;;
  stop) stop ;;
  *) echo "usage: lb-cluster.sh start --dir D --port P | restart-node --dir D --node N | rolling-restart --dir D | stop --dir D" >&2; exit 2 ;;
esac
