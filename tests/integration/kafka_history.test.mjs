// History and resume on --bus kafka with a real broker (the CTest `kafka` fixture's, or a
// private one standalone): a resume on the other node, a chatd node killed with SIGKILL
// (the producer writes with acks=all, so what was acknowledged is in the topic), and a node
// started after the messages were sent, then restarted, whose cache holds none of them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { createRoom, startChatd, startRedis, stompOverWebSocket } from './harness.mjs';
import { busUp, kafkaBroker, uniqueTopic, waitForHealth } from './kafka.mjs';
import { closeAll, dest, killTheNodeAndResumeElsewhere, resumeOnTheOtherNode, sameSendIdPublishedOnce } from './resume.mjs';

describe('two nodes on one Kafka topic', () => {
  const topic = uniqueTopic('history');
  let broker, rooms;
  const nodes = [];
  // A node on the broker, rooms in the shared Redis store, once its bus is up.
  const start = async (name, dataDir) => {
    const node = await startChatd({
      name, timeoutMs: 30_000, dataDir,
      args: ['--bus', 'kafka', '--kafka', broker.address, '--kafka-topic', topic, '--store', 'redis', '--redis', rooms.url],
    });
    await waitForHealth(node.base, busUp, 'up', 30_000).catch(async (e) => { await node.stop(); throw e; });
    return node;
  };
  before(async () => {
    broker = await kafkaBroker();
    rooms = await startRedis({ name: 'redis-rooms' });
    for (const n of ['a', 'b']) nodes.push(await start(`chatd-khist-${n}`));
  }, { timeout: 900_000 });
  after(async () => {
    for (const n of nodes) await n.stop().catch(() => {});
    await rooms?.stop();
    await broker?.release();
  }, { timeout: 240_000 });

  test('a subscriber resumes on the other node: exactly the 500 it missed, in order, then live', async () => {
    await resumeOnTheOtherNode(nodes[0], nodes[1]);
  });

  test('kill -9 of the node a client was on, then resume on another: nothing acknowledged is lost', async () => {
    const doomed = await start('chatd-khist-doomed');
    await killTheNodeAndResumeElsewhere(doomed, nodes[1]);
  });

  test('the same x-client-id twice, and again through the other node, is published once', async () => {
    await sameSendIdPublishedOnce(nodes[0], nodes[1]);
  });

  test('a node started after the messages were sent, and restarted, answers x-history, x-since-seq and REST from the topic', async () => {
    const room = await createRoom(nodes[0].base, 'late node');
    const sessions = [];
    const open = async (node) => { const s = await stompOverWebSocket(node.base); sessions.push(s); return s; };
    const dataDir = mkdtempSync(join(tmpdir(), 'chatd-khist-late-'));
    let late;
    try {
      const watching = await (await open(nodes[0])).subscribeConfirmed(dest(room));
      const sender = await open(nodes[0]);
      for (let i = 0; i < 300; i++) sender.chat('TALK', room.roomId, 'early', `e${i}`);
      let all = await watching.waitForMessages(300, 60_000);

      // What the node answers for messages its consumer never saw (it starts at the topic's end).
      const check = async (node, what) => {
        const ids = (ms) => ms.map((m) => m.id);
        const s = await open(node);
        const joined = await s.subscribeConfirmed(dest(room), { 'x-history': '50' });
        assert.deepEqual(ids(await joined.waitForMessages(50, 30_000)), ids(all.slice(-50)), `${what}: x-history: 50 is the last 50`);
        const from = all[99];
        const resumed = await s.subscribeConfirmed(dest(room), { 'x-since-seq': String(from.seq), 'x-epoch': from.epoch });
        const missed = all.slice(100);
        assert.deepEqual(ids(await resumed.waitForMessages(missed.length, 30_000)), ids(missed), `${what}: x-since-seq gives every later one`);
        const res = await fetch(`${node.base}/chat/room/${room.roomId}/messages?before=${all[150].seq}&limit=100`);
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('x-epoch'), from.epoch);
        assert.deepEqual(ids(await res.json()), ids(all.slice(50, 150)), `${what}: REST before= pages from the topic`);
        sender.chat('TALK', room.roomId, 'early', `live-${what}`);
        await joined.waitForMessages(51, 15_000);
        await resumed.waitForMessages(missed.length + 1, 15_000);
        await sleep(300);  // a duplicate would be here by now
        for (const c of [joined, resumed]) {
          assert.ok(!c.frames.some((f) => f.headers['x-history-status']), `${what}: no HISTORY notice`);
          assert.equal(c.messages.at(-1).message, `live-${what}`, `${what}: then live`);
          assert.equal(new Set(ids(c.messages)).size, c.frames.length, `${what}: nothing twice`);
        }
        await s.close();
        all = await watching.waitForMessages(all.length + 1, 15_000);
      };

      late = await start('chatd-khist-late', dataDir);
      await check(late, 'late node');
      await late.stop();
      late = null;
      // Sent while it is down: the restarted node's cache starts empty again.
      for (let i = 0; i < 50; i++) sender.chat('TALK', room.roomId, 'early', `d${i}`);
      all = await watching.waitForMessages(all.length + 50, 30_000);
      late = await start('chatd-khist-late', dataDir);
      // And some after it is back, which its cache holds: answers join the topic's part and the cache's.
      for (let i = 0; i < 20; i++) sender.chat('TALK', room.roomId, 'early', `c${i}`);
      all = await watching.waitForMessages(all.length + 20, 30_000);
      await check(late, 'restarted node');
    } finally {
      await closeAll(sessions);
      await late?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
