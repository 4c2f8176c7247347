// Kafka helpers for the Node integration tests: the broker (the CTest fixture's shared one, or a
// private one for a standalone `node --test`), bounce it with scripts/kafka.sh, poll /healthz,
// and SEND with a receipt. Every wait is bounded.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
export async function freeLowPort() {
  for (let i = 0; i < 200; i++) {
    const p = 20_000 + Math.floor(Math.random() * 12_000);
    if (!(await portOpen(p))) return p;
  }
  throw new Error('no free port found');
}

// The broker the tests talk to: { port, dir, address, shared, stopBroker(), startBroker(), freeze(ms),
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
    // SIGSTOP for `ms`, then SIGCONT: connections stay open and nothing is answered meanwhile.
    async freeze(ms) {
      const pid = Number(readFileSync(join(dir, 'kafka.pid'), 'utf8'));
      process.kill(pid, 'SIGSTOP');
      try { await sleep(ms); } finally { process.kill(pid, 'SIGCONT'); }
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

// Kafka's request encoding, enough for the two requests below (non-flexible versions).
const enc = {
  str(s) { const b = Buffer.from(s, 'utf8'); return Buffer.concat([enc.i16(b.length), b]); },
  i16(v) { const b = Buffer.alloc(2); b.writeInt16BE(v); return b; },
  i32(v) { const b = Buffer.alloc(4); b.writeInt32BE(v); return b; },
};

// Reads a response's fields in order.
class KafkaReader {
  constructor(b) { this.b = b; this.at = 4; }  // after the correlation id
  i8() { return this.b.readInt8((this.at += 1) - 1); }
  i16() { return this.b.readInt16BE((this.at += 2) - 2); }
  i32() { return this.b.readInt32BE((this.at += 4) - 4); }
  str() {
    const n = this.i16();
    if (n < 0) return null;
    const s = this.b.toString('utf8', this.at, this.at + n);
    this.at += n;
    return s;
  }
  array(item) { return Array.from({ length: Math.max(0, this.i32()) }, item); }
}

// Sends one request (api key, version, body) to the broker at `address` ('host:port') and
// resolves with a KafkaReader on its response; rejects on a socket error or after timeoutMs.
function kafkaRequest(address, apiKey, version, body, timeoutMs) {
  const [host, port] = address.split(':');
  const msg = Buffer.concat([enc.i16(apiKey), enc.i16(version), enc.i32(1), enc.str('chatd-test'), body]);
  return new Promise((ok, fail) => {
    const sock = createConnection({ host, port: Number(port) });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => { sock.destroy(); fail(new Error(`api ${apiKey} to ${address}: timed out`)); }, timeoutMs);
    sock.on('connect', () => sock.write(Buffer.concat([enc.i32(msg.length), msg])));
    sock.on('error', (e) => { clearTimeout(timer); fail(e); });
    sock.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (got.length < 4 || got.length < 4 + got.readInt32BE(0)) return;
      clearTimeout(timer);
      sock.destroy();
      ok(new KafkaReader(got.subarray(4)));
    });
  });
}

// Asks the broker at `address` for `topic`'s partitions with a Metadata request (v4, which
// Kafka 2.x to 4.x all answer), so a test can find a partition's leader without a Kafka client
// library. Resolves with { brokers: Map(id -> 'host:port'), partitions: [{ partition, leader,
// replicas, isr, error }] } (empty if the topic is unknown).
export async function kafkaMetadata(address, topic, { timeoutMs = 5_000 } = {}) {
  // topics [topic], allow_auto_topic_creation false
  const r = await kafkaRequest(address, 3, 4, Buffer.concat([enc.i32(1), enc.str(topic), Buffer.from([0])]), timeoutMs);
  r.i32();  // throttle_time_ms
  const brokers = new Map(r.array(() => {
    const id = r.i32();
    const h = r.str();
    const p = r.i32();
    r.str();  // rack
    return [id, `${h}:${p}`];
  }));
  r.str();  // cluster id
  r.i32();  // controller id
  const topics = r.array(() => {
    const error = r.i16();
    const name = r.str();
    r.i8();  // is_internal
    const partitions = r.array(() => ({
      error: r.i16(), partition: r.i32(), leader: r.i32(), replicas: r.array(() => r.i32()), isr: r.array(() => r.i32()),
    }));
    return { error, name, partitions };
  });
  return { brokers, partitions: topics[0]?.error === 0 ? topics[0].partitions : [] };
}

// Asks the broker at `address` for one config of `topic` with a DescribeConfigs request (v1).
// Resolves with { value, source } (source: Kafka's ConfigSource, 1 = set on the topic itself,
// 4/5 = a broker default), or null if the topic or config is unknown.
export async function kafkaTopicConfig(address, topic, name, { timeoutMs = 5_000 } = {}) {
  // resources [topic (type 2): [name]], include_synonyms false
  const body = Buffer.concat([enc.i32(1), Buffer.from([2]), enc.str(topic), enc.i32(1), enc.str(name), Buffer.from([0])]);
  const r = await kafkaRequest(address, 32, 1, body, timeoutMs);
  r.i32();  // throttle_time_ms
  let found = null;
  r.array(() => {
    const error = r.i16();
    r.str(); r.i8(); r.str();  // error message, resource type, resource name
    r.array(() => {
      const key = r.str();
      const value = r.str();
      r.i8();  // read_only
      const source = r.i8();
      r.i8();  // is_sensitive
      r.array(() => { r.str(); r.str(); r.i8(); });  // synonyms
      if (error === 0 && key === name) found = { value, source };
    });
  });
  return found;
}
