// Issue 9's figures (not a test: it prints a table and writes a section of BENCHMARKS.md):
//   CHATD_BIN=build-bench/chatd/src/app/chatd node bench/history.mjs [--reps 3] [--quick] [--no-write]
//                                                 [--engines embedded,redis] [--only cost]
//
// 1. What history costs: bench/loadgen's rooms scenario (100 rooms × 10 members, 100-byte
//    messages, one sender per room with 4 unanswered messages in flight) against chatd with
//    history on (the defaults) and off (--history-size 0), alternating on and off in one sitting,
//    on the embedded default and on Redis; medians of --reps runs, and on ÷ off.
// 2. Replay: one subscriber 1,000 messages behind resumes (x-since-seq + x-epoch): the time from
//    its SUBSCRIBE to the 1,000th message, median of 5.
// 3. Herd: 1,000 clients (100 rooms × 10), each 50 messages behind, connect and resume at once
//    (a node restart's reconnect storm): time from the start to each client holding its 50,
//    p50/p99/max; meanwhile a probe in another room sends every 20 ms and times its own messages.
//
// chatd runs with --threads 1 pinned to core 0 (and redis-server beside it on core 0); the
// generator (bench/loadgen, or this process for 2 and 3) on core 1. The machine is shared:
// the load average is printed with the figures, and only ratios from one sitting compare.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

import { createRoom, freePort, redisCommand, repoRoot, startChatd, stompOverWebSocket } from '../tests/integration/harness.mjs';

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const value = (name, dflt) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : dflt; };
const QUICK = flag('--quick');
const REPS = Number(value('--reps', QUICK ? 1 : 3));
const ENGINES = value('--engines', 'embedded,redis').split(',');
const ONLY_COST = value('--only', '') === 'cost';
// A partial run prints its figures but does not replace the section written by a whole one.
const WRITE = !flag('--no-write') && !ONLY_COST && ENGINES.length === 2;
const DURATION = QUICK ? 3 : 8;
const HERD_ROOMS = QUICK ? 20 : 100;
const HERD_PER_ROOM = 10;
const HERD_MISSED = 50;
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

async function chatd(engine, redis, history, name) {
  const args = ['--threads', '1'];
  if (!history) args.push('--history-size', '0');
  if (engine === 'redis') args.push('--bus', 'redis', '--store', 'redis', '--redis', redis.url);
  const node = await startChatd({ name, args, env: BENCH_ENV, timeoutMs: 30_000 });
  pin(node.child.pid, 0);
  return node;
}

// ---- 1. the cost of history ----

function loadgen(node, pids) {
  return new Promise((ok, fail) => {
    const args = ['-c', '1', LOADGEN, '--port', String(node.port), '--mode', 'rooms', '--conns', '1000', '--rooms', '100',
      '--size', '100', '--rate', '0', '--window', '4', '--warmup', '2', '--duration', String(DURATION), '--drain', '2',
      '--connect-timeout', '120', '--server-pids', pids.join(','), '--label', 'history'];
    const child = spawn('taskset', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), (DURATION + 200) * 1000);
    child.on('close', (code) => {
      clearTimeout(timer);
      try { ok(JSON.parse(out.trim().split('\n').pop())); } catch { fail(new Error(`loadgen exit ${code}: ${err.slice(-500)}`)); }
    });
  });
}

async function cost(engine, redis) {
  const runs = { on: [], off: [] };
  for (let rep = 0; rep < REPS; rep++) {
    // Alternate which goes first, so a drift in the machine's load hits both alike.
    for (const mode of rep % 2 ? ['off', 'on'] : ['on', 'off']) {
      if (redis) await redis.flush();
      const node = await chatd(engine, redis, mode === 'on', `bench-hist-${engine}-${mode}`);
      try {
        const r = await loadgen(node, redis ? [node.child.pid, redis.pid] : [node.child.pid]);
        runs[mode].push(r);
        log(`${engine} history ${mode} #${rep + 1}: ${Math.round(r.sent_per_s)} msgs/s, ${Math.round(r.deliveries_per_s)} deliveries/s, ` +
            `${Math.round(r.deliveries_per_cpu_s)} per server CPU-s, p99 ${(r.p99_us / 1000).toFixed(1)} ms, lost ${r.lost}, errors ${r.errors}`);
      } finally {
        await node.stop();
      }
      await sleep(1000);
    }
  }
  const m = (mode, k) => median(runs[mode].map((r) => r[k]));
  const row = {};
  for (const k of ['sent_per_s', 'deliveries_per_s', 'deliveries_per_cpu_s', 'p99_us']) row[k] = { on: m('on', k), off: m('off', k) };
  row.bad = [...runs.on, ...runs.off].filter((r) => r.lost || r.errors || r.reordered || r.conns_failed).length;
  row.spread = Object.fromEntries(['on', 'off'].map((mode) => [mode, runs[mode].map((r) => Math.round(r.sent_per_s))]));
  return row;
}

// ---- 2 and 3: replay and the herd ----

// Sends `n` TALKs to a room without waiting, then resolves once the server's history says the
// room's last seq is `last` (every one was published), with the room's epoch.
async function fill(node, session, roomId, n, last, prefix) {
  for (let i = 0; i < n; i++) session.chat('TALK', roomId, 'filler', `${prefix}${i}`);
  const deadline = Date.now() + 120_000;
  for (;;) {
    const res = await fetch(`${node.base}/chat/room/${roomId}/messages?limit=1`);
    if (Number(res.headers.get('x-last-seq')) >= last) return res.headers.get('x-epoch');
    if (Date.now() > deadline) throw new Error(`room ${roomId}: seq ${res.headers.get('x-last-seq')} of ${last} after 120 s`);
    await sleep(50);
  }
}

async function replay(node) {
  const room = await createRoom(node.base, 'replay');
  const sender = await stompOverWebSocket(node.base);
  const epoch = await fill(node, sender, room.roomId, REPLAY + 1, REPLAY + 1, 'r');
  await sender.close();
  const times = [];
  for (let rep = 0; rep < 5; rep++) {
    const s = await stompOverWebSocket(node.base, { timeoutMs: 30_000 });
    const t0 = performance.now();
    const c = s.subscribe(`/sub/chat/room/${room.roomId}`, { 'x-since-seq': '1', 'x-epoch': epoch });
    const frames = await c.waitFor(REPLAY, 60_000);
    times.push(performance.now() - t0);
    if (frames.some((f) => f.headers['x-history-status'])) throw new Error('replay: a HISTORY notice');
    await s.close();
  }
  return { median_ms: median(times), all_ms: times.map((t) => Math.round(t)) };
}

async function herd(node) {
  const rooms = [];
  const sender = await stompOverWebSocket(node.base);
  for (let i = 0; i < HERD_ROOMS; i++) rooms.push(await createRoom(node.base, `herd-${i}`));
  // One message each clients saw before the drop (seq 1), then the 50 they missed.
  const epochs = await Promise.all(rooms.map((r) => fill(node, sender, r.roomId, 1 + HERD_MISSED, 1 + HERD_MISSED, 'h')));

  // The probe: a room of its own, one message every 20 ms, its latency measured end to end.
  const probeRoom = await createRoom(node.base, 'probe');
  const probeTx = await stompOverWebSocket(node.base);
  const probeRx = await stompOverWebSocket(node.base);
  const lat = { before: [], during: [] };
  let phase = 'before';
  const probe = probeRx.subscribe(`/sub/chat/room/${probeRoom.roomId}`);
  probe.push = (f) => { const sent = Number(JSON.parse(f.body).message); lat[phase].push(performance.now() - sent); };
  const tick = setInterval(() => probeTx.chat('TALK', probeRoom.roomId, 'probe', String(performance.now())), 20);
  await sleep(2000);

  phase = 'during';
  const t0 = performance.now();
  const clients = [];
  const caughtUp = [];
  let wrong = 0;
  await Promise.all(rooms.flatMap((room, k) => Array.from({ length: HERD_PER_ROOM }, async () => {
    const s = await stompOverWebSocket(node.base, { timeoutMs: 120_000 });
    clients.push(s);
    const c = s.subscribe(`/sub/chat/room/${room.roomId}`, { 'x-since-seq': '1', 'x-epoch': epochs[k] });
    const frames = await c.waitFor(HERD_MISSED, 120_000);
    caughtUp.push(performance.now() - t0);
    if (frames.some((f) => f.headers['x-history-status'])) wrong++;
  })));
  const total = performance.now() - t0;
  phase = 'after';
  lat.after = [];
  clearInterval(tick);
  for (const s of [...clients, sender, probeTx, probeRx]) await s.close().catch(() => {});
  return {
    clients: caughtUp.length, wrong, total_ms: total,
    p50_ms: quantile(caughtUp, 0.5), p99_ms: quantile(caughtUp, 0.99), max_ms: Math.max(...caughtUp),
    probe_before: { p50: quantile(lat.before, 0.5), p99: quantile(lat.before, 0.99), n: lat.before.length },
    probe_during: { p50: quantile(lat.during, 0.5), p99: quantile(lat.during, 0.99), n: lat.during.length },
  };
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
  for (const engine of ENGINES) {
    log(`== ${engine}: history on vs off`);
    results[engine] = { cost: await cost(engine, engine === 'redis' ? redis : null) };
    loads.push(loadavg());
    if (ONLY_COST) {
      log(`   ${JSON.stringify(results[engine].cost)}`);
      continue;
    }
    if (engine === 'redis') await redis.flush();
    const node = await chatd(engine, redis, true, `bench-hist-${engine}-resume`);
    try {
      log(`== ${engine}: replay ${REPLAY}`);
      results[engine].replay = await replay(node);
      log(`   ${JSON.stringify(results[engine].replay)}`);
      log(`== ${engine}: ${HERD_ROOMS * HERD_PER_ROOM} clients resume at once`);
      results[engine].herd = await herd(node);
      log(`   ${JSON.stringify(results[engine].herd)}`);
    } finally {
      await node.stop();
    }
    loads.push(loadavg());
  }
} finally {
  await redis.stop();
}

if (ONLY_COST) process.exit(0);
const k = (x) => (x >= 10_000 ? `${(x / 1000).toFixed(0)}k` : `${Math.round(x)}`);
const ms = (x) => `${x.toFixed(x < 10 ? 1 : 0)} ms`;
const ratio = (a, b) => (b ? (a / b).toFixed(2) : '–');
const rows = [];
for (const [engine, r] of Object.entries(results)) {
  const c = r.cost;
  rows.push(`| ${engine} | messages published/s | ${k(c.sent_per_s.on)} | ${k(c.sent_per_s.off)} | ${ratio(c.sent_per_s.on, c.sent_per_s.off)} |`);
  rows.push(`| ${engine} | deliveries/s | ${k(c.deliveries_per_s.on)} | ${k(c.deliveries_per_s.off)} | ${ratio(c.deliveries_per_s.on, c.deliveries_per_s.off)} |`);
  rows.push(`| ${engine} | deliveries per server CPU-s${engine === 'redis' ? ' (chatd + redis-server)' : ''} | ${k(c.deliveries_per_cpu_s.on)} | ${k(c.deliveries_per_cpu_s.off)} | ${ratio(c.deliveries_per_cpu_s.on, c.deliveries_per_cpu_s.off)} |`);
  rows.push(`| ${engine} | latency p99 | ${ms(c.p99_us.on / 1000)} | ${ms(c.p99_us.off / 1000)} | ${ratio(c.p99_us.on, c.p99_us.off)} |`);
}
const costTable = ['| engine | measure | history on | history off | on ÷ off |', '|---|---|---|---|---|', ...rows].join('\n');
const resumeRows = Object.entries(results).map(([engine, r]) =>
  `| ${engine} | ${ms(r.replay.median_ms)} (${k(REPLAY / (r.replay.median_ms / 1000))} msgs/s) | ` +
  `${r.herd.clients} | ${ms(r.herd.p50_ms)} | ${ms(r.herd.p99_ms)} | ${ms(r.herd.max_ms)} | ${r.herd.wrong} | ` +
  `${ms(r.herd.probe_before.p99)} | ${ms(r.herd.probe_during.p50)} / ${ms(r.herd.probe_during.p99)} |`);
const resumeTable = [
  `| engine | replay ${REPLAY} to one subscriber (median of 5) | clients resuming at once, ${HERD_MISSED} missed each | caught up p50 | p99 | max | with a notice | probe p99 before | probe p50 / p99 during |`,
  '|---|---|---|---|---|---|---|---|---|', ...resumeRows].join('\n');

let commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot }).toString().trim();
if (execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoRoot }).toString().trim()) commit += ' (with uncommitted changes)';
const section = `<!-- history-bench:begin -->
## ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC: history's cost and resume (issue 9)

Written by \`node bench/history.mjs${argv.length ? ' ' + argv.join(' ') : ''}\` (chatd \`${process.env.CHATD_BIN || 'build/src/app/chatd'}\`, commit \`${commit}\`)${QUICK ? ', **--quick: short runs, not for comparison**' : ''}.
chatd \`--threads 1\` pinned to core 0 (redis-server beside it on core 0), the generator on core 1.
The machine is shared with other engineers' builds: load average ${loads.join(' → ')} during the run, so
absolute rates are noise and only the ratios from this one sitting compare. History off is
\`--history-size 0\` (seqs, epochs and x-client-id stay; messages are not kept).

What history costs (bench/loadgen rooms: 100 rooms × 10 members, 100-byte messages, one sender per
room with 4 in flight; ${REPS} runs each, on and off alternating, medians; target: ≤ 10 %):

${costTable}

Resume (history on): one subscriber ${REPLAY} messages behind subscribes with \`x-since-seq\`; then
${HERD_ROOMS * HERD_PER_ROOM} clients (${HERD_ROOMS} rooms × ${HERD_PER_ROOM}), each ${HERD_MISSED} messages behind, open their connection and resume at
the same moment (a node restart's reconnect storm), timed from that moment to each one holding its
${HERD_MISSED} (connection, CONNECT and SUBSCRIBE included; all clients are one Node process on core 1, so
its own work is in the figures). A probe in another room sends every 20 ms throughout:

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
