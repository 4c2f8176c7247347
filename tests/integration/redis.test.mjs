// Two chatd nodes sharing one real redis-server (--bus redis --store redis): rooms live in the
// hash CHAT_ROOM, messages travel over one Redis channel per room. Then Redis is killed -9 and
// restarted on the same port: the nodes say they are down, refuse sends, and recover alone.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import { createRoom, eventually, listRooms, redisCommand, startChatd, startRedis, stompOverWebSocket } from './harness.mjs';

const redisArgs = (url) => ['--bus', 'redis', '--store', 'redis', '--redis', url];
// Node a runs one worker with its Redis connections on that worker's loop (--engine-thread no);
// node b keeps the engine thread of its own. Every test below runs across both shapes.
const oneWorker = ['--threads', '1', '--engine-thread', 'no'];
const range = (n, f) => Array.from({ length: n }, (_, i) => f(i));


const healthStatus = async (node) => (await fetch(`${node.base}/healthz`, { signal: AbortSignal.timeout(2_000) })).status;

describe('two chatd nodes over Redis', () => {
  let redis, a, b;
  before(async () => {
    redis = await startRedis({ name: 'redis-two-nodes' });
    a = await startChatd({ name: 'chatd-redis-a', args: [...redisArgs(redis.url), ...oneWorker] });
    b = await startChatd({ name: 'chatd-redis-b', args: redisArgs(redis.url) });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  test('a room created on one node is listed and found on the other', async () => {
    const room = await createRoom(a.base, '저녁 약속 🍜');
    const rooms = await listRooms(b.base);
    assert.ok(rooms.some((r) => r.roomId === room.roomId && r.name === '저녁 약속 🍜'), JSON.stringify(rooms));
    const res = await fetch(`${b.base}/chat/room/${room.roomId}`);
    assert.equal(res.status, 200);
    const found = await res.json();
    assert.equal(found.roomId, room.roomId);
    assert.equal(found.name, room.name);
    assert.equal(await redisCommand(redis.port, `HEXISTS CHAT_ROOM ${room.roomId}`), ':1');
    assert.equal(await healthStatus(a), 200);
  });

  test('people on different nodes talk and both nodes deliver one order', async () => {
    const room = await createRoom(a.base, 'lunch');
    const alice = await stompOverWebSocket(a.base);
    const bob = await stompOverWebSocket(b.base);
    try {
      const dest = `/sub/chat/room/${room.roomId}`;
      const atA = await alice.subscribeConfirmed(dest);
      const atB = await bob.subscribeConfirmed(dest);
      alice.chat('ENTER', room.roomId, 'alice');
      await atB.waitFor(1);
      bob.chat('ENTER', room.roomId, 'bob');
      await atA.waitFor(2);
      for (let i = 0; i < 50; i++) {
        alice.chat('TALK', room.roomId, 'alice', `a${i}`);
        bob.chat('TALK', room.roomId, 'bob', `b${i}`);
      }
      const ma = await atA.waitForMessages(102, 10_000);
      const mb = await atB.waitForMessages(102, 10_000);
      assert.deepEqual(ma.map((m) => m.id), mb.map((m) => m.id), 'both nodes deliver the same order');
      assert.deepEqual(ma.map((m) => m.seq), range(102, (i) => i + 1), 'seq is contiguous from 1 in a new room');
      assert.match(ma[0].message, /alice/);
      const talk = (who) => ma.filter((m) => m.type === 'TALK' && m.sender === who).map((m) => m.message);
      assert.deepEqual(talk('alice'), range(50, (i) => `a${i}`));
      assert.deepEqual(talk('bob'), range(50, (i) => `b${i}`));
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  test('a one-worker node runs its engine on that worker and still drains and exits 0 on SIGTERM', async () => {
    assert.match(a.tail(200), /workers=1 \(engines on the worker\)/);
    assert.doesNotMatch(b.tail(200), /engines on the worker/);
    const started = Date.now();
    const exit = await a.stop();
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, a.tail());
    assert.ok(Date.now() - started < 5_000, 'stopped before the harness would SIGKILL it');
    assert.match(a.tail(5), /chatd: stopped/);
  });
});

describe('Redis killed and restarted under two chatd nodes', () => {
  let redis, a, b;
  before(async () => {
    redis = await startRedis({ name: 'redis-restart' });
    a = await startChatd({ name: 'chatd-redis-ka', args: [...redisArgs(redis.url), ...oneWorker] });
    b = await startChatd({ name: 'chatd-redis-kb', args: redisArgs(redis.url) });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  test('nodes report down, refuse sends, and the old subscription works again after restart', async () => {
    const room = await createRoom(a.base, 'resilient');
    const other = await createRoom(a.base, 'joined while down');
    const dest = `/sub/chat/room/${room.roomId}`;
    const alice = await stompOverWebSocket(a.base);
    let bob = await stompOverWebSocket(b.base);
    try {
      const atA = await alice.subscribeConfirmed(dest);
      bob.chat('TALK', room.roomId, 'bob', 'before');
      await atA.waitFor(1);

      await redis.stop({ signal: 'SIGKILL' });
      await eventually('both nodes report down', async () => (await healthStatus(a)) === 503 && (await healthStatus(b)) === 503, 5_000);
      const health = await (await fetch(`${b.base}/healthz`)).json();
      assert.equal(health.bus.up, false);
      assert.match(health.bus.detail, /down/);

      // A send while Redis is down is refused to the sender, not silently dropped.
      const errors = await bob.subscribeConfirmed('/user/queue/errors');
      bob.chat('TALK', room.roomId, 'bob', 'while down');
      const [refused] = await errors.waitForMessages(1, 5_000);
      assert.equal(refused.status, 503);

      // A SUBSCRIBE the engine cannot confirm is refused like a SEND: an error with its
      // receipt, no subscription; the connection and its other room stay (it used to end both).
      const aliceErrors = await alice.subscribeConfirmed('/user/queue/errors');
      const receipts = [];
      alice.client.watchForReceipt('while-down', () => receipts.push('while-down'));
      alice.subscribe(`/sub/chat/room/${other.roomId}`, { receipt: 'while-down' });
      const [unconfirmed] = await aliceErrors.waitForMessages(1, 5_000);
      assert.equal(unconfirmed.status, 503);
      assert.match(unconfirmed.error, /message engine unavailable/);
      assert.equal(unconfirmed.receipt, 'while-down');
      assert.deepEqual(receipts, []);
      assert.equal(alice.closed, false);
      assert.deepEqual(alice.errors, []);

      redis = await startRedis({ name: 'redis-restart-again', port: redis.port });
      await eventually('both nodes report up again', async () => (await healthStatus(a)) === 200 && (await healthStatus(b)) === 200, 10_000);

      // Alice does nothing: node A re-subscribes the room by itself. Bob sends until one lands.
      if (bob.closed) bob = await stompOverWebSocket(b.base);
      await eventually('a message sent after the restart reaches the old subscription', async () => {
        bob.chat('TALK', room.roomId, 'bob', 'after');
        await sleep(100);
        return atA.frames.length >= 2;
      }, 10_000);
      const got = atA.messages;
      assert.equal(got[1].message, 'after');
      assert.equal(alice.closed, false, 'the connection that was refused a SUBSCRIBE lives on');
      assert.ok(!got.some((m) => m.message === 'while down'), 'a refused message is never delivered');
    } finally {
      await alice.close();
      await bob.close();
    }
  });
});
