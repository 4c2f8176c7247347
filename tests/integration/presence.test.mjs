// Presence (README "Presence"): who is in a room on every node, joins and leaves announced by
// the server once per person, a dropped tab leaving after the grace period (and not at all when
// it reconnects within it), a killed node's members leaving within the node timeout, and a live
// node's members staying in when Redis was away from every node for longer than that timeout.
// On one embedded node and on two nodes sharing Redis; kafka_presence.test.mjs does Kafka.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { createRoom, eventually, redisCommand, startChatd, startRedis, stompOverWebSocket } from './harness.mjs';
import {
  NODE_TIMEOUT_S, announcements, bothStayedThenYunaLeaves, enter, members, nodeKillTest, presenceArgs, presenceTests,
} from './presence.mjs';

describe('presence on one embedded node', () => {
  let node, dir;
  const apiKey = 'presence-test-key';
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'chatd-presence-'));
    writeFileSync(join(dir, 'key'), `${apiKey}\n`);
    node = await startChatd({ name: 'presence-local', args: [...presenceArgs, '--api-key-file', join(dir, 'key')] });
  });
  after(async () => {
    await node?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  presenceTests('embedded', () => [node, node]);

  test('REST and the server API answer the same; unknown rooms are 404', async () => {
    const room = await createRoom(node.base, 'api');
    const alice = await enter(node, room.roomId, 'alice');
    try {
      assert.deepEqual(await members(node, room.roomId), { count: 1, names: ['alice'] });
      const res = await fetch(`${node.base}/api/rooms/${room.roomId}/members`, { headers: { 'X-API-Key': apiKey } });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { roomId: room.roomId, count: 1, members: ['alice'] });
      const none = await fetch(`${node.base}/chat/room/00000000-0000-4000-8000-000000000000/members`);
      assert.equal(none.status, 404);
      assert.equal((await fetch(`${node.base}/api/rooms/${room.roomId}/members`)).status, 401);
    } finally {
      await alice.s.close();
    }
  });

  test('a deleted room has no members left; its member is in other rooms still', async () => {
    const room = await createRoom(node.base, 'to delete');
    const other = await createRoom(node.base, 'to keep');
    const alice = await enter(node, room.roomId, 'alice');
    const inOther = await alice.s.subscribeConfirmed(`/sub/chat/room/${other.roomId}`);
    alice.s.chat('ENTER', other.roomId, 'alice');
    try {
      await eventually('alice in both', async () => (await members(node, other.roomId)).count === 1);
      const res = await fetch(`${node.base}/api/rooms/${room.roomId}`, { method: 'DELETE', headers: { 'X-API-Key': apiKey } });
      assert.equal(res.status, 200);
      const gone = await fetch(`${node.base}/chat/room/${room.roomId}/members`);
      assert.equal(gone.status, 404);
      assert.deepEqual(await members(node, other.roomId), { count: 1, names: ['alice'] });
      assert.deepEqual(announcements(inOther), ['ENTER alice']);
    } finally {
      await alice.s.close();
    }
  });

  // s20 probe: the connection kept its ENTER of every room it UNSUBSCRIBEd from (memory that
  // grew per room walked through), and a later SUBSCRIBE made it a member again with no ENTER.
  test('UNSUBSCRIBE forgets the ENTER: subscribing again is no member until a new ENTER', async () => {
    const room = await createRoom(node.base, 'in and out');
    const alice = await enter(node, room.roomId, 'alice');
    try {
      assert.deepEqual(await members(node, room.roomId), { count: 1, names: ['alice'] });
      alice.inbox.subscription.unsubscribe();
      await eventually('alice left', async () => (await members(node, room.roomId)).count === 0);
      await alice.s.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      await sleep(200);
      assert.deepEqual(await members(node, room.roomId), { count: 0, names: [] });
      alice.s.chat('ENTER', room.roomId, 'alice');
      await eventually('alice back after her ENTER', async () => (await members(node, room.roomId)).count === 1);
    } finally {
      await alice.s.close();
    }
  });

  test('a subscriber that never ENTERs is no member; a TALK does not make one', async () => {
    const room = await createRoom(node.base, 'watchers');
    const w = await stompOverWebSocket(node.base);
    try {
      const inbox = await w.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      w.chat('TALK', room.roomId, 'lurker', 'hi');
      await inbox.waitFor(1);
      assert.deepEqual(announcements(inbox), []);
      assert.deepEqual(await members(node, room.roomId), { count: 0, names: [] });
    } finally {
      await w.close();
    }
  });
});

describe('presence on two nodes sharing Redis', () => {
  let redis, a, b;
  const args = () => ['--bus', 'redis', '--store', 'redis', '--redis', redis.url, ...presenceArgs];
  before(async () => {
    redis = await startRedis({ name: 'redis-presence' });
    a = await startChatd({ name: 'presence-redis-a', args: [...args(), '--threads', '1', '--engine-thread', 'no'] });  // its engine on its one worker
    b = await startChatd({ name: 'presence-redis-b', args: args() });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  presenceTests('redis', () => [a, b]);

  // On a Redis Cluster a room's counts and a run's index live in different slots, so one shard
  // can lose its data alone (restarted empty, or a write lost in a failover). Either loss is put
  // back once when the node reconnects: never left out, never counted twice (before: a lost
  // index counted yuna twice and her leave went unannounced; lost counts were never put back).
  test('redis: a room\'s lost counts and a run\'s lost index are put back, each member once', async () => {
    const room = await createRoom(a.base, 'shard lost');
    const alice = await enter(a, room.roomId, 'alice');
    const yuna = await enter(b, room.roomId, 'yuna');
    const reconnectAll = async () => {
      assert.match(await redisCommand(redis.port, ['CLIENT', 'KILL', 'TYPE', 'normal']), /^:/);
      await sleep(1_500);  // reconnected (100 ms) and put back
    };
    const counted = async (who) =>
      redisCommand(redis.port, ['EVAL', "return tonumber(redis.call('HGET',KEYS[1],ARGV[1]) or 0)", '1',
        `chatd:{${room.roomId}}:members`, who]);
    try {
      await eventually('both in', async () => (await members(a, room.roomId)).count === 2);
      for (const k of ['members', 'holders']) await redisCommand(redis.port, ['DEL', `chatd:{${room.roomId}}:${k}`]);
      assert.equal((await members(a, room.roomId)).count, 0);
      await reconnectAll();
      await eventually('both put back', async () => (await members(a, room.roomId)).count === 2, 5_000);

      const dropIndex = "for _,k in ipairs(redis.call('KEYS','chatd:presence:node:*')) do " +
        "if redis.call('HEXISTS',k,ARGV[1])==1 then redis.call('DEL',k) return 1 end end return 0";
      assert.equal(await redisCommand(redis.port, ['EVAL', dropIndex, '0', `${room.roomId}\nyuna`]), ':1');
      await reconnectAll();
      assert.equal(await counted('yuna'), ':1', 'yuna is counted once: one node holds her');
      assert.deepEqual(await members(b, room.roomId), { count: 2, names: ['alice', 'yuna'] });

      yuna.s.chat('QUIT', room.roomId, 'yuna');
      await eventually('alice sees yuna leave', () => announcements(alice.inbox).includes('QUIT yuna'), 10_000);
      assert.deepEqual(await members(a, room.roomId), { count: 1, names: ['alice'] });
    } finally {
      await alice.s.close();
      await yuna.s.close();
    }
  });

  // A failover can lose a leave the old primary had acknowledged (or a leave can fail while its
  // shard has no primary): the member stayed listed on every node for ever. The node sends its
  // recent leaves again when the shard comes back, so she leaves for good.
  test('redis: a leave lost with a failover is sent again when the shard comes back', async () => {
    const room = await createRoom(a.base, 'failover ate a leave');
    const xavier = await enter(a, room.roomId, 'xavier');
    const yuna = await enter(b, room.roomId, 'yuna');
    const key = (k) => `chatd:{${room.roomId}}:${k}`;
    try {
      await eventually('both in', async () => (await members(a, room.roomId)).count === 2);
      const runOf = "for _,k in ipairs(redis.call('HKEYS',KEYS[1])) do " +
        "if string.sub(k,-5)=='\\nyuna' then return {ok=string.sub(k,1,-6)} end end return {ok=''}";
      const run = (await redisCommand(redis.port, ['EVAL', runOf, '1', key('holders')])).slice(1);
      assert.ok(run.length > 0, 'a run holds yuna');
      yuna.s.chat('QUIT', room.roomId, 'yuna');
      await eventually('xavier sees yuna leave', () => announcements(xavier.inbox).includes('QUIT yuna'), 10_000);
      // What a replica that missed the leave holds after taking over.
      assert.match(await redisCommand(redis.port, ['HSET', key('members'), 'yuna', '1']), /^:/);
      assert.match(await redisCommand(redis.port, ['HSET', key('holders'), `${run}\nyuna`, '1']), /^:/);
      assert.deepEqual((await members(a, room.roomId)).names, ['xavier', 'yuna']);
      assert.match(await redisCommand(redis.port, ['CLIENT', 'KILL', 'TYPE', 'normal']), /^:/);  // the failover
      for (const n of [a, b]) {
        await eventually('yuna is gone again', async () => {
          try { return (await members(n, room.roomId)).count === 1; } catch { return false; }  // 503 while reconnecting
        }, 10_000);
        assert.deepEqual(await members(n, room.roomId), { count: 1, names: ['xavier'] });
      }
    } finally {
      await xavier.s.close();
      await yuna.s.close();
    }
  });

  nodeKillTest('redis', () => [a, b]);

  test('redis: a run whose reaper died midway is reaped by another node', async () => {
    const room = await createRoom(a.base, 'half reaped');
    const watcher = await enter(a, room.roomId, 'watcher');
    try {
      // What a node that claimed dead run "gone:1" and then died before finishing leaves behind:
      // its stale claim, the run's last field, and the member it still counts in the room.
      const run = 'gone:1';
      for (const cmd of [
        ['HSET', `chatd:{${room.roomId}}:members`, 'ghost', '1'],
        ['HSET', `chatd:presence:node:${run}`, `${room.roomId}\nghost`, '1'],
        ['ZADD', 'chatd:presence:nodes', '1', `reaping:${run}`],
      ]) assert.match(await redisCommand(redis.port, cmd), /^:/, cmd.join(' '));
      await eventually('the ghost leaves', async () => (await members(a, room.roomId)).count === 1);
      assert.deepEqual((await members(a, room.roomId)).names, ['watcher']); // b was killed above
      await eventually('its QUIT announced', () => announcements(watcher.inbox).includes('QUIT ghost'));
      await eventually('the claim released', async () =>
        (await redisCommand(redis.port, ['ZSCORE', 'chatd:presence:nodes', `reaping:${run}`])) === '$-1');
      assert.equal(await redisCommand(redis.port, ['EXISTS', `chatd:presence:node:${run}`]), ':0');
    } finally {
      await watcher.s.close();
    }
  });
});

describe('presence on two nodes when Redis is away from both longer than the node timeout', () => {
  let redis, a, b;
  const countClaims = `local n=0 for _,m in ipairs(redis.call('ZRANGE',KEYS[1],0,-1)) do
    if string.sub(m,1,8)=='reaping:' then n=n+1 end end return n`;
  // What a heartbeat of another node leaves when it claims node b's live run: the entry renamed
  // to reaping:<run>, stamped now. Returns how many runs it claimed.
  const claimB = `local t=redis.call('TIME') local n=0
    for _,m in ipairs(redis.call('ZRANGE',KEYS[1],0,-1)) do if string.sub(m,1,9)=='outage-b:' then
      redis.call('ZREM',KEYS[1],m) redis.call('ZADD',KEYS[1],t[1]*1000,'reaping:'..m) n=n+1 end end return n`;
  const args = () => ['--bus', 'redis', '--store', 'redis', '--redis', redis.url, ...presenceArgs];
  before(async () => {
    redis = await startRedis({ name: 'redis-presence-outage' });
    a = await startChatd({ name: 'presence-outage-a', args: args() });
    b = await startChatd({ name: 'presence-outage-b', args: [...args(), '--node-id', 'outage-b'] });
  });
  after(async () => {
    redis?.signal('SIGCONT');
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  // Redis frozen (SIGSTOP) for twice the node timeout: the heartbeats the nodes sent meanwhile
  // run when it resumes, when every run looks silent. No live node's members may be taken out:
  // no QUIT, both still listed on both nodes, and a real leave afterwards is still announced.
  test('redis: a frozen Redis takes no live member out, and no QUIT is announced', { timeout: 40_000 }, async () => {
    const room = await createRoom(a.base, 'outage');
    const xavier = await enter(a, room.roomId, 'xavier');
    const yuna = await enter(b, room.roomId, 'yuna');
    try {
      for (const n of [a, b]) await eventually('both in', async () => (await members(n, room.roomId)).count === 2);
      redis.signal('SIGSTOP');
      await sleep(NODE_TIMEOUT_S * 2_000);
      redis.signal('SIGCONT');
      // Long enough for a claim made at resumption to go stale, be claimed again and reaped.
      await sleep(NODE_TIMEOUT_S * 2_000 + 1_000);
      await eventually('no run left claimed', async () =>
        (await redisCommand(redis.port, ['EVAL', countClaims, '1', 'chatd:presence:nodes'])) === ':0', 10_000);
      await bothStayedThenYunaLeaves([a, b], room, xavier, yuna);
    } finally {
      await xavier.s.close();
      await yuna.s.close();
    }
  });

  // The orphaned claim of the finding: another node's heartbeat claimed b's live run, and its
  // reply was lost, so the reap comes one timeout later, from whichever node claims it again.
  // b finds its entry gone and puts its members back under a new run before that reap.
  test('redis: a live run claimed as dead keeps its members; the old run is reaped', { timeout: 30_000 }, async () => {
    const room = await createRoom(a.base, 'claimed');
    const xavier = await enter(a, room.roomId, 'xavier');
    const yuna = await enter(b, room.roomId, 'yuna');
    try {
      for (const n of [a, b]) await eventually('both in', async () => (await members(n, room.roomId)).count === 2);
      assert.equal(await redisCommand(redis.port, ['EVAL', claimB, '1', 'chatd:presence:nodes']), ':1');
      await eventually('the claim reaped and released', async () =>
        (await redisCommand(redis.port, ['EVAL', countClaims, '1', 'chatd:presence:nodes'])) === ':0', 15_000);
      await sleep(1_000);
      await bothStayedThenYunaLeaves([a, b], room, xavier, yuna);
    } finally {
      await xavier.s.close();
      await yuna.s.close();
    }
  });
});
