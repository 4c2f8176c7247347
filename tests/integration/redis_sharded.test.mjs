// Three chatd nodes on a real Redis Cluster (3 primaries + 3 replicas, scripts/redis-cluster.sh):
// rooms on every shard, one order per room across nodes (300 rooms, a sender on each node), each shard carrying only its rooms'
// messages (sharded pub/sub), history and resume, the room list, and a kill -9 of a primary
// mid-chat: its replica takes over, the nodes follow and subscribe again, chat in the other
// shards never stops. What the failover loses is measured and printed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  createRoom, eventually, listRooms, redisCommand, repoRoot, startChatd, stompOverWebSocket,
} from './harness.mjs';
import { closeAll, dest, talkWithSeq } from './resume.mjs';

const script = join(repoRoot, 'scripts', 'redis-cluster.sh');
const cli = (port, ...args) => execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).trim();
const health = async (node) =>
  (await fetch(`${node.base}/healthz`, { signal: AbortSignal.timeout(2_000) }).catch(() => ({ status: 0 }))).status;

const portFree = (port) => new Promise((ok) => {
  const s = createServer();
  s.once('error', () => ok(false));
  s.listen(port, '127.0.0.1', () => s.close(() => ok(true)));
});

// Returns a base port P with P..P+5 and their cluster bus ports (P+10000...) free.
async function freeClusterBase() {
  for (let i = 0; i < 100; i++) {
    // Below the ephemeral range (32768+) and the test Kafka broker (29092), bus ports included.
    const p = 10000 + Math.floor(Math.random() * 8000);
    let ok = true;
    for (let k = 0; k < 6 && ok; k++) ok = (await portFree(p + k)) && (await portFree(p + 10000 + k));
    if (ok) return p;
  }
  throw new Error('no free port range for a Redis Cluster');
}

// Returns [{first, last, port}] of the primaries, asked of any live node.
function slotMap(ports) {
  for (const p of ports) {
    try {
      const lines = cli(p, 'cluster', 'slots').split('\n');
      // redis-cli prints each range as: first, last, host, port, id, (replica host, port, id)...
      const out = [];
      for (let i = 0; i + 3 < lines.length; i++) {
        if (/^\d+$/.test(lines[i]) && /^\d+$/.test(lines[i + 1]) && lines[i + 2] === '127.0.0.1') {
          out.push({ first: Number(lines[i]), last: Number(lines[i + 1]), port: Number(lines[i + 3]) });
          i += 3;
        }
      }
      if (out.length) return out;
    } catch { /* that node is down: ask another */ }
  }
  throw new Error('no cluster node answers CLUSTER SLOTS');
}

describe('three nodes on a Redis Cluster of 3 primaries + 3 replicas', () => {
  let dir, url, base, ports, nodes = [];
  const channel = (room) => `chatd:{${room.roomId}}:live`;
  const slots = new Map(); // CLUSTER KEYSLOT once per room: each asks redis-cli
  const slotOf = (room) => {
    if (!slots.has(room.roomId)) slots.set(room.roomId, Number(cli(base, 'cluster', 'keyslot', channel(room))));
    return slots.get(room.roomId);
  };
  const ownerOf = (room, map) => map.find((r) => r.first <= slotOf(room) && slotOf(room) <= r.last).port;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'chatd-redis-cluster-'));
    base = await freeClusterBase();
    ports = Array.from({ length: 6 }, (_, k) => base + k);
    url = execFileSync(script, ['start', '--dir', dir, '--port', String(base), '--replicas', '1'], { encoding: 'utf8' }).trim();
    // The 300-room test makes and talks in rooms faster than a person would: no rate limits.
    const args = ['--bus', 'redis', '--store', 'redis', '--redis', url, '--room-create-per-minute', '0', '--send-rate', '0',
      '--max-subscriptions', '300'];
    // Node a runs one worker: its cluster connections (MOVED, ASK, failover) live on that worker's loop.
    for (const n of ['a', 'b', 'c']) nodes.push(await startChatd({ name: `chatd-shards-${n}`, args: n === 'a' ? [...args, '--threads', '1', '--engine-thread', 'no'] : args }));
  });
  after(async () => {
    for (const n of nodes) await n.stop().catch(() => {});
    try { execFileSync(script, ['stop', '--dir', dir]); } catch { /* already gone */ }
    rmSync(dir, { recursive: true, force: true });
  });

  // Rooms until every primary owns at least one (bounded), listed complete on both nodes.
  let rooms = [];
  let busy; // a room with 200 messages, from the order test
  test('rooms land on every shard and the room list is complete on every node', async () => {
    const map = slotMap(ports);
    const owners = new Set();
    for (let i = 0; i < 60 && (owners.size < 3 || rooms.length < 6); i++) {
      const room = await createRoom(nodes[i % 2].base, `shard room ${i}`);
      rooms.push(room);
      owners.add(ownerOf(room, map));
    }
    assert.equal(owners.size, 3, 'rooms on all 3 primaries');
    for (const n of nodes) {
      const listed = new Set((await listRooms(n.base)).map((r) => r.roomId));
      for (const r of rooms) assert.ok(listed.has(r.roomId), `room ${r.roomId} listed by ${n.base}`);
    }
    // Health says what it uses.
    const h = await (await fetch(`${nodes[0].base}/healthz`)).json();
    assert.match(JSON.stringify(h), /primaries/);
  });

  test('one order per room across nodes; each shard carries only its rooms', async () => {
    const map = slotMap(ports);
    const perShard = [...new Map(rooms.map((r) => [ownerOf(r, map), r])).values()]; // one room per primary
    busy = perShard[0];
    const sessions = [];
    try {
      const subs = [];
      for (const room of perShard) {
        for (const n of nodes) {
          const s = await stompOverWebSocket(n.base);
          sessions.push(s);
          subs.push({ room, box: await s.subscribeConfirmed(dest(room)) });
        }
      }
      // Sharded pub/sub: the channel is subscribed on its owner only, once per chatd node.
      for (const room of perShard) {
        for (const p of map.map((r) => r.port)) {
          const n = Number(cli(p, 'pubsub', 'shardnumsub', channel(room)).split('\n')[1]);
          assert.equal(n, p === ownerOf(room, map) ? nodes.length : 0, `SSUBSCRIBE count of ${channel(room)} on ${p}`);
        }
      }
      const senders = [await stompOverWebSocket(nodes[0].base), await stompOverWebSocket(nodes[1].base)];
      sessions.push(...senders);
      const per = 100;
      for (let i = 0; i < per; i++)
        for (const room of perShard) senders.forEach((s, k) => s.chat('TALK', room.roomId, `s${k}`, `${i}`));
      for (const room of perShard) {
        const got = [];
        for (const { box } of subs.filter((x) => x.room === room)) got.push(await box.waitForMessages(2 * per, 30_000));
        assert.deepEqual(got[1].map((m) => m.id), got[0].map((m) => m.id), 'one order on both nodes');
        assert.deepEqual(got[0].map((m) => m.seq), Array.from({ length: 2 * per }, (_, i) => i + 1));
        for (let k = 0; k < 2; k++)
          assert.deepEqual(got[0].filter((m) => m.sender === `s${k}`).map((m) => Number(m.message)),
            Array.from({ length: per }, (_, i) => i), `sender ${k} keeps its order`);
      }
      // The messages went through their own shard: each primary's pubsub_shardchannels and
      // the history stream live where the room's slot is.
      for (const room of perShard) {
        const owner = ownerOf(room, map);
        assert.equal(cli(owner, 'xlen', `chatd:{${room.roomId}}:hist`), String(2 * per));
      }
    } finally {
      await closeAll(sessions);
    }
  });

  test('300 rooms over every shard, 3 senders per room on 3 nodes: one order per room everywhere', async () => {
    const map = slotMap(ports);
    const many = await Promise.all(Array.from({ length: 300 }, (_, i) => createRoom(nodes[i % 3].base, `many ${i}`)));
    const owned = new Map(map.map((r) => [r.port, many.filter((room) => ownerOf(room, map) === r.port)]));
    for (const [port, list] of owned) assert.ok(list.length >= 50, `shard ${port} owns ${list.length} of 300 rooms`);
    const sessions = [];
    try {
      // One subscriber per room on every node, all 300 rooms in one session each.
      const boxes = [];
      for (const n of nodes) {
        const s = await stompOverWebSocket(n.base);
        sessions.push(s);
        const subscribed = await Promise.all(many.map((room) => s.subscribeConfirmed(dest(room), {}, 30_000)));
        boxes.push(new Map(many.map((room, k) => [room.roomId, subscribed[k]])));
      }
      // Each shard holds the channels of its own rooms, subscribed once by each node; no other.
      for (const [port, list] of owned) {
        const others = many.filter((room) => ownerOf(room, map) !== port);
        const counts = (rooms) => cli(port, 'pubsub', 'shardnumsub', ...rooms.map(channel)).split('\n').filter((_, k) => k % 2 === 1).map(Number);
        assert.deepEqual(counts(list), list.map(() => 3), `shard ${port}: its rooms have one subscription per node`);
        assert.ok(counts(others.slice(0, 50)).every((c) => c === 0), `shard ${port}: no channel of another shard's rooms`);
      }
      const senders = [];
      for (const n of nodes) {
        const s = await stompOverWebSocket(n.base);
        sessions.push(s);
        senders.push(s);
      }
      const per = 3;
      for (let i = 0; i < per; i++)
        for (const room of many) senders.forEach((s, k) => s.chat('TALK', room.roomId, `node${k}`, `${i}`));
      for (const room of many) {
        const got = [];
        for (const mine of boxes) got.push(await mine.get(room.roomId).waitForMessages(3 * per, 30_000));
        for (const other of got.slice(1))
          assert.deepEqual(other.map((m) => m.id), got[0].map((m) => m.id), `room ${room.roomId}: one order on every node`);
        assert.deepEqual(got[0].map((m) => m.seq), Array.from({ length: 3 * per }, (_, i) => i + 1));
        for (let k = 0; k < 3; k++)
          assert.deepEqual(got[0].filter((m) => m.sender === `node${k}`).map((m) => Number(m.message)),
            Array.from({ length: per }, (_, i) => i), `room ${room.roomId}: sender on node ${k} keeps its order`);
      }
    } finally {
      await closeAll(sessions);
    }
  });

  test('a room whose slot is resharded to another primary keeps its subscribers, order and history', async () => {
    const map = slotMap(ports);
    const room = rooms.find((r) => r.roomId !== busy.roomId); // the history test counts busy's messages
    const slot = slotOf(room);
    const src = ownerOf(room, map);
    const dst = map.map((r) => r.port).find((p) => p !== src);
    const sessions = [];
    try {
      const boxes = [];
      for (const n of nodes) {
        const s = await stompOverWebSocket(n.base);
        sessions.push(s);
        boxes.push(await s.subscribeConfirmed(dest(room)));
      }
      const sender = await stompOverWebSocket(nodes[0].base);
      sessions.push(sender);
      const before = [];
      for (let i = 0; i < 5; i++) before.push(await talkWithSeq(sender, room.roomId, 'r', `before ${i}`, 5_000));
      // Move the slot as redis-cli --cluster reshard does: IMPORTING/MIGRATING, MIGRATE the
      // keys, then give the slot to the new owner everywhere.
      const id = (p) => cli(p, 'cluster', 'myid');
      cli(dst, 'cluster', 'setslot', String(slot), 'importing', id(src));
      cli(src, 'cluster', 'setslot', String(slot), 'migrating', id(dst));
      const keys = cli(src, 'cluster', 'getkeysinslot', String(slot), '1000').split('\n').filter(Boolean);
      assert.ok(keys.length > 0, 'the room has keys in its slot');
      cli(src, 'migrate', '127.0.0.1', String(dst), '', '0', '5000', 'keys', ...keys);
      // Mid-migration the old owner answers ASK for the keys it gave away, and the new one
      // TRYAGAIN while a key the publish names exists on neither: the send waits for the end.
      const during = talkWithSeq(sender, room.roomId, 'r', 'during', 10_000);
      await sleep(300);
      for (const p of map.map((r) => r.port)) cli(p, 'cluster', 'setslot', String(slot), 'node', id(dst));
      assert.equal(await during, before[4] + 1, 'a send while the slot migrates is published once it moved');
      before.push(await during);
      await eventually('the new owner holds the subscriptions of every node', () =>
        Number(cli(dst, 'pubsub', 'shardnumsub', channel(room)).split('\n')[1]) === nodes.length, 15_000);
      const after = [];
      for (let i = 0; i < 5; i++) {
        const seq = await talkWithSeq(sender, room.roomId, 'r', `after ${i}`, 10_000);
        assert.ok(seq, `send ${i} after the move got its receipt`);
        after.push(seq);
      }
      assert.deepEqual(after, after.map((_, i) => before[5] + 1 + i), 'seq continues where it was');
      const texts = [...before.slice(0, 5).map((_, i) => `before ${i}`), 'during', ...after.map((_, i) => `after ${i}`)];
      // The send made during the move is published the moment the slot changes owner, often
      // before a node's subscription has moved: that node reads it from history (gap repair),
      // so every node still delivers every message once, in order.
      for (const box of boxes) {
        await eventually('every node delivers the last send', () => box.messages.some((m) => m.message === 'after 4'), 15_000);
        assert.deepEqual(box.messages.map((m) => m.message), texts);
        assert.deepEqual(box.messages.map((m) => m.seq), [...before, ...after]);
      }
      const late = await stompOverWebSocket(nodes[2].base);
      sessions.push(late);
      const hist = await (await late.subscribeConfirmed(dest(room), { 'x-history': '11' })).waitForMessages(11, 10_000);
      assert.deepEqual(hist.map((m) => m.seq), [...before, ...after], 'history moved with the slot');
    } finally {
      await closeAll(sessions);
    }
  });

  test('history on join and resume with x-since-seq', async () => {
    const room = busy;
    const s = await stompOverWebSocket(nodes[1].base);
    try {
      const box = await s.subscribeConfirmed(dest(room), { 'x-history': '5' });
      const hist = await box.waitForMessages(5, 10_000);
      const last = hist.at(-1);
      assert.equal(last.seq, 200, 'the room\'s 200 messages from the order test');
      assert.deepEqual(hist.map((m) => m.seq), [196, 197, 198, 199, 200], 'the last 5, oldest first');
      const again = await s.subscribeConfirmed(dest(room), { 'x-since-seq': String(last.seq - 3), 'x-epoch': last.epoch });
      const replay = await again.waitForMessages(3, 10_000);
      assert.deepEqual(replay.map((m) => m.seq), [last.seq - 2, last.seq - 1, last.seq]);
    } finally {
      await s.close();
    }
  });

  test('kill -9 of a primary mid-chat: its replica takes over, nodes follow, other shards never stop', async () => {
    const map = slotMap(ports);
    const victimRoom = rooms[0];
    const victim = ownerOf(victimRoom, map);
    const otherRoom = rooms.find((r) => ownerOf(r, map) !== victim);
    const sessions = [];
    const open = async (n) => { const s = await stompOverWebSocket(n.base); sessions.push(s); return s; };
    try {
      const watchVictim = await (await open(nodes[1])).subscribeConfirmed(dest(victimRoom));
      const watchOther = await (await open(nodes[1])).subscribeConfirmed(dest(otherRoom));
      const senderV = await open(nodes[0]);
      const senderO = await open(nodes[0]);

      // Chat in both rooms, one message each 20 ms, every send waiting for its receipt.
      const acked = { v: [], o: [] };
      let failedV = 0, failedO = 0, running = true, i = 0;
      const chat = (async () => {
        while (running) {
          const n = i++;
          const [sv, so] = await Promise.all([
            talkWithSeq(senderV, victimRoom.roomId, 'v', `v${n}`, 5_000),
            talkWithSeq(senderO, otherRoom.roomId, 'o', `o${n}`, 5_000),
          ]);
          if (sv) acked.v.push(sv); else failedV++;
          if (so) acked.o.push(so); else failedO++;
          await sleep(20);
        }
      })();
      await eventually('chat running', () => acked.v.length >= 20 && acked.o.length >= 20, 20_000);

      const pid = Number(readFileSync(join(dir, String(victim), 'redis.pid'), 'utf8'));
      const killedAt = Date.now();
      process.kill(pid, 'SIGKILL');
      let sawRed = false;
      await eventually('node health red', async () => (sawRed = (await health(nodes[0])) !== 200), 10_000).catch(() => {});
      // A replica is promoted (cluster-node-timeout 2000 ms) and every node is green again.
      await eventually('a replica took over', () => slotMap(ports.filter((p) => p !== victim))
        .every((r) => r.port !== victim), 30_000);
      await eventually('every node green', async () => (await Promise.all(nodes.map(health))).every((h) => h === 200), 30_000);
      const greenAfter = Date.now() - killedAt;
      const ackedAtGreen = acked.v.length;
      await eventually('chat flows in the failed-over room again', () => acked.v.length >= ackedAtGreen + 20, 30_000);
      running = false;
      await chat;

      // The other shard never stopped: every send there got its receipt.
      assert.equal(failedO, 0, 'no send failed in a room of another shard');
      const gotOther = await watchOther.waitForMessages(acked.o.length, 15_000);
      assert.deepEqual(gotOther.map((m) => m.seq), [...acked.o].sort((a, b) => a - b), 'other shard: every acked message, in order');

      // The live subscriber on node B follows the new primary without reconnecting.
      const lastV = Math.max(...acked.v);
      await eventually('the live subscriber sees the newest message', () => watchVictim.messages.some((m) => m.seq === lastV), 15_000);
      const live = new Set(watchVictim.messages.map((m) => m.seq));
      const missedLive = acked.v.filter((s) => !live.has(s)).length;
      const seqs = watchVictim.messages.map((m) => m.seq);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'the live subscriber sees ascending seqs');

      // A client that resumes with x-since-seq from before the kill gets every acked message
      // the new primary holds; async replication may lose the last writes of the old one.
      const first = watchVictim.messages[0];
      const resumer = await open(nodes[1]);
      const resumed = await resumer.subscribeConfirmed(dest(victimRoom), { 'x-since-seq': String(first.seq), 'x-epoch': first.epoch });
      await eventually('resume replay', () => resumed.messages.some((m) => m.seq >= lastV), 15_000);
      const replayed = new Set(resumed.messages.map((m) => m.seq));
      const lostAcked = acked.v.filter((s) => s > first.seq && !replayed.has(s)).length;
      console.log(`# redis cluster failover: health red seen ${sawRed}, green again after ${greenAfter} ms; ` +
        `victim room: ${acked.v.length} sends acked, ${failedV} failed (no receipt, sender told), ` +
        `${missedLive} acked messages missed by the live subscriber, ${lostAcked} acked messages missing from the resume ` +
        `(async replication); other shard: ${acked.o.length} acked, ${failedO} failed`);
      assert.ok(lostAcked <= 5, `at most a few acked writes lost by async replication (lost ${lostAcked})`);
      for (const n of nodes) assert.ok(n.isAlive(), 'no node crashed');
    } finally {
      await closeAll(sessions);
    }
  });
});
