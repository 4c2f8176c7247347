// Presence under a join/leave storm (issue 10): N connections (default 10,000), each a different
// person, ENTER one room spread over two chatd nodes sharing an engine (Redis, or Kafka), then
// all leave (QUIT + DISCONNECT). Measures the time until EVERY node's member count is right
// (GET /chat/room/{id}/members), and what the storm costs live traffic meanwhile: a talker on
// node A sends a TALK every 20 ms and a listener on node B times each one (publish -> MESSAGE);
// the medians during the join and leave storms are compared with the quiet phase before, in
// one sitting (ratios, since the machine is shared).
//
//   node bench/presence/storm.mjs [--engine redis|kafka|both] [--connections N] [--workers K] [--no-write]
//
// Each engine runs twice: presence on, then --presence off as the control: the same storm of
// connects and SUBSCRIBEs with no ENTER or QUIT (published as sent, 10,000 of them would be a
// 10,000^2 fan-out), so the talker's latency there is what the connection storm alone costs.
//
// Clients are raw WebSocket + STOMP frames, spread over K worker processes (default 4), so no
// process comes near the 20,000 open-file limit. Rooms past --presence-announce-max (500) send
// no per-person ENTER/QUIT, so the storm measures presence itself, not a 10,000^2 fan-out.
import { fork } from 'node:child_process';
import net from 'node:net';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const self = fileURLToPath(import.meta.url);

// ---- worker: holds its share of the connections ----
if (process.env.STORM_WORKER) {
  const CONNECT = 'CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0';
  const frame = (payload) => {
    const body = Buffer.from(payload);
    const mask = Buffer.from([1, 2, 3, 4]);
    let head;
    if (body.length < 126) head = Buffer.from([0x81, 0x80 | body.length]);
    else head = Buffer.from([0x81, 0x80 | 126, body.length >> 8, body.length & 0xff]);
    const m = Buffer.alloc(body.length);
    for (let i = 0; i < body.length; i++) m[i] = body[i] ^ mask[i & 3];
    return Buffer.concat([head, mask, m]);
  };
  const sockets = [];
  process.on('message', async (msg) => {
    if (msg.cmd === 'join') {
      const { ports, roomId, first, count, inFlight, enter } = msg;
      let next = 0;
      const one = async () => {
        while (next < count) {
          const i = first + next++;
          const port = ports[i % ports.length];
          const s = net.connect(port, '127.0.0.1');
          s.setNoDelay(true);
          s.on('error', () => {});
          let got = '';
          const connected = new Promise((ok) => s.on('data', (d) => {
            if (got !== null) {
              got += d.toString('latin1');
              if (got.includes('CONNECTED')) { got = null; ok(); }
            }
          }));
          await once(s, 'connect');
          s.write('GET /ws-stomp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
            'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n');
          s.write(frame(CONNECT));
          await connected;
          s.write(Buffer.concat([
            frame(`SUBSCRIBE\nid:0\ndestination:/sub/chat/room/${roomId}\n\n\0`),
            ...(!enter ? [] : [frame(`SEND\ndestination:/pub/chat/message\ncontent-type:application/json\n\n${JSON.stringify({ type: 'ENTER', roomId, sender: `p${i}`, message: '' })}\0`)]),
          ]));
          sockets.push({ s, i });
        }
      };
      await Promise.all(Array.from({ length: inFlight }, one));
      process.send({ cmd: 'joined' });
    } else if (msg.cmd === 'leave') {
      for (const { s, i } of sockets) {
        s.write(Buffer.concat([
          ...(!msg.enter ? [] : [frame(`SEND\ndestination:/pub/chat/message\ncontent-type:application/json\n\n${JSON.stringify({ type: 'QUIT', roomId: msg.roomId, sender: `p${i}`, message: '' })}\0`)]),
          frame('DISCONNECT\n\n\0'),
        ]));
        s.end();
      }
      process.send({ cmd: 'left' });
    } else if (msg.cmd === 'exit') {
      for (const { s } of sockets) s.destroy();
      process.exit(0);
    }
  });
} else {
  await main();
}

async function main() {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : dflt; };
  const N = Number(opt('connections', 10000));
  const K = Number(opt('workers', 4));
  const engineArg = opt('engine', 'redis');
  const write = !args.includes('--no-write');
  // Abuse limits meant for people stay off: all clients come from one address.
  process.env.CHATD_MAX_CONNECTIONS_PER_ADDRESS = '0';
  process.env.CHATD_SEND_RATE = '0';
  const harness = await import('../../tests/integration/harness.mjs');
  const { createRoom, startChatd, startRedis, stompOverWebSocket } = harness;

  const rows = [];
  for (const engine of engineArg === 'both' ? ['redis', 'kafka'] : [engineArg]) for (const presence of ['on', 'off']) {
    let redis, broker;
    redis = await startRedis({ name: 'redis-storm' });
    const common = ['--store', 'redis', '--redis', redis.url, '--max-connections', '18000', '--presence', presence];
    let busArgs;
    if (engine === 'redis') {
      busArgs = ['--bus', 'redis'];
    } else {
      const kafka = await import('../../tests/integration/kafka.mjs');
      broker = await kafka.kafkaBroker();
      busArgs = ['--bus', 'kafka', '--kafka', broker.address, '--kafka-topic', kafka.uniqueTopic('storm')];
    }
    const env = { CHATD_MAX_CONNECTIONS_PER_ADDRESS: '0', CHATD_SEND_RATE: '0' };
    const a = await startChatd({ name: `storm-${engine}-a`, args: [...busArgs, ...common], env, timeoutMs: 30_000 });
    const b = await startChatd({ name: `storm-${engine}-b`, args: [...busArgs, ...common], env, timeoutMs: 30_000 });
    const workers = [];
    try {
      await sleep(engine === 'kafka' ? 5000 : 500);
      const room = await createRoom(a.base, 'storm');
      const countOn = async (node) => {
        const r = await fetch(`${node.base}/chat/room/${room.roomId}/members`, { signal: AbortSignal.timeout(10_000) });
        return (await r.json()).count;
      };
      // Live traffic: a talker on A, a listener on B.
      const talker = await stompOverWebSocket(a.base);
      const listener = await stompOverWebSocket(b.base);
      const latencies = [];
      let phase = 'quiet';
      const inbox = listener.subscribe(`/sub/chat/room/${room.roomId}`);
      inbox.push = (f) => {
        const m = JSON.parse(f.body);
        if (m.type === 'TALK') latencies.push({ phase: m.message.split(' ')[0], ms: Date.now() - Number(m.message.split(' ')[1]) });
      };
      await sleep(500);
      const talk = setInterval(() => talker.chat('TALK', room.roomId, 'talker', `${phase} ${Date.now()}`), 20);
      await sleep(3000);

      for (let k = 0; k < K; k++) {
        const w = fork(self, [], { env: { ...process.env, STORM_WORKER: '1' } });
        workers.push(w);
      }
      const all = (cmd, extra) => Promise.all(workers.map((w, k) => {
        const done = new Promise((ok) => w.once('message', ok));
        w.send({ cmd, roomId: room.roomId, ...extra(k) });
        return done;
      }));
      const waitCount = async (want, limitMs) => {
        const deadline = Date.now() + limitMs;
        for (;;) {
          const [ca, cb] = await Promise.all([countOn(a), countOn(b)]);
          if (ca === want && cb === want) return true;
          if (Date.now() > deadline) { console.error(`count ${ca}/${cb}, want ${want}`); return false; }
          await sleep(50);
        }
      };

      phase = 'join';
      const per = Math.ceil(N / K);
      const t0 = Date.now();
      const joined = all('join', (k) => ({ ports: [a.port, b.port], first: k * per, count: Math.min(per, N - k * per), inFlight: 50, enter: presence === 'on' }));
      await joined;
      const sent = Date.now() - t0;
      const okJoin = presence === 'on' ? await waitCount(N, 120_000) : false;
      const joinMs = Date.now() - t0;
      phase = 'held';
      await sleep(2000);

      phase = 'leave';
      const t1 = Date.now();
      await all('leave', () => ({ enter: presence === 'on' }));
      const okLeave = presence === 'on' ? await waitCount(0, 120_000) : false;
      const leaveMs = Date.now() - t1;
      phase = 'after';
      await sleep(1000);
      clearInterval(talk);
      await sleep(500);

      const median = (p) => {
        const xs = latencies.filter((x) => x.phase === p).map((x) => x.ms).sort((x, y) => x - y);
        return { n: xs.length, p50: xs[Math.floor(xs.length / 2)] ?? NaN, p99: xs[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))] ?? NaN };
      };
      const q = median('quiet'), j = median('join'), l = median('leave');
      const row = { engine, presence, N, sentMs: sent, joinMs: okJoin ? joinMs : null, leaveMs: okLeave ? leaveMs : null, quiet: q, join: j, leave: l };
      console.log(JSON.stringify(row));
      rows.push(row);
      await talker.close();
      await listener.close();
    } finally {
      for (const w of workers) w.send({ cmd: 'exit' });
      await a.stop();
      await b.stop();
      await redis.stop();
      await broker?.release();
    }
  }

  const f = (x) => (Number.isFinite(x) ? String(x) : '—');
  const lines = [
    `## ${new Date().toISOString().slice(0, 10)}, presence: a join/leave storm into one room on two nodes (issue 10)`,
    '',
    `\`node bench/presence/storm.mjs --engine ${engineArg} --connections ${N} --workers ${K}\` — ${N} connections, each a`,
    'different person, ENTER one room (half on each node, raw WebSocket clients in', `${K} processes, 50 connects in flight each), then all QUIT + DISCONNECT. "count right" is the`,
    'time from the first connect until GET /chat/room/{id}/members says N (then 0) on BOTH nodes;',
    'it includes opening the connections ("all ENTERs sent"). Live traffic: a TALK every 20 ms from',
    'node A, timed at a listener on node B (ms, median / p99), quiet vs during each storm, in one',
    'sitting on the shared 2-core machine: read the ratios, not the absolute numbers. The',
    '`--presence off` row is the control: the same connects and SUBSCRIBEs with no ENTER or QUIT',
    '(which would be published as sent: a 10,000² fan-out), so its ratios are the connection storm',
    'alone. Rooms past --presence-announce-max (500) announce no single join or leave.',
    '',
    '| engine | presence | connections | all ENTERs sent (ms) | join: count right on both nodes (ms) | leave: count right (ms) | talker quiet p50 / p99 | during join p50 / p99 (×) | during leave p50 / p99 (×) |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.engine} | ${r.presence} | ${r.N} | ${r.sentMs} | ${f(r.joinMs)} | ${f(r.leaveMs)} | ${r.quiet.p50} / ${r.quiet.p99} | ${r.join.p50} / ${r.join.p99} (${(r.join.p50 / r.quiet.p50).toFixed(1)}) | ${r.leave.p50} / ${r.leave.p99} (${(r.leave.p50 / r.quiet.p50).toFixed(1)}) |`),
    '',
  ];
  console.log(lines.join('\n'));
  if (write) {
    const path = new URL('../../BENCHMARKS.md', import.meta.url);
    writeFileSync(path, readFileSync(path, 'utf8').trimEnd() + '\n\n' + lines.join('\n'));
  }
  process.exit(0);
}
