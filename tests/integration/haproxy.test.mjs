// HAProxy (Debian's, with deploy/haproxy.cfg) in front of three chatd nodes on one Redis.
// Clients connect only to the proxy: WebSocket and SockJS xhr-streaming, spread over rooms, with
// senders that SEND with receipts and x-client-id. A rolling restart SIGTERMs each node in turn
// (it drains: every client gets an ERROR and is closed), waits until HAProxy has taken it out
// of rotation, starts it again and waits until HAProxy has it back. Clients reconnect through
// the proxy and resume with x-since-seq / x-epoch; senders resend what got no RECEIPT with the
// same x-client-id. At the end: every client is connected, and every client of a room has every
// acknowledged message exactly once, all in the same order. What the restarts cost is printed.
//
// CHATD_LB_WS_CLIENTS / CHATD_LB_SOCKJS_CLIENTS change the client counts (default 1000 / 50).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  artifactsDir, createRoom, repoRoot, startChatd, startRedis, stompOverSockJS, stompOverWebSocket, waitForPort,
} from './harness.mjs';
import { freeLowPort, percentiles } from './kafka.mjs';

const haproxyBin = ['/usr/sbin/haproxy', '/usr/bin/haproxy'].find((p) => existsSync(p));
const skip = haproxyBin ? false : 'SKIPPED: haproxy is not installed (scripts/install-deps.sh test installs it)';
if (skip) console.log(skip);

const wsClients = Number(process.env.CHATD_LB_WS_CLIENTS || 1000);
const sockjsClients = Number(process.env.CHATD_LB_SOCKJS_CLIENTS || 50);
const roomCount = 10;

// Resolves true once the (async) pred holds, polling every `everyMs`; false after timeoutMs.
async function until(pred, timeoutMs, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return true;
    if (Date.now() > deadline) return false;
    await sleep(everyMs);
  }
}

// Sends one command to HAProxy's admin socket; resolves with its answer.
function haproxyCommand(socket, command) {
  return new Promise((ok, fail) => {
    const s = createConnection({ path: socket }, () => s.write(`${command}\n`));
    let out = '';
    s.setTimeout(3_000, () => { s.destroy(); fail(new Error(`${command}: no answer`)); });
    s.on('data', (d) => { out += d; });
    s.on('end', () => ok(out));
    s.on('error', fail);
  });
}

// Server states as HAProxy sees them: { 'chatd/n1': 'UP', ... }.
async function serverStates(socket) {
  const lines = (await haproxyCommand(socket, 'show stat')).trim().split('\n');
  const cols = lines[0].replace(/^# /, '').split(',');
  const px = cols.indexOf('pxname');
  const sv = cols.indexOf('svname');
  const st = cols.indexOf('status');
  const out = {};
  for (const l of lines.slice(1)) {
    const f = l.split(',');
    if (f[sv] !== 'FRONTEND' && f[sv] !== 'BACKEND') out[`${f[px]}/${f[sv]}`] = f[st];
  }
  return out;
}

// A chat client that stays in its room across node restarts: when its connection closes it
// connects through the proxy again and resumes from the last seq it saw.
class Resumer {
  constructor(base, transport, room, name) {
    Object.assign(this, { base, transport, room, name });
    this.got = [];          // chat messages in arrival order
    this.notices = [];      // x-history-status headers (a resume that could not be whole)
    this.drops = [];        // { at, back } times of each lost connection and its resume
    this.session = null;
    this.stopped = false;
  }

  get dest() { return `/sub/chat/room/${this.room.roomId}`; }
  get connected() { return this.session && !this.session.closed && !this.reconnecting; }

  async connect() {
    // STOMP heart-beats, as the browser page has (10 s there): they are what tells a client its
    // node died when nothing else does (sockjs-client's Node driver never reports an aborted
    // xhr-streaming response, so without them such a client waits forever).
    const opts = { heartbeat: 1_000 };
    const s = this.transport === 'ws'
      ? await stompOverWebSocket(this.base, opts)
      : await stompOverSockJS(this.base, 'xhr-streaming', opts);
    const last = this.got.at(-1);
    const headers = last ? { 'x-since-seq': String(last.seq), 'x-epoch': last.epoch } : {};
    const receipt = `r-${this.name}-${this.drops.length}`;
    const confirmed = new Promise((ok) => s.client.watchForReceipt(receipt, ok));
    s.client.subscribe(this.dest, (f) => {
      if (f.headers['x-history-status']) this.notices.push(f.headers['x-history-status']);
      else this.got.push(JSON.parse(f.body));
    }, { ...headers, receipt });
    const timer = setTimeout(() => s.client.forceDisconnect(), 10_000);
    await confirmed;
    clearTimeout(timer);
    this.session = s;
    s.client.onWebSocketClose = () => { s.closed = true; this.onDrop(); };
    if (s.closed) this.onDrop();  // closed before the handler was in place
  }

  async onDrop() {
    if (this.stopped || this.reconnecting) return;
    this.reconnecting = true;
    const drop = { at: Date.now(), back: null, attempts: 0 };
    this.drops.push(drop);
    const deadline = Date.now() + 60_000;
    while (!this.stopped && Date.now() < deadline) {
      drop.attempts++;
      try {
        await this.connect();
        drop.back = Date.now();
        break;
      } catch {
        await sleep(100 + Math.random() * 200);
      }
    }
    this.reconnecting = false;
  }

  async close() {
    this.stopped = true;
    await this.session?.close().catch(() => {});
  }
}

// Sends TALKs into one room through the proxy, each with a receipt and its own x-client-id; a
// message without a RECEIPT after `patienceMs` (or whose connection closed) is sent again with
// the same id on the current connection, so it is published once.
class Sender {
  constructor(base, room, name) {
    Object.assign(this, { base, room, name });
    this.acked = new Map();   // text -> seq from the RECEIPT's x-seq
    this.waiting = new Map(); // text -> time last sent
    this.resends = 0;
    this.n = 0;
  }

  async ensureSession() {
    while (!this.session || this.session.closed) {
      try {
        this.session = await stompOverWebSocket(this.base);
      } catch {
        await sleep(100);
      }
    }
    return this.session;
  }

  async send(text) {
    const s = await this.ensureSession();
    this.waiting.set(text, Date.now());
    const receipt = `${this.name}-${text}-${Date.now()}`;
    s.client.watchForReceipt(receipt, (f) => {
      if (!this.acked.has(text)) this.acked.set(text, Number(f.headers['x-seq']));
      this.waiting.delete(text);
    });
    s.publish('/pub/chat/message', { type: 'TALK', roomId: this.room.roomId, sender: this.name, message: text },
      { 'content-type': 'application/json', receipt, 'x-client-id': `${this.name}-${text}` });
  }

  // Sends again what waited too long for its RECEIPT or lost its connection.
  async resendDue(patienceMs = 3_000) {
    for (const [text, at] of this.waiting) {
      if (Date.now() - at > patienceMs || this.session?.closed) {
        this.resends++;
        await this.send(text);
      }
    }
  }

  // The resends that are due, and one new message.
  async tick() {
    await this.resendDue();
    await this.send(`m${this.n++}`);
  }

  async close() { await this.session?.close().catch(() => {}); }
}

describe('HAProxy in front of 3 chatd nodes on Redis', { skip }, () => {
  let redis;
  let haproxy;
  let dir;
  let lbBase;
  let socket;
  const ports = [];
  const nodes = [];
  const nodeArgs = (i) => ['--bus', 'redis', '--store', 'redis', '--redis', redis.url, '--node-id', `lb${i + 1}`,
    '--trusted-proxies', '127.0.0.1', '--drain-timeout-ms', '3000', '--heartbeat-send-ms', '1000', '--heartbeat-receive-ms', '1000'];
  const startNode = (i) => startChatd({ name: `lb-n${i + 1}`, port: ports[i], args: nodeArgs(i) });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'chatd-haproxy-'));
    // Below the ephemeral range: a node (and Redis, last) restarts on its port while a thousand
    // clients and HAProxy open connections, any of which could otherwise take it as source port.
    while (ports.length < 5) {
      const p = await freeLowPort();
      if (!ports.includes(p)) ports.push(p);
    }
    redis = await startRedis({ port: ports[4] });
    for (let i = 0; i < 3; i++) nodes.push(await startNode(i));
    const lbPort = ports[3];
    socket = join(dir, 'haproxy.sock');
    mkdirSync(join(artifactsDir, 'logs'), { recursive: true });
    const log = createWriteStream(join(artifactsDir, 'logs', `haproxy-${lbPort}.log`));
    haproxy = spawn(haproxyBin, ['-db', '-f', join(repoRoot, 'deploy', 'haproxy.cfg')], {
      env: {
        ...process.env, CHATD_LB_BIND: `127.0.0.1:${lbPort}`, CHATD_LB_SOCKET: socket,
        CHATD_NODE1: `127.0.0.1:${ports[0]}`, CHATD_NODE2: `127.0.0.1:${ports[1]}`, CHATD_NODE3: `127.0.0.1:${ports[2]}`,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    haproxy.stdout.pipe(log);
    haproxy.stderr.pipe(log);
    await waitForPort(lbPort, { isAlive: () => haproxy.exitCode === null });
    lbBase = `http://127.0.0.1:${lbPort}`;
    const deadline = Date.now() + 20_000;
    for (;;) {
      const st = await serverStates(socket).catch(() => ({}));
      if (['n1', 'n2', 'n3'].every((n) => st[`chatd/${n}`] === 'UP')) break;
      if (Date.now() > deadline) throw new Error(`HAProxy never saw 3 nodes up: ${JSON.stringify(st)}`);
      await sleep(200);
    }
  }, { timeout: 120_000 });

  after(async () => {
    if (haproxy && haproxy.exitCode === null) {
      haproxy.kill('SIGTERM');
      await new Promise((ok) => { haproxy.on('exit', ok); setTimeout(ok, 5_000); });
    }
    for (const t of [...nodes, redis]) await t?.stop().catch(() => {});
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, { timeout: 60_000 });

  // Clients chat through the proxy while `plan` stops nodes ({ node, signal }) one after the
  // other, each started again once HAProxy has taken it out; then checks what every client got.
  async function chatThrough(t, plan) {
    {
      const rooms = [];
      for (let r = 0; r < roomCount; r++) rooms.push(await createRoom(lbBase, `lb room ${r}`));
      const clients = [];
      const senders = rooms.map((room, r) => new Sender(lbBase, room, `sender${r}`));
      try {
        // Clients connect through the proxy a few at a time.
        for (let i = 0; i < wsClients + sockjsClients; i += 20) {
          const batch = [];
          for (let k = i; k < Math.min(i + 20, wsClients + sockjsClients); k++) {
            const c = new Resumer(lbBase, k < wsClients ? 'ws' : 'sockjs', rooms[k % roomCount], `c${k}`);
            clients.push(c);
            batch.push(c.connect());
          }
          await Promise.all(batch);
        }
        // Which node holds whom (leastconn spreads them), read from each node's metrics.
        const spread = [];
        for (const n of nodes) {
          const text = await (await fetch(`${n.base}/metrics`)).text();
          spread.push(Number(text.match(/^chatd_connections(?:\{[^}]*\})? (\d+)/m)?.[1] ?? NaN));
        }
        t.diagnostic(`${clients.length} clients through HAProxy (${wsClients} WebSocket, ${sockjsClients} SockJS xhr-streaming); per node: ${spread}`);

        // Chat: each sender one message per 100 ms (100 messages/s in all).
        let chatting = true;
        const pump = (async () => {
          while (chatting) {
            await Promise.all(senders.map((s) => s.tick()));
            await sleep(100);
          }
        })();
        await sleep(1_500);

        const restarts = [];
        for (const { node: i, signal } of plan) {
          const name = `chatd/n${i + 1}`;
          const t0 = Date.now();
          let outAt = null;
          const watchOut = (async () => {
            while (outAt === null && Date.now() - t0 < 30_000) {
              const st = await serverStates(socket).catch(() => ({}));
              if (st[name] && st[name] !== 'UP') outAt = Date.now();
              else await sleep(100);
            }
          })();
          const exit = await nodes[i].stop({ signal, killAfterMs: 15_000 });
          const drained = Date.now() - t0;
          await watchOut;
          if (signal === 'SIGTERM') assert.equal(exit.code, 0, `node ${i + 1} exits 0 after its drain (${JSON.stringify(exit)})`);
          nodes[i] = await startNode(i);
          const started = Date.now() - t0;
          const backDeadline = Date.now() + 30_000;
          for (;;) {
            const st = await serverStates(socket).catch(() => ({}));
            if (st[name] === 'UP') break;
            assert.ok(Date.now() < backDeadline, `${name} back in rotation within 30 s: ${JSON.stringify(st)}`);
            await sleep(100);
          }
          const back = Date.now() - t0;
          restarts.push({ node: i + 1, signal, drained, out: outAt && outAt - t0, started, back });
          await sleep(1_000);  // chat with all three again before the next
        }
        chatting = false;
        await pump;
        for (const r of restarts) {
          t.diagnostic(`node ${r.node}: ${r.signal} -> exit ${r.drained} ms, out of rotation at ${r.out} ms, ` +
            `restarted at ${r.started} ms, back in rotation at ${r.back} ms`);
        }

        // Every sender's messages acknowledged (resends included), every client back.
        assert.ok(await until(async () => {
          for (const s of senders) await s.resendDue(2_000);
          return senders.every((s) => s.waiting.size === 0);
        }, 60_000, 500), `unacknowledged: ${senders.map((s) => s.waiting.size)}`);
        assert.ok(await until(() => clients.every((c) => c.connected), 60_000, 200),
          `clients not connected at the end: ${clients.filter((c) => !c.connected).map((c) => c.name)}`);

        // Every client of a room has every acknowledged message exactly once, in one order.
        const lostBy = [];
        for (const [r, room] of rooms.entries()) {
          const acked = [...senders[r].acked.values()];
          const mine = clients.filter((c) => c.room === room);
          const complete = () => mine.every((c) => {
            const seqs = new Set(c.got.map((m) => m.seq));
            return acked.every((q) => seqs.has(q));
          });
          if (!(await until(complete, 30_000, 200))) {
            for (const c of mine) {
              const seqs = new Set(c.got.map((m) => m.seq));
              const lost = acked.filter((q) => !seqs.has(q));
              if (lost.length) lostBy.push(`${c.name} (${c.transport}) lost ${lost.length}: ${lost.slice(0, 5)}`);
            }
          }
        }
        await sleep(500);  // a duplicate would arrive right behind
        const drops = clients.flatMap((c) => c.drops);
        const took = drops.filter((d) => d.back).map((d) => d.back - d.at);
        const p = percentiles(took);
        const sent = senders.reduce((n, s) => n + s.n, 0);
        const resends = senders.reduce((n, s) => n + s.resends, 0);
        t.diagnostic(`${sent} messages sent, all acknowledged (${resends} resends with the same x-client-id); ` +
          `${drops.length} client reconnects (${clients.filter((c) => c.drops.length).length} clients), ` +
          `drop -> resumed: median ${p.p50} ms, p99 ${p.p99} ms, max ${p.max} ms; attempts max ${Math.max(...drops.map((d) => d.attempts))}`);
        assert.deepEqual(lostBy, [], 'no client lost an acknowledged message');
        for (const [r, room] of rooms.entries()) {
          const mine = clients.filter((c) => c.room === room);
          const ids = mine[0].got.map((m) => m.id);
          assert.equal(new Set(ids).size, ids.length, `${mine[0].name}: nothing twice`);
          for (const c of mine) {
            assert.deepEqual(c.got.map((m) => m.id), ids, `${c.name} (${c.transport}) saw room ${r} as ${mine[0].name} did`);
          }
          for (let i = 1; i < mine[0].got.length; i++) assert.ok(mine[0].got[i].seq > mine[0].got[i - 1].seq, 'seq increases');
          const texts = mine[0].got.map((m) => m.message);
          assert.equal(new Set(texts).size, texts.length, `room ${r}: each x-client-id published once`);
        }
        assert.deepEqual(clients.flatMap((c) => c.notices), [], 'no resume had to say history was partly lost');
        const moved = clients.filter((c) => c.drops.length).length;
        if (plan.length === 3) assert.equal(moved, clients.length, 'a restart of every node moved every client');
        else assert.ok(moved > 0, 'the stopped node had clients');
      } finally {
        for (const c of clients) await c.close();
        for (const s of senders) await s.close();
      }
    }
  }

  test('a rolling restart under chat: every client reconnects and resumes, nothing acknowledged is lost or doubled',
    { timeout: 300_000 }, (t) => chatThrough(t, [0, 1, 2].map((node) => ({ node, signal: 'SIGTERM' }))));

  test('kill -9 of one node under chat: its clients reconnect through the proxy to the others and resume',
    { timeout: 300_000 }, (t) => chatThrough(t, [{ node: 1, signal: 'SIGKILL' }]));

  // Last: Redis comes back empty. Every node shares the engine, so all of them go; HAProxy then
  // answers 503 itself, and takes them back once their engine is.
  test('nodes whose engine is down leave rotation and come back with it', { timeout: 120_000 }, async (t) => {
    const names = ['chatd/n1', 'chatd/n2', 'chatd/n3'];
    const t0 = Date.now();
    await redis.stop({ signal: 'SIGKILL' });
    assert.ok(await until(async () => {
      const st = await serverStates(socket).catch(() => ({}));
      return names.every((n) => st[n] && st[n] !== 'UP');
    }, 30_000), 'HAProxy took every node out while Redis was down');
    const out = Date.now() - t0;
    const res = await fetch(`${lbBase}/chat/rooms`, { signal: AbortSignal.timeout(5_000) });
    assert.equal(res.status, 503, 'the proxy answers 503 with no node in rotation');
    for (const n of nodes) assert.ok(n.isAlive(), 'no node exited');
    redis = await startRedis({ port: redis.port });
    const t1 = Date.now();
    assert.ok(await until(async () => {
      const st = await serverStates(socket).catch(() => ({}));
      return names.every((n) => st[n] === 'UP');
    }, 60_000), 'every node back in rotation once Redis was');
    t.diagnostic(`Redis killed: all nodes out of rotation after ${out} ms; back ${Date.now() - t1} ms after Redis restarted`);
    assert.equal((await fetch(`${lbBase}/chat/rooms`)).status, 200);
  });
});
