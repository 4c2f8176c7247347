// History and resume on --bus redis with real redis-servers: a resume on the other node, a
// chatd node killed with SIGKILL (Redis with AOF), and a Redis restarted without persistence
// (a resume with the old epoch is told its history was lost).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { createRoom, eventually, freePort, startChatd, startPersistentRedis, startRedis, stompOverWebSocket } from './harness.mjs';
import { closeAll, dest, killTheNodeAndResumeElsewhere, resumeOnTheOtherNode } from './resume.mjs';

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
  } finally {
    await closeAll(sessions);
    await node.stop();
    await redis.stop();
  }
});
