// Issue 13's soak (a benchmark, not a test: it prints a table and writes a section of BENCHMARKS.md):
//   CHATD_BIN=build-bench/chatd/src/app/chatd node bench/soak.mjs [--duration 3600] [--conns 5000]
//     [--rooms 500] [--rate 200] [--sample 10] [--hostile-every 60] [--no-write]
//
// One Release chatd with its default limits (the embedded engine) holds --conns well-behaved
// STOMP-over-WebSocket clients for --duration seconds. They come from 20 loopback source
// addresses (127.0.0.11-30), so the per-address limits stay on as in production. Meanwhile:
// - talk: --rate TALK messages/s in total from random clients, each to its own room;
// - drops: 2 clients a second lose their connection (half abruptly, half with DISCONNECT) and
//   come back 0.5-3 s later, resuming their room with x-since-seq + x-epoch;
// - moves: 2 clients a second leave their room (UNSUBSCRIBE) and join another;
// - every --hostile-every seconds, in turn: (a) a flooder sending SENDs as fast as its socket
//   takes them and a client uploading WebSocket pings while never reading; (b) a subscriber of
//   the "hot" room that stops reading and an xhr_streaming receiver of the same room that never
//   reads, while one member of that room talks 40 messages/s of ~3.8 KB, within its rate.
// chatd's RSS and open files (/proc) and its /metrics are sampled every --sample seconds.
// Well-behaved clients check every room seq they see: a gap (also across a resume), a duplicate,
// a HISTORY notice, an ERROR, a message on /user/queue/errors or a close they did not ask for is
// a loss for the verdict. At the end the clients leave and the open files must be back to what
// chatd held before they came.
//
// Everything is bounded: the run by --duration, each hostile episode by 150 s and its bytes, the
// connects and the final drain by time. Only a run of 1800 s or more writes BENCHMARKS.md
// (between <!-- soak-bench:begin --> and <!-- soak-bench:end -->); shorter ones only print.
import http from 'node:http';
import net from 'node:net';
import { mkdirSync, readFileSync, readdirSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

import { repoRoot, startChatd } from '../tests/integration/harness.mjs';

const argv = process.argv.slice(2);
const value = (name, dflt) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : dflt; };
const DURATION = Number(value('--duration', 3600));
const CONNS = Number(value('--conns', 5000));
const ROOMS = Number(value('--rooms', 500));
const RATE = Number(value('--rate', 200));
const SAMPLE = Number(value('--sample', 10));
const HOSTILE_EVERY = Number(value('--hostile-every', 60));
const DROPS_PER_S = Number(value('--drops', 2));
const MOVES_PER_S = Number(value('--moves', 2));
const HEARTBEAT_MS = 20000; // what the clients offer; chatd offers 10000, so each side beats every 20 s
const WRITE = !argv.includes('--no-write') && DURATION >= 1800;
const ADDRS = Array.from({ length: 20 }, (_, i) => `127.0.0.${11 + i}`);
const HOSTILE_ADDR = { flood: '127.0.0.201', ping: '127.0.0.202', nonreader: '127.0.0.203', xhr: '127.0.0.204' };
const HOT_TEXT = 'h'.repeat(3800);

const t0 = Date.now();
const log = (s) => console.error(`[soak ${new Date().toISOString().slice(11, 19)}] ${s}`);
const quantile = (xs, q) => { if (!xs.length) return NaN; const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(q * s.length))]; };
const rnd = (n) => Math.floor(Math.random() * n);

// ---- WebSocket client framing (masked, as RFC 6455 requires of clients) ----
function wsFrame(opcode, payload) {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const n = body.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n])
    : n < 65536 ? Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 0xff])
      : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127, 0, 0, 0, 0]), Buffer.from([(n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff])]);
  const mask = randomBytes(4);
  const m = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) m[i] = body[i] ^ mask[i & 3];
  return Buffer.concat([head, mask, m]);
}
const UPGRADE = (path = '/ws-stomp') => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
  + `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n`;
const stompFrame = (command, headers, body = '') => `${command}\n${Object.entries(headers).map(([k, v]) => `${k}:${v}`).join('\n')}\n\n${body}\0`;
function parseStomp(raw) {
  const nl = raw.indexOf('\n\n');
  const head = (nl < 0 ? raw : raw.slice(0, nl)).split('\n');
  const headers = {};
  for (const line of head.slice(1)) { const c = line.indexOf(':'); if (c > 0 && !(line.slice(0, c) in headers)) headers[line.slice(0, c)] = line.slice(c + 1); }
  return { command: head[0], headers, body: nl < 0 ? '' : raw.slice(nl + 2) };
}

// Reads server WebSocket frames from a socket: calls onText(string) per text message, answers
// pings, onClose at a close frame. Returns feed(buf).
function wsReader(sock, onText) {
  let buf = Buffer.alloc(0); let frag = [];
  return (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      if (buf.length < 2) return;
      const op = buf[0] & 0x0f; const fin = buf[0] & 0x80; let n = buf[1] & 0x7f; let off = 2;
      if (n === 126) { if (buf.length < 4) return; n = buf.readUInt16BE(2); off = 4; } else if (n === 127) { if (buf.length < 10) return; n = Number(buf.readBigUInt64BE(2)); off = 10; }
      if (buf.length < off + n) return;
      const payload = buf.subarray(off, off + n); buf = buf.subarray(off + n);
      if (op === 9) { if (!sock.destroyed) sock.write(wsFrame(10, Buffer.from(payload))); continue; }
      if (op === 8) { sock.end(); continue; }
      if (op === 10) continue;
      frag.push(Buffer.from(payload));
      if (fin) { const msg = Buffer.concat(frag).toString('utf8'); frag = []; onText(msg); }
    }
  };
}

// Opens a WebSocket to chatd from `localAddress`; resolves with the socket once upgraded, and
// feeds STOMP frames to onFrame. Rejects after 10 s.
function openStomp(port, localAddress, onFrame, path) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port, localAddress });
    sock.setNoDelay(true);
    sock.write(UPGRADE(path));
    let head = Buffer.alloc(0); let upgraded = false; let stomp = '';
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('upgrade timeout')); }, 10000);
    const feed = wsReader(sock, (text) => {
      stomp += text;
      let z;
      while ((z = stomp.indexOf('\0')) >= 0) {
        const raw = stomp.slice(0, z).replace(/^[\r\n]+/, ''); stomp = stomp.slice(z + 1);
        if (raw) onFrame(parseStomp(raw));
      }
    });
    sock.on('data', (d) => {
      if (upgraded) return feed(d);
      head = Buffer.concat([head, d]);
      const e = head.indexOf('\r\n\r\n');
      if (e < 0) return;
      clearTimeout(timer);
      if (!/^HTTP\/1\.1 101/.test(head.toString('latin1', 0, 12))) { sock.destroy(); reject(new Error(`upgrade: ${head.toString('latin1', 0, 40).split('\r\n')[0]}`)); return; }
      upgraded = true; resolve(sock);
      if (head.length > e + 4) feed(head.subarray(e + 4));
    });
    sock.on('error', (err) => { clearTimeout(timer); reject(err); });
  });
}

// ---- what the run counts ----
const C = {
  delivered: 0, replayed: 0, sent: 0, acked: 0, lostGaps: 0, dups: 0, notices: 0, errorsQueue: 0, errorFrames: 0,
  unexpectedClose: 0, connectFailed: 0, drops: 0, resumes: 0, moves: 0, noSeq: 0, tailMissing: 0,
  replayLimit: 0, restRecovered: 0,
};
const E = { flood: [], ping: [], nonreader: [], xhr: [] }; // episode results
let latWindow = []; // own-message round trips (ms) since the last row
let gapLines = 0; // the first 20 gaps are logged
const roomMaxSeq = new Map(); // roomId -> highest seq acknowledged by a RECEIPT (x-seq)

// Pages GET /chat/room/{id}/messages back from `fromSeq` until `sinceSeq`: what a resume past
// --max-replay left out. Every seq in between must come back, in order; a missing one is lost.
const PAGE = Number(process.env.CHATD_MAX_REPLAY || 1000); // a REST page holds at most --max-replay
async function recoverOverRest(roomId, sinceSeq, fromSeq) {
  let before = fromSeq; let got = 0;
  try {
    for (let page = 0; page < 100 && before > sinceSeq + 1; page++) {
      const rows = JSON.parse(await get(port, `/chat/room/${roomId}/messages?before=${before}&limit=${PAGE}`));
      if (!Array.isArray(rows)) throw new Error(`GET messages: ${JSON.stringify(rows).slice(0, 120)}`);
      if (!rows.length) break;
      const want = rows.filter((m) => m.seq > sinceSeq);
      for (let i = want.length - 1; i >= 0 && want[i].seq === before - 1; i--) { before = want[i].seq; got++; }
      if (want.length && before !== want[0].seq) break; // a hole inside the page
      if (want.length < rows.length) break;
    }
  } catch (err) { log(`REST recovery of ${roomId}: ${err.message}`); }
  C.restRecovered += got;
  const missing = fromSeq - 1 - sinceSeq - got;
  if (missing > 0) { C.lostGaps += missing; log(`REST recovery of ${roomId} (${sinceSeq}, ${fromSeq}): ${missing} missing`); }
}

class Client {
  constructor(id, port, addr, roomId) {
    Object.assign(this, { id, port, addr, roomId, name: `u${id}`, sock: null, ready: false, subId: 0, seqs: new Map(), epochs: new Map(), n: 0, lastWrite: 0, closing: false });
  }
  write(s) { if (this.sock && !this.sock.destroyed) { this.sock.write(wsFrame(1, s)); this.lastWrite = Date.now(); } }
  async connect(resume) {
    this.ready = false; this.closing = false;
    let sock;
    try { sock = await openStomp(this.port, this.addr, (f) => this.onFrame(f)); } catch (err) { C.connectFailed++; return false; }
    this.sock = sock;
    sock.on('close', () => { if (!this.closing && this.sock === sock) { C.unexpectedClose++; this.ready = false; this.sock = null; } });
    sock.on('error', () => {});
    this.write(stompFrame('CONNECT', { 'accept-version': '1.2', host: '127.0.0.1', 'heart-beat': `${HEARTBEAT_MS},${HEARTBEAT_MS}` }));
    this.write(stompFrame('SUBSCRIBE', { id: 'e', destination: '/user/queue/errors' }));
    this.subscribe(resume);
    return true;
  }
  subscribe(resume) {
    const h = { id: `s${++this.subId}`, destination: `/sub/chat/room/${this.roomId}`, receipt: `sub${this.subId}` };
    if (resume && this.seqs.has(this.roomId)) { h['x-since-seq'] = this.seqs.get(this.roomId); h['x-epoch'] = this.epochs.get(this.roomId); C.resumes++; } else this.seqs.delete(this.roomId);
    this.write(stompFrame('SUBSCRIBE', h));
  }
  onFrame(f) {
    if (f.command === 'RECEIPT') {
      const r = f.headers['receipt-id'] || '';
      if (r.startsWith('sub')) { if (r === `sub${this.subId}`) this.ready = true; return; }
      C.acked++;
      const seq = Number(f.headers['x-seq']); const room = r.split('|')[1];
      if (room && seq > (roomMaxSeq.get(room) || 0)) roomMaxSeq.set(room, seq);
      return;
    }
    if (f.command === 'ERROR') { C.errorFrames++; if (C.errorFrames <= 20) log(`client ${this.id} ERROR ${f.headers.message}`); return; }
    if (f.command !== 'MESSAGE') return;
    if (f.headers.subscription === 'e') { C.errorsQueue++; if (C.errorsQueue <= 5) log(`client ${this.id} error queue: ${f.body.slice(0, 120)}`); return; }
    if (f.headers.subscription !== `s${this.subId}`) return; // left that room; in flight
    if (f.headers['x-history-status']) {
      let n = {}; try { n = JSON.parse(f.body); } catch { /* counted below */ }
      // More than --max-replay missed: documented; the rest is paged over REST, as the page does.
      if (n.status === 'partial' && n.reason === 'replay-limit' && n.epoch === this.epochs.get(n.roomId)) {
        C.replayLimit++; this.seqs.set(n.roomId, n.fromSeq - 1);
        recoverOverRest(n.roomId, n.sinceSeq, n.fromSeq);
        return;
      }
      C.notices++; if (C.notices <= 20) log(`client ${this.id} HISTORY ${f.body.slice(0, 160)}`); return;
    }
    let m; try { m = JSON.parse(f.body); } catch { C.noSeq++; return; }
    C.delivered++;
    if (typeof m.seq !== 'number') { C.noSeq++; return; }
    const last = this.seqs.get(m.roomId);
    if (last !== undefined && this.epochs.get(m.roomId) === m.epoch) {
      if (m.seq > last + 1) { C.lostGaps += m.seq - last - 1; if (++gapLines <= 20) log(`client ${this.id} gap in ${m.roomId}: ${last} -> ${m.seq}`); }
      if (m.seq <= last) { C.dups++; return; }
    }
    this.seqs.set(m.roomId, m.seq); this.epochs.set(m.roomId, m.epoch);
    if (m.sender === this.name && typeof m.message === 'string' && m.message.startsWith('soak ')) latWindow.push(Date.now() - Number(m.message.split(' ')[2]));
  }
  talk(text) {
    if (!this.ready) return false;
    this.n++; C.sent++;
    this.write(stompFrame('SEND', { destination: '/pub/chat/message', 'content-type': 'application/json', receipt: `m${this.n}|${this.roomId}` },
      JSON.stringify({ type: 'TALK', roomId: this.roomId, sender: this.name, message: text ?? `soak ${this.n} ${Date.now()}` })));
    return true;
  }
  drop() {
    if (!this.ready) return false;
    this.closing = true; this.ready = false; C.drops++;
    const s = this.sock; this.sock = null;
    if (Math.random() < 0.5) s.destroy(); else { s.write(wsFrame(1, stompFrame('DISCONNECT', {}))); s.end(); setTimeout(() => s.destroy(), 2000); }
    return true;
  }
  move(roomId) {
    if (!this.ready) return false;
    this.write(stompFrame('UNSUBSCRIBE', { id: `s${this.subId}` }));
    this.ready = false; this.roomId = roomId; C.moves++;
    this.subscribe(false);
    return true;
  }
  close() { this.closing = true; this.ready = false; if (this.sock) { this.sock.write(wsFrame(1, stompFrame('DISCONNECT', {}))); this.sock.end(); const s = this.sock; setTimeout(() => s.destroy(), 3000); } }
}

// ---- chatd side ----
const rssKiB = (pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
// utime + stime in seconds (clock ticks are 100 a second on Linux).
const cpuSeconds = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
const fdCount = (pid) => readdirSync(`/proc/${pid}/fd`).length;
// One connection per request (agent: false, closed after it), so no keep-alive socket of ours
// is counted in chatd's open files.
function get(port, path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent: false, timeout: 10000 }, (res) => {
      let data = ''; res.on('data', (d) => { data += d; }); res.on('end', () => resolve(data));
    });
    req.on('error', reject); req.on('timeout', () => req.destroy(new Error('timeout'))); req.end();
  });
}
async function metrics() {
  const out = {};
  const text = await get(port, '/metrics');
  for (const line of text.split('\n')) { if (!line || line[0] === '#') continue; const i = line.lastIndexOf(' '); out[line.slice(0, i)] = Number(line.slice(i + 1)); }
  return out;
}
const sumOf = (m, prefix) => Object.entries(m).filter(([k]) => k === prefix || k.startsWith(`${prefix}{`)).reduce((a, [, v]) => a + v, 0);
const refusal = (m, reason) => m[`chatd_refusals_total{reason="${reason}"}`] || 0;

function post(port, path, localAddress, body = '', headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', localAddress, agent: false, timeout: 10000,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body), ...headers } }, (res) => {
      let data = ''; res.on('data', (d) => { data += d; }); res.on('end', () => resolve({ status: res.statusCode, body: data }));
    });
    req.on('error', reject); req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(body);
  });
}

// Resolves with ms since `since` until chatd closed `sock` (our end no longer ESTABLISHED), or -1
// after capMs. Asks the kernel (ss): a socket that does not read would not see the reset.
async function closedWithin(sock, since, capMs) {
  // Address and port: 5,000 clients from 20 addresses reuse the same port numbers.
  const src = `${sock.localAddress}:${sock.localPort}`;
  const established = () => execFileSync('ss', ['-Htn', 'state', 'established', `( src ${src} and dport = :${port} )`]).toString().trim() !== '';
  while (Date.now() - since < capMs) { if (sock.destroyed || !established()) return Date.now() - since; await sleep(250); }
  return -1;
}

// (a1) A flooder: CONNECT, then SENDs to a busy room as fast as the socket takes them (at most
// 200,000 or 30 s). Expect 429s on /user/queue/errors, then ERROR "too many messages" and close.
async function flooder(port, roomId) {
  let r429 = 0, error = '', accepted = 0;
  const sock = await openStomp(port, HOSTILE_ADDR.flood, (f) => {
    if (f.command === 'MESSAGE' && f.headers.subscription === 'e') { if (/429/.test(f.body)) r429++; }
    if (f.command === 'RECEIPT') accepted++;
    if (f.command === 'ERROR') error = f.headers.message;
  });
  const start = Date.now(); let closed = 0;
  sock.on('close', () => { closed = Date.now(); }); sock.on('error', () => {});
  sock.write(wsFrame(1, stompFrame('CONNECT', { 'accept-version': '1.2', host: 'x', 'heart-beat': '0,0' })));
  sock.write(wsFrame(1, stompFrame('SUBSCRIBE', { id: 'e', destination: '/user/queue/errors' })));
  const batch = Buffer.concat(Array.from({ length: 100 }, (_, i) => wsFrame(1, stompFrame('SEND', { destination: '/pub/chat/message', ...(i === 0 ? { receipt: 'r' } : {}) },
    JSON.stringify({ type: 'TALK', roomId, sender: 'flooder', message: 'flood flood flood' })))));
  let sent = 0;
  while (!closed && sent < 200000 && Date.now() - start < 30000) {
    sent += 100;
    if (!sock.write(batch)) await Promise.race([new Promise((ok) => sock.once('drain', ok)), sleep(1000)]);
  }
  for (let i = 0; !closed && i < 40; i++) await sleep(250);
  sock.destroy();
  return { sent, r429, error, closedMs: closed ? closed - start : -1 };
}

// (a2) A client that uploads WebSocket pings and never reads (at most 64 MiB, and it stops when
// chatd stops taking them for 3 s). Expect chatd to stop reading it at ~--max-outbound-bytes of
// pongs and to reset it after --write-timeout-ms.
async function pingFlood(port) {
  const sock = await openStomp(port, HOSTILE_ADDR.ping, () => {});
  sock.on('error', () => {});
  sock.write(wsFrame(1, stompFrame('CONNECT', { 'accept-version': '1.2', host: 'x', 'heart-beat': '0,0' })));
  await sleep(300); sock.pause();
  const chunk = Buffer.concat(Array.from({ length: 512 }, () => wsFrame(9, Buffer.alloc(125, 0x70))));
  const start = Date.now(); let up = 0;
  while (up < 64 * 1048576 && !sock.destroyed) {
    up += chunk.length;
    if (sock.write(chunk)) continue;
    const drained = await Promise.race([new Promise((ok) => sock.once('drain', () => ok(true))), sleep(3000).then(() => false)]);
    if (!drained) break;
  }
  const closedMs = await closedWithin(sock, start, 60000);
  sock.destroy();
  return { uploadedMiB: +(up / 1048576).toFixed(1), closedMs };
}

// (b) Non-readers of the hot room: a WebSocket subscriber and an xhr_streaming receiver that
// stop reading while `hot` talks 40 messages/s of ~3.8 KB (within its rate). Expect both dropped.
async function nonReaders(port, hot) {
  const start = Date.now();
  let subscribed = false;
  const ws = await openStomp(port, HOSTILE_ADDR.nonreader, (f) => { if (f.command === 'RECEIPT') subscribed = true; });
  ws.on('error', () => {});
  ws.write(wsFrame(1, stompFrame('CONNECT', { 'accept-version': '1.2', host: 'x', 'heart-beat': '0,0' })));
  ws.write(wsFrame(1, stompFrame('SUBSCRIBE', { id: '0', destination: `/sub/chat/room/${hot.roomId}`, receipt: 'r' })));
  for (let i = 0; !subscribed && i < 40; i++) await sleep(100);
  ws.pause();
  // SockJS: the receiving xhr_streaming request, then CONNECT + SUBSCRIBE by xhr_send, same address.
  const sid = randomBytes(8).toString('hex');
  const xhr = net.connect({ host: '127.0.0.1', port, localAddress: HOSTILE_ADDR.xhr });
  xhr.on('error', () => {});
  let xhrHead = '';
  const gotOpen = new Promise((ok) => { xhr.on('data', (d) => { xhrHead += d.toString('latin1'); if (/\r\n\r\n[\s\S]*o\n/.test(xhrHead)) ok(true); }); setTimeout(() => ok(false), 5000); });
  xhr.write(`POST /ws-stomp/000/${sid}/xhr_streaming HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n`);
  let xhrOk = await gotOpen;
  if (xhrOk) {
    const frames = [stompFrame('CONNECT', { 'accept-version': '1.2', host: 'x', 'heart-beat': '0,0' }), stompFrame('SUBSCRIBE', { id: '0', destination: `/sub/chat/room/${hot.roomId}` })];
    try { const r = await post(port, `/ws-stomp/000/${sid}/xhr_send`, HOSTILE_ADDR.xhr, JSON.stringify(frames), { 'content-type': 'text/plain' }); xhrOk = r.status === 204; } catch { xhrOk = false; }
  }
  await sleep(500); xhr.pause();
  let talking = true; let hotSent = 0;
  const talker = (async () => { while (talking && Date.now() - start < 150000) { for (let i = 0; i < 4; i++) if (hot.talk(HOT_TEXT)) hotSent++; await sleep(100); } })();
  const [wsMs, xhrMs] = await Promise.all([closedWithin(ws, start, 150000), xhrOk ? closedWithin(xhr, start, 150000) : Promise.resolve(-2)]);
  talking = false; await talker;
  ws.destroy(); xhr.destroy();
  return { wsMs, xhrMs, hotSent };
}

// ---- the run ----
const node = await startChatd({ name: 'soak', timeoutMs: 30000 });
const { port, base } = node; const pid = node.child.pid;
log(`chatd ${process.env.CHATD_BIN || 'build/src/app/chatd'} pid ${pid} port ${port}; ${CONNS} clients, ${ROOMS} rooms, ${RATE} msgs/s, ${DURATION} s`);
const resultsDir = join(repoRoot, 'build-bench', 'results'); mkdirSync(resultsDir, { recursive: true });
const samplesPath = join(resultsDir, `soak-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}Z.jsonl`);
writeFileSync(samplesPath, '');

// Rooms, created the page's way, 50 per source address (room creation is limited per address).
const rooms = [];
for (let i = 0; i < ROOMS; i++) {
  const r = await post(port, '/chat/room', ADDRS[Math.floor(i / 50) % ADDRS.length], `name=soak-${i}`);
  if (r.status !== 200) throw new Error(`POST /chat/room: ${r.status} ${r.body}`);
  rooms.push(JSON.parse(r.body).roomId);
}
await sleep(1000);
const baseline = { rss: rssKiB(pid), fds: fdCount(pid) };
// Clients, 250 per source address, at most 100 connecting at a time.
const clients = Array.from({ length: CONNS }, (_, i) => new Client(i, port, ADDRS[i % ADDRS.length], rooms[i % ROOMS]));
const hot = clients[0]; // talks in the hot room during episodes (b); never dropped or moved
{
  let next = 0; const connectDeadline = Date.now() + 300000;
  await Promise.all(Array.from({ length: 100 }, async () => { while (next < CONNS && Date.now() < connectDeadline) await clients[next++].connect(false); }));
  for (let i = 0; i < 300 && clients.filter((c) => c.ready).length < CONNS; i++) await sleep(100);
}
log(`${clients.filter((c) => c.ready).length}/${CONNS} ready after ${((Date.now() - t0) / 1000).toFixed(1)} s, connect failures ${C.connectFailed}`);

const samples = [];
async function sample(phase) {
  const m = await metrics();
  const s = { t: Math.round((Date.now() - soakStart) / 1000), phase, rssKiB: rssKiB(pid), fds: fdCount(pid), cpu: cpuSeconds(pid), ready: clients.filter((c) => c.ready).length,
    connections: m.chatd_connections ?? -1, stompSessions: m.chatd_stomp_sessions ?? -1, published: sumOf(m, 'chatd_messages_published_total'),
    deliveries: sumOf(m, 'chatd_deliveries_total'), slow: sumOf(m, 'chatd_slow_consumers_total'), writeTimeouts: sumOf(m, 'chatd_write_timeouts_total'),
    sendRate: refusal(m, 'send_rate'), sendFlood: refusal(m, 'send_flood'), roomRate: refusal(m, 'room_rate'), perAddress: refusal(m, 'connections_per_address'),
    refusals: sumOf(m, 'chatd_refusals_total'), lat: latWindow, load: readFileSync('/proc/loadavg', 'utf8').split(' ')[0], ...C };
  latWindow = [];
  samples.push(s);
  const { lat, ...line } = s; appendFileSync(samplesPath, `${JSON.stringify({ ...line, latP50: quantile(lat, 0.5), latP99: quantile(lat, 0.99) })}\n`);
  return s;
}

const soakStart = Date.now();
await sample('start');
const end = soakStart + DURATION * 1000;
let running = true;
const ticker = setInterval(() => {
  if (!running) return;
  const now = Date.now();
  for (const c of clients) if (c.ready && now - c.lastWrite > HEARTBEAT_MS * 0.75) c.write('\n');
  let talk = RATE / 10; while (talk >= 1 || Math.random() < talk) { talk--; const c = clients[1 + rnd(CONNS - 1)]; c.talk(); }
  if (Math.random() < DROPS_PER_S / 10) { const c = clients[1 + rnd(CONNS - 1)]; if (c.drop()) setTimeout(() => { if (running) c.connect(true); }, 500 + rnd(2500)); }
  if (Math.random() < MOVES_PER_S / 10) { const c = clients[1 + rnd(CONNS - 1)]; c.move(rooms[rnd(ROOMS)]); }
}, 100);
const hostiles = (async () => {
  for (let k = 0; running && Date.now() + 30000 < end; k++) {
    const at = Date.now();
    try {
      if (k % 2 === 0) {
        const [f, p] = await Promise.all([flooder(port, rooms[1 + rnd(ROOMS - 1)]), pingFlood(port)]);
        E.flood.push(f); E.ping.push(p);
        log(`flooder: ${f.sent} SENDs, ${f.r429} 429s, ERROR "${f.error}", closed after ${f.closedMs} ms; ping flood: ${p.uploadedMiB} MiB taken, closed after ${p.closedMs} ms`);
      } else {
        const r = await nonReaders(port, hot);
        E.nonreader.push(r.wsMs); E.xhr.push(r.xhrMs);
        log(`non-readers of the hot room (${r.hotSent} x 3.8 KB sent): WebSocket closed after ${r.wsMs} ms, xhr_streaming after ${r.xhrMs} ms`);
      }
    } catch (err) { log(`hostile episode ${k} failed: ${err.message}`); }
    while (running && Date.now() - at < HOSTILE_EVERY * 1000 && Date.now() < end) await sleep(500);
  }
})();
while (Date.now() < end) {
  await sleep(Math.min(SAMPLE * 1000, Math.max(0, end - Date.now())));
  const s = await sample('run');
  if (samples.length % Math.max(1, Math.round(60 / SAMPLE)) === 0) log(`t=${s.t}s RSS ${(s.rssKiB / 1024).toFixed(1)} MiB fds ${s.fds} conns ${s.connections} ready ${s.ready} delivered ${C.delivered} lost ${C.lostGaps} unexpected-close ${C.unexpectedClose} load ${s.load}`);
}
running = false; clearInterval(ticker);
await hostiles;
// Tail: every ready client should hold its room's last acknowledged seq.
for (let i = 0; i < 50; i++) { if (clients.every((c) => !c.ready || !roomMaxSeq.has(c.roomId) || !c.seqs.has(c.roomId) || c.seqs.get(c.roomId) >= roomMaxSeq.get(c.roomId))) break; await sleep(100); }
for (const c of clients) if (c.ready && roomMaxSeq.has(c.roomId) && c.seqs.has(c.roomId)) C.tailMissing += Math.max(0, roomMaxSeq.get(c.roomId) - c.seqs.get(c.roomId));
const last = await sample('end');
// Everyone leaves; chatd's open files should come back to the baseline.
for (const c of clients) c.close();
let after = null;
for (let i = 0; i < 120; i++) { await sleep(250); const m = await metrics(); if (m.chatd_stomp_sessions === 0 && m.chatd_connections <= 1 /* this request */) { after = { fds: fdCount(pid), rss: rssKiB(pid) }; break; } }
after ??= { fds: fdCount(pid), rss: rssKiB(pid), notDrained: true };
await node.stop();

// ---- the table ----
const step = DURATION >= 1800 ? 300 : 60;
const rows = [samples[0]];
for (let t = step; t < last.t; t += step) { const s = samples.find((x) => x.t >= t); if (s && s !== rows.at(-1)) rows.push(s); }
if (rows.at(-1) !== last) rows.push(last);
const mib = (k) => (k / 1024).toFixed(1);
const latBetween = (a, b) => samples.filter((s) => s.t > a && s.t <= b).flatMap((s) => s.lat);
const warm = Math.min(600, Math.floor(DURATION / 6));
const tail = samples.filter((s) => s.t >= warm && s.phase === 'run');
let slope = NaN; // MiB per hour, least squares over the samples after warm-up
if (tail.length > 2) {
  const mx = tail.reduce((a, s) => a + s.t, 0) / tail.length; const my = tail.reduce((a, s) => a + s.rssKiB, 0) / tail.length;
  slope = tail.reduce((a, s) => a + (s.t - mx) * (s.rssKiB - my), 0) / tail.reduce((a, s) => a + (s.t - mx) ** 2, 0) * 3600 / 1024;
}
const warmRss = tail.length ? tail[0].rssKiB : last.rssKiB;
const maxRss = Math.max(...tail.map((s) => s.rssKiB), last.rssKiB);
const growthPct = (100 * (maxRss - warmRss)) / warmRss;
const loss = C.lostGaps + C.tailMissing + C.notices + C.errorFrames + C.errorsQueue + C.unexpectedClose + C.dups;
const okCount = (xs) => `${xs.filter((x) => x >= 0).length}/${xs.length}`;
const msStats = (xs) => { const ok = xs.filter((x) => x >= 0); return ok.length ? `median ${(quantile(ok, 0.5) / 1000).toFixed(1)} s, max ${(Math.max(...ok) / 1000).toFixed(1)} s` : 'none'; };
const verdict = (ok) => (ok ? 'yes' : '**no**');

const lines = [];
lines.push('| t | RSS MiB | open files | connections | clients ready | published | deliveries | chatd CPU % | talk p50 / p99 ms | 429 send_rate | flood closes | slow consumers | write timeouts | load |');
lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
let prevT = -1; let prev = null;
for (const s of rows) {
  const lat = latBetween(prevT, s.t); prevT = s.t;
  const cpu = prev && s.t > prev.t ? `${((100 * (s.cpu - prev.cpu)) / (s.t - prev.t)).toFixed(0)}` : '—'; prev = s;
  lines.push(`| ${s.t === 0 ? 'start' : s === last ? `end (${Math.round(s.t / 60)} min)` : `${Math.round(s.t / 60)} min`} | ${mib(s.rssKiB)} | ${s.fds} | ${s.connections} | ${s.ready} | ${s.published} | ${s.deliveries} | ${cpu} | ${lat.length ? `${quantile(lat, 0.5)} / ${quantile(lat, 0.99)}` : '—'} | ${s.sendRate} | ${s.sendFlood} | ${s.slow} | ${s.writeTimeouts} | ${s.load} |`);
}
const verdicts = [
  '| check | figure | holds? |', '|---|---|---|',
  `| RSS flat after warm-up (${(warm / 60).toFixed(1)} min): growth to the highest sample within 10 % | ${mib(warmRss)} → max ${mib(maxRss)} MiB (${growthPct.toFixed(1)} %), slope ${slope.toFixed(1)} MiB/h | ${verdict(growthPct < 10)} |`,
  `| open files: back to the baseline once every client left | before clients ${baseline.fds}, start ${samples[0].fds}, end ${last.fds}, after all left ${after.fds}${after.notDrained ? ' (sessions not all closed within 30 s)' : ''} | ${verdict(!after.notDrained && Math.abs(after.fds - baseline.fds) <= 2)} |`,
  `| well-behaved clients lost nothing | ${C.delivered} messages received (${C.sent} sent, ${C.acked} acknowledged); seq gaps ${C.lostGaps}, tail missing ${C.tailMissing}, resumes past --max-replay ${C.replayLimit} (their ${C.restRecovered} older messages all paged back over REST unless counted as gaps), duplicates ${C.dups}, HISTORY notices ${C.notices}, ERRORs ${C.errorFrames}, /user/queue/errors ${C.errorsQueue}, closes not asked for ${C.unexpectedClose} | ${verdict(loss === 0)} |`,
  `| drops and moves | ${C.drops} drops (${C.resumes} resumed with x-since-seq), ${C.moves} room changes, ${C.connectFailed} connects failed | ${verdict(C.connectFailed === 0)} |`,
  `| flooders disconnected (ERROR too many messages) | ${okCount(E.flood.map((f) => f.closedMs))}, ${msStats(E.flood.map((f) => f.closedMs))} after the first SEND; it read ${E.flood.reduce((a, f) => a + f.r429, 0)} of its 429s before the ERROR | ${verdict(E.flood.length > 0 && E.flood.every((f) => f.closedMs >= 0))} |`,
  `| ping-flooding non-readers reset | ${okCount(E.ping.map((p) => p.closedMs))}, ${msStats(E.ping.map((p) => p.closedMs))}; chatd took at most ${Math.max(0, ...E.ping.map((p) => p.uploadedMiB))} MiB of pings from one | ${verdict(E.ping.length > 0 && E.ping.every((p) => p.closedMs >= 0))} |`,
  `| WebSocket non-readers of the hot room dropped | ${okCount(E.nonreader)}, ${msStats(E.nonreader)} after subscribing | ${verdict(E.nonreader.length > 0 && E.nonreader.every((x) => x >= 0))} |`,
  `| xhr_streaming non-readers of the hot room dropped | ${okCount(E.xhr)}, ${msStats(E.xhr)} | ${verdict(E.xhr.length > 0 && E.xhr.every((x) => x >= 0))} |`,
  `| context: CPU over the run | chatd ${(last.cpu - samples[0].cpu).toFixed(0)} s, this generator ${((process.cpuUsage().user + process.cpuUsage().system) / 1e6).toFixed(0)} s, in ${last.t} s | — |`,
  `| refusals over the run (/metrics) | send_rate ${last.sendRate}, send_flood ${last.sendFlood}, room_rate ${last.roomRate}, connections_per_address ${last.perAddress}, all ${last.refusals}; slow consumers ${last.slow}, write timeouts ${last.writeTimeouts} | — |`,
];
const cmd = `CHATD_BIN=build-bench/chatd/src/app/chatd node bench/soak.mjs --duration ${DURATION} --conns ${CONNS} --rooms ${ROOMS} --rate ${RATE}`;
const text = [lines.join('\n'), '', verdicts.join('\n')].join('\n');
console.log(`\n${cmd}\n\n${text}\n\nsamples: ${samplesPath}`);
if (WRITE) {
  const section = `<!-- soak-bench:begin -->
## ${new Date().toISOString().slice(0, 10)}: the one-hour soak (issue 13)

\`${cmd}\` (Release, embedded engine, default limits; clients from 20 loopback addresses so the
per-address limits stay on). ${CONNS} well-behaved clients in ${ROOMS} rooms, ${RATE} TALK messages/s, ${DROPS_PER_S} drops/s
(resumed with \`x-since-seq\`), ${MOVES_PER_S} room changes/s; every ${HOSTILE_EVERY} s in turn a flooder plus a ping-flooding
non-reader, or a WebSocket and an \`xhr_streaming\` non-reader of a room where one member talks 40 × 3.8 KB/s.
The machine is shared (2 cores, other engineers building): latencies and the load column are context,
not a measurement. Samples every ${SAMPLE} s in \`build-bench/results/\`.

${text}
<!-- soak-bench:end -->
`;
  const path = join(repoRoot, 'BENCHMARKS.md');
  const doc = readFileSync(path, 'utf8');
  const re = /<!-- soak-bench:begin -->[\s\S]*?<!-- soak-bench:end -->\n?/;
  writeFileSync(path, re.test(doc) ? doc.replace(re, section) : `${doc.trimEnd()}\n\n${section}`);
  log('BENCHMARKS.md updated');
} else log('a run shorter than 1800 s (or --no-write) leaves BENCHMARKS.md alone');
process.exit(0);
