// Resume scenarios shared by the Redis and Kafka history tests (redis_history.test.mjs,
// kafka_history.test.mjs): real chatd nodes, real STOMP clients, the engine under test. Each
// function takes running nodes and asserts; every wait is bounded.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import { createRoom, eventually, stompOverWebSocket } from './harness.mjs';

export const dest = (room) => `/sub/chat/room/${room.roomId}`;

let receipts = 0;

// Sends a TALK with a receipt; resolves with the RECEIPT's { seq, epoch } (x-seq, x-epoch), or
// null if no RECEIPT came within timeoutMs (a send lost with its node).
export function talkWithReceipt(session, roomId, sender, message, timeoutMs = 15_000, headers = {}) {
  const receipt = `hist-${process.pid}-${++receipts}`;
  return new Promise((ok) => {
    const timer = setTimeout(() => ok(null), timeoutMs);
    session.client.watchForReceipt(receipt, (f) => {
      clearTimeout(timer);
      ok({ seq: Number(f.headers['x-seq']), epoch: f.headers['x-epoch'] });
    });
    session.publish('/pub/chat/message', { type: 'TALK', roomId, sender, message },
      { 'content-type': 'application/json', receipt, ...headers });
  });
}

// As talkWithReceipt, resolving with the seq alone (or null).
export async function talkWithSeq(...args) {
  return (await talkWithReceipt(...args))?.seq ?? null;
}

// Closes every session, ignoring ones already gone.
export async function closeAll(sessions) {
  for (const s of sessions) await s?.close().catch(() => {});
}

const noNotice = (frames) => frames.filter((f) => f.headers['x-history-status']);

// A subscriber on node A disconnects; 3 senders on A and B send 500 messages; it resumes on B
// with the last seq it saw and gets exactly those 500, in the order B's other subscriber saw
// them, then live messages, nothing twice.
export async function resumeOnTheOtherNode(a, b) {
  const room = await createRoom(a.base, 'resume elsewhere');
  const sessions = [];
  const open = async (node) => { const s = await stompOverWebSocket(node.base); sessions.push(s); return s; };
  try {
    const watching = await (await open(b)).subscribeConfirmed(dest(room));
    const leaver = await open(a);
    const before = await leaver.subscribeConfirmed(dest(room));
    const senders = [await open(a), await open(b), await open(a)];
    senders[0].chat('TALK', room.roomId, 's0', 'warm-up');
    const [last] = await before.waitForMessages(1, 15_000);
    assert.equal(typeof last.seq, 'number');
    assert.equal(typeof last.epoch, 'string');
    await leaver.close();

    const total = 500;
    for (let i = 0; i < total; i++) senders[i % 3].chat('TALK', room.roomId, `s${i % 3}`, `m${i}`);
    const order = (await watching.waitForMessages(total + 1, 60_000)).slice(1);

    const back = await open(b);
    const resumed = await back.subscribeConfirmed(dest(room), { 'x-since-seq': String(last.seq), 'x-epoch': last.epoch });
    const replay = await resumed.waitForMessages(total, 30_000);
    assert.deepEqual(noNotice(resumed.frames), [], 'a whole resume has no notice');
    assert.deepEqual(replay.map((m) => m.id), order.map((m) => m.id), 'exactly the 500, in the order others saw');
    for (let k = 0; k < 3; k++) {
      const mine = replay.filter((m) => m.sender === `s${k}`).map((m) => m.message);
      assert.deepEqual(mine, order.filter((m) => m.sender === `s${k}`).map((m) => m.message));
    }
    senders[1].chat('TALK', room.roomId, 's1', 'live');
    const withLive = await resumed.waitForMessages(total + 1, 15_000);
    assert.equal(withLive.at(-1).message, 'live', 'then live');
    await sleep(300);  // a duplicate would be here by now
    const ids = resumed.messages.map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, 'nothing twice');
    assert.equal(ids.length, total + 1);
  } finally {
    await closeAll(sessions);
  }
}

// A client on node `doomed` sends (with receipts) and reads; `doomed` is killed with SIGKILL
// mid-chat while a client on `survivor` keeps sending; the client resumes on `survivor` from the
// last seq it saw. Every message that got a RECEIPT, from either client, reaches it exactly once.
export async function killTheNodeAndResumeElsewhere(doomed, survivor) {
  const room = await createRoom(survivor.base, 'kill -9');
  const sessions = [];
  const open = async (node) => { const s = await stompOverWebSocket(node.base); sessions.push(s); return s; };
  try {
    const watching = await (await open(survivor)).subscribeConfirmed(dest(room));
    const client = await open(doomed);
    const mine = await client.subscribeConfirmed(dest(room));
    const other = await open(survivor);
    const acked = [];
    const sends = [];
    for (let i = 0; i < 50; i++) {
      sends.push(talkWithSeq(client, room.roomId, 'client', `c${i}`));
      sends.push(talkWithSeq(other, room.roomId, 'other', `o${i}`));
    }
    acked.push(...(await Promise.all(sends)).filter((s) => s !== null));
    assert.equal(acked.length, 100, 'every send before the kill got its RECEIPT');
    // A RECEIPT comes when the engine took the message, its delivery a moment later (on Kafka,
    // a fetch on a node just started): the client has seen some before its node dies.
    await eventually('the client saw messages before its node died', () => mine.messages.length > 0, 10_000);
    // The kill lands while the survivor's client is sending.
    const during = [];
    for (let i = 50; i < 100; i++) {
      during.push(talkWithSeq(other, room.roomId, 'other', `o${i}`));
      if (i === 60) await doomed.stop({ signal: 'SIGKILL' });
    }
    acked.push(...(await Promise.all(during)).filter((s) => s !== null));
    assert.equal(acked.length, 150, 'the survivor acknowledged all of its sends');

    const seenBefore = mine.messages;
    assert.ok(seenBefore.length > 0, 'the client saw messages before its node died');
    const last = seenBefore.at(-1);
    const everything = await watching.waitForMessages(150, 30_000);
    const back = await open(survivor);
    const resumed = await back.subscribeConfirmed(dest(room), { 'x-since-seq': String(last.seq), 'x-epoch': last.epoch });
    const missed = everything.filter((m) => m.seq > last.seq);
    const replay = await resumed.waitForMessages(missed.length, 30_000);
    assert.deepEqual(noNotice(resumed.frames), []);
    assert.deepEqual(replay.map((m) => m.id), missed.map((m) => m.id), 'what it missed, in order');
    const got = new Set([...seenBefore, ...replay].map((m) => m.seq));
    for (const seq of acked) assert.ok(got.has(seq), `acknowledged seq ${seq} reached the client`);
    await sleep(300);
    assert.equal(resumed.frames.length, missed.length, 'nothing twice');
  } finally {
    await closeAll(sessions);
  }
}

// One x-client-id sent twice on node A, then once more after reconnecting to node B (once B has
// the first): one message, and every RECEIPT carries its seq.
export async function sameSendIdPublishedOnce(a, b) {
  const room = await createRoom(a.base, 'send once');
  const sessions = [];
  const open = async (node) => { const s = await stompOverWebSocket(node.base); sessions.push(s); return s; };
  try {
    const watching = await (await open(b)).subscribeConfirmed(dest(room));
    const id = { 'x-client-id': `once-${process.pid}` };
    const onA = await open(a);
    const first = await talkWithReceipt(onA, room.roomId, 'amy', 'hello', 15_000, id);
    const again = await talkWithReceipt(onA, room.roomId, 'amy', 'hello', 15_000, id);
    await onA.close();
    await watching.waitForMessages(1, 15_000);
    const onB = await open(b);
    const third = await talkWithReceipt(onB, room.roomId, 'amy', 'hello', 15_000, id);
    assert.equal(typeof first?.seq, 'number', 'the RECEIPT carries x-seq');
    assert.deepEqual(again, first, 'a retry gets the first one\'s seq and epoch');
    assert.deepEqual(third, first, 'so does a retry after a reconnect to another node');
    onB.chat('TALK', room.roomId, 'amy', 'after');
    const got = await watching.waitForMessages(2, 15_000);
    assert.equal(got[0].message, 'hello');
    assert.equal(got[0].seq, first.seq);
    assert.equal(got[0].epoch, first.epoch, 'the RECEIPT\'s x-epoch is the one the message carries');
    assert.equal(got[1].message, 'after');
    await sleep(300);
    assert.equal(watching.frames.length, 2, 'published once');
  } finally {
    await closeAll(sessions);
  }
}
