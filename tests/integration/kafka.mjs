// Kafka helpers for the Node integration tests: the broker (the CTest fixture's shared one, or a
// private one for a standalone `node --test`), bounce it with scripts/kafka.sh, poll /healthz,
// and SEND with a receipt. Every wait is bounded.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { repoRoot } from './harness.mjs';

const kafkaSh = join(repoRoot, 'scripts', 'kafka.sh');

// A topic name no other run uses, so runs on one broker never see each other's messages.
export function uniqueTopic(prefix = 'chatroom') {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

// Runs scripts/kafka.sh with `args`; resolves with its stdout, rejects on a non-zero exit or
// after timeoutMs (then the script is killed).
export function runKafkaSh(args, opts) {
  return runScript(kafkaSh, args, opts);
}

// Runs the script at `path` with `args` (as runKafkaSh does kafka.sh).
export function runScript(path, args, { timeoutMs = 120_000 } = {}) {
  return new Promise((ok, fail) => {
    const child = spawn(path, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); fail(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) ok(out.trim());
      else fail(new Error(`${path} ${args.join(' ')}: exit ${code ?? signal}\n${err.slice(-2000)}`));
    });
  });
}

function portOpen(port) {
  return new Promise((ok) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => { s.destroy(); ok(true); });
    s.on('error', () => ok(false));
  });
}

// A free port below Linux's ephemeral range (as kafka.sh picks them), so no client socket can
// hold it while the broker restarts.
async function freeLowPort() {
  for (let i = 0; i < 200; i++) {
    const p = 20_000 + Math.floor(Math.random() * 12_000);
    if (!(await portOpen(p))) return p;
  }
  throw new Error('no free port found');
}

// The broker the tests talk to: { port, dir, address, shared, stopBroker(), startBroker(),
// release() }. With CHATD_TEST_KAFKA_PORT set (CTest's `kafka` fixture), the shared broker in
// CHATD_TEST_KAFKA_DIR; otherwise a private one started here (fresh dir) that release() stops.
export async function kafkaBroker() {
  const sharedPort = process.env.CHATD_TEST_KAFKA_PORT;
  let port;
  let dir;
  let own = false;
  if (sharedPort) {
    port = Number(sharedPort);
    dir = process.env.CHATD_TEST_KAFKA_DIR || join(repoRoot, 'build', 'test-kafka');
    if (!(await portOpen(port))) throw new Error(`no Kafka broker on 127.0.0.1:${port} (CHATD_TEST_KAFKA_PORT)`);
  } else {
    port = await freeLowPort();
    dir = mkdtempSync(join(tmpdir(), 'chatd-kafka-'));
    own = true;
    // The first run on a machine fetches the jars from Maven Central: minutes.
    await runKafkaSh(['start', '--fresh', '--port', String(port), '--dir', dir], { timeoutMs: 900_000 });
  }
  let down = false;
  return {
    port, dir, shared: !own, address: `127.0.0.1:${port}`,
    get down() { return down; },
    async stopBroker() {
      down = true;
      await runKafkaSh(['stop', '--dir', dir], { timeoutMs: 60_000 });
    },
    // Same dir, same port: the data and the topic survive.
    async startBroker() {
      await runKafkaSh(['start', '--port', String(port), '--dir', dir], { timeoutMs: 180_000 });
      down = false;
    },
    // Leaves the shared broker running (restarting it if a test left it down); stops a private one.
    async release() {
      if (own) {
        await runKafkaSh(['stop', '--dir', dir], { timeoutMs: 60_000 }).catch(() => {});
        rmSync(dir, { recursive: true, force: true });
      } else if (down) {
        await this.startBroker();
      }
    },
  };
}

// GET /healthz: { status, body } (body is the parsed JSON, or null).
export async function healthz(base) {
  try {
    const res = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2_000) });
    return { status: res.status, body: await res.json().catch(() => null) };
  } catch (e) {
    return { status: 0, body: null, error: String(e) };
  }
}

// Polls /healthz until pred(health) holds; resolves with that health, rejects after timeoutMs.
export async function waitForHealth(base, pred, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await healthz(base);
    if (pred(last)) return last;
    if (Date.now() > deadline) throw new Error(`${base}/healthz: not ${what} within ${timeoutMs} ms; last ${JSON.stringify(last)}`);
    await sleep(100);
  }
}

export const busUp = (h) => h.status === 200 && h.body?.bus?.up === true;
export const busDown = (h) => h.body?.bus?.up === false && h.status === 503;

let receipts = 0;

// Sends a chat message with a `receipt` header. Returns a promise that resolves with the
// receipt id when the RECEIPT arrives; it never rejects (a failed send gets no RECEIPT, only a
// message on /user/queue/errors), so callers bound the wait themselves.
export function chatWithReceipt(session, type, roomId, sender, message = '') {
  const receipt = `send-${process.pid}-${++receipts}`;
  const got = new Promise((ok) => session.client.watchForReceipt(receipt, () => ok(receipt)));
  session.publish('/pub/chat/message', { type, roomId, sender, message },
    { 'content-type': 'application/json', receipt });
  return got;
}

// Resolves when pred() holds, polling every `everyMs`; returns false after timeoutMs.
export async function eventually(pred, timeoutMs, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (pred()) return true;
    if (Date.now() > deadline) return false;
    await sleep(everyMs);
  }
}

// Median and 99th percentile of a list of numbers.
export function percentiles(values) {
  const s = [...values].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.floor(s.length * q))];
  return { n: s.length, p50: at(0.5), p99: at(0.99), max: s[s.length - 1] };
}

// Asks the broker at `address` ('host:port') for `topic`'s partitions with a Kafka Metadata
// request (v4, which Kafka 2.x to 4.x all answer), so a test can find a partition's leader
// without a Kafka client library. Resolves with { brokers: Map(id -> 'host:port'),
// partitions: [{ partition, leader, replicas, isr, error }] } (empty if the topic is unknown);
// rejects on a socket error or after timeoutMs.
export function kafkaMetadata(address, topic, { timeoutMs = 5_000 } = {}) {
  const [host, port] = address.split(':');
  const str = (s) => {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(2);
    len.writeInt16BE(b.length);
    return Buffer.concat([len, b]);
  };
  const i16 = (v) => { const b = Buffer.alloc(2); b.writeInt16BE(v); return b; };
  const i32 = (v) => { const b = Buffer.alloc(4); b.writeInt32BE(v); return b; };
  const body = Buffer.concat([
    i16(3), i16(4), i32(1), str('chatd-test'),  // header: Metadata v4, correlation id, client id
    i32(1), str(topic), Buffer.from([0]),       // topics [topic], allow_auto_topic_creation false
  ]);
  return new Promise((ok, fail) => {
    const sock = createConnection({ host, port: Number(port) });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => { sock.destroy(); fail(new Error(`metadata from ${address}: timed out`)); }, timeoutMs);
    sock.on('connect', () => sock.write(Buffer.concat([i32(body.length), body])));
    sock.on('error', (e) => { clearTimeout(timer); fail(e); });
    sock.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length < 4 || got.length < 4 + got.readInt32BE(0)) return;
      clearTimeout(timer);
      sock.destroy();
      try { ok(parseMetadataV4(got.subarray(4))); } catch (e) { fail(e); }
    });
  });
}

function parseMetadataV4(b) {
  let at = 4;  // correlation id
  const i8 = () => b.readInt8((at += 1) - 1);
  const i16 = () => b.readInt16BE((at += 2) - 2);
  const i32 = () => b.readInt32BE((at += 4) - 4);
  const str = () => {
    const n = i16();
    if (n < 0) return null;
    const s = b.toString('utf8', at, at + n);
    at += n;
    return s;
  };
  const array = (item) => Array.from({ length: Math.max(0, i32()) }, item);
  i32();  // throttle_time_ms
  const brokers = new Map(array(() => {
    const id = i32();
    const h = str();
    const p = i32();
    str();  // rack
    return [id, `${h}:${p}`];
  }));
  str();  // cluster id
  i32();  // controller id
  const topics = array(() => {
    const error = i16();
    const name = str();
    i8();  // is_internal
    const partitions = array(() => ({
      error: i16(), partition: i32(), leader: i32(), replicas: array(() => i32()), isr: array(() => i32()),
    }));
    return { error, name, partitions };
  });
  return { brokers, partitions: topics[0]?.error === 0 ? topics[0].partitions : [] };
}
