// Clients that do not read (issue 13, findings 1 and 2): every byte queued for a client counts,
// a client that does not take what it asked for is not read, and one that takes nothing past
// --write-timeout-ms is reset, on a raw WebSocket and on an xhr_streaming response alike. The
// clients here are raw TCP sockets, so the test, not a library, decides when to stop reading.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

import { createRoom, eventually, startChatd, stompOverWebSocket } from './harness.mjs';

// One masked client frame (RFC 6455 §5.3).
function clientFrame(opcode, payload) {
  const body = Buffer.from(payload);
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  let head;
  if (body.length < 126) head = Buffer.from([0x80 | opcode, 0x80 | body.length]);
  else if (body.length < 65536) head = Buffer.from([0x80 | opcode, 0x80 | 126, body.length >> 8, body.length & 0xff]);
  else throw new Error('frame too big for this helper');
  const masked = Buffer.alloc(body.length);
  for (let i = 0; i < body.length; i++) masked[i] = body[i] ^ mask[i & 3];
  return Buffer.concat([head, mask, masked]);
}

// Opens a raw STOMP-over-WebSocket connection and waits for `until` in what the server sent.
async function rawClient(port, frames, until) {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {}); // a reset is what some tests expect
  await once(s, 'connect');
  let got = '';
  s.on('data', (d) => { got += d.toString('latin1'); });
  s.write('GET /ws-stomp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
          'Sec-WebSocket-Protocol: v12.stomp\r\n\r\n');
  for (const f of frames) s.write(clientFrame(1, f));
  await eventually(`${until} from the server`, () => until.test(got), 15_000);
  return s;
}

const metric = async (base, name) =>
  Number((await (await fetch(`${base}/metrics`)).text()).match(new RegExp(`^${name} (\\d+)`, 'm'))[1]);

// Server-side ESTABLISHED sockets on `port` whose peer is one of `clients` (local ports of our
// sockets), from the kernel's own table.
function established(port, clients) {
  const peers = new Set(clients.map(String));
  return execFileSync('ss', ['-Htn', 'state', 'established', `( sport = :${port} )`]).toString()
    .split('\n').filter(Boolean)
    .filter((line) => peers.has(line.trim().split(/\s+/).at(-1).split(':').at(-1))).length;
}

const rssKiB = (pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);

const CONNECT = 'CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0';

describe('clients that do not read', () => {
  test('pings uploaded by a client that never reads: it stops being read, memory stays flat, it is reset', async () => {
    const node = await startChatd({ name: 'chatd-pingflood', args: ['--write-timeout-ms', '2000'] });
    try {
      const s = await rawClient(node.port, [CONNECT], /CONNECTED/);
      const mine = [s.localPort];
      s.pause(); // never read again: every pong stays queued somewhere
      const before = rssKiB(node.child.pid);
      const chunk = Buffer.concat(Array(512).fill(clientFrame(0x9, Buffer.alloc(125, 0x70)))); // 512 pings
      const cap = 128 * 1024 * 1024; // far more than loopback socket buffers hold
      let uploaded = 0;
      let stalled = false;
      while (uploaded < cap && !s.destroyed) {
        uploaded += chunk.length;
        if (s.write(chunk)) continue;
        // The kernel took no more: wait for chatd to read; 3 s without it means it stopped.
        const drained = await Promise.race([once(s, 'drain').then(() => true, () => false), sleep(3_000).then(() => false)]);
        if (!drained) { stalled = true; break; }
      }
      const grownKiB = rssKiB(node.child.pid) - before;
      assert.ok(stalled || s.destroyed, `chatd kept reading: ${uploaded} bytes of pings taken`);
      assert.ok(uploaded < cap, `chatd read all ${uploaded} bytes`);
      assert.ok(grownKiB < 16 * 1024, `chatd grew by ${grownKiB} KiB while ${uploaded} bytes of pings came in`);
      // It takes nothing for --write-timeout-ms (or its queue passes --max-outbound-bytes): reset.
      await eventually('it is reset', async () => (await metric(node.base, 'chatd_write_timeouts_total')) +
                                                  (await metric(node.base, 'chatd_slow_consumers_total')) >= 1, 15_000);
      console.log(`# ping flood: ${uploaded} bytes taken, RSS +${grownKiB} KiB, ` +
                  `write timeouts ${await metric(node.base, 'chatd_write_timeouts_total')}, ` +
                  `slow consumers ${await metric(node.base, 'chatd_slow_consumers_total')}`);
      await eventually('its socket is gone', () => established(node.port, mine) === 0, 5_000);
      s.destroy();
      // Everyone else is served as before.
      const ok = await stompOverWebSocket(node.base);
      await ok.close();
    } finally {
      await node.stop();
    }
  });

  test('30 subscribers that never read are counted as slow and gone within the write deadline', async () => {
    const node = await startChatd({
      name: 'chatd-nonreaders',
      // One talker fills the sockets on purpose: no send rate limits (abuse.test.mjs has those).
      args: ['--write-timeout-ms', '2000', '--max-outbound-bytes', '262144', '--send-rate', '0', '--room-send-rate', '0'],
    });
    try {
      const room = await createRoom(node.base, 'nonreaders');
      const subscribe = `SUBSCRIBE\nid:0\ndestination:/sub/chat/room/${room.roomId}\nreceipt:s\n\n\0`;
      const silent = [];
      for (let i = 0; i < 30; i++) silent.push(await rawClient(node.port, [CONNECT, subscribe], /RECEIPT/));
      for (const s of silent) s.pause();
      const mine = silent.map((s) => s.localPort);
      const talker = await stompOverWebSocket(node.base);
      const inbox = await talker.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      const text = 'z'.repeat(3900);
      // Batches the talker itself reads, until all 30 are cut as slow consumers.
      let sent = 0;
      while (sent < 20_000 && (await metric(node.base, 'chatd_slow_consumers_total')) < 30) {
        for (let i = 0; i < 50; i++) talker.chat('TALK', room.roomId, 'talker', text);
        sent += 50;
        await inbox.waitFor(sent, 20_000);
      }
      assert.equal(await metric(node.base, 'chatd_slow_consumers_total'), 30);
      const detected = Date.now();
      // Past the 2 s write deadline their sockets are reset: only the talker is left.
      assert.equal(established(node.port, mine), 30, 'all 30 are still connected when found slow');
      await eventually('the 30 are gone', () => established(node.port, mine) === 0, 10_000);
      const took = Date.now() - detected;
      assert.equal(await metric(node.base, 'chatd_stomp_sessions'), 1);
      assert.ok((await metric(node.base, 'chatd_write_timeouts_total')) >= 30);
      console.log(`# 30 non-readers gone ${took} ms after the last was found slow (write timeout 2000 ms)`);
      assert.equal(talker.closed, false);
      talker.chat('TALK', room.roomId, 'talker', 'after');
      await inbox.waitFor(sent + 1, 10_000);
      await talker.close();
      for (const s of silent) s.destroy();
    } finally {
      await node.stop();
    }
  });

  // An x-history replay is sent whole, past --max-outbound-bytes by its own size. When it is
  // more than the kernel holds, the write blocks with most of it waiting; the next live
  // message used to find the socket over its bound and reset it, although the client reads.
  test('a replay larger than the kernel holds: a live message behind it does not reset a raw WebSocket', async () => {
    const node = await startChatd({
      name: 'chatd-replay-blocked',
      args: ['--max-message-bytes', '10000', '--max-outbound-bytes', '65536', '--send-rate', '0', '--room-send-rate', '0'],
    });
    try {
      const room = await createRoom(node.base, 'replay-blocked');
      const talker = await stompOverWebSocket(node.base);
      const inbox = await talker.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      // About 8 MB of history: past loopback's 4 MiB send buffer and the reader's window.
      const total = 900;
      // A few at a time: the talker is held to the same 64 KiB bound.
      for (let i = 0; i < total; i += 5) {
        for (let j = i; j < i + 5; j++) talker.chat('TALK', room.roomId, 'talker', `${j} ${'y'.repeat(9000)}`);
        await inbox.waitFor(i + 5, 10_000);
      }

      const s = await rawClient(node.port, [CONNECT], /CONNECTED/);
      let got = '';
      s.on('data', (d) => { got += d.toString('latin1'); });
      s.pause();
      s.write(clientFrame(1, `SUBSCRIBE\nid:0\ndestination:/sub/chat/room/${room.roomId}\nx-history:1000\n\n\0`));
      await sleep(1_000);  // the replay is written as far as the kernel takes it, the rest waits
      talker.chat('TALK', room.roomId, 'talker', `${total} live`);
      await inbox.waitFor(total + 1, 10_000);
      await sleep(200);
      s.resume();
      const seen = () => [...got.matchAll(/"message":"(\d+) /g)].map((m) => Number(m[1]));
      await eventually('the replay and the live message', () => seen().length > total || s.destroyed, 20_000);
      assert.equal(seen().length, total + 1, `got ${seen().length} of ${total + 1} before the connection ended`);
      assert.ok(seen().every((n, i) => n === i), 'in order, once each');
      assert.equal(await metric(node.base, 'chatd_slow_consumers_total'), 0);
      s.destroy();
      await talker.close();
    } finally {
      await node.stop();
    }
  });

  // Replays may pass the bound, but not one per room: a client subscribing to many rooms with
  // history and reading nothing would otherwise hold --max-subscriptions replays in memory.
  test('many rooms replaying to a client that reads nothing: cut off past one replay\'s worth', async () => {
    const node = await startChatd({
      name: 'chatd-replays',
      // One replay's worth: 100 x (10000 + 1024) bytes, about 1.1 MB.
      args: ['--max-replay', '100', '--max-message-bytes', '10000', '--max-outbound-bytes', '65536',
             '--send-rate', '0', '--room-send-rate', '0'],
    });
    try {
      const rooms = [];
      for (let i = 0; i < 30; i++) rooms.push(await createRoom(node.base, `replays-${i}`));
      // 30 rooms x 100 messages of ~9 KB: 27 MB of history, far past what loopback buffers hold.
      const talker = await stompOverWebSocket(node.base);
      for (const room of rooms) for (let j = 0; j < 100; j++) talker.chat('TALK', room.roomId, 'talker', `${j} ${'z'.repeat(9000)}`);
      for (const room of rooms) {
        await eventually(`room ${room.roomId} holds 100`, async () =>
          (await fetch(`${node.base}/chat/room/${room.roomId}/messages?limit=1`)).headers.get('x-last-seq') === '100', 20_000);
      }
      await talker.close();

      const s = await rawClient(node.port, [CONNECT], /CONNECTED/);
      s.pause();
      let frames = '';
      rooms.forEach((room, i) => { frames += `SUBSCRIBE\nid:${i}\ndestination:/sub/chat/room/${room.roomId}\nx-history:100\n\n\0`; });
      s.write(clientFrame(1, frames));
      // Without the bound on replays together it keeps all 30 queued and is never cut off. (Its
      // RSS says little here: the 30 history reads pass through memory either way.)
      await eventually('the reader of nothing is cut off', async () => (await metric(node.base, 'chatd_slow_consumers_total')) >= 1, 20_000);
      s.destroy();
    } finally {
      await node.stop();
    }
  });

  test('an xhr_streaming receiver that never reads is reset; its session ends', async () => {
    const node = await startChatd({
      name: 'chatd-xhr-nonreader',
      // Room for more than loopback's kernel buffers (4 MiB send, the reader's receive window)
      // to wait for the receiver, so the write to it cannot finish.
      // A disconnect delay of 20 s: the 6 MB below must be queued before the session, without a
      // receiver, ends; on a loaded machine (CI runs tests two at a time) that took over 5 s,
      // and once over 10 s.
      args: ['--write-timeout-ms', '2000', '--max-message-bytes', '10000', '--max-outbound-bytes', '16777216',
             '--send-rate', '0', '--room-send-rate', '0', '--sockjs-disconnect-delay-ms', '20000'],
    });
    try {
      const room = await createRoom(node.base, 'xhr-nonreader');
      const url = `/ws-stomp/000/${Math.random().toString(36).slice(2, 10)}`;
      const receiver = async (read) => {
        const s = net.connect(node.port, '127.0.0.1');
        s.on('error', () => {});
        await once(s, 'connect');
        const r = { s, got: '' };
        if (read) s.on('data', (d) => { r.got += d.toString('latin1'); });
        else s.pause();
        s.write(`POST ${url}/xhr_streaming HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`);
        return r;
      };
      // A reading receiver opens the session and subscribes, then goes away.
      const first = await receiver(true);
      await eventually('the session opens', () => first.got.includes('o\n'), 15_000);
      const post = (body) => fetch(`${node.base}${url}/xhr_send`, { method: 'POST', body, headers: { 'Content-Type': 'text/plain' } });
      assert.equal((await post(JSON.stringify([CONNECT]))).status, 204);
      assert.equal((await post(JSON.stringify([`SUBSCRIBE\nid:0\ndestination:/sub/chat/room/${room.roomId}\nreceipt:s\n\n\0`]))).status, 204);
      await eventually('the RECEIPT', () => first.got.includes('receipt-id:s'), 15_000);
      first.s.destroy();
      const sessions = await metric(node.base, 'chatd_stomp_sessions');
      // About 6 MB wait for the session's next receiver...
      const talker = await stompOverWebSocket(node.base);
      const inbox = await talker.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
      for (let i = 0; i < 700; i++) talker.chat('TALK', room.roomId, 'talker', 'y'.repeat(9000));
      await inbox.waitFor(700, 20_000);
      // ... which never reads: they leave in one write that the kernel cannot hold. (Counted
      // from here: under load the talker itself may fall 2 s behind the 6 MB it reads.)
      const timeouts = await metric(node.base, 'chatd_write_timeouts_total');
      const second = await receiver(false);
      const mine = [second.s.localPort];
      await eventually('the write timeout resets it', async () => (await metric(node.base, 'chatd_write_timeouts_total')) > timeouts, 10_000);
      await eventually('its socket is gone', () => established(node.port, mine) === 0, 5_000);
      // Without a receiver the session ends after the disconnect delay.
      await eventually('the xhr session ends', async () => (await metric(node.base, 'chatd_stomp_sessions')) === sessions, 35_000);
      await talker.close();
      second.s.destroy();
    } finally {
      await node.stop();
    }
  });
});
