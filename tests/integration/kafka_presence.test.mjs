// Presence on two nodes over Kafka (the <topic>-presence log): the same checks as over Redis in
// presence.test.mjs, and a kill -9 whose members leave within the node timeout.
//
// Under CTest the broker is the `kafka` fixture's (CHATD_TEST_KAFKA_PORT / CHATD_TEST_KAFKA_DIR);
// run standalone it starts its own.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';

import { startChatd, startRedis } from './harness.mjs';
import { busUp, kafkaBroker, uniqueTopic, waitForHealth } from './kafka.mjs';
import { nodeKillTest, presenceArgs, presenceTests } from './presence.mjs';

const topic = uniqueTopic();
let broker;

before(async () => { broker = await kafkaBroker(); }, { timeout: 900_000 });
after(async () => { await broker?.release(); }, { timeout: 240_000 });

describe('presence on two nodes over Kafka', () => {
  let redis, a, b;
  const node = async (name) => {
    const n = await startChatd({
      name, timeoutMs: 30_000,
      args: ['--bus', 'kafka', '--kafka', broker.address, '--kafka-topic', topic, '--store', 'redis', '--redis', redis.url,
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

  nodeKillTest('kafka', () => [a, b]);
});
