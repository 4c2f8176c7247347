#!/usr/bin/env bash
# Issue 15's figures without a full bench/run.sh: alternating runs in one sitting of chatd
# (CHATD_BIN, and an older build as CHATD_BEFORE if given: "chatd-before" vs "chatd-after"),
# Centrifugo 6.9.1 and the ceiling peer; fan-out 1x1000 in bursts of 20 and single messages,
# 3 repetitions. Each server is pinned to core 0 (chatd --threads 1, Go peers GOMAXPROCS=1), the
# generator to core 1; perf stat counts the server's write system calls over each generator run,
# so writes per subscriber per burst = writes / (deliveries / burst), set-up included (<1 %).
# A write submitted through io_uring (chatd --ws-write-backend io_uring) counts as a write
# (io_uring:io_uring_complete) but not as a system call; io_uring_enter counts as one.
# CHATD_BEFORE_ARGS / CHATD_ARGS: extra chatd arguments for each (e.g. --ws-write-backend io_uring).
# FANOUT_BURSTS (default "20 1"), FANOUT_SERVERS (default all) and LOADGEN_ARGS (e.g. "--poll busy")
# narrow or vary a sitting.
# Prints the medians; the runs stay in build-bench/results/fanout-writes-*.jsonl.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LG=$ROOT/build-bench/loadgen/chatd_loadgen
CACHE=${BENCH_CACHE:-$HOME/.cache/chatd-bench}
BEFORE=${CHATD_BEFORE:-}  # an older chatd binary to compare with, optional
AFTER=${CHATD_BIN:-$ROOT/build-bench/chatd/src/app/chatd}
OUT=${BENCH_OUT:-$ROOT/build-bench/results}/fanout-writes-$(date -u +%Y%m%dT%H%M%SZ).jsonl; mkdir -p "$(dirname "$OUT")"; : > "$OUT"
PORT=${BENCH_PORT_BASE:-29600}
# One generator connection sends far past a person, and 1000 come from one address.
export CHATD_SEND_RATE=0 CHATD_ROOM_SEND_RATE=0 CHATD_MAX_CONNECTIONS_PER_ADDRESS=0 CHATD_ROOM_CREATE_PER_MINUTE=0
"$ROOT/bench/peers/centrifugo/install.sh" > /dev/null && "$ROOT/bench/peers/ceiling/install.sh" > /dev/null || exit 1
for rep in 1 2 3; do
 for burst in ${FANOUT_BURSTS:-20 1}; do
  for t in ${FANOUT_SERVERS:-${BEFORE:+chatd-before} chatd-after centrifugo ceiling}; do
   PORT=$((PORT+1)); D=$(mktemp -d /tmp/chatd-fw.XXXX)
   case $t in
    chatd-*) bin=$AFTER; [[ $t == chatd-before ]] && bin=$BEFORE
       extra=${CHATD_ARGS:-}; [[ $t == chatd-before ]] && extra=${CHATD_BEFORE_ARGS:-}
       taskset -c 0 "$bin" --port $PORT --threads 1 --data-dir $D $extra > $D/log 2>&1 & SP=$!; ARGS=(--port $PORT);;
    centrifugo) sed "s/\"port\": 8000/\"port\": $PORT/" $ROOT/bench/peers/centrifugo/config.json > $D/c.json
       GOMAXPROCS=1 taskset -c 0 $CACHE/bin/centrifugo -c $D/c.json > $D/log 2>&1 & SP=$!
       ARGS=(--port $PORT --path /connection/websocket --protocol centrifugo --room-source names);;
    ceiling) GOMAXPROCS=1 taskset -c 0 $CACHE/bin/ceiling --port $PORT > $D/log 2>&1 & SP=$!
       ARGS=(--port $PORT --path / --protocol raw --room-source names);;
   esac
   for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
   perf stat -x, -e 'syscalls:sys_enter_sendmsg,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_io_uring_enter,io_uring:io_uring_complete' -p $SP -o $D/perf.txt > /dev/null 2>&1 & PP=$!
   timeout 120 taskset -c 1 $LG "${ARGS[@]}" --mode fanout --conns 1000 --rooms 1 --size 100 --burst $burst --warmup 2 --duration 6 --drain 2 ${LOADGEN_ARGS:-} --server-pids $SP --label $t/b$burst > $D/lg.json 2> $D/lg.err
   kill -INT $PP; wait $PP 2>/dev/null
   kill $SP; wait $SP 2>/dev/null
   python3 - $D $burst $t $rep >> $OUT <<'PY'
import json,sys
d,burst,t,rep=sys.argv[1],int(sys.argv[2]),sys.argv[3],int(sys.argv[4])
j=json.loads(open(d+'/lg.json').read() or '{}')
c={p[2]:int(p[0]) for p in (l.strip().split(',') for l in open(d+'/perf.txt')) if len(p)>2 and p[0].isdigit()}
w=sum(v for k,v in c.items() if k!='syscalls:sys_enter_io_uring_enter')
sc=sum(v for k,v in c.items() if k.startswith('syscalls:'))
dt=j.get('delivered_total',0)
print(json.dumps({"t":t,"burst":burst,"rep":rep,"deliv_s":j.get('deliveries_per_s'),"per_cpu_s":j.get('deliveries_per_cpu_s'),"p50":j.get('p50_us'),"p99":j.get('p99_us'),"writes":w,"wpsb":w/(dt/burst) if dt else -1,"write_syscalls":sc,"sc_per_deliv":sc/dt if dt else -1,"lost":j.get('lost'),"errors":j.get('errors'),"gen_cpu":j.get('loadgen_cpu_s'),"srv_cpu":j.get('server_cpu_s'),"dur":j.get('duration_s')}))
PY
   tail -1 $OUT
   rm -rf $D
  done
 done
done
python3 - "$OUT" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for b in (20, 1):
    print("burst", b)
    for t in ["chatd-before", "chatd-after", "centrifugo", "ceiling"]:
        r = [x for x in rows if x["t"] == t and x["burst"] == b]
        if r:
            m = {k: st.median([x.get(k, -1) for x in r]) for k in ["deliv_s", "per_cpu_s", "p99", "wpsb", "sc_per_deliv", "srv_cpu", "gen_cpu", "dur"]}
            print("  %-13s deliveries/s %9.0f  per server CPU-s %9.0f  p99 %6.1f ms  writes/sub/burst %.2f  write syscalls/delivery %.3f  CPU server %.0f %% generator %.0f %%"
                  % (t, m["deliv_s"], m["per_cpu_s"], m["p99"] / 1000, m["wpsb"], m["sc_per_deliv"], 100 * m["srv_cpu"] / m["dur"], 100 * m["gen_cpu"] / m["dur"]))
PY
