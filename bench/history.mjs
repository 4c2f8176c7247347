// Issue 9's figures (not a test: it prints a table and writes a section of BENCHMARKS.md):
//   CHATD_BIN=build-bench/chatd/src/app/chatd node bench/history.mjs [--reps 3] [--quick] [--no-write]
//                                                 [--engines embedded,redis,kafka] [--only cost|herd|age]
//
// 1. What history costs: bench/loadgen's two scenarios of bench/run.sh against chatd with
//    history on (the defaults) and off (--history-size 0), alternating on and off in one
//    sitting, on the embedded default and on Redis; medians of --reps runs, and on ÷ off (also
//    the median of each rep's on ÷ its neighbouring off: robust to a machine drifting in speed):
//    rooms (100 rooms × 10 members, 100-byte messages, one sender per room with 4 unanswered
//    messages in flight) and fan-out (one room of 1,000, 4 senders with 32 in flight each).
// 2. Replay: one subscriber 1,000 messages behind resumes (x-since-seq + x-epoch): the time from
//    its SUBSCRIBE to the 1,000th message, median of 5.
// 3. Herd after a restart: 100 rooms, each with one message everyone saw; then 100 more per
//    room that 10 members per room miss, and the node is killed (kill -9): embedded, the 100
//    are sent before the kill; Redis and Kafka, while it is down, through a second node (so on
//    Kafka the restarted node's cache never saw them: it reads them from the topic). The node
//    is started again on the same data dir and port, and 1,000 clients (100 rooms × 10) open
//    their connection and resume with x-since-seq (the seen message's seq) at the same moment:
//    time from that moment to each one holding its 100, p50/p99/max, and a check that each got
//    exactly the 100 the sending node's history lists (seqs and texts), in order, once (no
//    notice, nothing extra a second later). Meanwhile a probe in another room sends every 20 ms
//    and times its own messages. Kafka's history cost (1) is not measured: not a target.
// 4. Age (--only age, embedded only; printed, not written): does a node get slower as its history
//    file grows? One node, one set of 1,000 rooms × 10 members, --age-steps runs of
//    --age-seconds each at --age-rate msgs/s in a row (100-byte messages, open loop): after each,
//    history.db's size, chatd's CPU µs per message and the latency quantiles. With
//    --age-history-size N the rooms reach their bound within the run, so the later steps prune.
//
// chatd runs with --threads 1 pinned to core 0 (and redis-server beside it on core 0); the
// generator (bench/loadgen, or this process for 2 and 3) on core 1. The machine is shared:
// the load average is printed with the figures, and only ratios from one sitting compare.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import { createRoom, freePort, redisCommand, repoRoot, startChatd, stompOverWebSocket } from '../tests/integration/harness.mjs';
import { busUp, kafkaBroker, uniqueTopic, waitForHealth } from '../tests/integration/kafka.mjs';

// The load scenarios of bench/run.sh (its full, not --quick, sizes).
const SCENARIOS = {
  rooms: ['--mode', 'rooms', '--conns', '1000', '--rooms', '100', '--size', '100', '--rate', '0', '--window', '4'],
  fanout: ['--mode', 'fanout', '--conns', '1000', '--rooms', '1', '--size', '100', '--window', '32', '--senders-per-room', '4'],
};

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const value = (name, dflt) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : dflt; };
const QUICK = flag('--quick');
const REPS = Number(value('--reps', QUICK ? 1 : 3));
const ENGINES = value('--engines', 'embedded,redis,kafka').split(',');
const ONLY = value('--only', '');  // cost | herd | age: one part only
const AGE_STEPS = Number(value('--age-steps', QUICK ? 2 : 8));
const AGE_SECONDS = Number(value('--age-seconds', QUICK ? 5 : 45));
const AGE_RATE = Number(value('--age-rate', 2000));
const AGE_KEEP = value('--age-history-size', '');  // '': chatd's default
// A partial run prints its figures but does not replace the section written by a whole one.
const WRITE = !flag('--no-write') && !ONLY && ['embedded', 'redis', 'kafka'].every((e) => ENGINES.includes(e));
const DURATION = QUICK ? 3 : 8;
const HERD_ROOMS = QUICK ? 20 : 100;
const HERD_PER_ROOM = 10;
const HERD_MISSED = 100;
const REPLAY = 1000;
const LOADGEN = process.env.LOADGEN_BIN || join(repoRoot, 'build-bench', 'loadgen', 'chatd_loadgen');
// The generator sends far past a person's rate, from one address.
const BENCH_ENV = { CHATD_SEND_RATE: '0', CHATD_ROOM_SEND_RATE: '0', CHATD_MAX_CONNECTIONS_PER_ADDRESS: '0',
  CHATD_ROOM_CREATE_PER_MINUTE: '0' };

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const quantile = (xs, q) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(q * s.length))]; };
const pin = (pid, core) => { try { execFileSync('taskset', ['-a', '-cp', String(core), String(pid)], { stdio: 'ignore' }); } catch { /* one core */ } };
const log = (s) => console.error(`[history-bench ${new Date().toISOString().slice(11, 19)}] ${s}`);

// A private redis-server (no persistence) pinned to core 0: { url, pid, flush(), stop() }.
async function redisServer() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'chatd-bench-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--protected-mode', 'no'], { stdio: 'ignore' });
  for (let i = 0; ; i++) {
    try { if ((await redisCommand(port, 'PING', { timeoutMs: 300 })) === '+PONG') break; } catch { /* starting */ }
    if (i > 200) throw new Error('redis-server did not start');
    await sleep(50);
  }
  pin(child.pid, 0);
  return {
    url: `redis://127.0.0.1:${port}`, pid: child.pid,
    flush: () => redisCommand(port, 'FLUSHALL'),
    async stop() { child.kill(); await new Promise((ok) => child.once('exit', ok)); rmSync(dir, { recursive: true, force: true }); },
  };
}

// The Kafka broker, started when an engine needs it (its own JVM, not pinned).
let kafka = null;

// A chatd node on `engine`; on Kafka, on `topic`, with its rooms in `redis`, once its bus is up.
async function chatd(engine, redis, history, name, where = {}, topic = '', extra = []) {
  const args = ['--threads', '1', ...extra];
  if (!history) args.push('--history-size', '0');
  if (engine === 'redis') args.push('--bus', 'redis', '--store', 'redis', '--redis', redis.url);
  if (engine === 'kafka') args.push('--bus', 'kafka', '--kafka', kafka.address, '--kafka-topic', topic, '--store', 'redis', '--redis', redis.url);
  const node = await startChatd({ name, args, env: BENCH_ENV, timeoutMs: 30_000, ...where });
  pin(node.child.pid, 0);
  if (engine === 'kafka') await waitForHealth(node.base, busUp, 'up', 60_000).catch(async (e) => { await node.stop(); throw e; });
  return node;
}

// ---- 1. the cost of history ----

function loadgen(node, pids, scenario, { load = SCENARIOS[scenario], seconds = DURATION } = {}) {
  return new Promise((ok, fail) => {
    const args = ['-c', '1', LOADGEN, '--port', String(node.port), ...load, '--warmup', '2',
      '--duration', String(seconds), '--drain', '2', '--connect-timeout', '120', '--server-pids', pids.join(','),
      '--engine-pids', pids.join(','),
      '--label', `history-${scenario}`];
    const child = spawn('taskset', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), (seconds + 200) * 1000);
    child.on('close', (code) => {
      clearTimeout(timer);
      try { ok(JSON.parse(out.trim().split('\n').pop())); } catch { fail(new Error(`loadgen exit ${code}: ${err.slice(-500)}`)); }
    });
  });
}

async function cost(engine, redis, scenario) {
  const runs = { on: [], off: [] };
  for (let rep = 0; rep < REPS; rep++) {
    // Alternate which goes first, so a drift in the machine's load hits both alike.
    for (const mode of rep % 2 ? ['off', 'on'] : ['on', 'off']) {
      if (redis) await redis.flush();
      const node = await chatd(engine, redis, mode === 'on', `bench-hist-${engine}-${mode}`);
      try {
        const r = await loadgen(node, redis ? [node.child.pid, redis.pid] : [node.child.pid], scenario);
        // CPU µs per message published of chatd and of redis-server: less at the mercy of other
        // work on the machine than rates are.
        [r.chatd_us_per_msg, r.redis_us_per_msg = 0] = (r.engine_cpu_s ?? []).map((c) => (r.sent ? c / r.sent * 1e6 : 0));
        runs[mode].push(r);
        log(`${engine} ${scenario} history ${mode} #${rep + 1}: ${Math.round(r.sent_per_s)} msgs/s, ${Math.round(r.deliveries_per_s)} deliveries/s, ` +
            `${Math.round(r.deliveries_per_cpu_s)} per server CPU-s (CPU µs/msg: chatd ${r.chatd_us_per_msg?.toFixed(1)}` +
            `${redis ? `, redis-server ${r.redis_us_per_msg.toFixed(1)}` : ''}), p99 ${(r.p99_us / 1000).toFixed(1)} ms, lost ${r.lost}, errors ${r.errors}`);
      } finally {
        await node.stop();
      }
      await sleep(1000);
    }
  }
  const m = (mode, k) => median(runs[mode].map((r) => r[k]));
  const row = {};
  for (const k of ['sent_per_s', 'deliveries_per_s', 'deliveries_per_cpu_s', 'chatd_us_per_msg', 'redis_us_per_msg', 'p99_us']) row[k] = { on: m('on', k), off: m('off', k) };
  // Each rep's on and off runs are neighbours in time: the median of their ratios is less at the
  // mercy of a machine whose speed drifts within the sitting than the ratio of the two medians.
  row.paired = Object.fromEntries(['deliveries_per_s', 'deliveries_per_cpu_s'].map((k) => [k,
    median(runs.on.map((r, i) => (runs.off[i][k] ? r[k] / runs.off[i][k] : 0)))]));
  row.bad = [...runs.on, ...runs.off].filter((r) => r.lost || r.errors || r.reordered || r.conns_failed).length;
  row.spread = Object.fromEntries(['on', 'off'].map((mode) => [mode, runs[mode].map((r) => Math.round(r.sent_per_s))]));
  return row;
}

// ---- 4: age ----

// Runs AGE_STEPS loads in a row on one embedded node and one set of rooms, so its history file
// grows from step to step; returns one row per step.
async function age() {
  const node = await chatd('embedded', null, true, 'bench-hist-age', {}, '', AGE_KEEP ? ['--history-size', AGE_KEEP] : []);
  try {
    const ids = [];
    for (let i = 0; i < 1000; i++) ids.push((await createRoom(node.base, `age-${i}`)).roomId);
    const load = ['--mode', 'rooms', '--conns', '10000', '--rooms', '1000', '--room-ids', ids.join(','), '--size', '100',
      '--rate', String(AGE_RATE)];
    const steps = [];
    for (let step = 1; step <= AGE_STEPS; step++) {
      const r = await loadgen(node, [node.child.pid], 'age', { load, seconds: AGE_SECONDS });
      const mib = (f) => { try { return statSync(join(node.dataDir, f)).size / 2 ** 20; } catch { return 0; } };
      const row = { step, db_mib: mib('history.db'), wal_mib: mib('history.db-wal'), sent: r.sent, lost: r.lost, errors: r.errors,
        chatd_us_per_msg: r.sent ? r.engine_cpu_s[0] / r.sent * 1e6 : 0, p50_us: r.p50_us, p99_us: r.p99_us, p999_us: r.p999_us,
        load: loadavg() };
      steps.push(row);
      log(`age step ${step}: history.db ${row.db_mib.toFixed(0)} MiB (WAL ${row.wal_mib.toFixed(0)}), ${r.sent} sent, ` +
          `chatd ${row.chatd_us_per_msg.toFixed(1)} CPU µs/msg, p50 ${(r.p50_us / 1000).toFixed(2)} p99 ${(r.p99_us / 1000).toFixed(1)} ` +
          `p99.9 ${(r.p999_us / 1000).toFixed(1)} ms, lost ${r.lost}, errors ${r.errors}`);
    }
    return steps;
  } finally {
    await node.stop();
  }
}

// ---- 2 and 3: replay and the herd ----

// Sends `n` TALKs to a room without waiting, then resolves once the node's history holds the last
// of them (every one was published), with the room's epoch and that last message's seq. The
// seqs are read back, not assumed: on Kafka a seq is an offset, not a count within the room.
async function fill(node, session, roomId, n, prefix) {
  for (let i = 0; i < n; i++) session.chat('TALK', roomId, 'filler', `${prefix}${i}`);
  const deadline = Date.now() + 120_000;
  for (;;) {
    const res = await fetch(`${node.base}/chat/room/${roomId}/messages?limit=1`);
    const [last] = res.ok ? await res.json() : [];
    if (last?.message === `${prefix}${n - 1}`) return { epoch: res.headers.get('x-epoch'), seq: last.seq };
    if (Date.now() > deadline) throw new Error(`room ${roomId}: ${prefix}${n - 1} not in history after 120 s`);
    await sleep(50);
  }
}

// The newest `n` messages of a room as { seq, message }, from the node's REST history.
async function newest(node, roomId, n) {
  const res = await fetch(`${node.base}/chat/room/${roomId}/messages?limit=${n}`);
  if (!res.ok) throw new Error(`room ${roomId}: history ${res.status}`);
  return (await res.json()).map((m) => ({ seq: m.seq, message: m.message }));
}

async function replay(node) {
  const room = await createRoom(node.base, 'replay');
  const sender = await stompOverWebSocket(node.base);
  const { seq: seen } = await fill(node, sender, room.roomId, 1, 'seen');
  const { epoch } = await fill(node, sender, room.roomId, REPLAY, 'r');
  await sender.close();
  const times = [];
  for (let rep = 0; rep < 5; rep++) {
    const s = await stompOverWebSocket(node.base, { timeoutMs: 30_000 });
    const t0 = performance.now();
    const c = s.subscribe(`/sub/chat/room/${room.roomId}`, { 'x-since-seq': String(seen), 'x-epoch': epoch });
    const frames = await c.waitFor(REPLAY, 60_000);
    times.push(performance.now() - t0);
    if (frames.some((f) => f.headers['x-history-status'])) throw new Error('replay: a HISTORY notice');
    await s.close();
  }
  return { median_ms: median(times), all_ms: times.map((t) => Math.round(t)) };
}

// Resolves once every collector has `n` frames; rejects after `ms`.
async function allHave(collectors, n, ms) {
  const deadline = Date.now() + ms;
  while (collectors.some((c) => c.frames.length < n)) {
    if (Date.now() > deadline) throw new Error(`herd: ${collectors.filter((c) => c.frames.length < n).length} clients short after ${ms} ms`);
    await sleep(20);
  }
}

async function herdAfterRestart(engine, redis) {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), `chatd-bench-herd-${engine}-`));
  const where = { port, dataDir, keepData: true };
  const topic = uniqueTopic('bench-herd');
  let node = await chatd(engine, redis, true, `bench-hist-${engine}-herd`, where, topic);
  // Redis and Kafka: the messages are sent through a second node while the first is down.
  const other = engine === 'embedded' ? null : await chatd(engine, redis, true, `bench-hist-${engine}-herd-other`, {}, topic);
  let tick;
  try {
    const rooms = [];
    for (let i = 0; i < HERD_ROOMS; i++) rooms.push(await createRoom(node.base, `herd-${i}`));
    const probeRoom = await createRoom(node.base, 'probe');
    const sender = await stompOverWebSocket(node.base);
    // The message every client saw before the drop (seq 1; on Kafka an offset + 1).
    const seen = await Promise.all(rooms.map((r) => fill(node, sender, r.roomId, 1, 'seen')));
    const epochs = seen.map((s) => s.epoch);
    const missed = async (via, s) => Promise.all(rooms.map((r) => fill(via, s, r.roomId, HERD_MISSED, 'm')));
    // What each room's clients must get: the node that took the messages says which seqs they have.
    const wanted = (via) => Promise.all(rooms.map((r) => newest(via, r.roomId, HERD_MISSED)));
    let want;
    if (!other) {
      await missed(node, sender);
      want = await wanted(node);
    }
    await sender.close();
    const killedAt = performance.now();
    await node.stop({ signal: 'SIGKILL' });
    if (other) {
      const s = await stompOverWebSocket(other.base);
      await missed(other, s);
      await s.close();
      want = await wanted(other);
    }
    const restartAt = performance.now();
    node = await chatd(engine, redis, true, `bench-hist-${engine}-herd`, where, topic);
    const restartMs = performance.now() - restartAt;

    // The probe: a room of its own, one message every 20 ms, its latency measured end to end.
    const probeTx = await stompOverWebSocket(node.base);
    const probeRx = await stompOverWebSocket(node.base);
    const lat = { before: [], during: [], after: [] };
    let phase = 'before';
    const probe = probeRx.subscribe(`/sub/chat/room/${probeRoom.roomId}`);
    probe.push = (f) => { const sent = Number(JSON.parse(f.body).message); lat[phase].push(performance.now() - sent); };
    tick = setInterval(() => probeTx.chat('TALK', probeRoom.roomId, 'probe', String(performance.now())), 20);
    await sleep(1000);

    phase = 'during';
    const t0 = performance.now();
    const clients = [];
    const collectors = [];
    const caughtUp = [];
    await Promise.all(rooms.flatMap((room, k) => Array.from({ length: HERD_PER_ROOM }, async () => {
      const s = await stompOverWebSocket(node.base, { timeoutMs: 120_000 });
      clients.push(s);
      const c = s.subscribe(`/sub/chat/room/${room.roomId}`, { 'x-since-seq': String(seen[k].seq), 'x-epoch': epochs[k] });
      c.room = k;
      collectors.push(c);
      await c.waitFor(HERD_MISSED, 120_000);
      caughtUp.push(performance.now() - t0);
    })));
    const total = performance.now() - t0;
    phase = 'after';
    // Anything past the 100 (a duplicate, a notice) has had a second to arrive.
    await sleep(1000);
    clearInterval(tick);
    await allHave(collectors, HERD_MISSED, 1000);
    let exact = 0;
    const wrong = [];
    for (const c of collectors) {
      const got = c.frames.map((f) => ({ notice: f.headers['x-history-status'], ...JSON.parse(f.body) }));
      const w = want[c.room];
      const ok = w.length === HERD_MISSED && w.every((m, i) => m.message === `m${i}`) && got.length === w.length &&
        got.every((m, i) => !m.notice && m.seq === w[i].seq && m.message === w[i].message && m.epoch === epochs[c.room]);
      if (ok) exact++;
      else if (wrong.length < 3) wrong.push(got.map((m) => m.notice ?? `${m.seq}:${m.message}`).join(','));
    }
    for (const s of [...clients, probeTx, probeRx]) await s.close().catch(() => {});
    if (wrong.length) log(`   herd: clients that did not get exactly the ${HERD_MISSED} missed, e.g. ${wrong.join(' | ').slice(0, 600)}`);
    return {
      clients: caughtUp.length, exact, total_ms: total, restart_ms: restartMs, down_ms: restartAt - killedAt + restartMs,
      p50_ms: quantile(caughtUp, 0.5), p99_ms: quantile(caughtUp, 0.99), max_ms: Math.max(...caughtUp),
      probe_before: { p50: quantile(lat.before, 0.5), p99: quantile(lat.before, 0.99), n: lat.before.length },
      probe_during: { p50: quantile(lat.during, 0.5), p99: quantile(lat.during, 0.99), n: lat.during.length },
    };
  } finally {
    clearInterval(tick);
    await node.stop().catch(() => {});
    if (other) await other.stop().catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
  }
}

// ---- main ----

if (!existsSync(LOADGEN)) {
  console.error(`bench/history.mjs: no load generator at ${LOADGEN}; build it:\n` +
    '  cmake -G Ninja -S bench/loadgen -B build-bench/loadgen -DCMAKE_BUILD_TYPE=Release && ninja -C build-bench/loadgen');
  process.exit(2);
}
pin(process.pid, 1);
const started = new Date();
const loads = [loadavg()];
const results = {};
const redis = await redisServer();
try {
  // The first run on a machine fetches the broker's jars from Maven Central: minutes.
  if (ENGINES.includes('kafka') && ONLY !== 'age') kafka = await kafkaBroker();
  if (ONLY === 'age') {
    const steps = await age();
    console.log(['| step | history.db | WAL | messages | chatd CPU µs per message | p50 | p99 | p99.9 | load average |', '|---|---|---|---|---|---|---|---|---|',
      ...steps.map((r) => `| ${r.step} | ${r.db_mib.toFixed(0)} MiB | ${r.wal_mib.toFixed(0)} MiB | ${r.sent}${r.lost || r.errors ? ` (lost ${r.lost}, errors ${r.errors})` : ''} | ` +
        `${r.chatd_us_per_msg.toFixed(1)} | ${(r.p50_us / 1000).toFixed(2)} ms | ${(r.p99_us / 1000).toFixed(1)} ms | ${(r.p999_us / 1000).toFixed(1)} ms | ${r.load} |`)].join('\n'));
  }
  for (const engine of ONLY === 'age' ? [] : ENGINES) {
    results[engine] = {};
    const r = results[engine];
    // Kafka's cost is not one of the issue's targets, and its broker is a JVM that shares the cores.
    if (ONLY !== 'herd' && engine !== 'kafka') {
      r.cost = {};
      for (const scenario of Object.keys(SCENARIOS)) {
        log(`== ${engine}: ${scenario}, history on vs off`);
        r.cost[scenario] = await cost(engine, engine === 'redis' ? redis : null, scenario);
        log(`   ${JSON.stringify(r.cost[scenario])}`);
        loads.push(loadavg());
      }
    }
    if (ONLY === 'cost') continue;
    if (ONLY !== 'herd') {
      if (engine !== 'embedded') await redis.flush();
      const node = await chatd(engine, redis, true, `bench-hist-${engine}-resume`, {}, uniqueTopic('bench-replay'));
      try {
        log(`== ${engine}: replay ${REPLAY}`);
        r.replay = await replay(node);
        log(`   ${JSON.stringify(r.replay)}`);
      } finally {
        await node.stop();
      }
    }
    if (engine !== 'embedded') await redis.flush();
    log(`== ${engine}: ${HERD_ROOMS * HERD_PER_ROOM} clients resume at once after a restart`);
    r.herd = await herdAfterRestart(engine, redis);
    log(`   ${JSON.stringify(r.herd)}`);
    loads.push(loadavg());
  }
} finally {
  await redis.stop();
  await kafka?.release();
}

if (ONLY) process.exit(0);
const k = (x) => (x >= 10_000 ? `${(x / 1000).toFixed(0)}k` : `${Math.round(x)}`);
const ms = (x) => `${x.toFixed(x < 10 ? 1 : 0)} ms`;
const ratio = (a, b) => (b ? (a / b).toFixed(2) : '–');
const rows = [];
for (const [engine, r] of Object.entries(results)) {
  for (const [scenario, c] of Object.entries(r.cost ?? {})) {
    const row = (what, key, f = k) => rows.push(`| ${engine} | ${scenario} | ${what} | ${f(c[key].on)} | ${f(c[key].off)} | ${ratio(c[key].on, c[key].off)} |`);
    row('messages published/s', 'sent_per_s');
    row('deliveries/s', 'deliveries_per_s');
    if (c.paired) rows.push(`| ${engine} | ${scenario} | deliveries/s, each on run ÷ the off run beside it (median) | | | ${c.paired.deliveries_per_s.toFixed(2)} |`);
    row(`deliveries per server CPU-s${engine === 'redis' ? ' (chatd + redis-server)' : ''}`, 'deliveries_per_cpu_s');
    row('chatd CPU µs per message', 'chatd_us_per_msg', (x) => x.toFixed(1));
    if (engine === 'redis') row('redis-server CPU µs per message', 'redis_us_per_msg', (x) => x.toFixed(1));
    row('latency p99', 'p99_us', (x) => ms(x / 1000));
    if (c.bad) rows.push(`| ${engine} | ${scenario} | runs with a loss, error or reorder | ${c.bad} | | |`);
  }
}
const costTable = ['| engine | scenario | measure | history on | history off | on ÷ off |', '|---|---|---|---|---|---|', ...rows].join('\n');
const resumeRows = Object.entries(results).map(([engine, r]) =>
  `| ${engine} | ${ms(r.replay.median_ms)} (${k(REPLAY / (r.replay.median_ms / 1000))} msgs/s) | ${ms(r.herd.restart_ms)} | ` +
  `${r.herd.clients} | ${r.herd.exact} of ${r.herd.clients} | ${ms(r.herd.p50_ms)} | ${ms(r.herd.p99_ms)} | ${ms(r.herd.max_ms)} | ` +
  `${k(r.herd.clients * HERD_MISSED / (r.herd.total_ms / 1000))} | ${ms(r.herd.probe_before.p99)} | ${ms(r.herd.probe_during.p50)} / ${ms(r.herd.probe_during.p99)} |`);
const resumeTable = [
  `| engine | replay ${REPLAY} to one subscriber (median of 5) | restart (start to /healthz) | clients resuming at once, ${HERD_MISSED} missed each | got exactly the ${HERD_MISSED}, in order, once | caught up p50 | p99 | max | replayed msgs/s | probe p99 before | probe p50 / p99 during |`,
  '|---|---|---|---|---|---|---|---|---|---|---|', ...resumeRows].join('\n');

let commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot }).toString().trim();
if (execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoRoot }).toString().trim()) commit += ' (with uncommitted changes)';
const section = `<!-- history-bench:begin -->
## ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC: history's cost and resume (issue 9)

Written by \`node bench/history.mjs${argv.length ? ' ' + argv.join(' ') : ''}\` (chatd \`${process.env.CHATD_BIN || 'build/src/app/chatd'}\`, commit \`${commit}\`)${QUICK ? ', **--quick: short runs, not for comparison**' : ''}.
chatd \`--threads 1\` pinned to core 0 (redis-server beside it on core 0), the generator on core 1.
The machine is shared with other engineers' builds: load average ${loads.join(' → ')} during the run, so
absolute rates are noise and only the ratios from this one sitting compare. History off is
\`--history-size 0\` (seqs, epochs and x-client-id stay; messages are not kept).

What history costs (target: ≤ 10 %), the two scenarios of bench/run.sh: rooms (bench/loadgen
rooms: 100 rooms × 10 members, 100-byte messages, one sender per room with 4 in flight) and
fan-out (one room of 1,000 subscribers, 4 senders with 32 in flight each); ${REPS} runs each, on
and off alternating, medians:

${costTable}

Resume (history on): one subscriber ${REPLAY} messages behind subscribes with \`x-since-seq\`. Then
the herd after a restart: ${HERD_ROOMS} rooms, each with one message every client saw and
${HERD_MISSED} more that ${HERD_PER_ROOM} members per room missed; the node is killed (\`kill -9\`; embedded: the
${HERD_MISSED} were sent before the kill; Redis and Kafka: while it was down, through a second node, so on Kafka
the restarted node's cache never held them and it reads them from the topic) and started again on
the same data dir and port. One second after it answers (the probe's baseline),
${HERD_ROOMS * HERD_PER_ROOM} clients open their connection and resume with \`x-since-seq\` (the seen message's seq) at the same moment, timed from that
moment to each one holding its ${HERD_MISSED} (connection, CONNECT and SUBSCRIBE included; all clients are one Node
process on core 1, so its own work is in the figures). "Exactly" means the ${HERD_MISSED} seqs and texts the
sending node's history lists, in order, no notice, nothing more a second later. Kafka's broker (a JVM)
is not pinned; its rooms are in the same redis-server. A probe in another room sends every
20 ms throughout:

${resumeTable}
<!-- history-bench:end -->
`;
console.log(section);
if (WRITE) {
  const path = join(repoRoot, 'BENCHMARKS.md');
  const doc = readFileSync(path, 'utf8');
  const re = /<!-- history-bench:begin -->[\s\S]*?<!-- history-bench:end -->\n?/;
  writeFileSync(path, re.test(doc) ? doc.replace(re, section) : `${doc.trimEnd()}\n\n${section}`);
  console.error(`wrote ${path}`);
}
