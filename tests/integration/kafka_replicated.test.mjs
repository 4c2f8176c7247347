// Two chatd nodes on a replicated Kafka: 3 brokers (scripts/kafka-cluster.sh, KRaft, 3-voter
// quorum), the chat topic with replication factor 3 and min.insync.replicas 2. Clients on both
// nodes chat with receipts while the leader of the room's partition is killed with SIGKILL and
// later started again: every message that got a RECEIPT arrives exactly once on both nodes, in
// one order, each sender's messages in its send order; the restarted broker catches up (back in
// the ISR) and nothing changes for clients. The stall the failover costs is printed.
//
// The test starts its own cluster: ports CHATD_TEST_KAFKA_CLUSTER_PORT .. +5 (CMake sets it),
// else a free block of six below the ephemeral range.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { createRoom, repoRoot, startChatd, startRedis, stompOverWebSocket } from './harness.mjs';
import {
  busUp, chatWithReceipt, eventually, healthz, kafkaMetadata, kafkaTopicConfig, percentiles, runScript, uniqueTopic,
  waitForHealth,
} from './kafka.mjs';

const clusterSh = join(repoRoot, 'scripts', 'kafka-cluster.sh');
const topic = uniqueTopic('replicated');
let dir;
let bootstrap;  // '127.0.0.1:P,127.0.0.1:P+1,127.0.0.1:P+2'

const cluster = (...args) => runScript(clusterSh, [...args, '--dir', dir], { timeoutMs: 180_000 });

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'chatd-kafka-cluster-'));
  const port = Number(process.env.CHATD_TEST_KAFKA_CLUSTER_PORT) || 20_000 + 6 * Math.floor(Math.random() * 2000);
  // The first run on a machine fetches the jars from Maven Central: minutes.
  bootstrap = await runScript(clusterSh, ['start', '--fresh', '--dir', dir, '--port', String(port)], { timeoutMs: 900_000 });
}, { timeout: 900_000 });

after(async () => {
  if (dir) await cluster('stop').catch((e) => console.log(`cluster stop: ${e.message}`));
  if (dir) rmSync(dir, { recursive: true, force: true });
}, { timeout: 120_000 });

// The metadata of the chat topic's partition 0 as the first live broker tells it.
async function partition0() {
  for (const address of bootstrap.split(',')) {
    try {
      const md = await kafkaMetadata(address, topic, { timeoutMs: 3_000 });
      if (md.partitions.length) return md.partitions.find((p) => p.partition === 0);
    } catch { /* that broker is down: ask the next */ }
  }
  return null;
}

async function waitForPartition(pred, what, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await partition0();
    if (last && pred(last)) return last;
    if (Date.now() > deadline) throw new Error(`partition 0 of ${topic}: not ${what} within ${timeoutMs} ms; last ${JSON.stringify(last)}`);
    await sleep(200);
  }
}

describe('two nodes on 3 brokers (RF 3, min.insync.replicas 2)', () => {
  let redis;
  const nodes = [];
  before(async () => {
    redis = await startRedis();
    // One partition: every room lives on it, so its leader is the busy one.
    const args = ['--bus', 'kafka', '--kafka', bootstrap, '--kafka-topic', topic, '--kafka-partitions', '1',
      '--kafka-replication', '3', '--store', 'redis', '--redis', redis.url];
    for (const name of ['kafka-rep-A', 'kafka-rep-B']) {
      const node = await startChatd({ name, args, timeoutMs: 30_000 });
      nodes.push(node);
      await waitForHealth(node.base, busUp, 'up', 60_000);
    }
  }, { timeout: 180_000 });
  after(async () => {
    for (const t of [...nodes, redis]) await t?.stop().catch(() => {});
  }, { timeout: 60_000 });

  test('kill -9 the partition leader mid-chat: every RECEIPTed message exactly once, one order, on both nodes; it rejoins the ISR',
    { timeout: 300_000 }, async (t) => {
      const p0 = await waitForPartition((p) => p.leader >= 0 && p.isr.length === 3, 'led, 3 in sync', 30_000);
      assert.equal(p0.replicas.length, 3, 'chatd created the topic with 3 replicas');
      // Set on the topic by chatd (source 1), not only the test brokers' default. The broker
      // asked may learn of the topic a moment after the one that answered above (each follows
      // the controller's log on its own): until then it answers "unknown topic" (null here).
      let config = null;
      for (const deadline = Date.now() + 15_000; config === null && Date.now() < deadline;) {
        config = await kafkaTopicConfig(bootstrap.split(',')[0], topic, 'min.insync.replicas').catch(() => null);
        if (config === null) await sleep(200);
      }
      assert.deepEqual(config, { value: '2', source: 1 }, 'chatd created the topic with min.insync.replicas 2');

      const room = await createRoom(nodes[0].base, '복제된 카프카');
      const dest = `/sub/chat/room/${room.roomId}`;
      const senders = [];
      const watchers = [];
      const errors = [];
      const inboxes = [];
      try {
        for (const n of nodes) {
          const s = await stompOverWebSocket(n.base);
          senders.push(s);
          errors.push(await s.subscribeConfirmed('/user/queue/errors'));
          const w = await stompOverWebSocket(n.base);
          watchers.push(w);
          inboxes.push(await w.subscribeConfirmed(dest));
        }
        const sent = [[], []];             // per sender, in send order
        const receipted = new Map();       // text -> time of its RECEIPT
        const sentAt = new Map();          // text -> time of its SEND
        let lastReceiptAt = Date.now();
        const send = (k) => {
          const text = `s${k}-${sent[k].length}`;
          sent[k].push(text);
          sentAt.set(text, Date.now());
          chatWithReceipt(senders[k], 'TALK', room.roomId, `s${k}`, text).then(() => {
            receipted.set(text, Date.now());
            lastReceiptAt = Date.now();
          });
        };
        let pumping = true;
        const health = [];  // /healthz statuses seen during the failover
        const pump = (async () => {
          for (let i = 0; pumping && i < 5000; i++) {
            send(0);
            send(1);
            await sleep(25);  // ~80 messages/s in all: a busy room
          }
        })();

        await sleep(2_000);
        assert.ok(receipted.size > 20, `receipts before the kill: ${receipted.size}`);
        const leader = p0.leader;
        const killedAt = Date.now();
        const countAtKill = sent[0].length + sent[1].length;
        await cluster('kill-broker', '--broker', String(leader));
        t.diagnostic(`killed broker ${leader} (leader of partition 0) after ${countAtKill} messages`);

        // Receipts resume once a new leader is elected and librdkafka has found it.
        const moved = await waitForPartition((p) => p.leader >= 0 && p.leader !== leader, 'led by another broker', 60_000);
        const electedAfter = Date.now() - killedAt;
        const resumed = await eventually(() => [...receipted.values()].some((at) => at > killedAt + 100)
          && lastReceiptAt > Date.now() - 500, 60_000, 100);
        for (const n of nodes) health.push((await healthz(n.base)).status);
        assert.ok(resumed, 'receipts resumed after the leader died');
        t.diagnostic(`new leader ${moved.leader} (ISR ${moved.isr}) seen ${electedAfter} ms after the kill`);
        await sleep(2_000);  // chat goes on with one broker down

        await cluster('start-broker', '--broker', String(leader));
        const rejoined = await waitForPartition((p) => p.isr.length === 3, 'back to 3 in sync', 120_000);
        t.diagnostic(`broker ${leader} restarted and back in the ISR ${rejoined.isr} ${Date.now() - killedAt} ms after the kill`);
        await sleep(1_000);  // and a little chat with all three again
        pumping = false;
        await pump;

        const total = sent[0].length + sent[1].length;
        const answered = () => receipted.size + errors[0].frames.length + errors[1].frames.length >= total;
        assert.ok(await eventually(answered, 60_000, 200),
          `${total} sent, ${receipted.size} receipts, ${errors[0].frames.length + errors[1].frames.length} errors`);
        const errorCount = errors[0].frames.length + errors[1].frames.length;
        t.diagnostic(`${total} sent: ${receipted.size} receipts, ${errorCount} errors ${errors.flatMap((e) => e.frames.map((f) => f.body)).slice(0, 3)}`);
        t.diagnostic(`/healthz during the failover: ${health}`);
        // What the failover cost the senders: SEND -> RECEIPT for messages sent after the kill.
        const waits = [...receipted].filter(([m]) => sentAt.get(m) >= killedAt).map(([m, at]) => at - sentAt.get(m));
        const w = percentiles(waits);
        t.diagnostic(`SEND -> RECEIPT after the kill: median ${w.p50} ms, p99 ${w.p99} ms, max ${w.max} ms (n=${w.n}); ` +
          `${waits.filter((x) => x > 1000).length} waited over 1 s`);

        // Every RECEIPTed message arrives on both nodes.
        const confirmed = [...sent[0], ...sent[1]].filter((m) => receipted.has(m));
        for (const [k, inbox] of inboxes.entries()) {
          const ok = await eventually(() => {
            const have = new Set(inbox.messages.map((m) => m.message));
            return confirmed.every((m) => have.has(m));
          }, 60_000, 200);
          const have = new Set(inbox.messages.map((m) => m.message));
          assert.ok(ok, `node ${k}: ${confirmed.filter((m) => !have.has(m)).length} of ${confirmed.length} confirmed messages never arrived`);
        }
        await sleep(1_000);  // a duplicate would arrive right behind
        const [gotA, gotB] = inboxes.map((i) => i.messages);
        assert.deepEqual(gotA.map((m) => m.id), gotB.map((m) => m.id), 'the same messages in the same order on both nodes');
        const texts = gotA.map((m) => m.message);
        assert.equal(new Set(texts).size, texts.length, `no message delivered twice (${texts.length} delivered)`);
        for (let i = 1; i < gotA.length; i++) assert.ok(gotA[i].seq > gotA[i - 1].seq, `seq increases at ${i}`);
        for (const k of [0, 1]) {
          assert.deepEqual(texts.filter((m) => m.startsWith(`s${k}-`)), sent[k].filter((m) => texts.includes(m)),
            `sender ${k}'s messages in its send order`);
        }
        const unconfirmed = texts.filter((m) => !receipted.has(m));
        assert.ok(unconfirmed.length <= errorCount, `delivered without a RECEIPT or an error: ${unconfirmed}`);
        for (const n of nodes) assert.ok(n.isAlive(), 'no node crashed');
        assert.equal([...senders, ...watchers].reduce((n, s) => n + s.errors.length, 0), 0, 'no STOMP ERROR frames');
        for (const n of nodes) await waitForHealth(n.base, busUp, 'up', 10_000);
      } finally {
        for (const s of [...senders, ...watchers]) await s.close().catch(() => {});
      }
    });
});
