// Integration harness: real chatd and redis-server processes on free loopback ports, and real
// STOMP clients (@stomp/stompjs over `ws`, or over sockjs-client with a forced transport).
// Every wait is bounded; every process started here is killed by its stop().
import { execFileSync, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import SockJS from 'sockjs-client';

// stompjs reads these globals (Node 20 has no WebSocket global).
Object.assign(globalThis, { WebSocket });

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const artifactsDir = join(repoRoot, 'test-artifacts');

// ---- processes ----

// Returns a TCP port on 127.0.0.1 that was free a moment ago.
export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

// Resolves when `port` accepts a TCP connection, or rejects after `timeoutMs`.
export async function waitForPort(port, { timeoutMs = 10_000, isAlive = () => true } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new Error(`process exited before port ${port} opened`);
    const open = await new Promise((ok) => {
      const s = createConnection({ host: '127.0.0.1', port }, () => { s.destroy(); ok(true); });
      s.on('error', () => ok(false));
    });
    if (open) return;
    await sleep(50);
  }
  throw new Error(`port ${port} did not open within ${timeoutMs} ms`);
}

function logPath(name) {
  mkdirSync(join(artifactsDir, 'logs'), { recursive: true });
  return join(artifactsDir, 'logs', `${name}-${Date.now()}-${process.pid}.log`);
}

// Starts `cmd args` with stdout+stderr captured to a log file. Returns a handle whose stop()
// sends SIGTERM, then SIGKILL after `killAfterMs`, and resolves to the exit code or signal.
function startProcess(name, cmd, args, { cwd, env } = {}) {
  const log = logPath(name);
  const out = createWriteStream(log);
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(out, { end: false });
  child.stderr.pipe(out, { end: false });
  let exit = null;
  const exited = new Promise((ok) => {
    // 'close' comes after both output pipes drained, so the log is complete.
    child.on('close', (code, signal) => { exit = { code, signal }; ok(exit); });
    child.on('error', (err) => { exit = { code: null, signal: null, error: err }; ok(exit); });
  });
  return {
    name, child, log, exited,
    isAlive: () => exit === null,
    tail(lines = 40) {
      try { return readFileSync(log, 'utf8').split('\n').slice(-lines).join('\n'); } catch { return ''; }
    },
    async stop({ signal = 'SIGTERM', killAfterMs = 5_000 } = {}) {
      if (exit === null) {
        child.kill(signal);
        const timer = setTimeout(() => { if (exit === null) child.kill('SIGKILL'); }, killAfterMs);
        await exited;
        clearTimeout(timer);
      }
      await new Promise((ok) => out.end(ok));
      return exit;
    },
  };
}

// Runs `cmd args` to its end (SIGKILL after timeoutMs): { code, signal, stdout, stderr }.
export function runToEnd(cmd, args, { env = {}, timeoutMs = 90_000 } = {}) {
  return new Promise((ok) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { stderr += String(e); });
    child.on('close', (code, signal) => { clearTimeout(timer); ok({ code, signal, stdout, stderr }); });
  });
}

// A client in another language that tests/integration/<dir>/install.sh put in a cache (run by
// scripts/install-deps.sh test): { site } where it is, or { skip } saying why it is not there.
export function installedClient(dir) {
  const script = join(repoRoot, 'tests', 'integration', dir, 'install.sh');
  try {
    const site = execFileSync(script, ['site'], { encoding: 'utf8' }).trim();
    return existsSync(join(site, '.installed')) ? { site }
      : { skip: `not installed: run ${script} install (scripts/install-deps.sh test does)` };
  } catch (e) {
    return { skip: `${script} site failed: ${e.message}` };
  }
}

export function chatdBinary() {
  return resolve(repoRoot, process.env.CHATD_BIN || 'build/src/app/chatd');
}

// Starts one chatd node on a free port with its own temporary data directory and waits until
// GET /healthz answers (any HTTP status counts as up). Returns
// { port, base, dataDir, log, stop(), tail() }; stop() also removes the data directory unless
// `keepData` is set. `webRoot: null` leaves --web-root out (an installed chatd finds its own).
// `launcher` is a command chatd runs under, e.g. ['prlimit', '--nofile=300', '--'].
export async function startChatd({ args = [], env = {}, name = 'chatd', port, dataDir, timeoutMs = 15_000, keepData = false,
                                   webRoot = join(repoRoot, 'web'), launcher = [] } = {}) {
  const bin = chatdBinary();
  if (!existsSync(bin)) throw new Error(`chatd binary not found at ${bin}: build it or set CHATD_BIN`);
  port ??= await freePort();
  const ownData = !dataDir;
  dataDir ??= mkdtempSync(join(tmpdir(), 'chatd-it-'));
  const [cmd, ...pre] = [...launcher, bin];
  const proc = startProcess(`${name}-${port}`, cmd, [...pre,
    '--port', String(port), '--address', '127.0.0.1', '--data-dir', dataDir,
    ...(webRoot ? ['--web-root', webRoot] : []), ...args,
  ], { cwd: dataDir, env });
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!proc.isAlive()) {
      await proc.stop();
      throw new Error(`chatd exited during start-up (${JSON.stringify(await proc.exited)}); log ${proc.log}:\n${proc.tail()}`);
    }
    try {
      await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1_000) });
      break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await proc.stop({ signal: 'SIGKILL' });
      throw new Error(`chatd did not answer GET /healthz within ${timeoutMs} ms; log ${proc.log}:\n${proc.tail()}`);
    }
    await sleep(50);
  }
  return {
    port, base, dataDir, log: proc.log, child: proc.child, isAlive: proc.isAlive, tail: proc.tail,
    async stop(opts) {
      const r = await proc.stop(opts);
      if (ownData && !keepData) rmSync(dataDir, { recursive: true, force: true });
      return r;
    },
  };
}

// Sends one inline command to a Redis server and resolves with the first reply line.
// `command` is an inline command line, or an array of arguments (sent as RESP, so they may
// hold spaces and line breaks).
export function redisCommand(port, command, { timeoutMs = 2_000 } = {}) {
  const wire = Array.isArray(command)
    ? `*${command.length}\r\n${command.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`
    : `${command}\r\n`;
  return new Promise((ok, fail) => {
    const s = createConnection({ host: '127.0.0.1', port });
    let buf = '';
    const timer = setTimeout(() => { s.destroy(); fail(new Error(`redis ${command}: no reply in ${timeoutMs} ms`)); }, timeoutMs);
    s.on('connect', () => s.write(wire));
    s.on('data', (d) => {
      buf += d.toString('utf8');
      const eol = buf.indexOf('\r\n');
      if (eol >= 0) { clearTimeout(timer); s.destroy(); ok(buf.slice(0, eol)); }
    });
    s.on('error', (e) => { clearTimeout(timer); fail(e); });
  });
}

// Starts a private redis-server (no persistence) on a free loopback port, or on `port` (to
// restart one on the same address). Returns { port, url, stop(), tail() }.
export async function startRedis({ name = 'redis', timeoutMs = 10_000, port } = {}) {
  port ??= await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'chatd-redis-'));
  const proc = startProcess(`${name}-${port}`, process.env.REDIS_SERVER || 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--protected-mode', 'no',
  ]);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!proc.isAlive()) {
      await proc.stop();
      throw new Error(`redis-server exited during start-up; log ${proc.log}:\n${proc.tail()}`);
    }
    try {
      if ((await redisCommand(port, 'PING', { timeoutMs: 500 })) === '+PONG') break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await proc.stop({ signal: 'SIGKILL' });
      throw new Error(`redis-server did not answer PING within ${timeoutMs} ms`);
    }
    await sleep(50);
  }
  return {
    port, url: `redis://127.0.0.1:${port}`, log: proc.log, isAlive: proc.isAlive, tail: proc.tail,
    signal: (sig) => proc.child.kill(sig),  // e.g. SIGSTOP / SIGCONT to freeze Redis
    async stop(opts) {
      const r = await proc.stop(opts);
      rmSync(dir, { recursive: true, force: true });
      return r;
    },
  };
}

// A redis-server with AOF (appendfsync always) in `dir`, so kill -9 loses no acknowledged write.
// Returns { child, exited, port }.
export async function startPersistentRedis(port, dir) {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
    '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--protected-mode', 'no'], { stdio: 'ignore' });
  const exited = new Promise((ok) => child.on('exit', ok));
  for (let i = 0; i < 200; i++) {
    try { if ((await redisCommand(port, 'PING', { timeoutMs: 300 })) === '+PONG') return { child, exited, port }; } catch { /* starting */ }
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error('redis-server did not start');
}

// ---- REST ----

export async function listRooms(base) {
  const res = await fetch(`${base}/chat/rooms`);
  if (!res.ok) throw new Error(`GET /chat/rooms: ${res.status}`);
  return res.json();
}

// Creates a room the way the page does (form field `name`) and returns {roomId, name}.
export async function createRoom(base, name) {
  const res = await fetch(`${base}/chat/room`, { method: 'POST', body: new URLSearchParams({ name }) });
  if (!res.ok) throw new Error(`POST /chat/room: ${res.status} ${await res.text()}`);
  return res.json();
}

// Returns the HTTP status of GET {base}/ws-stomp/info: 200 once the server speaks SockJS.
export async function sockjsInfoStatus(base) {
  try {
    const res = await fetch(`${base}/ws-stomp/info`, { signal: AbortSignal.timeout(3_000) });
    return res.status;
  } catch {
    return 0;
  }
}

// Writes `bytes` in one write on a fresh TCP connection (from `from`, a local address) and
// collects what comes back until `until(text)` holds, the server closes or resets, or `ms`
// pass; `then(text, socket)` may write more as data arrives. Resolves
// { text, end: 'until' | 'eof' | 'reset' | 'timeout' | 'error CODE' }.
export function rawExchange(port, bytes, { ms = 3_000, from, until = () => false, then } = {}) {
  return new Promise((ok) => {
    const s = createConnection({ host: '127.0.0.1', port, localAddress: from });
    let text = '';
    let done = false;
    const finish = (end) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      ok({ text, end });
    };
    const timer = setTimeout(() => finish('timeout'), ms);
    s.on('connect', () => s.write(bytes));
    s.on('data', (d) => {
      text += d.toString('latin1');
      then?.(text, s);
      if (until(text)) finish('until');
    });
    s.on('end', () => finish('eof'));
    s.on('error', (e) => finish(e.code === 'ECONNRESET' ? 'reset' : `error ${e.code}`));
  });
}

// Resolves once `check()` is truthy; rejects after `timeoutMs` naming `what`.
export async function eventually(what, check, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

// ---- STOMP clients ----

// Messages arriving on one subscription, with a bounded wait for the n-th.
export class Collector {
  constructor(destination) {
    this.destination = destination;
    this.frames = [];
    this.waiters = [];
  }

  push(frame) {
    this.frames.push(frame);
    this.waiters = this.waiters.filter((w) => {
      if (this.frames.length < w.n) return true;
      w.ok(this.frames.slice(0, w.n));
      return false;
    });
  }

  // Bodies parsed as JSON (the chat message objects).
  get messages() {
    return this.frames.map((f) => JSON.parse(f.body));
  }

  // Resolves with the first n frames, or rejects after timeoutMs naming what did arrive.
  waitFor(n, timeoutMs = 5_000) {
    if (this.frames.length >= n) return Promise.resolve(this.frames.slice(0, n));
    return new Promise((ok, fail) => {
      const w = { n, ok: (v) => { clearTimeout(w.timer); ok(v); } };
      w.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        fail(new Error(`${this.destination}: got ${this.frames.length} of ${n} messages in ${timeoutMs} ms: ` +
          JSON.stringify(this.frames.map((f) => f.body))));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  // Resolves with the parsed bodies of the first n messages.
  async waitForMessages(n, timeoutMs) {
    return (await this.waitFor(n, timeoutMs)).map((f) => JSON.parse(f.body));
  }
}

// A connected STOMP session. Use stompOverWebSocket / stompOverSockJS to make one.
export class StompSession {
  constructor(client) {
    this.client = client;
    this.errors = []; // ERROR frames
    this.closed = false;
    this.connected = null; // the CONNECTED frame (its `session` header names the session)
  }

  // Subscribes and returns the Collector of what arrives.
  subscribe(destination, headers = {}) {
    const c = new Collector(destination);
    c.subscription = this.client.subscribe(destination, (f) => c.push(f), headers);
    return c;
  }

  publish(destination, body, headers = {}) {
    this.client.publish({ destination, body: typeof body === 'string' ? body : JSON.stringify(body), headers });
  }

  // Sends a chat message to /pub/chat/message.
  chat(type, roomId, sender, message = '') {
    this.publish('/pub/chat/message', { type, roomId, sender, message }, { 'content-type': 'application/json' });
  }

  // Subscribes with a `receipt` header and resolves with the Collector once the server has
  // confirmed it, so messages sent by others afterwards are sure to arrive.
  async subscribeConfirmed(destination, headers = {}, timeoutMs = 5_000) {
    const receipt = `sub-${Math.random().toString(36).slice(2)}`;
    const confirmed = new Promise((ok) => this.client.watchForReceipt(receipt, ok));
    const c = this.subscribe(destination, { ...headers, receipt });
    await withTimeout(confirmed, timeoutMs, `RECEIPT for SUBSCRIBE ${destination}`);
    return c;
  }

  async close() {
    if (this.closed) return;
    this.closed = true;
    await withTimeout(this.client.deactivate(), 5_000, 'deactivate').catch(() => this.client.forceDisconnect());
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, fail) => { timer = setTimeout(() => fail(new Error(`${what}: timed out after ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

function connectWith(webSocketFactory, { connectHeaders = {}, timeoutMs = 10_000, heartbeat = 0, debug = false } = {}) {
  const client = new Client({
    webSocketFactory,
    connectHeaders,
    reconnectDelay: 0, // a test sees a drop instead of a silent reconnect
    heartbeatIncoming: heartbeat,
    heartbeatOutgoing: heartbeat,
    debug: debug ? (s) => console.log(`[stomp] ${s}`) : () => {},
  });
  const session = new StompSession(client);
  return withTimeout(new Promise((ok, fail) => {
    client.onConnect = (f) => { session.connected = f; ok(session); };
    client.onStompError = (f) => {
      session.errors.push(f);
      fail(new Error(`STOMP ERROR: ${f.headers.message} ${f.body}`));
    };
    client.onWebSocketError = (e) => fail(new Error(`socket error: ${e?.message ?? e}`));
    client.onWebSocketClose = (e) => fail(new Error(`socket closed before CONNECTED (code ${e?.code})`));
    client.activate();
  }), timeoutMs, 'STOMP CONNECT').then((s) => {
    // After CONNECTED, remember errors instead of failing the connect promise.
    client.onStompError = (f) => s.errors.push(f);
    client.onWebSocketError = () => {};
    client.onWebSocketClose = () => { s.closed = true; };
    return s;
  }, async (e) => {
    await client.deactivate().catch(() => {});
    throw e;
  });
}

// Connects @stomp/stompjs over a plain WebSocket (`ws`) to {base}/ws-stomp.
export function stompOverWebSocket(base, opts = {}) {
  const url = `${base.replace(/^http/, 'ws')}${opts.path ?? '/ws-stomp'}`;
  return connectWith(() => new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']), opts);
}

// Connects @stomp/stompjs over sockjs-client to {base}/ws-stomp with one forced transport:
// 'websocket', 'xhr-streaming' or 'xhr-polling'.
export function stompOverSockJS(base, transport, opts = {}) {
  const url = `${base}${opts.path ?? '/ws-stomp'}`;
  return connectWith(() => new SockJS(url, null, { transports: [transport], timeout: 10_000 }), opts);
}
