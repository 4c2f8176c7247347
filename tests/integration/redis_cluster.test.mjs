// Three chatd nodes on one redis-server that keeps an append-only file: one order for every
// subscriber, rooms that outlive node restarts and a kill -9 of Redis, and what pub/sub loses
// (measured and printed, since Redis keeps nothing for a node that is not subscribed yet).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  createRoom, eventually, freePort, listRooms, startChatd, startPersistentRedis, stompOverWebSocket,
} from './harness.mjs';

const health = async (node) => (await fetch(`${node.base}/healthz`, { signal: AbortSignal.timeout(2_000) })).status;
const percentile = (xs, p) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];

describe('three nodes on one Redis with AOF', () => {
  let dir, redis, url, nodes = [];
  const args = () => ['--bus', 'redis', '--store', 'redis', '--redis', url];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'chatd-redis-aof-'));
    redis = await startPersistentRedis(await freePort(), dir);
    url = `redis://127.0.0.1:${redis.port}`;
    for (const n of ['a', 'b', 'c']) nodes.push(await startChatd({ name: `chatd-aof-${n}`, args: args(), keepData: true }));
  });
  after(async () => {
    for (const n of nodes) await n.stop();
    redis.child.kill('SIGKILL');
    await redis.exited;
    rmSync(dir, { recursive: true, force: true });
  });

  test('3 senders on 3 nodes x 200 messages: every subscriber sees one order', async () => {
    const room = await createRoom(nodes[0].base, 'three nodes');
    const dest = `/sub/chat/room/${room.roomId}`;
    const people = await Promise.all(nodes.map((n) => stompOverWebSocket(n.base)));
    const extra = await stompOverWebSocket(nodes[2].base); // a second subscriber on one node
    try {
      const inboxes = [];
      for (const p of [...people, extra]) inboxes.push(await p.subscribeConfirmed(dest));
      for (let i = 0; i < 200; i++) people.forEach((p, k) => p.chat('TALK', room.roomId, `s${k}`, `${i}`));
      const got = [];
      for (const box of inboxes) got.push(await box.waitForMessages(600, 30_000));
      for (const g of got.slice(1)) assert.deepEqual(g.map((m) => m.id), got[0].map((m) => m.id), 'one order everywhere');
      assert.deepEqual(got[0].map((m) => m.seq), Array.from({ length: 600 }, (_, i) => i + 1));
      for (let k = 0; k < 3; k++) {
        const mine = got[0].filter((m) => m.sender === `s${k}`).map((m) => Number(m.message));
        assert.deepEqual(mine, Array.from({ length: 200 }, (_, i) => i), `sender ${k} keeps its order`);
      }
    } finally {
      for (const p of [...people, extra]) await p.close();
    }
  });

  test('cross-node latency through Redis (printed, not asserted)', async () => {
    const room = await createRoom(nodes[0].base, 'latency');
    const from = await stompOverWebSocket(nodes[0].base);
    const to = await stompOverWebSocket(nodes[1].base);
    try {
      const box = await to.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      const sent = new Map();
      box.push = ((orig) => function push(f) { f.at = performance.now(); return orig.call(this, f); })(box.push);
      for (let i = 0; i < 300; i++) {
        sent.set(String(i), performance.now());
        from.chat('TALK', room.roomId, 'lat', String(i));
        await sleep(5); // ~200 messages/s: latency, not throughput
      }
      const frames = await box.waitFor(300, 10_000);
      const lat = frames.map((f) => f.at - sent.get(JSON.parse(f.body).message));
      console.log(`# redis cross-node latency (ms, n=300, 200 msg/s): p50 ${percentile(lat, 0.5).toFixed(2)} p99 ${percentile(lat, 0.99).toFixed(2)} max ${Math.max(...lat).toFixed(2)}`);
    } finally {
      await from.close();
      await to.close();
    }
  });

  test('pub/sub keeps nothing: a node that is not subscribed yet never sees the message', async () => {
    const room = await createRoom(nodes[0].base, 'gap');
    const dest = `/sub/chat/room/${room.roomId}`;
    const speaker = await stompOverWebSocket(nodes[0].base);
    const here = await speaker.subscribeConfirmed(dest);
    const late = await stompOverWebSocket(nodes[1].base);
    try {
      for (let i = 0; i < 20; i++) speaker.chat('TALK', room.roomId, 'early', `before ${i}`);
      await here.waitFor(20);
      const there = await late.subscribeConfirmed(dest); // node B subscribes its channel only now
      for (let i = 0; i < 20; i++) speaker.chat('TALK', room.roomId, 'early', `after ${i}`);
      const seen = await there.waitForMessages(20);
      await sleep(200);
      assert.equal(there.frames.length, 20, 'nothing from before the subscription arrives later');
      assert.ok(seen.every((m) => m.message.startsWith('after')));
      assert.equal(seen[0].seq, 21, 'node B starts at seq 21: messages 1-20 are gone for it');

      // The race without a receipt: SUBSCRIBE and, at once, a message from another node.
      let missed = 0;
      const trials = 30;
      for (let t = 0; t < trials; t++) {
        const r = await createRoom(nodes[0].base, `race ${t}`);
        const box = late.subscribe(`/sub/chat/room/${r.roomId}`); // no waiting for the RECEIPT
        speaker.chat('TALK', r.roomId, 'racer', 'now');
        await sleep(150);
        if (box.frames.length === 0) missed++;
        box.subscription.unsubscribe();
      }
      console.log(`# redis pub/sub gap: node B saw 0 of 20 messages sent before its subscription; ` +
        `without waiting for the RECEIPT, ${missed} of ${trials} messages sent right after SUBSCRIBE were lost`);
    } finally {
      await speaker.close();
      await late.close();
    }
  });

  test('rooms outlive a restart of every node and a kill -9 of Redis', async () => {
    const room = await createRoom(nodes[1].base, 'persistent');
    const before = await listRooms(nodes[0].base);
    assert.ok(before.some((r) => r.roomId === room.roomId));
    for (let i = 0; i < nodes.length; i++) {
      const { dataDir, port } = nodes[i];
      const exit = await nodes[i].stop();
      assert.equal(exit.code, 0);
      nodes[i] = await startChatd({ name: `chatd-aof-again-${i}`, args: args(), dataDir, port, keepData: true });
    }
    for (const n of nodes) assert.deepEqual(await listRooms(n.base), before);

    const alice = await stompOverWebSocket(nodes[0].base);
    const bob = await stompOverWebSocket(nodes[2].base);
    try {
      const atA = await alice.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      bob.chat('TALK', room.roomId, 'bob', 'before the crash');
      await atA.waitFor(1);
      redis.child.kill('SIGKILL');
      await redis.exited;
      await eventually('every node reports down', async () => (await Promise.all(nodes.map(health))).every((s) => s === 503), 8_000);
      redis = await startPersistentRedis(redis.port, dir);
      await eventually('every node reports up', async () => (await Promise.all(nodes.map(health))).every((s) => s === 200), 10_000);
      for (const n of nodes) assert.ok(n.isAlive(), 'no node crashed');
      for (const n of nodes) assert.deepEqual(await listRooms(n.base), before, 'AOF kept every room');
      await eventually('chat resumes by itself', async () => {
        bob.chat('TALK', room.roomId, 'bob', 'after the crash');
        await sleep(100);
        return atA.messages.some((m) => m.message === 'after the crash');
      }, 10_000);
    } finally {
      await alice.close();
      await bob.close();
    }
  });
});
