// One chatd node on its embedded default, driven by @stomp/stompjs over `ws` and by raw
// WebSocket frames where a well-behaved client library cannot misbehave on purpose.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';

import { createRoom, listRooms, startChatd, stompOverWebSocket } from './harness.mjs';

// A raw STOMP-over-WebSocket connection: frames are strings we write by hand.
async function rawStomp(base, { protocols = ['v12.stomp'] } = {}) {
  const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/ws-stomp`, protocols);
  const inbox = [];
  let closed = null;
  const waiters = [];
  const wake = () => { for (const w of waiters.splice(0)) w(); };
  ws.on('message', (d) => { inbox.push(d.toString()); wake(); });
  ws.on('close', (code, reason) => { closed = { code, reason: reason.toString() }; wake(); });
  await new Promise((ok, fail) => { ws.once('open', ok); ws.once('error', fail); });
  const until = async (pred, what, timeoutMs = 5_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = pred();
      if (v) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(inbox)} closed=${JSON.stringify(closed)}`);
      await new Promise((ok) => { waiters.push(ok); setTimeout(ok, 50); });
    }
  };
  return {
    ws, inbox, protocol: ws.protocol,
    get closed() { return closed; },
    send: (s) => ws.send(s),
    frame: (re) => until(() => inbox.join('').match(re), String(re)),
    waitClosed: (ms = 5_000) => until(() => closed, 'close', ms),
  };
}

const chat = (type, roomId, sender, message = '') => JSON.stringify({ type, roomId, sender, message });

describe('one node, embedded default', () => {
  let node;
  let room;
  before(async () => {
    node = await startChatd({ args: ['--heartbeat-receive-ms', '1000', '--heartbeat-send-ms', '1000'], keepData: true });
    room = await createRoom(node.base, '점심 메이트');
  });
  after(async () => { await node?.stop(); });

  test('REST: rooms are created, listed and found; errors are JSON with the right status', async () => {
    assert.match(room.roomId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(room.name, '점심 메이트');
    const byQuery = await (await fetch(`${node.base}/chat/room?name=${encodeURIComponent('by query')}`, { method: 'POST' })).json();
    assert.equal(byQuery.name, 'by query');
    const rooms = await listRooms(node.base);
    assert.deepEqual(rooms.map((r) => r.name).slice(0, 2), ['점심 메이트', 'by query']);
    const one = await (await fetch(`${node.base}/chat/room/${room.roomId}`)).json();
    assert.deepEqual(one, room);

    const expectError = async (res, status) => {
      assert.equal(res.status, status);
      assert.match(res.headers.get('content-type'), /application\/json/);
      const body = await res.json();
      assert.equal(body.status, status);
      assert.equal(typeof body.error, 'string');
      assert.ok(body.error.length > 0);
    };
    await expectError(await fetch(`${node.base}/chat/room`, { method: 'POST' }), 400);
    await expectError(await fetch(`${node.base}/chat/room?name=%20%20`, { method: 'POST' }), 400);
    await expectError(await fetch(`${node.base}/chat/room?name=${'x'.repeat(101)}`, { method: 'POST' }), 400);
    await expectError(await fetch(`${node.base}/chat/room/00000000-0000-4000-8000-000000000000`), 404);
    await expectError(await fetch(`${node.base}/chat/room/not-a-uuid`), 404);
    await expectError(await fetch(`${node.base}/chat/rooms`, { method: 'DELETE' }), 405);
    await expectError(await fetch(`${node.base}/chat/room`, { method: 'POST', body: 'name=' + 'x'.repeat(20_000),
      headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 413);
    await expectError(await fetch(`${node.base}/chat/rooms?${'q'.repeat(3000)}`), 414);
    await expectError(await fetch(`${node.base}/nowhere`), 404);
  });

  test('two clients see ENTER and TALK in the same order, stamped with id, ts and seq', async () => {
    const a = await stompOverWebSocket(node.base);
    const b = await stompOverWebSocket(node.base);
    try {
      const dest = `/sub/chat/room/${room.roomId}`;
      const inA = await a.subscribeConfirmed(dest);
      const inB = await b.subscribeConfirmed(dest);
      const t0 = Date.now();
      a.chat('ENTER', room.roomId, '짱구');
      b.chat('ENTER', room.roomId, '맹구');
      for (let i = 0; i < 20; i++) (i % 2 ? a : b).chat('TALK', room.roomId, i % 2 ? '짱구' : '맹구', `msg ${i} 🍜`);
      const gotA = await inA.waitForMessages(22);
      const gotB = await inB.waitForMessages(22);
      assert.deepEqual(gotA, gotB, 'both clients see the same messages in the same order');
      const enters = gotA.filter((m) => m.type === 'ENTER').map((m) => m.message).sort();
      assert.deepEqual(enters, ['맹구님 등장!', '짱구님 등장!']);
      const seqs = gotA.map((m) => m.seq);
      for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, 'seq is contiguous');
      assert.equal(new Set(gotA.map((m) => m.id)).size, 22, 'ids are unique');
      for (const m of gotA) {
        assert.equal(m.roomId, room.roomId);
        assert.ok(m.ts >= t0 - 1000 && m.ts <= Date.now() + 1000, `ts ${m.ts} is server time`);
      }
      // A sender's own messages keep their order.
      const fromA = gotA.filter((m) => m.sender === '짱구' && m.type === 'TALK').map((m) => m.message);
      assert.deepEqual(fromA, fromA.slice().sort((x, y) => parseInt(x.split(' ')[1]) - parseInt(y.split(' ')[1])));
      assert.equal(inA.frames[0].headers.subscription, inA.subscription.id);
      assert.ok(inA.frames[0].headers['message-id']);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('receipts: SUBSCRIBE, SEND and DISCONNECT each get theirs', async () => {
    const c = await rawStomp(node.base);
    c.send('CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0');
    await c.frame(/CONNECTED\nversion:1.2\n/);
    c.send(`SUBSCRIBE\nid:0\ndestination:/sub/chat/room/${room.roomId}\nreceipt:r-sub\n\n\0`);
    await c.frame(/RECEIPT\nreceipt-id:r-sub\n/);
    c.send(`SEND\ndestination:/pub/chat/message\nreceipt:r-send\ncontent-type:application/json\n\n${chat('TALK', room.roomId, 'raw', 'with receipt')}\0`);
    await c.frame(/RECEIPT\nreceipt-id:r-send\n/);
    await c.frame(/MESSAGE\n[^\0]*"message":"with receipt"/);
    c.send('DISCONNECT\nreceipt:r-bye\n\n\0');
    await c.frame(/RECEIPT\nreceipt-id:r-bye\n/);
    await c.waitClosed();
  });

  test('a SUBSCRIBE undone before its room is joined still gets its RECEIPT, and later answers follow', async () => {
    // A user who opens a room and leaves it at once: UNSUBSCRIBE lands while the join is in
    // flight. Once on a room this node already knows, once on one it must look up first.
    const fresh = await createRoom(node.base, 'in and out');
    for (const target of [room, fresh]) {
      const c = await rawStomp(node.base);
      c.send('CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0');
      await c.frame(/CONNECTED\n/);
      c.send(`SUBSCRIBE\nid:a\ndestination:/sub/chat/room/${target.roomId}\nreceipt:r-sub\n\n\0` +
             'UNSUBSCRIBE\nid:a\nreceipt:r-unsub\n\n\0');
      c.send(`SEND\ndestination:/pub/chat/message\nreceipt:r-send\ncontent-type:application/json\n\n${chat('TALK', target.roomId, 'raw', 'after leaving')}\0`);
      c.send('DISCONNECT\nreceipt:r-bye\n\n\0');
      await c.frame(/RECEIPT\nreceipt-id:r-sub\n[^\0]*\0RECEIPT\nreceipt-id:r-unsub\n[^\0]*\0RECEIPT\nreceipt-id:r-send\n[^\0]*\0RECEIPT\nreceipt-id:r-bye\n/);
      await c.waitClosed();
    }
  });

  test('an ERROR names the receipt of the frame that caused it', async () => {
    const c = await rawStomp(node.base);
    c.send('CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0');
    await c.frame(/CONNECTED\n/);
    c.send('SUBSCRIBE\nid:a\ndestination:/topic/nope\nreceipt:sub-77\n\n\0');
    await c.frame(/ERROR\n[^\0]*receipt-id:sub-77\n/);
    await c.waitClosed();
  });

  test('header bytes that are not UTF-8 (a binary message) get an ERROR, never echoed into a text frame', async () => {
    const c = await rawStomp(node.base);
    c.send('CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0');
    await c.frame(/CONNECTED\n/);
    c.ws.send(Buffer.from(`SUBSCRIBE\nid:s\ndestination:/sub/chat/room/${room.roomId}\nreceipt:r\xfe\xff\n\n\0`, 'latin1'), { binary: true });
    await c.frame(/ERROR\nmessage:A header line is not UTF-8\./);
    // ws drops a connection on a text frame that is not UTF-8 (1006); this one closes cleanly.
    assert.equal((await c.waitClosed()).code, 1000);
  });

  test('every /user/queue/errors subscription gets each rejection until it is unsubscribed', async () => {
    const c = await rawStomp(node.base);
    c.send('CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0');
    await c.frame(/CONNECTED\n/);
    c.send('SUBSCRIBE\nid:e1\ndestination:/user/queue/errors\n\n\0SUBSCRIBE\nid:e2\ndestination:/user/queue/errors\n\n\0');
    c.send('SEND\ndestination:/pub/chat/message\nreceipt:bad1\n\nnot json\0');
    await c.frame(/subscription:e1\n[^\0]*receipt-id:bad1[^\0]*\0[^]*subscription:e2\n[^\0]*receipt-id:bad1|subscription:e2\n[^\0]*receipt-id:bad1[^\0]*\0[^]*subscription:e1\n[^\0]*receipt-id:bad1/);
    c.send('UNSUBSCRIBE\nid:e1\n\n\0SEND\ndestination:/pub/chat/message\nreceipt:bad2\n\nnot json\0');
    await c.frame(/subscription:e2\n[^\0]*receipt-id:bad2/);
    assert.doesNotMatch(c.inbox.join(''), /subscription:e1\n[^\0]*receipt-id:bad2/);
    c.ws.close();
  });

  test('frames after DISCONNECT are not acted on', async () => {
    const c = await rawStomp(node.base);
    c.send('CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0');
    await c.frame(/CONNECTED\n/);
    const body = (text) => chat('TALK', room.roomId, 'raw', text);
    c.send(`SEND\ndestination:/pub/chat/message\nreceipt:s1\ncontent-type:application/json\n\n${body('before bye')}\0` +
           'DISCONNECT\nreceipt:bye\n\n\0' +
           `SEND\ndestination:/pub/chat/message\ncontent-type:application/json\n\n${body('after bye')}\0BOGUS\n\n\0`);
    await c.frame(/RECEIPT\nreceipt-id:s1\n[^]*RECEIPT\nreceipt-id:bye\n/);
    await c.waitClosed();
    const page = await (await fetch(`${node.base}/chat/room/${room.roomId}/messages?limit=50`)).json();
    const texts = page.map((m) => m.message);
    assert.ok(texts.includes('before bye'));
    assert.ok(!texts.includes('after bye'), 'the SEND after DISCONNECT was not published');
  });

  test('a malformed frame closes only that client; another keeps chatting', async () => {
    const good = await stompOverWebSocket(node.base);
    const bad = await rawStomp(node.base);
    try {
      const inbox = await good.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      bad.send('CONNECT\naccept-version:1.2\n\n\0');
      await bad.frame(/CONNECTED/);
      bad.send('HELLO\nfoo:bar\n\n\0');
      await bad.frame(/ERROR\n[^\0]*message:[^\n]*(command|STOMP)/);
      await bad.waitClosed();
      good.chat('TALK', room.roomId, 'good', 'still here');
      const [m] = await inbox.waitForMessages(1);
      assert.equal(m.message, 'still here');
      assert.equal(good.errors.length, 0);
    } finally {
      await good.close();
    }
  });

  test('an oversize frame gets ERROR and a close', async () => {
    const c = await rawStomp(node.base);
    c.send('CONNECT\naccept-version:1.2\n\n\0');
    await c.frame(/CONNECTED/);
    c.send(`SEND\ndestination:/pub/chat/message\n\n${'x'.repeat(70 * 1024)}\0`);
    await c.frame(/ERROR\n[^\0]*message:[^\n]*(large|size)/i);
    await c.waitClosed();
  });

  test('chat-level rejections arrive on /user/queue/errors and keep the connection', async () => {
    const c = await stompOverWebSocket(node.base);
    try {
      const errors = await c.subscribeConfirmed('/user/queue/errors');
      const inbox = await c.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      c.publish('/pub/chat/message', '{not json');
      c.chat('SHOUT', room.roomId, 'x', 'y');
      c.chat('TALK', '00000000-0000-4000-8000-000000000000', 'x', 'nobody here');
      c.chat('TALK', room.roomId, 'x', '');
      c.chat('TALK', room.roomId, 'x', 'y'.repeat(5000));
      c.chat('TALK', room.roomId, '', 'no sender');
      const errs = await errors.waitForMessages(6);
      assert.deepEqual(errs.map((e) => e.status), [400, 400, 404, 400, 413, 400]);
      for (const e of errs) assert.ok(e.error.length > 0);
      c.chat('TALK', room.roomId, 'x', 'after the errors');
      const [m] = await inbox.waitForMessages(1);
      assert.equal(m.message, 'after the errors', 'nothing rejected was published');
      assert.equal(c.errors.length, 0, 'no ERROR frame');
      assert.equal(c.closed, false);
    } finally {
      await c.close();
    }
  });

  test('STOMP 1.0 and 1.1 clients, escaping, and NUL bytes under content-length', async () => {
    const c = await rawStomp(node.base, { protocols: ['v11.stomp'] });
    assert.equal(c.protocol, 'v11.stomp');
    c.send('CONNECT\naccept-version:1.0,1.1\n\n\0');
    await c.frame(/CONNECTED\nversion:1.1\n/);
    c.send(`SUBSCRIBE\nid:a\\cb\ndestination:/sub/chat/room/${room.roomId}\nreceipt:s\n\n\0`);
    await c.frame(/RECEIPT\nreceipt-id:s\n/);
    const body = chat('TALK', room.roomId, 'v11', 'nul');
    c.send(`SEND\ndestination:/pub/chat/message\ncontent-length:${Buffer.byteLength(body)}\n\n${body}\0`);
    await c.frame(/MESSAGE\n[^\0]*subscription:a\\cb\n/);
    const old = await rawStomp(node.base, { protocols: [] });
    old.send('CONNECT\nlogin:x\n\n\0');
    await old.frame(/CONNECTED\nversion:1.0\n/);
    old.send('SEND\ndestination:/pub/chat/message\ncontent-length:4\n\na\0b\0\0');
    await old.frame(/ERROR|MESSAGE/).catch(() => {});
    assert.equal(old.closed, null, 'a bad chat body is a chat-level rejection, not a protocol error');
    old.ws.close();
    c.ws.close();
  });

  test('heart-beats are sent, and a silent client is closed', async () => {
    const c = await rawStomp(node.base);
    c.send('CONNECT\naccept-version:1.2\nheart-beat:1000,1000\n\n\0');
    await c.frame(/CONNECTED\nversion:1.2\nheart-beat:1000,1000/);
    await c.frame(/\0\n/); // an EOL after CONNECTED's NUL is the server's heart-beat
    const closed = await c.waitClosed(6_000);
    assert.ok(closed);
    assert.match(c.inbox.join(''), /ERROR\n[^\0]*heart-beat/);
  });

  test('a client that stops reading is disconnected, others are not', async () => {
    // One sender fills the socket on purpose here: no send rate limits (tests/integration/abuse.test.mjs has those).
    const slowNode = await startChatd({ args: ['--max-outbound-bytes', '262144', '--send-rate', '0', '--room-send-rate', '0'] });
    try {
      const r = await createRoom(slowNode.base, 'flood');
      const slow = await rawStomp(slowNode.base);
      slow.send('CONNECT\naccept-version:1.2\n\n\0');
      await slow.frame(/CONNECTED/);
      slow.send(`SUBSCRIBE\nid:0\ndestination:/sub/chat/room/${r.roomId}\nreceipt:s\n\n\0`);
      await slow.frame(/RECEIPT/);
      slow.ws._socket.pause(); // stop reading: the kernel buffers fill, then chatd's queue does
      const fast = await stompOverWebSocket(slowNode.base);
      const inbox = await fast.subscribeConfirmed(`/sub/chat/room/${r.roomId}`);
      const text = 'z'.repeat(3900);
      const slowCount = async () => Number((await (await fetch(`${slowNode.base}/metrics`)).text())
        .match(/chatd_slow_consumers_total (\d+)/)[1]);
      // Batches a reading client keeps up with, until the one that does not read is cut off
      // (at most ~60 MB: far more than loopback socket buffers hold).
      let sent = 0;
      while (sent < 16_000 && (await slowCount()) === 0) {
        for (let i = 0; i < 50; i++) fast.chat('TALK', r.roomId, 'flood', text);
        sent += 50;
        await inbox.waitFor(sent, 10_000);
      }
      assert.equal(await slowCount(), 1, 'the reader that stopped was disconnected');
      assert.equal(fast.closed, false, 'the reader that keeps up is not');
      for (let i = 0; i < 10; i++) fast.chat('TALK', r.roomId, 'flood', 'after');
      await inbox.waitFor(sent + 10, 10_000);
      slow.ws._socket.resume();
      await slow.waitClosed(10_000);
      assert.match(slow.inbox.join(''), /ERROR\n[^\0]*message:slow consumer/);
      await fast.close();
    } finally {
      await slowNode.stop();
    }
  });

  test('rooms survive a restart', async () => {
    const dataDir = node.dataDir;
    const before = await listRooms(node.base);
    const exit = await node.stop();
    assert.equal(exit.code, 0, `chatd exits 0 on SIGTERM: ${JSON.stringify(exit)}`);
    node = await startChatd({ dataDir, keepData: true });
    assert.deepEqual(await listRooms(node.base), before);
  });
});

describe('bounds and shutdown', () => {
  test('connections over --max-connections get 503; the rest keep working', async () => {
    const node = await startChatd({ args: ['--max-connections', '3'] });
    try {
      // The harness's health check may still hold one keep-alive connection: open until refused.
      const held = [];
      let refused = null;
      for (let i = 0; i < 4 && !refused; i++) {
        try { held.push(await rawStomp(node.base)); } catch (e) { refused = e; }
      }
      assert.ok(refused, 'a connection over the bound is refused');
      assert.match(String(refused.message), /503/);
      assert.ok(held.length >= 2 && held.length <= 3, `held ${held.length}`);
      held[0].send('CONNECT\naccept-version:1.2\n\n\0');
      await held[0].frame(/CONNECTED/);
      for (const h of held) h.ws.close();
    } finally {
      await node.stop();
    }
  });

  test('SIGTERM tells clients, drains and exits 0 in bounded time', async () => {
    const node = await startChatd({ args: ['--drain-timeout-ms', '3000'] });
    const c = await rawStomp(node.base);
    c.send('CONNECT\naccept-version:1.2\n\n\0');
    await c.frame(/CONNECTED/);
    const t0 = Date.now();
    const exit = await node.stop();
    assert.equal(exit.code, 0);
    assert.ok(Date.now() - t0 < 4_500, 'exits within the drain bound');
    await c.waitClosed();
    assert.match(c.inbox.join(''), /ERROR\n[^\0]*shutting down/);
  });
});

describe('operations', () => {
  test('threads are named, so top -H shows which one is busy; the process keeps its name', async () => {
    const node = await startChatd({ args: ['--threads', '3'] });
    try {
      const pid = node.child.pid;
      const names = readdirSync(`/proc/${pid}/task`).map((t) => readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim());
      assert.equal(readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), 'chatd', 'worker 0 is the main thread: pgrep chatd finds it');
      for (const name of ['chatd-worker-1', 'chatd-worker-2', 'chatd-engine', 'hist-writer', 'hist-reader', 'hist-checkpoint'])
        assert.ok(names.includes(name), `a thread named ${name} among ${JSON.stringify(names)}`);
    } finally {
      await node.stop();
    }
  });
});
