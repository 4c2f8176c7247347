#!/usr/bin/env bash
# A private RabbitMQ node with Web-STOMP, for benchmarking chatd against a real STOMP broker.
#   rabbit.sh start DIR WS_PORT   -> starts in the background, waits until Web-STOMP answers,
#                                    writes DIR/beam.pid (the Erlang VM to measure)
#   rabbit.sh stop DIR            -> stops the node and its epmd-registered name
# Web-STOMP is at ws://127.0.0.1:WS_PORT/ws; STOMP destinations /topic/<room>; user guest/guest
# (guest may log in from loopback only, which is all we use).
set -euo pipefail
BIN=/usr/lib/rabbitmq/bin  # Debian's /usr/sbin wrappers su to the rabbitmq user; we run privately

cmd=${1:-}; dir=${2:-}
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 start DIR WS_PORT | stop DIR" >&2; exit 2; }

env_for() {  # everything lives in DIR: data, logs, config, cookie
  local port=$1
  export HOME=$dir RABBITMQ_NODENAME=chatdbench$port@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$((port + 1))
  export RABBITMQ_DIST_PORT=$((port + 2))
  export RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log
  export RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf RABBITMQ_PID_FILE=$dir/beam.pid
  export RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf
}

case $cmd in
start)
  port=${3:?WS_PORT}
  mkdir -p "$dir/mnesia" "$dir/log"
  : > "$dir/rabbitmq-env.conf"
  echo "$port" > "$dir/port"
  echo "[rabbitmq_web_stomp]." > "$dir/enabled_plugins"
  cat > "$dir/rabbitmq.conf" <<CONF
web_stomp.tcp.port = $port
web_stomp.tcp.ip = 127.0.0.1
stomp.listeners.tcp.1 = 127.0.0.1:$((port + 3))
loopback_users.guest = true
# The generator holds idle connections without heart-beats (like chatd's idle scenario); Cowboy
# would close them after its 60 s default idle timeout.
web_stomp.ws_opts.idle_timeout = 3600000
web_stomp.cowboy_opts.idle_timeout = 3600000
log.console = false
log.file.level = warning
CONF
  env_for "$port"
  [[ -f $dir/.erlang.cookie ]] || { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/.erlang.cookie"; chmod 400 "$dir/.erlang.cookie"; }
  "$BIN/rabbitmq-server" > "$dir/log/stdout" 2>&1 &
  echo $! > "$dir/script.pid"
  # rabbitmqctl wait returns once the app is up (bounded by its own timeout).
  timeout 120 "$BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" wait --timeout 110 "$dir/beam.pid" >/dev/null
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
  done
  echo "rabbitmq: node $RABBITMQ_NODENAME up, web-stomp ws://127.0.0.1:$port/ws, beam pid $(cat "$dir/beam.pid")"
  ;;
stop)
  [[ -f $dir/port ]] || exit 0
  env_for "$(cat "$dir/port")"
  timeout 60 "$BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" stop >/dev/null 2>&1 || true
  # A node that held 18k connections can take a while to let go; the next scenario's node must
  # not start beside a dying one, so wait for the VM to exit (SIGKILL after 30 s).
  if [[ -f $dir/beam.pid ]]; then
    pid=$(cat "$dir/beam.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  echo "rabbitmq: node $RABBITMQ_NODENAME stopped"
  ;;
*) echo "usage: $0 start DIR WS_PORT | stop DIR" >&2; exit 2 ;;
esac
