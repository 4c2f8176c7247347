// Issue 14's figures: webhook throughput (events/s a local receiver gets) and server API publish
// latency (POST /api/publish, one call in flight, p50/p99), on one node (local bus) and on two
// Redis nodes. Prints a table and replaces the "Server API and webhooks" section of BENCHMARKS.md.
//   node bench/server-api.mjs [--events 20000] [--calls 2000] [--no-write]
// CHATD_BIN picks the binary (default build/src/app/chatd). Timing on a shared machine is
// noise-prone: the events-per-POST count and the ratio between engines say more than the
// absolute numbers, and the load average is printed with them.
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

import { createRoom, eventually, repoRoot, startChatd, startRedis, stompOverWebSocket } from '../tests/integration/harness.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const EVENTS = arg('events', 20000);
const CALLS = arg('calls', 2000);
const WRITE = !process.argv.includes('--no-write');
const apiKey = 'bench-key';
const unlimited = ['--send-rate', '0', '--room-send-rate', '0', '--api-rate', '1000000', '--api-burst', '1000000'];

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

// A receiver that counts events and POSTs and answers 200 at once.
async function receiver() {
  const r = { events: 0, posts: 0, first: 0, last: 0 };
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const n = JSON.parse(Buffer.concat(chunks).toString('utf8')).events.length;
      const now = performance.now();
      if (!r.first) r.first = now;
      r.last = now;
      r.events += n;
      r.posts += 1;
      res.writeHead(200).end();
    });
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  r.url = `http://127.0.0.1:${server.address().port}/hook`;
  r.close = () => new Promise((ok) => server.close(ok));
  return r;
}

// Webhook throughput: one STOMP client publishes EVENTS messages as fast as chatd takes them;
// the receiver times the first to the last event.
async function webhookThroughput(keyFile) {
  const rx = await receiver();
  const node = await startChatd({ name: 'bench-hooks', args: ['--webhook-url', rx.url, '--webhook-events', 'message',
    '--webhook-queue', String(EVENTS * 2), '--api-key-file', keyFile, ...unlimited] });
  try {
    const room = await createRoom(node.base, 'bench');
    const c = await stompOverWebSocket(node.base);
    const t0 = performance.now();
    for (let i = 0; i < EVENTS; i++) c.chat('TALK', room.roomId, 'bench', `m${i}`);
    await eventually('every event at the receiver', () => rx.events >= EVENTS, 300_000);
    const seconds = (rx.last - t0) / 1000;
    await c.close();
    return { events: rx.events, posts: rx.posts, perSecond: rx.events / seconds, seconds };
  } finally {
    await node.stop();
    await rx.close();
  }
}

// API publish latency: CALLS sequential POST /api/publish through `node` (one in flight).
async function publishLatency(node) {
  const room = await createRoom(node.base, 'latency');
  const body = JSON.stringify({ roomId: room.roomId, message: 'reservation confirmed' });
  const ms = [];
  for (let i = 0; i < CALLS + 100; i++) {
    const t = performance.now();
    const res = await fetch(`${node.base}/api/publish`, { method: 'POST', headers: { 'X-API-Key': apiKey, 'content-type': 'application/json' }, body });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`publish: ${res.status}`);
    if (i >= 100) ms.push(performance.now() - t); // the first 100 warm up connections and caches
  }
  ms.sort((a, b) => a - b);
  return { p50: pct(ms, 50), p99: pct(ms, 99), max: ms.at(-1) };
}

const dir = mkdtempSync(join(tmpdir(), 'chatd-bench-api-'));
const keyFile = join(dir, 'key');
writeFileSync(keyFile, `${apiKey}\n`);
const commit = execFileSync('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']).toString().trim();
const load = loadavg()[0].toFixed(1);
const rows = [];
try {
  const hooks = await webhookThroughput(keyFile);
  rows.push(['webhook events/s to a local receiver (one node, 1 sender)', Math.round(hooks.perSecond).toLocaleString('en'),
    `${hooks.events} events in ${hooks.posts} POSTs (${(hooks.events / hooks.posts).toFixed(1)} per POST), ${hooks.seconds.toFixed(2)} s`]);

  const one = await startChatd({ name: 'bench-api-local', args: ['--api-key-file', keyFile, ...unlimited] });
  try {
    const l = await publishLatency(one);
    rows.push(['API publish latency, local bus: p50 / p99 / max', `${l.p50.toFixed(2)} / ${l.p99.toFixed(2)} / ${l.max.toFixed(2)} ms`, `${CALLS} calls, one in flight`]);
  } finally {
    await one.stop();
  }
  const redis = await startRedis({ name: 'bench-api-redis' });
  const args = ['--bus', 'redis', '--store', 'redis', '--redis', redis.url, '--api-key-file', keyFile, ...unlimited];
  const a = await startChatd({ name: 'bench-api-a', args });
  const b = await startChatd({ name: 'bench-api-b', args });
  try {
    const l = await publishLatency(a);
    rows.push(['API publish latency, two nodes over Redis: p50 / p99 / max', `${l.p50.toFixed(2)} / ${l.p99.toFixed(2)} / ${l.max.toFixed(2)} ms`, `${CALLS} calls through node A, one in flight`]);
  } finally {
    await a.stop();
    await b.stop();
    await redis.stop();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const table = ['| measure | value | how |', '|---|---|---|', ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
console.log(table);
console.log(`load average ${load} (2 cores), commit ${commit}`);
if (WRITE) {
  const file = join(repoRoot, 'BENCHMARKS.md');
  const heading = '## Server API and webhooks (issue 14)';
  const section = `${heading}\n\nCommand: \`node bench/server-api.mjs\` (chatd RelWithDebInfo from \`scripts/build.sh\`, commit \`${commit}\`,\n` +
    `${new Date().toISOString().slice(0, 16)} UTC, load average ${load} on 2 cores shared with other builds: absolute\n` +
    'times are noisy; events per POST is not). The webhook receiver is a Node `http` server on loopback answering 200 at once;\n' +
    'the sender is one STOMP client sending without waiting; the API client sends one call at a time over keep-alive.\n\n' +
    `${table}\n`;
  let text = readFileSync(file, 'utf8');
  const at = text.indexOf(heading);
  if (at >= 0) {
    const next = text.indexOf('\n## ', at + heading.length);
    text = text.slice(0, at) + section + (next >= 0 ? text.slice(next + 1) : '');
  } else {
    text = `${text.trimEnd()}\n\n${section}`;
  }
  writeFileSync(file, text);
  console.log(`wrote the section to ${file}`);
}
