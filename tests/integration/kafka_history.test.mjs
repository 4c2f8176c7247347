// History and resume on --bus kafka with a real broker (the CTest `kafka` fixture's, or a
// private one standalone): a resume on the other node, and a chatd node killed with SIGKILL
// (the producer writes with acks=all, so what was acknowledged is in the topic).
import { after, before, describe, test } from 'node:test';

import { startChatd, startRedis } from './harness.mjs';
import { busUp, kafkaBroker, uniqueTopic, waitForHealth } from './kafka.mjs';
import { killTheNodeAndResumeElsewhere, resumeOnTheOtherNode, sameSendIdPublishedOnce } from './resume.mjs';

describe('two nodes on one Kafka topic', () => {
  const topic = uniqueTopic('history');
  let broker, rooms;
  const nodes = [];
  // A node on the broker, rooms in the shared Redis store, once its bus is up.
  const start = async (name) => {
    const node = await startChatd({
      name, timeoutMs: 30_000,
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
});
