// Webhooks (--webhook-url): a small HTTP receiver here plays the application backend. It checks
// the HMAC signature of every POST, sees events batched, answers 500 and sees the same events
// (same ids) again, and, with two nodes over Redis, sees each message reported once, not once per node.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { createRoom, eventually, freePort, startChatd, startRedis, stompOverWebSocket } from './harness.mjs';

const secret = 'webhook-test-secret-0123456789';

// The backend: records every POST; `failNext` makes the next n answer 500.
async function startReceiver(port) {
  const rx = { posts: [], failNext: 0, badSignatures: 0 };
  rx.server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const expected = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
      if (req.headers['x-chatd-signature'] !== expected) rx.badSignatures++;
      const failed = rx.failNext > 0;
      if (failed) rx.failNext--;
      rx.posts.push({ failed, node: req.headers['x-chatd-node'], body: JSON.parse(body.toString()) });
      res.writeHead(failed ? 500 : 200, { 'content-type': 'text/plain' });
      res.end(failed ? 'try again' : 'ok');
    });
  });
  await new Promise((ok) => rx.server.listen(port ?? 0, '127.0.0.1', ok));
  rx.port = rx.server.address().port;
  rx.url = `http://127.0.0.1:${rx.port}/hooks`;
  // Events the backend took (answered 200), de-duplicated by id as a backend would.
  rx.accepted = () => {
    const byId = new Map();
    for (const p of rx.posts) if (!p.failed) for (const e of p.body.events) byId.set(e.id, e);
    return [...byId.values()];
  };
  rx.acceptedRaw = () => rx.posts.filter((p) => !p.failed).flatMap((p) => p.body.events);
  rx.close = () => new Promise((ok) => { rx.server.closeAllConnections(); rx.server.close(ok); });
  return rx;
}

function secretFile() {
  const dir = mkdtempSync(join(tmpdir(), 'chatd-hook-'));
  const file = join(dir, 'secret');
  writeFileSync(file, `${secret}\n`);
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

const metric = async (node, line) => {
  const text = await (await fetch(`${node.base}/metrics`)).text();
  const m = text.match(new RegExp(`^${line.replace(/[{}"]/g, '\\$&')} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
};

describe('webhooks from one node', () => {
  let rx, node, key;
  before(async () => {
    rx = await startReceiver();
    key = secretFile();
    node = await startChatd({ name: 'chatd-hooks', args: ['--webhook-url', rx.url, '--webhook-secret-file', key.file] });
  });
  after(async () => {
    await node?.stop();
    await rx?.close();
    key?.remove();
  });

  test('room, join, message and leave events arrive signed, batched and in order', async () => {
    const room = await createRoom(node.base, 'hooked');
    const alice = await stompOverWebSocket(node.base);
    const seen = await alice.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
    for (let i = 0; i < 40; i++) alice.chat('TALK', room.roomId, 'alice', `m${i}`);
    await seen.waitFor(40);
    await alice.close();
    await eventually('leave event', () => rx.accepted().some((e) => e.type === 'leave' && e.roomId === room.roomId));

    assert.equal(rx.badSignatures, 0, 'every POST carries a valid X-Chatd-Signature');
    const mine = rx.accepted().filter((e) => e.roomId === room.roomId);
    assert.deepEqual([...new Set(mine.map((e) => e.type))].sort(), ['join', 'leave', 'message', 'room']);
    const room_ev = mine.find((e) => e.type === 'room');
    assert.equal(room_ev.data.name, 'hooked');
    const messages = mine.filter((e) => e.type === 'message');
    assert.deepEqual(messages.map((e) => e.seq), Array.from({ length: 40 }, (_, i) => i + 1));
    assert.deepEqual([...new Set(messages.map((e) => e.epoch))], [(await seen.waitForMessages(1))[0].epoch],
      'each with the epoch its seq counts in, as subscribers got it');
    assert.deepEqual(messages.map((e) => e.data.message), Array.from({ length: 40 }, (_, i) => `m${i}`));
    assert.equal(messages[0].data.sender, 'alice');
    const posts = rx.posts.filter((p) => p.body.events.some((e) => e.roomId === room.roomId && e.type === 'message'));
    assert.ok(posts.length < 40, `40 messages went in ${posts.length} POSTs: batched`);
    assert.ok(rx.posts.every((p) => p.node && p.body.node === p.node));
  });

  test('a backend answering 500 twice gets the same events again, same ids, nothing lost', async () => {
    const room = await createRoom(node.base, 'flaky backend');
    await eventually('room event', () => rx.accepted().some((e) => e.roomId === room.roomId));
    const before = rx.posts.length;
    rx.failNext = 2;
    const bob = await stompOverWebSocket(node.base);
    for (let i = 0; i < 5; i++) bob.chat('TALK', room.roomId, 'bob', `r${i}`);
    await eventually('5 messages accepted after two 500s', () =>
      rx.accepted().filter((e) => e.roomId === room.roomId && e.type === 'message').length === 5, 15_000);
    await bob.close();
    const later = rx.posts.slice(before);
    assert.ok(later[0].failed && later[1].failed, 'the first two POSTs were answered 500');
    const failedIds = later.filter((p) => p.failed).flatMap((p) => p.body.events.map((e) => e.id));
    const okIds = new Set(later.filter((p) => !p.failed).flatMap((p) => p.body.events.map((e) => e.id)));
    assert.ok(failedIds.length > 0 && failedIds.every((id) => okIds.has(id)), 'retried events keep their ids');
    assert.ok(await metric(node, 'chatd_webhook_requests_total{result="failed"}') >= 2);
  });
});

describe('webhooks to a backend that closes idle connections', () => {
  test('a kept-alive connection closed while idle is not a failure: the POST goes on a new one', async (t) => {
    const rx = await startReceiver();
    rx.server.keepAliveTimeout = 300;  // Node's default is 5 s; nginx's 75 s
    t.after(() => rx.close());
    const node = await startChatd({ name: 'chatd-hooks-idle', args: ['--webhook-url', rx.url, '--webhook-events', 'room'] });
    t.after(() => node.stop());
    for (let i = 0; i < 3; i++) {
      const room = await createRoom(node.base, `idle ${i}`);
      await eventually(`room ${i} reported`, () => rx.accepted().some((e) => e.roomId === room.roomId));
      await new Promise((r) => setTimeout(r, 2_000));  // Node closes it ~1 s past keepAliveTimeout
    }
    assert.equal(rx.posts.length, 3, 'one POST per event, none lost or repeated');
    assert.equal(await metric(node, 'chatd_webhook_requests_total{result="failed"}'), 0);
    assert.equal(await metric(node, 'chatd_webhook_requests_total{result="ok"}'), 3);
  });
});

// s19 probe: a URL's user:password was not sent (a backend behind Basic auth refused every
// batch) and was written to the log with every failure; an interim 103 Early Hints answer was
// taken for the answer, a failure, and the same batch went again forever.
describe('webhooks to a backend behind Basic auth that sends Early Hints', () => {
  test('user:password goes as Basic auth, never to the log; 1xx answers are skipped', async (t) => {
    const seen = { auth: [], events: [], failNext: 1 };
    const server = createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        seen.auth.push(req.headers.authorization);
        if (req.headers.authorization !== `Basic ${Buffer.from('hook:pa55:w0rd').toString('base64')}`) {
          res.writeHead(401).end();
          return;
        }
        if (seen.failNext-- > 0) return res.writeHead(500).end();  // one failure, which is logged
        res.writeEarlyHints({ link: '</x>; rel=preload' });
        seen.events.push(...JSON.parse(Buffer.concat(chunks).toString()).events);
        res.writeHead(200).end('ok');
      });
    });
    await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
    t.after(() => new Promise((ok) => { server.closeAllConnections(); server.close(ok); }));
    const url = `http://hook:pa55%3Aw0rd@127.0.0.1:${server.address().port}/hooks?token=s3cret`;
    const node = await startChatd({ name: 'chatd-hooks-auth', args: ['--webhook-url', url, '--webhook-events', 'room'] });
    t.after(() => node.stop());
    const rooms = [await createRoom(node.base, 'basic 1'), await createRoom(node.base, 'basic 2')];
    await eventually('both rooms reported', () => rooms.every((r) => seen.events.some((e) => e.roomId === r.roomId)), 10_000);
    assert.ok(seen.auth.every((a) => a?.startsWith('Basic ')), JSON.stringify(seen.auth));
    assert.match(node.tail(), /POST http:\/\/127\.0\.0\.1:\d+\/hooks failed \(HTTP 500\)/);
    assert.doesNotMatch(node.tail(), /pa55|s3cret/);
    assert.equal(await metric(node, 'chatd_webhook_requests_total{result="failed"}'), 1);
  });
});

describe('webhook message ids', () => {
  // A message's id was m-<room>-<seq>: after the room's epoch changed (here the embedded history
  // is lost while the rooms are kept; on Redis, keys lost; on Kafka, a recreated topic) the next
  // message got seq 1 again and the same id, and a backend de-duplicating by id dropped it.
  test('a retried SEND keeps its id; a message given a used seq in a new epoch gets a new one', async (t) => {
    const rx = await startReceiver();
    t.after(() => rx.close());
    const dataDir = mkdtempSync(join(tmpdir(), 'chatd-hook-ids-'));
    t.after(() => rmSync(dataDir, { recursive: true, force: true }));
    const args = ['--webhook-url', rx.url, '--webhook-events', 'message'];
    let node = await startChatd({ name: 'chatd-hook-ids', dataDir, keepData: true, args });
    const room = await createRoom(node.base, 'epochs');
    const send = async (n, text, headers = {}) => {
      const s = await stompOverWebSocket(n.base);
      const box = await s.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      const body = { type: 'TALK', roomId: room.roomId, sender: 'amy', message: text };
      s.publish('/pub/chat/message', body, { 'content-type': 'application/json', ...headers });
      s.publish('/pub/chat/message', body, { 'content-type': 'application/json', ...headers });
      await box.waitFor(headers['x-client-id'] ? 1 : 2);
      await s.close();
    };
    await send(node, 'first', { 'x-client-id': 'retry-1' });  // sent twice, published once
    await eventually('both reports of the retried SEND', () => rx.acceptedRaw().length === 2, 10_000);
    const [one, two] = rx.acceptedRaw();
    assert.equal(one.id, two.id, 'a retried SEND is reported with the same id');
    assert.equal(one.seq, 1);

    await node.stop();
    for (const f of readdirSync(dataDir)) if (f.startsWith('history.')) rmSync(join(dataDir, f));
    node = await startChatd({ name: 'chatd-hook-ids-again', dataDir, keepData: true, args });
    t.after(() => node.stop());
    await send(node, 'second');
    await eventually('the new epoch\'s messages', () => rx.acceptedRaw().length === 4, 10_000);
    const later = rx.acceptedRaw().slice(2);
    assert.deepEqual(later.map((e) => e.seq), [1, 2], 'the seqs started again');
    assert.ok(one.epoch && later[0].epoch && later[0].epoch !== one.epoch, 'under a new epoch');
    assert.deepEqual(rx.accepted().map((e) => e.data.message), ['first', 'second', 'second'],
      'de-duplicated by id, nothing of the new epoch is lost');
  });
});

describe('webhooks while the backend is away', () => {
  test('the queue keeps the newest --webhook-queue events, counts the dropped ones, delivers when back', async (t) => {
    const port = await freePort(); // nobody listens yet
    const node = await startChatd({ name: 'chatd-hooks-away', args: [
      '--webhook-url', `http://127.0.0.1:${port}/hooks`, '--webhook-queue', '10', '--webhook-batch', '5',
      '--webhook-events', 'message'] });
    t.after(() => node.stop());
    const room = await createRoom(node.base, 'nobody home');
    const carol = await stompOverWebSocket(node.base);
    t.after(() => carol.close());
    const seen = await carol.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
    for (let i = 0; i < 30; i++) carol.chat('TALK', room.roomId, 'carol', `q${i}`);
    await seen.waitFor(30);
    await eventually('20 dropped', async () => await metric(node, 'chatd_webhook_events_total{outcome="dropped"}') === 20);
    const rx = await startReceiver(port);
    t.after(() => rx.close());
    await eventually('the newest 10 delivered', () => rx.accepted().length === 10, 15_000);
    assert.deepEqual(rx.accepted().map((e) => e.seq), Array.from({ length: 10 }, (_, i) => 21 + i));
    assert.ok(rx.accepted().every((e) => e.type === 'message'), '--webhook-events message sends only messages');
  });

  // s19 probe: events dropped from the queue while the POST carrying them was out counted as
  // dropped, and not as sent when that POST was taken: 12 received, "sent 10, dropped 21" of 31.
  test('events dropped from the queue while their POST is out count as that POST\'s answer says', async (t) => {
    const rx = await startReceiver();
    t.after(() => rx.close());
    const slow = rx.server.listeners('request')[0];
    rx.server.removeAllListeners('request');
    rx.server.on('request', (req, res) => setTimeout(() => slow(req, res), 300));  // answers late
    const node = await startChatd({ name: 'chatd-hooks-slow', args: [
      '--webhook-url', rx.url, '--webhook-queue', '10', '--webhook-batch', '5', '--webhook-events', 'message'] });
    t.after(() => node.stop());
    const room = await createRoom(node.base, 'slow backend');
    const erin = await stompOverWebSocket(node.base);
    t.after(() => erin.close());
    const seen = await erin.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
    for (let i = 0; i < 31; i++) erin.chat('TALK', room.roomId, 'erin', `s${i}`);
    await seen.waitFor(31);
    const counted = async () => (await metric(node, 'chatd_webhook_events_total{outcome="sent"}')) +
      (await metric(node, 'chatd_webhook_events_total{outcome="dropped"}'));
    await eventually('every event counted once', async () => (await counted()) === 31, 15_000);
    assert.equal(await metric(node, 'chatd_webhook_events_total{outcome="sent"}'), rx.acceptedRaw().length);
  });

  // Control characters are escaped as \u00XX in the event's JSON: a 3,000-byte message of them is
  // an 18 KB event, so 10,000 events could hold ~180 MB. The bytes are bounded too.
  test('--webhook-queue-bytes bounds the queue by size as well: the newest that fit are kept', async (t) => {
    const port = await freePort();
    const node = await startChatd({ name: 'chatd-hooks-bytes', args: [
      '--webhook-url', `http://127.0.0.1:${port}/hooks`, '--webhook-queue-bytes', '131072', '--webhook-events', 'message'] });
    t.after(() => node.stop());
    const room = await createRoom(node.base, 'heavy');
    const dave = await stompOverWebSocket(node.base);
    t.after(() => dave.close());
    const seen = await dave.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
    for (let i = 0; i < 30; i++) dave.chat('TALK', room.roomId, 'dave', `${i} ${'\u0001'.repeat(3000)}`);
    await seen.waitFor(30);
    await eventually('the oldest dropped', async () => await metric(node, 'chatd_webhook_events_total{outcome="dropped"}') >= 20);
    const rx = await startReceiver(port);
    t.after(() => rx.close());
    await eventually('what was kept delivered', () => rx.accepted().length > 0 && rx.accepted().at(-1).seq === 30, 15_000);
    await new Promise((r) => setTimeout(r, 300));
    const kept = rx.accepted().map((e) => e.seq);
    assert.ok(kept.length >= 5 && kept.length <= 7, `${kept.length} events of ~18 KB kept under 128 KiB`);
    assert.deepEqual(kept, Array.from({ length: kept.length }, (_, i) => 31 - kept.length + i), 'the newest, in order');
    assert.equal(await metric(node, 'chatd_webhook_events_total{outcome="dropped"}'), 30 - kept.length);
  });
});

describe('webhooks from two nodes over Redis', () => {
  let rx, redis, a, b;
  before(async () => {
    rx = await startReceiver();
    redis = await startRedis({ name: 'redis-hooks' });
    const args = ['--bus', 'redis', '--store', 'redis', '--redis', redis.url, '--webhook-url', rx.url, '--webhook-events', 'message,room'];
    a = await startChatd({ name: 'chatd-hooks-a', args: [...args, '--threads', '1', '--engine-thread', 'no'] });  // its engine on its one worker
    b = await startChatd({ name: 'chatd-hooks-b', args });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    await rx?.close();
  });

  test('each message is reported once, by the node that published it', async () => {
    const room = await createRoom(a.base, 'two nodes');
    const alice = await stompOverWebSocket(a.base);
    const bob = await stompOverWebSocket(b.base);
    try {
      const atA = await alice.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      const atB = await bob.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      for (let i = 0; i < 15; i++) {
        alice.chat('TALK', room.roomId, 'alice', `a${i}`);
        bob.chat('TALK', room.roomId, 'bob', `b${i}`);
      }
      await atA.waitFor(30, 10_000);
      await atB.waitFor(30, 10_000);
      await eventually('30 message events', () => rx.accepted().filter((e) => e.type === 'message').length === 30);
      // Give a duplicate from the other node time to show up before counting.
      await new Promise((ok) => setTimeout(ok, 300));
      const raw = rx.acceptedRaw().filter((e) => e.type === 'message');
      assert.equal(raw.length, 30, 'no message was reported by both nodes');
      const fromA = rx.posts.filter((p) => p.body.events.some((e) => e.type === 'message' && e.data.sender === 'alice'));
      assert.ok(fromA.every((p) => p.node === fromA[0].node), "alice's messages come from her node only");
      assert.equal(rx.accepted().filter((e) => e.type === 'room').length, 1, 'the room is reported once');
      assert.deepEqual(raw.map((e) => e.seq).sort((x, y) => x - y), Array.from({ length: 30 }, (_, i) => i + 1));
    } finally {
      await alice.close();
      await bob.close();
    }
  });
});

describe('webhooks at shutdown and for deleted rooms', () => {
  test('SIGTERM sends what is still queued (even after 500s), within --webhook-drain-ms', async (t) => {
    const rx = await startReceiver();
    const key = secretFile();
    const api = mkdtempSync(join(tmpdir(), 'chatd-hook-api-'));
    writeFileSync(join(api, 'key'), 'k\n');
    t.after(async () => { await rx.close(); key.remove(); rmSync(api, { recursive: true, force: true }); });
    const node = await startChatd({ name: 'chatd-hooks-drain', args: ['--webhook-url', rx.url, '--webhook-secret-file', key.file,
      '--webhook-drain-ms', '8000', '--api-key-file', join(api, 'key')] });
    const room = await createRoom(node.base, 'closing time');
    const gone = await createRoom(node.base, 'deleted');
    const alice = await stompOverWebSocket(node.base);
    const seen = await alice.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
    const res = await fetch(`${node.base}/api/rooms/${gone.roomId}`, { method: 'DELETE', headers: { 'X-API-Key': 'k' } });
    assert.equal(res.status, 200);
    rx.failNext = 3; // the backend stumbles: the events wait in chatd's backoff when SIGTERM comes
    for (let i = 0; i < 5; i++) alice.chat('TALK', room.roomId, 'alice', `last ${i}`);
    await seen.waitFor(5);
    const exit = await node.stop({ killAfterMs: 20_000 });
    assert.equal(exit.code, 0, JSON.stringify(exit));
    const got = rx.accepted();
    assert.equal(got.filter((e) => e.type === 'message' && e.roomId === room.roomId).length, 5, 'every message reached the backend');
    assert.ok(got.some((e) => e.type === 'leave' && e.roomId === room.roomId), 'the leave of the session closed at shutdown too');
    const deleted = got.find((e) => e.type === 'room' && e.roomId === gone.roomId && e.data.deleted);
    assert.ok(deleted, 'a room event with deleted:true');
    assert.equal(deleted.data.why, 'api');
    assert.equal(rx.badSignatures, 0);
  });

  test('a backend that never answers 2xx delays SIGTERM by at most --webhook-drain-ms', async (t) => {
    const rx = await startReceiver();
    t.after(() => rx.close());
    rx.failNext = 1_000_000;
    const node = await startChatd({ name: 'chatd-hooks-drain-bound', args: ['--webhook-url', rx.url, '--webhook-drain-ms', '1500',
      '--drain-timeout-ms', '500'] });
    await createRoom(node.base, 'never delivered');
    await eventually('a failed POST', () => rx.posts.length > 0);
    const t0 = Date.now();
    const exit = await node.stop({ killAfterMs: 20_000 });
    const took = Date.now() - t0;
    assert.equal(exit.code, 0);
    assert.ok(took >= 1_000 && took < 8_000, `exited after ${took} ms`);
    assert.match(node.tail(20), /shutting down with 1 events not sent/);
  });
});
