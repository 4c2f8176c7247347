// Presence helpers shared by presence.test.mjs (embedded, Redis) and kafka_presence.test.mjs:
// a person's tab, a drop without goodbye, the members answer, and the checks every engine passes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import { createRoom, eventually, stompOverWebSocket } from './harness.mjs';

export const GRACE_S = 2;
export const NODE_TIMEOUT_S = 3;
export const presenceArgs = ['--presence-grace', String(GRACE_S), '--presence-node-timeout', String(NODE_TIMEOUT_S)];

export async function members(node, roomId) {
  const res = await fetch(`${node.base}/chat/room/${roomId}/members`, { signal: AbortSignal.timeout(5_000) });
  assert.equal(res.status, 200, `members on ${node.base}: ${res.status}`);
  const body = await res.json();
  assert.equal(body.roomId, roomId);
  return { count: body.count, names: body.members.slice().sort() };
}

export async function memberCount(node, roomId) {
  const res = await fetch(`${node.base}/chat/rooms`);
  const entry = (await res.json()).find((r) => r.roomId === roomId);
  return entry?.memberCount;
}

// A person's tab: subscribes (confirmed), then ENTERs as the seed's page does.
export async function enter(node, roomId, name) {
  const s = await stompOverWebSocket(node.base);
  const inbox = await s.subscribeConfirmed(`/sub/chat/room/${roomId}`);
  const receipt = `enter-${Math.random().toString(36).slice(2)}`;
  const confirmed = new Promise((ok) => s.client.watchForReceipt(receipt, ok));
  s.publish('/pub/chat/message', { type: 'ENTER', roomId, sender: name, message: '' },
    { 'content-type': 'application/json', receipt });
  await confirmed;
  return { s, inbox };
}

// The tab vanishes: the TCP connection is destroyed, no DISCONNECT, no close frame.
export function drop(tab) {
  tab.s.closed = true;
  tab.s.client.webSocket.terminate();
}

// The presence announcements (ENTER/QUIT) an inbox saw, as "ENTER alice".
export const announcements = (inbox) =>
  inbox.messages.filter((m) => m.type === 'ENTER' || m.type === 'QUIT').map((m) => `${m.type} ${m.sender}`);

// After an engine outage: both members are still listed on every node and no QUIT went out;
// each is counted once per node holding them, so yuna's QUIT makes her leave, everywhere.
export async function bothStayedThenYunaLeaves(nodes, room, xavier, yuna) {
  for (const n of nodes) assert.deepEqual(await members(n, room.roomId), { count: 2, names: ['xavier', 'yuna'] });
  for (const p of [xavier, yuna]) assert.deepEqual(announcements(p.inbox).filter((m) => m.startsWith('QUIT')), []);
  yuna.s.chat('QUIT', room.roomId, 'yuna');
  await eventually('xavier sees yuna leave', () => announcements(xavier.inbox).includes('QUIT yuna'), 10_000);
  for (const n of nodes) {
    await eventually('yuna gone from the members', async () => (await members(n, room.roomId)).count === 1, 10_000);
    assert.deepEqual(await members(n, room.roomId), { count: 1, names: ['xavier'] });
  }
}

export function presenceTests(label, nodesFn) {
  test(`${label}: joins and leaves are seen on every node, once per person`, async () => {
    const [a, b] = nodesFn();
    const room = await createRoom(a.base, 'who is here');
    const alice = await enter(a, room.roomId, 'alice');
    const bob = await enter(b, room.roomId, 'bob');
    const tabs = [alice, bob];
    try {
      await eventually('alice sees bob enter', () => announcements(alice.inbox).includes('ENTER bob'));
      await eventually('bob sees his own ENTER', () => announcements(bob.inbox).includes('ENTER bob'));
      for (const n of [a, b]) {
        assert.deepEqual(await members(n, room.roomId), { count: 2, names: ['alice', 'bob'] });
        assert.equal(await memberCount(n, room.roomId), 2);
      }
      // Alice opens a second tab (on the other node): one person, one member, no second ENTER.
      const alice2 = await enter(b, room.roomId, 'alice');
      tabs.push(alice2);
      assert.deepEqual(await members(a, room.roomId), { count: 2, names: ['alice', 'bob'] });
      // ... and closes it politely (QUIT + DISCONNECT, as the page does): she is still here.
      alice2.s.chat('QUIT', room.roomId, 'alice');
      await alice2.s.close();
      // Bob leaves for good: everyone sees one QUIT at once, no grace period for a goodbye.
      bob.s.chat('QUIT', room.roomId, 'bob');
      await bob.s.close();
      await eventually('alice sees bob leave', () => announcements(alice.inbox).includes('QUIT bob'), 5_000);
      for (const n of [a, b]) assert.deepEqual(await members(n, room.roomId), { count: 1, names: ['alice'] });
      assert.deepEqual(announcements(alice.inbox), ['ENTER alice', 'ENTER bob', 'QUIT bob'],
        'one ENTER per person, no ENTER or QUIT for the second tab');
    } finally {
      for (const t of tabs) await t.s.close();
    }
  });

  test(`${label}: a dropped tab leaves after the grace period; one that comes back in time does not`, async () => {
    const [a, b] = nodesFn();
    const room = await createRoom(a.base, 'drops');
    const alice = await enter(a, room.roomId, 'alice');
    const bob = await enter(b, room.roomId, 'bob');
    const carol = await enter(b, room.roomId, 'carol');
    const tabs = [alice, bob, carol];
    try {
      await eventually('alice sees carol', () => announcements(alice.inbox).includes('ENTER carol'));
      const t0 = Date.now();
      drop(bob);
      drop(carol);
      // Carol comes back on the other node within the grace period: neither leave nor join.
      const carol2 = await enter(a, room.roomId, 'carol');
      tabs.push(carol2);
      const back = Date.now() - t0;
      assert.ok(back < GRACE_S * 1000, `the reconnect took ${back} ms, more than the grace period`);
      await eventually('alice sees bob leave', () => announcements(alice.inbox).includes('QUIT bob'), 15_000);
      assert.ok(Date.now() - t0 >= GRACE_S * 1000 - 100, 'not before the grace period ended');
      // Bob's leave came after the grace period; carol's would have come with it.
      await sleep(1_000);
      assert.deepEqual(announcements(alice.inbox).filter((x) => x.includes('carol')), ['ENTER carol'],
        'carol reconnected within the grace period: no QUIT, no second ENTER');
      for (const n of [a, b]) assert.deepEqual(await members(n, room.roomId), { count: 2, names: ['alice', 'carol'] });
    } finally {
      for (const t of tabs) await t.s.close();
    }
  });
}


// kill -9 of node b (nodesFn() is [a, b]): its member leaves, seen on a, within the node timeout
// plus a heartbeat. Run it last: b stays dead (its stop() afterwards only tidies up).
export function nodeKillTest(label, nodesFn) {
  test(`${label}: kill -9 of a node: its members leave within the node timeout`, { timeout: 60_000 }, async () => {
    const [a, b] = nodesFn();
    const room = await createRoom(a.base, 'crash');
    const alice = await enter(a, room.roomId, 'alice');
    const dave = await enter(b, room.roomId, 'dave');
    try {
      await eventually('both in, seen on a', async () => (await members(a, room.roomId)).count === 2);
      const t0 = Date.now();
      b.child.kill('SIGKILL');
      await eventually('alice sees dave leave', () => announcements(alice.inbox).includes('QUIT dave'), 20_000);
      console.log(`# ${label}: node killed, its member left after ${Date.now() - t0} ms ` +
        `(bound: node timeout ${NODE_TIMEOUT_S} s + heartbeat ${NODE_TIMEOUT_S / 5} s)`);
      assert.deepEqual(await members(a, room.roomId), { count: 1, names: ['alice'] });
    } finally {
      await alice.s.close();
      dave.s.closed = true;
    }
  });
}
