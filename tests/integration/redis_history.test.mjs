// History and resume on --bus redis with real redis-servers: a resume on the other node, a
// chatd node killed with SIGKILL (Redis with AOF), and a Redis restarted without persistence
// (a resume with the old epoch is told its history was lost).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  createRoom, eventually, freePort, redisCommand, startChatd, startPersistentRedis, startRedis, stompOverWebSocket,
} from './harness.mjs';
import {
  closeAll, dest, killTheNodeAndResumeElsewhere, resumeOnTheOtherNode, sameSendIdPublishedOnce, talkWithSeq,
} from './resume.mjs';

const busUp = async (node) => {
  try {
    const h = await fetch(`${node.base}/healthz`, { signal: AbortSignal.timeout(2_000) });
    return h.status === 200;
  } catch { return false; }
};

describe('two nodes on one Redis with AOF', () => {
  let dir, redis, nodes = [];
  const args = () => ['--bus', 'redis', '--store', 'redis', '--redis', `redis://127.0.0.1:${redis.port}`];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'chatd-redis-hist-'));
    redis = await startPersistentRedis(await freePort(), dir);
    for (const n of ['a', 'b']) nodes.push(await startChatd({ name: `chatd-hist-${n}`, args: args() }));
  });
  after(async () => {
    for (const n of nodes) await n.stop().catch(() => {});
    redis.child.kill('SIGKILL');
    await redis.exited;
    rmSync(dir, { recursive: true, force: true });
  });

  test('a subscriber resumes on the other node: exactly the 500 it missed, in order, then live', async () => {
    await resumeOnTheOtherNode(nodes[0], nodes[1]);
  });

  test('kill -9 of the node a client was on, then resume on another: nothing acknowledged is lost', async () => {
    const doomed = await startChatd({ name: 'chatd-hist-doomed', args: args() });
    await killTheNodeAndResumeElsewhere(doomed, nodes[1]);
  });

  test('the same x-client-id twice, and again through the other node, is published once', async () => {
    await sameSendIdPublishedOnce(nodes[0], nodes[1]);
  });

  test('a resume from before --history-size and --history-ttl is told it is partial', async () => {
    const small = await startChatd({ name: 'chatd-hist-small', args: [...args(), '--history-size', '50'] });
    const brief = await startChatd({ name: 'chatd-hist-brief', args: [...args(), '--history-ttl', '1'] });
    const sessions = [];
    try {
      const room = await createRoom(small.base, 'bounded');
      const s = await stompOverWebSocket(small.base);
      sessions.push(s);
      const box = await s.subscribeConfirmed(dest(room));
      for (let i = 0; i < 120; i++) s.chat('TALK', room.roomId, 'amy', `m${i}`);
      const all = await box.waitForMessages(120, 30_000);
      const { epoch } = all[0];
      const back = await stompOverWebSocket(small.base);
      sessions.push(back);
      const resumed = await back.subscribeConfirmed(dest(room), { 'x-since-seq': String(all[9].seq), 'x-epoch': epoch });
      const frames = await resumed.waitFor(51, 15_000);
      assert.equal(frames[0].headers['x-history-status'], 'partial');
      const notice = JSON.parse(frames[0].body);
      assert.equal(notice.reason, 'retention');
      assert.equal(notice.firstSeq, all[70].seq, 'the newest 50 are kept');
      assert.deepEqual(frames.slice(1).map((f) => JSON.parse(f.body).seq), all.slice(70).map((m) => m.seq));

      // Older than the ttl (1 s here): what is left to replay is nothing, and the client is told.
      await eventually('the messages pass the ttl', async () => {
        const late = await stompOverWebSocket(brief.base);
        sessions.push(late);
        const box2 = await late.subscribeConfirmed(dest(room), { 'x-since-seq': String(all[9].seq), 'x-epoch': epoch });
        const [first] = await box2.waitFor(1, 5_000).catch(() => []);
        return first?.headers['x-history-status'] === 'partial' && JSON.parse(first.body).firstSeq === 0;
      }, 15_000);
    } finally {
      await closeAll(sessions);
      await small.stop();
      await brief.stop();
    }
  });

  // The stream's expiry is renewed only when a new message needs it (ttl + slack, the slack an
  // eighth of the ttl): here a renews it, and b, 2 s later, must push it out again, or a quiet
  // room's newest message would vanish with the older one.
  test('--history-ttl on a quiet room: the newest message is kept for the whole ttl, then the stream goes', async () => {
    const ttlMs = 4_000;
    const node = await startChatd({ name: 'chatd-hist-ttl', args: [...args(), '--history-ttl', String(ttlMs / 1000)] });
    const sessions = [];
    try {
      const room = await createRoom(node.base, 'quiet');
      const stream = `chatd:{${room.roomId}}:hist`;
      const texts = async () => (await (await fetch(`${node.base}/chat/room/${room.roomId}/messages?limit=10`)).json())
        .map((m) => m.message);
      const s = await stompOverWebSocket(node.base);
      sessions.push(s);
      assert.ok(await talkWithSeq(s, room.roomId, 'amy', 'a'));
      await sleep(2_000);
      const sentB = Date.now();
      assert.ok(await talkWithSeq(s, room.roomId, 'amy', 'b'));
      const pttl = Number((await redisCommand(redis.port, ['PTTL', stream])).slice(1));
      const since = Date.now() - sentB;
      assert.ok(pttl >= ttlMs - since && pttl <= ttlMs * 9 / 8,
        `the stream expires in ${pttl} ms, ${since} ms after b was sent: b needs ${ttlMs - since}, at most ttl + slack`);
      assert.deepEqual(await texts(), ['a', 'b']);
      await eventually('a is past the ttl, b is not: only b is served', async () => {
        const t = await texts();
        assert.notDeepEqual(t, [], 'b was dropped before its ttl');
        return t.length === 1 && t[0] === 'b';
      }, 15_000);
      await eventually('b is past the ttl: nothing is served', async () => (await texts()).length === 0, 15_000);
      await eventually('the quiet room\'s stream is gone from Redis',
        async () => (await redisCommand(redis.port, ['EXISTS', stream])) === ':0', 15_000);
    } finally {
      await closeAll(sessions);
      await node.stop();
    }
  });

  // Lua's numbers are doubles: a bound past 2^63 used to reach XRANGE as garbage (503 / ERROR).
  test('seqs past any message (up to 2^64-1) in ?before= and x-since-seq are "beyond everything"', async () => {
    const node = nodes[0];
    const huge = '18446744073709551615';
    const room = await createRoom(node.base, 'far');
    const s = await stompOverWebSocket(node.base);
    try {
      for (const m of ['a', 'b']) assert.ok(await talkWithSeq(s, room.roomId, 'amy', m));
      for (const before of [huge, '9223372036854775808', '9007199254740993']) {
        const res = await fetch(`${node.base}/chat/room/${room.roomId}/messages?before=${before}`);
        assert.equal(res.status, 200, `?before=${before}`);
        assert.deepEqual((await res.json()).map((m) => m.message), ['a', 'b'], `?before=${before}: the newest page`);
      }
      const box = await s.subscribeConfirmed(dest(room), { 'x-since-seq': huge });
      const [notice] = await box.waitFor(1, 10_000);
      assert.equal(notice.headers['x-history-status'], 'reset');
      assert.equal(JSON.parse(notice.body).reason, 'ahead');
    } finally {
      await closeAll([s]);
    }
  });
});

test('Redis restarted without persistence: a resume with the old epoch is told history was lost', async () => {
  let redis = await startRedis({ name: 'redis-volatile' });
  // Rooms in the node's own file, so the room itself outlives the Redis restart.
  const node = await startChatd({ name: 'chatd-volatile', args: ['--bus', 'redis', '--redis', redis.url] });
  const sessions = [];
  try {
    const room = await createRoom(node.base, 'volatile');
    const first = await stompOverWebSocket(node.base);
    sessions.push(first);
    const box = await first.subscribeConfirmed(dest(room));
    for (let i = 0; i < 3; i++) first.chat('TALK', room.roomId, 'amy', `before ${i}`);
    const seen = await box.waitForMessages(3, 10_000);
    const last = seen.at(-1);
    await first.close();

    const port = redis.port;
    await redis.stop({ signal: 'SIGKILL' });
    redis = await startRedis({ name: 'redis-volatile', port });
    await eventually('the node reconnects to the empty Redis', () => busUp(node), 15_000);

    const again = await stompOverWebSocket(node.base);
    sessions.push(again);
    const resumed = await again.subscribeConfirmed(dest(room), { 'x-since-seq': String(last.seq), 'x-epoch': last.epoch });
    const [notice] = await resumed.waitFor(1, 10_000);
    assert.equal(notice.headers['x-history-status'], 'reset', JSON.stringify(notice.headers));
    const body = JSON.parse(notice.body);
    assert.equal(body.type, 'HISTORY');
    assert.equal(body.reason, 'epoch');
    assert.equal(body.askedEpoch, last.epoch);
    assert.notEqual(body.epoch, last.epoch, 'a new epoch: the old seqs mean nothing here');
    // Live goes on under the new epoch, numbered from 1 again.
    again.chat('TALK', room.roomId, 'amy', 'after');
    const [, live] = await resumed.waitFor(2, 10_000);
    const msg = JSON.parse(live.body);
    assert.equal(msg.message, 'after');
    assert.equal(msg.epoch, body.epoch);
    assert.equal(msg.seq, 1);
    // The stream the publish made anew has its expiry (s19: the node thought it renewed it).
    const pttl = Number((await redisCommand(redis.port, ['PTTL', `chatd:{${room.roomId}}:hist`])).slice(1));
    assert.ok(pttl > 0, `PTTL ${pttl}`);
  } finally {
    await closeAll(sessions);
    await node.stop();
    await redis.stop();
  }
});

// s19 probe: with the rooms in Redis too, a Redis restarted empty has forgotten the room; the
// node finds it gone and closes it, but SENDs of the moment before brought its seq, epoch and
// stream back without expiry, and nothing ever removed them.
test('Redis restarted empty with the rooms in it: a room found gone leaves no keys behind', async () => {
  let redis = await startRedis({ name: 'redis-volatile-rooms' });
  const node = await startChatd({ name: 'chatd-volatile-rooms', args: ['--bus', 'redis', '--store', 'redis', '--redis', redis.url] });
  const sessions = [];
  try {
    const room = await createRoom(node.base, 'forgotten');
    const s = await stompOverWebSocket(node.base);
    sessions.push(s);
    const box = await s.subscribeConfirmed(dest(room));
    s.chat('TALK', room.roomId, 'amy', 'before');
    await box.waitForMessages(1, 10_000);
    const port = redis.port;
    await redis.stop({ signal: 'SIGKILL' });
    redis = await startRedis({ name: 'redis-volatile-rooms', port });
    await eventually('the node reconnects to the empty Redis', () => busUp(node), 15_000);
    for (let i = 0; i < 20; i++) s.chat('TALK', room.roomId, 'amy', `after ${i}`);  // some may be taken before it is found gone
    await eventually('the room closed', () => box.frames.some((f) => f.body.includes('ROOM_CLOSED')), 10_000);
    await sleep(500);
    for (const k of ['seq', 'epoch', 'hist'])
      assert.equal(await redisCommand(redis.port, ['EXISTS', `chatd:{${room.roomId}}:${k}`]), ':0', k);
  } finally {
    await closeAll(sessions);
    await node.stop();
    await redis.stop();
  }
});
