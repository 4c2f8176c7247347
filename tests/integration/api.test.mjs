// The server API under /api/ (--api-key-file): a backend posts a SYSTEM message (or a TALK with a
// sender) without a STOMP connection, and reads the node's stats. Keys are checked, bodies
// validated, calls rate-limited and counted; on two Redis nodes a message posted through node A's
// API reaches subscribers on both nodes in order, with the next seq.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { createRoom, startChatd, startRedis, stompOverWebSocket } from './harness.mjs';

const apiKey = 'k3y-for-the-backend-only';

function keyFile() {
  const dir = mkdtempSync(join(tmpdir(), 'chatd-api-'));
  const file = join(dir, 'api-key');
  writeFileSync(file, `${apiKey}\n`);
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
      assert.equal(got[1].id, stored.id, 'the answer is the message as subscribers receive it');
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

describe('server API limits and defaults', () => {
  test('without --api-key-file the API is off', async (t) => {
    const node = await startChatd({ name: 'chatd-no-api' });
    t.after(() => node.stop());
    const res = await api(node, '/api/stats');
    assert.equal(res.status, 404);
    assert.match((await res.json()).error, /off/);
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
