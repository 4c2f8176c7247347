// Presence on two nodes over Kafka (the <topic>-presence log): the same checks as over Redis in
// presence.test.mjs, and a kill -9 whose members leave within the node timeout.
//
// Under CTest the broker is the `kafka` fixture's (CHATD_TEST_KAFKA_PORT / CHATD_TEST_KAFKA_DIR);
// run standalone it starts its own.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';

import { createRoom, eventually, startChatd, startRedis } from './harness.mjs';
import { busUp, kafkaBroker, uniqueTopic, waitForHealth } from './kafka.mjs';
import {
  NODE_TIMEOUT_S, announcements, bothStayedThenYunaLeaves, enter, members, nodeKillTest, presenceArgs, presenceTests,
} from './presence.mjs';

const topic = uniqueTopic();
let broker;

before(async () => { broker = await kafkaBroker(); }, { timeout: 900_000 });
after(async () => { await broker?.release(); }, { timeout: 240_000 });

describe('presence on two nodes over Kafka', () => {
  let redis, a, b;
  const node = async (name) => {
    const n = await startChatd({
      name, timeoutMs: 30_000,
      args: ['--node-id', name, '--bus', 'kafka', '--kafka', broker.address, '--kafka-topic', topic, '--store', 'redis', '--redis', redis.url,
        ...presenceArgs],
    });
    await waitForHealth(n.base, busUp, 'up', 30_000);
    return n;
  };
  before(async () => {
    redis = await startRedis({ name: 'redis-kafka-presence' });
    a = await node('presence-kafka-a');
    b = await node('presence-kafka-b');
  }, { timeout: 120_000 });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  test('the Kafka threads are named, so top -H tells them apart', () => {
    const pid = a.child.pid;
    const names = readdirSync(`/proc/${pid}/task`).map((t) => readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim());
    for (const name of ['kafka-producer', 'kafka-consumer', 'kafka-history', 'kafka-presence', 'chatd-engine'])
      assert.ok(names.includes(name), `a thread named ${name} among ${JSON.stringify(names)}`);
  });

  presenceTests('kafka', () => [a, b]);

  // Frozen for twice the node timeout, every run looks silent to every node, its own included.
  // A node that does not hear itself claims no one: no live member is taken out, no QUIT goes
  // out (before s18 each node's claim waited in its producer and declared the other dead on
  // SIGCONT), and a real leave afterwards is still announced.
  test('kafka: a frozen broker takes no live member out, and no QUIT is announced', { timeout: 60_000 }, async () => {
    const room = await createRoom(a.base, 'frozen broker');
    const xavier = await enter(a, room.roomId, 'xavier');
    const yuna = await enter(b, room.roomId, 'yuna');
    try {
      for (const n of [a, b]) await eventually('both in', async () => (await members(n, room.roomId)).count === 2);
      await broker.freeze(NODE_TIMEOUT_S * 2_000);
      for (const n of [a, b]) await waitForHealth(n.base, busUp, 'bus up after the freeze', 30_000);
      await new Promise((r) => setTimeout(r, NODE_TIMEOUT_S * 2_000 + 1_000));  // a late claim would be applied by now
      await bothStayedThenYunaLeaves([a, b], room, xavier, yuna);
    } finally {
      await xavier.s.close();
      await yuna.s.close();
    }
  });

  // A node back from a kill -9 starts a new run. Until the old run is declared dead the other
  // nodes still count its members, and the new run learns them from their answer to its W: a
  // member who reconnects to it is no news (before: a second ENTER for someone who never left).
  test('kafka: a node restarted after kill -9 announces no ENTER for its members coming back', { timeout: 60_000 }, async () => {
    const room = await createRoom(a.base, 'restart');
    const alice = await enter(a, room.roomId, 'alice');
    const dave = await enter(b, room.roomId, 'dave');
    let dave2;
    try {
      await eventually('both in, seen on a', async () => (await members(a, room.roomId)).count === 2);
      b.child.kill('SIGKILL');
      dave.s.closed = true;
      await b.stop();
      b = await node('presence-kafka-b');  // the same node id, a new run
      dave2 = await enter(b, room.roomId, 'dave');  // at once: before the others' answers came, too (s19 probe)
      await new Promise((r) => setTimeout(r, NODE_TIMEOUT_S * 1_000 + 2_000));  // the old run is declared dead by now
      assert.deepEqual(announcements(alice.inbox).filter((m) => m.endsWith(' dave')), ['ENTER dave']);
      for (const n of [a, b]) assert.deepEqual(await members(n, room.roomId), { count: 2, names: ['alice', 'dave'] });
    } finally {
      await alice.s.close();
      await dave2?.s.close();
    }
  });

  nodeKillTest('kafka', () => [a, b]);
});
