// History and resume on the embedded default (SQLite history in the data dir), driven by
// @stomp/stompjs: join with x-history, resume with x-since-seq + x-epoch (also across a chatd
// restart), the explicit partial / reset answers, history bounds, x-client-id and REST paging.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chatdBinary, createRoom, eventually, startChatd, stompOverWebSocket } from './harness.mjs';

// These tests send as fast as clients can: the per-connection and per-room SEND rate limits
// (on by default) would refuse that, and a refused SEND gets no RECEIPT.
const unlimited = ['--send-rate', '0', '--room-send-rate', '0'];

const dest = (roomId) => `/sub/chat/room/${roomId}`;
const talk = (roomId, sender, message) => JSON.stringify({ type: 'TALK', roomId, sender, message });

// Sends `n` TALKs as fast as the client can write them; resolves once every RECEIPT came, with
// the x-seq of each, in send order.
async function sendMany(session, roomId, sender, n, { prefix = sender } = {}) {
  const receipts = [];
  for (let i = 0; i < n; i++) {
    const id = `${sender}-${i}-${Math.random().toString(36).slice(2)}`;
    receipts.push(new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`no RECEIPT for ${sender} #${i} within 20 s`)), 20_000);
      session.client.watchForReceipt(id, (f) => { clearTimeout(timer); ok(Number(f.headers['x-seq'])); });
    }));
    session.client.publish({ destination: '/pub/chat/message', body: talk(roomId, sender, `${prefix}-${i}`), headers: { receipt: id } });
  }
  return Promise.all(receipts);
}

// Chat messages (not notices) in a collector, parsed.
const chatMessages = (c) => c.frames.filter((f) => !f.headers['x-history-status']).map((f) => JSON.parse(f.body));
const notices = (c) => c.frames.filter((f) => f.headers['x-history-status']).map((f) => JSON.parse(f.body));
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('history on the embedded default', () => {
  let node;
  let dataDir;
  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'chatd-history-'));
    node = await startChatd({ dataDir, name: 'history', args: unlimited });
  });
  after(async () => {
    await node?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('resume: 500 messages from 3 senders while away arrive once, in the order a watcher saw, then live; again across a restart', async () => {
    const { roomId } = await createRoom(node.base, 'resume');
    const watcher = await stompOverWebSocket(node.base);
    const seen = await watcher.subscribeConfirmed(dest(roomId));
    const a = await stompOverWebSocket(node.base);
    const mine = await a.subscribeConfirmed(dest(roomId));
    const senders = await Promise.all([1, 2, 3].map(() => stompOverWebSocket(node.base)));
    await sendMany(senders[0], roomId, 's0', 5);
    const before = await mine.waitForMessages(5);
    const last = before.at(-1);
    await a.close();

    await Promise.all(senders.map((s, i) => sendMany(s, roomId, `s${i}`, i === 0 ? 166 : 167, { prefix: `away${i}` })));
    const all = await seen.waitForMessages(505, 20_000);

    const back = await stompOverWebSocket(node.base);
    const resumed = back.subscribe(dest(roomId), { 'x-since-seq': String(last.seq), 'x-epoch': last.epoch });
    await resumed.waitFor(500, 20_000);
    await sendMany(senders[1], roomId, 'live', 3);
    await resumed.waitFor(503, 10_000);
    const got = chatMessages(resumed);
    assert.deepEqual(notices(resumed), [], 'nothing is missing, so nothing is said');
    assert.deepEqual(got.slice(0, 500).map((m) => m.id), all.slice(5).map((m) => m.id), 'the 500, in the order the watcher saw');
    assert.deepEqual(got.map((m) => m.seq), range(last.seq + 1, last.seq + 503), 'then live, no gap, no duplicate');
    assert.ok(got.every((m) => m.epoch === last.epoch));
    const lastSeen = got.at(-1);
    await back.close();

    // chatd stops (SIGTERM) and starts again on the same data dir; meanwhile nothing is lost.
    await node.stop();
    node = await startChatd({ dataDir, name: 'history-restarted', args: unlimited });
    const s2 = await stompOverWebSocket(node.base);
    const n = await sendMany(s2, roomId, 'after-restart', 10);
    assert.deepEqual(n, range(lastSeen.seq + 1, lastSeen.seq + 10), 'seq continues after a restart');
    const again = await stompOverWebSocket(node.base);
    const r2 = again.subscribe(dest(roomId), { 'x-since-seq': String(lastSeen.seq - 5), 'x-epoch': lastSeen.epoch });
    await r2.waitFor(15, 10_000);
    assert.deepEqual(notices(r2), []);
    assert.deepEqual(chatMessages(r2).map((m) => m.seq), range(lastSeen.seq - 4, lastSeen.seq + 10));
    assert.deepEqual(chatMessages(r2).slice(0, 5).map((m) => m.id), got.slice(-5).map((m) => m.id));
    await Promise.all([watcher, ...senders, s2, again].map((s) => s.close()));
  });

  test('join with x-history: 50 while others send at full speed: no gap, no duplicate, 30 times', async () => {
    const { roomId } = await createRoom(node.base, 'race');
    const senders = await Promise.all([1, 2, 3].map(() => stompOverWebSocket(node.base)));
    await sendMany(senders[0], roomId, 'warm', 60);
    let stop = false;
    const pump = senders.map(async (s, i) => {
      let total = 0;
      while (!stop && total < 100_000) {
        total += (await sendMany(s, roomId, `p${i}`, 200)).length;
      }
    });
    try {
      for (let round = 0; round < 30; round++) {
        const j = await stompOverWebSocket(node.base);
        const c = j.subscribe(dest(roomId), { 'x-history': '50' });
        await c.waitFor(80, 10_000);  // history and at least 30 live
        const seqs = chatMessages(c).map((m) => m.seq);
        assert.deepEqual(notices(c), []);
        assert.deepEqual(seqs, range(seqs[0], seqs[0] + seqs.length - 1), `round ${round}: contiguous, once each`);
        await j.close();
      }
    } finally {
      stop = true;
      await Promise.all(pump);
      await Promise.all(senders.map((s) => s.close()));
    }
  });

  test('join with x-history in a quiet room: exactly the newest N, then live', async () => {
    const { roomId } = await createRoom(node.base, 'quiet');
    const s = await stompOverWebSocket(node.base);
    const sent = await sendMany(s, roomId, 'q', 70);
    const j = await stompOverWebSocket(node.base);
    const c = j.subscribe(dest(roomId), { 'x-history': '50', receipt: 'joined' });
    await c.waitFor(50);
    await sendMany(s, roomId, 'q-live', 1);
    await c.waitFor(51);
    assert.deepEqual(chatMessages(c).map((m) => m.seq), [...sent.slice(20), sent.at(-1) + 1]);
    assert.deepEqual(chatMessages(c).slice(0, 50).map((m) => m.message), range(20, 69).map((i) => `q-${i}`));
    await Promise.all([s, j].map((x) => x.close()));
  });

  test('a stale epoch and a seq ahead of the room are told, then get what there is', async () => {
    const { roomId } = await createRoom(node.base, 'epochs');
    const s = await stompOverWebSocket(node.base);
    await sendMany(s, roomId, 'e', 4);
    const c = s.subscribe(dest(roomId), { 'x-since-seq': '2', 'x-epoch': 'not-this-one' });
    await c.waitFor(5);
    assert.equal(c.frames[0].headers['x-history-status'], 'reset');
    const n = JSON.parse(c.frames[0].body);
    assert.equal(n.type, 'HISTORY');
    assert.equal(n.status, 'reset');
    assert.equal(n.reason, 'epoch');
    assert.equal(n.askedEpoch, 'not-this-one');
    assert.equal(n.sinceSeq, 2);
    assert.equal(n.fromSeq, 1);
    assert.equal(n.lastSeq, 4);
    assert.deepEqual(chatMessages(c).map((m) => m.seq), [1, 2, 3, 4]);
    assert.equal(n.epoch, chatMessages(c)[0].epoch);

    const ahead = s.subscribe(dest(roomId), { 'x-since-seq': '99', 'x-epoch': n.epoch, id: 'ahead' });
    await ahead.waitFor(5);
    assert.equal(notices(ahead)[0].reason, 'ahead');
    await s.close();
  });

  test('x-client-id: sent twice, and again after a reconnect, is published once with one seq', async () => {
    const { roomId } = await createRoom(node.base, 'dedupe');
    const w = await stompOverWebSocket(node.base);
    const seen = await w.subscribeConfirmed(dest(roomId));
    const send = (s, receipt) => new Promise((ok) => {
      s.client.watchForReceipt(receipt, (f) => ok(Number(f.headers['x-seq'])));
      s.client.publish({ destination: '/pub/chat/message', body: talk(roomId, 'kim', 'once'), headers: { receipt, 'x-client-id': 'kim-42' } });
    });
    const a = await stompOverWebSocket(node.base);
    const first = await send(a, 'r1');
    const second = await send(a, 'r2');
    // A client that lost its connection right after sending sends again on a new one.
    a.client.publish({ destination: '/pub/chat/message', body: talk(roomId, 'kim', 'once'), headers: { 'x-client-id': 'kim-43' } });
    await a.close();
    const b = await stompOverWebSocket(node.base);
    const third = await send(b, 'r3');
    const fourth = await new Promise((ok) => {
      b.client.watchForReceipt('r4', (f) => ok(Number(f.headers['x-seq'])));
      b.client.publish({ destination: '/pub/chat/message', body: talk(roomId, 'kim', 'once'), headers: { receipt: 'r4', 'x-client-id': 'kim-43' } });
    });
    assert.equal(second, first);
    assert.equal(third, first);
    assert.equal(fourth, first + 1);
    await sendMany(b, roomId, 'marker', 1);
    const got = await seen.waitForMessages(3);
    assert.deepEqual(got.map((m) => m.seq), [first, first + 1, first + 2], 'kim-42 once, kim-43 once, then the marker');
    await Promise.all([w, b].map((s) => s.close()));
  });

  test('x-client-id belongs to its sender: another sender with the same id is another message', async () => {
    const { roomId } = await createRoom(node.base, 'dedupe per sender');
    const w = await stompOverWebSocket(node.base);
    const seen = await w.subscribeConfirmed(dest(roomId));
    const send = (s, sender, receipt) => new Promise((ok) => {
      s.client.watchForReceipt(receipt, (f) => ok(Number(f.headers['x-seq'])));
      s.client.publish({ destination: '/pub/chat/message', body: talk(roomId, sender, `from ${sender}`), headers: { receipt, 'x-client-id': '1' } });
    });
    const a = await stompOverWebSocket(node.base);
    const b = await stompOverWebSocket(node.base);
    const alice = await send(a, 'alice', 'ra');
    const bob = await send(b, 'bob', 'rb');
    assert.equal(await send(a, 'alice', 'ra2'), alice, "alice's retry is hers");
    assert.equal(bob, alice + 1, "bob's message is his own, not alice's retry");
    const got = await seen.waitForMessages(2);
    assert.deepEqual(got.map((m) => m.message), ['from alice', 'from bob']);
    await Promise.all([w, a, b].map((s) => s.close()));
  });

  test('REST: GET /chat/room/{id}/messages pages older history in the live shape; bounds answer 400/404', async () => {
    const { roomId } = await createRoom(node.base, 'paging');
    const s = await stompOverWebSocket(node.base);
    const live = await s.subscribeConfirmed(dest(roomId));
    await sendMany(s, roomId, 'p', 30);
    const liveBodies = await live.waitForMessages(30);
    const res = await fetch(`${node.base}/chat/room/${roomId}/messages?limit=10`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /application\/json/);
    assert.equal(res.headers.get('x-last-seq'), '30');
    assert.equal(res.headers.get('x-first-seq'), '1');
    assert.equal(res.headers.get('x-epoch'), liveBodies[0].epoch);
    const newest = await res.json();
    assert.deepEqual(newest, liveBodies.slice(20), 'the newest 10, ascending, exactly the live bodies');
    const older = await (await fetch(`${node.base}/chat/room/${roomId}/messages?before=${newest[0].seq}&limit=15`)).json();
    assert.deepEqual(older, liveBodies.slice(5, 20));
    const oldest = await (await fetch(`${node.base}/chat/room/${roomId}/messages?before=3`)).json();
    assert.deepEqual(oldest.map((m) => m.seq), [1, 2]);

    const status = async (q) => (await fetch(`${node.base}/chat/room/${roomId}/messages${q}`)).status;
    assert.equal(await status('?limit=0'), 400);
    assert.equal(await status('?limit=1001'), 400);
    assert.equal(await status('?limit=x'), 400);
    assert.equal(await status('?before=-1'), 400);
    assert.equal(await status('?before=0'), 400, 'seqs start at 1');
    assert.equal((await fetch(`${node.base}/chat/room/00000000-0000-4000-8000-000000000000/messages`)).status, 404);
    assert.equal((await fetch(`${node.base}/chat/room/nope/messages`)).status, 404);
    await s.close();
  });
});

describe('history bounds', () => {
  let node;
  before(async () => { node = await startChatd({ name: 'history-bounds', args: ['--history-size', '20', '--history-ttl', '3', ...unlimited] }); });
  after(async () => { await node?.stop(); });

  test('more than --history-size: a resume from before the window is told "partial", then gets what is kept', async () => {
    const { roomId } = await createRoom(node.base, 'size');
    const s = await stompOverWebSocket(node.base);
    const seqs = await sendMany(s, roomId, 'z', 30);
    const c = s.subscribe(dest(roomId), { 'x-since-seq': '5', 'x-epoch': await epochOf(node, roomId) });
    await c.waitFor(21);
    assert.equal(c.frames[0].headers['x-history-status'], 'partial');
    const [n] = notices(c);
    assert.deepEqual({ status: n.status, reason: n.reason, firstSeq: n.firstSeq, lastSeq: n.lastSeq, fromSeq: n.fromSeq, sinceSeq: n.sinceSeq },
      { status: 'partial', reason: 'retention', firstSeq: 11, lastSeq: 30, fromSeq: 11, sinceSeq: 5 });
    assert.deepEqual(chatMessages(c).map((m) => m.seq), seqs.slice(10));
    await s.close();
  });

  test('older than --history-ttl: gone from history; a resume is told "partial"', async () => {
    const { roomId } = await createRoom(node.base, 'ttl');
    const s = await stompOverWebSocket(node.base);
    await sendMany(s, roomId, 'old', 3);
    const epoch = await epochOf(node, roomId);
    await eventually('messages expire', async () => (await (await fetch(`${node.base}/chat/room/${roomId}/messages`)).json()).length === 0, 10_000);
    const c = s.subscribe(dest(roomId), { 'x-since-seq': '1', 'x-epoch': epoch });
    await c.waitFor(1);
    const [n] = notices(c);
    assert.equal(n.status, 'partial');
    assert.equal(n.reason, 'retention');
    assert.equal(n.firstSeq, 0, 'nothing retained');
    assert.equal(n.fromSeq, 4);
    await sendMany(s, roomId, 'new', 1);
    await c.waitFor(2);
    assert.equal(chatMessages(c)[0].seq, 4, 'then live');
    await s.close();
  });
});

describe('history off (--history-size 0)', () => {
  let node;
  before(async () => { node = await startChatd({ name: 'history-off', args: ['--history-size', '0', ...unlimited] }); });
  after(async () => { await node?.stop(); });

  test('nothing is kept: x-history and REST are empty, a resume is told "partial", seqs and dedupe stay', async () => {
    const { roomId } = await createRoom(node.base, 'off');
    const s = await stompOverWebSocket(node.base);
    const seqs = await sendMany(s, roomId, 'x', 5);
    assert.deepEqual(seqs, range(1, 5));
    const res = await fetch(`${node.base}/chat/room/${roomId}/messages`);
    assert.deepEqual(await res.json(), []);
    assert.equal(res.headers.get('x-last-seq'), '5');
    const joined = await s.subscribeConfirmed(dest(roomId), { 'x-history': '10' });
    const resumed = s.subscribe(dest(roomId), { 'x-since-seq': '2', 'x-epoch': res.headers.get('x-epoch') });
    await resumed.waitFor(1);
    const [n] = notices(resumed);
    assert.deepEqual([n.status, n.reason, n.firstSeq, n.fromSeq], ['partial', 'retention', 0, 6]);
    const id = { 'x-client-id': `off-${process.pid}` };
    const once = [];
    for (let i = 0; i < 2; i++) {
      once.push(await new Promise((ok) => {
        const receipt = `off-${i}`;
        s.client.watchForReceipt(receipt, (f) => ok(Number(f.headers['x-seq'])));
        s.client.publish({ destination: '/pub/chat/message', body: talk(roomId, 'x', 'once'), headers: { receipt, ...id } });
      }));
    }
    assert.deepEqual(once, [6, 6], 'x-client-id still de-duplicates');
    await joined.waitFor(1);
    await resumed.waitFor(2);
    assert.deepEqual(chatMessages(joined).map((m) => m.seq), [6], 'x-history: only live');
    assert.deepEqual(chatMessages(resumed).map((m) => m.seq), [6], 'a resume: the notice, then live');
    await s.close();
  });
});

async function epochOf(node, roomId) {
  const res = await fetch(`${node.base}/chat/room/${roomId}/messages?limit=1`);
  return res.headers.get('x-epoch');
}

// A history file chatd may read but not write (a restored backup, a wrong owner): start-up
// fails with SQLite's own reason, not the one of the ROLLBACK after it (s21: "not an error").
describe('a history file that cannot be written', () => {
  test('start-up names the cause', async (t) => {
    if (process.getuid?.() !== 0 || spawnSync('setpriv', ['--version']).status !== 0) {
      t.skip('needs root and setpriv, to run chatd as a user the file refuses (root writes anyway)');
      return;
    }
    const dataDir = mkdtempSync(join(tmpdir(), 'chatd-ro-'));
    try {
      const node = await startChatd({ dataDir, name: 'history-ro-writer', args: unlimited });
      const { roomId } = await createRoom(node.base, 'read-only');
      const s = await stompOverWebSocket(node.base);
      await sendMany(s, roomId, 'ro', 50);
      await node.stop({ signal: 'SIGKILL' });  // leaves the journal for the next start to fold
      // Everything else stays writable (the lock file, the room store): only history refuses.
      chmodSync(dataDir, 0o777);
      for (const f of readdirSync(dataDir)) chmodSync(join(dataDir, f), f.startsWith('history.') ? 0o444 : 0o666);
      const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', chatdBinary(),
        '--port', '0', '--address', '127.0.0.1', '--data-dir', dataDir, '--web-root', ''], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /readonly database|read-only|permission denied|unable to open/i, r.stderr);
      assert.doesNotMatch(r.stderr, /not an error|no transaction is active/, r.stderr);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
