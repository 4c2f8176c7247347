// The server API under /api/ (--api-key-file): a backend posts a SYSTEM message (or a TALK with a
// sender) without a STOMP connection, and reads the node's stats. Keys are checked, bodies
// validated, calls rate-limited and counted; on two Redis nodes a message posted through node A's
// API reaches subscribers on both nodes in order, with the next seq. POST /api/disconnect closes a
// user's or a session's connections on every node (through the control channel) with a STOMP
// ERROR; DELETE /api/rooms/{id} ends the room's subscriptions on every node with a final notice and
// removes it from the store, the list and its history; --room-idle-expiry deletes idle empty rooms.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';

import { createRoom, eventually, listRooms, redisCommand, startChatd, startRedis, stompOverSockJS, stompOverWebSocket } from './harness.mjs';

const apiKey = 'k3y-for-the-backend-only';

function keyFile(text = `${apiKey}\n`) {
  const dir = mkdtempSync(join(tmpdir(), 'chatd-api-'));
  const file = join(dir, 'api-key');
  writeFileSync(file, text);
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

const api = (node, path, { key = apiKey, method = 'GET', body } = {}) => fetch(`${node.base}${path}`, {
  method,
  headers: { ...(key ? { 'X-API-Key': key } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
  body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
});

describe('server API on one node', () => {
  let node, key;
  before(async () => {
    key = keyFile();
    node = await startChatd({ name: 'chatd-api', args: ['--api-key-file', key.file] });
  });
  after(async () => {
    await node?.stop();
    key?.remove();
  });

  test('a missing key is 401, a wrong one 403, both JSON; nothing is published', async () => {
    const room = await createRoom(node.base, 'keys');
    let res = await api(node, '/api/publish', { key: null, method: 'POST', body: { roomId: room.roomId, message: 'x' } });
    assert.equal(res.status, 401);
    assert.equal((await res.json()).status, 401);
    res = await api(node, '/api/publish', { key: 'guess', method: 'POST', body: { roomId: room.roomId, message: 'x' } });
    assert.equal(res.status, 403);
    res = await api(node, '/api/publish', { key: `${apiKey}x`, method: 'POST', body: { roomId: room.roomId, message: 'x' } });
    assert.equal(res.status, 403);
    const stats = await (await api(node, '/api/stats')).json();
    assert.equal(stats.messagesPublished, 0);
  });

  test('POST /api/publish: SYSTEM without a sender, TALK with one, in order after what people said', async () => {
    const room = await createRoom(node.base, '예약 확정');
    const alice = await stompOverWebSocket(node.base);
    try {
      const seen = await alice.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      alice.chat('TALK', room.roomId, 'alice', '7시 어때요?');
      await seen.waitFor(1);
      let res = await api(node, '/api/publish', { method: 'POST', body: { roomId: room.roomId, message: '예약이 확정되었습니다' } });
      assert.equal(res.status, 200);
      const stored = await res.json();
      assert.equal(stored.type, 'SYSTEM');
      assert.equal(stored.message, '예약이 확정되었습니다');
      assert.equal(stored.seq, 2);
      assert.ok(stored.id && stored.ts > 0);
      res = await api(node, '/api/publish', { method: 'POST', body: { roomId: room.roomId.toUpperCase(), message: 'hi', sender: '식당' } });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).type, 'TALK');
      const got = await seen.waitForMessages(3);
      assert.deepEqual(got.map((m) => [m.type, m.sender, m.message, m.seq]),
        [['TALK', 'alice', '7시 어때요?', 1], ['SYSTEM', '', '예약이 확정되었습니다', 2], ['TALK', '식당', 'hi', 3]]);
      assert.ok(stored.epoch, 'the answer carries the epoch its seq counts in');
      assert.deepEqual(got[1], stored, 'the answer is the message as subscribers receive it');
    } finally {
      await alice.close();
    }
  });

  test('bad bodies are 400, an unknown room 404, other paths 404, a wrong method 405', async () => {
    const room = await createRoom(node.base, 'validation');
    const cases = [
      ['not json', 400], [{ message: 'no room' }, 400], [{ roomId: 'nope', message: 'x' }, 400],
      [{ roomId: room.roomId }, 400], [{ roomId: room.roomId, message: '' }, 400],
      [{ roomId: room.roomId, message: 'x'.repeat(4001) }, 400], [{ roomId: room.roomId, message: 'x', sender: 'a\nb' }, 400],
      [{ roomId: room.roomId, message: 'x', sender: 42 }, 400],
      [{ roomId: '00000000-0000-4000-8000-000000000000', message: 'x' }, 404],
    ];
    for (const [body, status] of cases) {
      const res = await api(node, '/api/publish', { method: 'POST', body });
      assert.equal(res.status, status, JSON.stringify(body));
      assert.equal((await res.json()).status, status);
    }
    assert.equal((await api(node, '/api/nothing-here')).status, 404);
    assert.equal((await api(node, '/api/publish')).status, 405);
  });

  test('GET /api/stats and the calls in /metrics', async () => {
    const stats = await (await api(node, '/api/stats')).json();
    assert.equal(typeof stats.node, 'string');
    assert.ok(stats.messagesPublished >= 3);
    assert.equal(stats.bus.up, true);
    const metrics = await (await fetch(`${node.base}/metrics`)).text();
    assert.match(metrics, /^chatd_api_requests_total\{outcome="ok"\} [1-9]\d*$/m);
    assert.match(metrics, /^chatd_api_requests_total\{outcome="forbidden"\} [2-9]\d*$/m);
    assert.match(metrics, /^chatd_api_requests_total\{outcome="unauthorized"\} [1-9]\d*$/m);
  });
});

// Resolves once `session` got an ERROR frame and its socket closed; returns the ERROR.
async function closedWithError(session, what) {
  await eventually(`${what}: ERROR then close`, () => session.errors.length > 0 && session.closed);
  return session.errors[0];
}

// Returns the value of `name{labels}` in node's /metrics (0 when absent).
async function metric(node, line) {
  const text = await (await fetch(`${node.base}/metrics`)).text();
  const m = text.split('\n').find((l) => l.startsWith(`${line} `));
  return m ? Number(m.split(' ')[1]) : 0;
}

describe('disconnect and room deletion on one node', () => {
  let node, key;
  before(async () => {
    key = keyFile();
    node = await startChatd({ name: 'chatd-api-admin', args: ['--api-key-file', key.file] });
  });
  after(async () => {
    await node?.stop();
    key?.remove();
  });

  test('POST /api/disconnect: bad bodies are 400 and close nobody; the key is required', async () => {
    const c = await stompOverWebSocket(node.base);
    try {
      for (const body of ['not json', {}, { user: 'a', session: 'b' }, { user: '' }, { user: 42 }, { session: 'x'.repeat(300) },
        { user: 'kim', reason: 'r'.repeat(1001) }]) {
        const res = await api(node, '/api/disconnect', { method: 'POST', body });
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.equal((await res.json()).status, 400);
      }
      assert.equal((await api(node, '/api/disconnect', { key: null, method: 'POST', body: { user: 'kim' } })).status, 401);
      assert.equal((await api(node, '/api/disconnect', { method: 'GET' })).status, 405);
      assert.equal(c.errors.length, 0);
      assert.equal(c.closed, false);
    } finally {
      await c.close();
    }
  });

  test('a SockJS session (xhr-streaming) is closed by user with an ERROR saying why', async () => {
    const room = await createRoom(node.base, 'sockjs');
    const kim = await stompOverSockJS(node.base, 'xhr-streaming');
    const lee = await stompOverWebSocket(node.base);
    try {
      const seen = await kim.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      kim.chat('ENTER', room.roomId, 'kim');
      await seen.waitFor(1);
      lee.chat('ENTER', room.roomId, 'lee');
      await seen.waitFor(2);
      const res = await api(node, '/api/disconnect', { method: 'POST', body: { user: 'kim', reason: 'reported by other members' } });
      assert.equal(res.status, 202);
      const err = await closedWithError(kim, 'kim over SockJS');
      assert.equal(err.headers.message, 'disconnected by the server');
      assert.match(err.body, /reported by other members/);
      assert.equal(lee.errors.length, 0, 'another user is not touched');
      assert.equal(lee.closed, false);
      assert.ok(await metric(node, 'chatd_disconnected_sessions_total') >= 1);
    } finally {
      await kim.close();
      await lee.close();
    }
  });

  test('DELETE /api/rooms/{id}: notice, subscription ended, room gone from store, list and history', async () => {
    const room = await createRoom(node.base, 'after the meal');
    const other = await createRoom(node.base, 'still open');
    const c = await stompOverWebSocket(node.base);
    try {
      const errors = await c.subscribeConfirmed('/user/queue/errors');
      const seen = await c.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      const kept = await c.subscribeConfirmed(`/sub/chat/room/${other.roomId}`);
      c.chat('TALK', room.roomId, 'kim', '잘 먹었습니다');
      await seen.waitFor(1);
      assert.equal((await api(node, `/api/rooms/${room.roomId}`, { method: 'DELETE' })).status, 200);
      const got = await seen.waitForMessages(2);
      assert.equal(got[1].type, 'SYSTEM');
      assert.equal(got[1].event, 'ROOM_CLOSED');
      assert.equal(got[1].roomId, room.roomId);
      assert.equal(seen.frames[1].headers.destination, `/sub/chat/room/${room.roomId}`);
      assert.equal((await fetch(`${node.base}/chat/room/${room.roomId}`)).status, 404);
      assert.ok(!(await listRooms(node.base)).some((r) => r.roomId === room.roomId));
      assert.equal((await fetch(`${node.base}/chat/room/${room.roomId}/messages`)).status, 404);
      // Later SEND and SUBSCRIBE get the room-not-found refusal; the connection stays.
      c.chat('TALK', room.roomId, 'kim', 'anyone?');
      c.subscribe(`/sub/chat/room/${room.roomId}`);
      const errs = await errors.waitForMessages(2);
      assert.deepEqual(errs.map((e) => e.status), [404, 404]);
      c.chat('TALK', other.roomId, 'kim', 'the other room still works');
      assert.equal((await kept.waitForMessages(1))[0].message, 'the other room still works');
      assert.equal(seen.frames.length, 2, 'nothing after the notice');
      assert.equal(c.errors.length, 0);
      assert.equal((await api(node, `/api/rooms/${room.roomId}`, { method: 'DELETE' })).status, 404);
      assert.equal((await api(node, '/api/rooms/not-a-room', { method: 'DELETE' })).status, 400);
    } finally {
      await c.close();
    }
  });
});

describe('server API limits and defaults', () => {
  test('without --api-key-file the API is off', async (t) => {
    const node = await startChatd({ name: 'chatd-no-api' });
    t.after(() => node.stop());
    const res = await api(node, '/api/stats');
    assert.equal(res.status, 404);
    assert.match((await res.json()).error, /off/);
  });

  test('a key file written on Windows (CRLF) or with blanks around the key still opens the API', async (t) => {
    const key = keyFile(` ${apiKey} \r\nsecond line ignored\r\n`);
    const node = await startChatd({ name: 'chatd-api-crlf', args: ['--api-key-file', key.file] });
    t.after(async () => { await node.stop(); key.remove(); });
    assert.equal((await api(node, '/api/stats')).status, 200);
    assert.equal((await api(node, '/api/stats', { key: 'second line ignored' })).status, 403);
  });

  test('calls beyond --api-rate / --api-burst get 429', async (t) => {
    const key = keyFile();
    const node = await startChatd({ name: 'chatd-api-rate', args: ['--api-key-file', key.file, '--api-rate', '1', '--api-burst', '3'] });
    t.after(async () => { await node.stop(); key.remove(); });
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push((await api(node, '/api/stats')).status);
    assert.deepEqual(statuses.slice(0, 3), [200, 200, 200]);
    assert.ok(statuses.slice(3).includes(429), JSON.stringify(statuses));
  });
});

describe('server API on two nodes over Redis', () => {
  let redis, a, b, key;
  before(async () => {
    key = keyFile();
    redis = await startRedis({ name: 'redis-api' });
    const args = ['--bus', 'redis', '--store', 'redis', '--redis', redis.url, '--api-key-file', key.file];
    a = await startChatd({ name: 'chatd-api-a', args });
    b = await startChatd({ name: 'chatd-api-b', args });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    key?.remove();
  });

  test("a message posted through node A's API reaches both nodes' subscribers in order, next seq", async () => {
    const room = await createRoom(b.base, 'two nodes');
    const alice = await stompOverWebSocket(a.base);
    const bob = await stompOverWebSocket(b.base);
    try {
      const atA = await alice.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      const atB = await bob.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      bob.chat('TALK', room.roomId, 'bob', 'first');
      await atA.waitFor(1);
      const res = await api(a, '/api/publish', { method: 'POST', body: { roomId: room.roomId, message: '모임이 확정되었어요' } });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).seq, 2);
      for (const c of [atA, atB]) {
        const got = await c.waitForMessages(2);
        assert.deepEqual(got.map((m) => [m.type, m.seq]), [['TALK', 1], ['SYSTEM', 2]]);
      }
    } finally {
      await alice.close();
      await bob.close();
    }
  });
});

describe('disconnect and room deletion on two nodes over Redis', () => {
  let redis, a, b, key;
  before(async () => {
    key = keyFile();
    redis = await startRedis({ name: 'redis-api-admin' });
    const args = ['--bus', 'redis', '--store', 'redis', '--redis', redis.url, '--api-key-file', key.file];
    a = await startChatd({ name: 'chatd-admin-a', args });
    b = await startChatd({ name: 'chatd-admin-b', args });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    key?.remove();
  });

  test("disconnect by user closes that user's sessions on both nodes; by session, exactly that one", async () => {
    const room = await createRoom(a.base, 'moderation');
    const kimA = await stompOverWebSocket(a.base);
    const kimB = await stompOverWebSocket(b.base);
    const leeB = await stompOverWebSocket(b.base);
    const parkA = await stompOverWebSocket(a.base);
    try {
      const seen = await leeB.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      kimA.chat('ENTER', room.roomId, 'kim');
      kimB.chat('TALK', room.roomId, 'kim', 'from my laptop');
      parkA.chat('TALK', room.roomId, 'park', 'hi');
      await seen.waitFor(3);
      let res = await api(b, '/api/disconnect', { method: 'POST', body: { user: 'kim' } });
      assert.equal(res.status, 202);
      for (const [s, where] of [[kimA, 'node A'], [kimB, 'node B']]) {
        const err = await closedWithError(s, `kim on ${where}`);
        assert.equal(err.headers.message, 'disconnected by the server');
      }
      assert.equal(leeB.closed || parkA.closed, false, 'other users stay');
      // Session ids are unique across nodes: closing park's (on A) through B's API closes only his.
      const session = parkA.connected.headers.session;
      assert.notEqual(session, leeB.connected.headers.session);
      res = await api(b, '/api/disconnect', { method: 'POST', body: { session } });
      assert.equal(res.status, 202);
      await closedWithError(parkA, 'park by session id');
      leeB.chat('TALK', room.roomId, 'lee', 'still here');
      assert.equal((await seen.waitForMessages(4))[3].message, 'still here');
      assert.equal(leeB.errors.length, 0);
      assert.equal(await metric(a, 'chatd_disconnected_sessions_total') + await metric(b, 'chatd_disconnected_sessions_total'), 3);
    } finally {
      for (const s of [kimA, kimB, leeB, parkA]) await s.close();
    }
  });

  test('room deletion ends subscriptions on both nodes and removes the room from the store, list and history', async () => {
    const room = await createRoom(a.base, 'dinner is over');
    const alice = await stompOverWebSocket(a.base);
    const bob = await stompOverWebSocket(b.base);
    try {
      const atA = await alice.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      const atB = await bob.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      const bobErrors = await bob.subscribeConfirmed('/user/queue/errors');
      alice.chat('TALK', room.roomId, 'alice', 'bye');
      await atB.waitFor(1);
      assert.equal(await redisCommand(redis.port, `EXISTS chatd:{${room.roomId}}:hist`), ':1');
      const res = await api(b, `/api/rooms/${room.roomId}`, { method: 'DELETE' });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { roomId: room.roomId, name: 'dinner is over', deleted: true });
      for (const c of [atA, atB]) {
        const got = await c.waitForMessages(2);
        assert.deepEqual([got[1].type, got[1].event], ['SYSTEM', 'ROOM_CLOSED']);
      }
      assert.equal(await redisCommand(redis.port, `HEXISTS CHAT_ROOM ${room.roomId}`), ':0');
      assert.equal(await redisCommand(redis.port, `EXISTS chatd:{${room.roomId}}:hist`), ':0', 'history dropped');
      for (const n of [a, b]) {
        assert.equal((await fetch(`${n.base}/chat/room/${room.roomId}`)).status, 404);
        assert.ok(!(await listRooms(n.base)).some((r) => r.roomId === room.roomId));
      }
      // Node B had the room cached as known: the deletion reached it, so a SEND is refused.
      bob.chat('TALK', room.roomId, 'bob', 'too late');
      assert.equal((await bobErrors.waitForMessages(1))[0].status, 404);
      assert.equal(atA.frames.length + atB.frames.length, 4, 'nothing after the notices');
    } finally {
      await alice.close();
      await bob.close();
    }
  });
});

// A TCP relay to `port` that can cut every connection through it and refuse new ones, so one
// node loses Redis while the others keep it.
async function cuttableRelay(port) {
  const sockets = new Set();
  let open = true;
  const server = createServer((client) => {
    if (!open) return client.destroy();
    const upstream = connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => { sockets.delete(s); client.destroy(); upstream.destroy(); });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    url: `redis://127.0.0.1:${server.address().port}`,
    cut() { open = false; for (const s of sockets) s.destroy(); },
    restore() { open = true; },
    close() { this.cut(); server.close(); },
  };
}

describe('a node cut off from Redis while a room is deleted', () => {
  let redis, relay, a, b, key;
  before(async () => {
    key = keyFile();
    redis = await startRedis({ name: 'redis-api-cutoff' });
    relay = await cuttableRelay(redis.port);
    const args = (url) => ['--bus', 'redis', '--store', 'redis', '--redis', url, '--api-key-file', key.file,
                           '--redis-ping-ms', '200', '--redis-ping-timeout-ms', '600', '--redis-backoff-max-ms', '200'];
    a = await startChatd({ name: 'chatd-cutoff-a', args: args(redis.url) });
    b = await startChatd({ name: 'chatd-cutoff-b', args: args(relay.url) });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    relay?.close();
    await redis?.stop();
    key?.remove();
  });

  test('once back, it ends its subscriptions with the notice and refuses SENDs: nothing is published', async () => {
    const room = await createRoom(a.base, 'deleted while away');
    const bob = await stompOverWebSocket(b.base);
    try {
      const atB = await bob.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      const bobErrors = await bob.subscribeConfirmed('/user/queue/errors');
      bob.chat('TALK', room.roomId, 'bob', 'before');
      await atB.waitFor(1);
      relay.cut();
      await eventually('node B is down', async () => (await fetch(`${b.base}/healthz`)).status === 503, 10_000);
      assert.equal((await api(a, `/api/rooms/${room.roomId}`, { method: 'DELETE' })).status, 200);
      relay.restore();
      await eventually('node B is up', async () => (await fetch(`${b.base}/healthz`)).status === 200, 10_000);
      // The announcement went by while B was away: B asks the store again about what it holds.
      const got = await atB.waitForMessages(2, 10_000);
      assert.deepEqual([got[1].type, got[1].event], ['SYSTEM', 'ROOM_CLOSED']);
      bob.chat('TALK', room.roomId, 'bob', 'after');
      assert.equal((await bobErrors.waitForMessages(1, 10_000))[0].status, 404);
      assert.equal(await redisCommand(redis.port, `EXISTS chatd:{${room.roomId}}:seq`), ':0', 'the room is not brought back');
      assert.equal(await metric(b, 'chatd_rooms_found_deleted_total'), 1);
    } finally {
      await bob.close();
    }
  });
});

describe('idle room expiry (--room-idle-expiry)', () => {
  test('two Redis nodes delete an idle empty room once; a room with a subscriber or new messages stays', async (t) => {
    const redis = await startRedis({ name: 'redis-expiry' });
    const args = ['--bus', 'redis', '--store', 'redis', '--redis', redis.url, '--room-idle-expiry', '3'];
    const a = await startChatd({ name: 'chatd-expiry-a', args });
    const b = await startChatd({ name: 'chatd-expiry-b', args });
    t.after(async () => { await a.stop(); await b.stop(); await redis.stop(); });
    const idle = await createRoom(a.base, 'nobody came');
    const watched = await createRoom(a.base, 'someone is here');
    const talked = await createRoom(b.base, 'people talk');
    const c = await stompOverWebSocket(b.base);
    t.after(() => c.close());
    const seen = await c.subscribeConfirmed(`/sub/chat/room/${watched.roomId}`);
    const talker = setInterval(() => c.chat('TALK', talked.roomId, 'kim', 'still talking'), 500);
    try {
      await eventually('the idle room expires', async () => !(await listRooms(a.base)).some((r) => r.roomId === idle.roomId), 20_000);
    } finally {
      clearInterval(talker);
    }
    const ids = (await listRooms(b.base)).map((r) => r.roomId);
    assert.ok(ids.includes(watched.roomId), 'a room with a subscriber on another node stays');
    assert.ok(ids.includes(talked.roomId), 'a room with recent messages stays');
    assert.equal(await metric(a, 'chatd_rooms_expired_total') + await metric(b, 'chatd_rooms_expired_total'), 1,
      'deleted once across the nodes');
    assert.equal(seen.frames.length, 0);
  });

  test('one embedded node: an idle room is deleted and counted', async (t) => {
    const node = await startChatd({ name: 'chatd-expiry-one', args: ['--room-idle-expiry', '2'] });
    t.after(() => node.stop());
    const idle = await createRoom(node.base, 'idle');
    await eventually('the idle room expires', async () => (await fetch(`${node.base}/chat/room/${idle.roomId}`)).status === 404, 20_000);
    assert.equal(await metric(node, 'chatd_rooms_expired_total'), 1);
  });
});
