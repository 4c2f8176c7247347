// Before/after figures for issue 13 (not a test: it prints numbers). Run from the repository
// root with CHATD_BIN pointing at the chatd to measure:
//   CHATD_BIN=build/src/app/chatd node bench/abuse/figures.mjs
// 1. flood: one raw client floods a room (200 SENDs per WebSocket message, reading its socket)
//    while a talker sends 20 lines at 20/s to 5 readers; reports what the readers got.
// 2. lockout: one keep-alive socket opens SockJS xhr sessions as fast as it can against a node
//    with --max-connections 2000; reports sessions made and whether another address still gets
//    in after 5 s.
import { request as httpRequest, Agent } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';

import { createRoom, startChatd, stompOverWebSocket } from '../../tests/integration/harness.mjs';

async function flood() {
  const node = await startChatd({ name: 'figures-flood' });
  const readers = [];
  try {
    const room = await createRoom(node.base, 'flood');
    const dest = `/sub/chat/room/${room.roomId}`;
    for (let i = 0; i < 5; i++) {
      const s = await stompOverWebSocket(node.base);
      readers.push({ s, inbox: await s.subscribeConfirmed(dest) });
    }
    const talker = await stompOverWebSocket(node.base);
    const ws = new WebSocket(`${node.base.replace(/^http/, 'ws')}/ws-stomp`, ['v12.stomp']);
    let closed = false;
    ws.on('close', () => { closed = true; });
    ws.on('error', () => {});
    ws.on('message', () => {});
    await new Promise((ok) => ws.once('open', ok));
    ws.send('CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0');
    const frame = `SEND\ndestination:/pub/chat/message\n\n${JSON.stringify({ type: 'TALK', roomId: room.roomId, sender: 'flood', message: 'x'.repeat(100) })}\0`;
    const batch = frame.repeat(200);
    let sent = 0;
    const t0 = Date.now();
    let floodEndedMs = null;
    const f = (async () => {
      while (!closed && Date.now() - t0 < 10_000) {
        await new Promise((ok) => ws.send(batch, () => ok()));
        sent += 200;
        await new Promise((ok) => setImmediate(ok));
      }
      floodEndedMs = closed ? Date.now() - t0 : null;
    })();
    const sentAt = [];
    for (let i = 0; i < 20; i++) {
      sentAt.push(Date.now());
      talker.chat('TALK', room.roomId, 'talker', `t${i}`);
      await sleep(50);
    }
    await f;
    await sleep(3_000);
    const got = readers.map((r) => r.inbox.messages.filter((m) => m.sender === 'talker').length);
    const cut = readers.filter((r) => r.s.errors.length || r.s.closed).length;
    console.log(JSON.stringify({ figure: 'flood', flooderSends: sent, flooderDisconnectedAfterMs: floodEndedMs,
      talkerLinesPerReader: got, readersCut: cut, floodLinesAtFirstReader: readers[0].inbox.messages.length - got[0] }));
    ws.terminate();
    await talker.close();
  } finally {
    for (const r of readers) await r.s.close().catch(() => {});
    await node.stop();
  }
}

function post(port, path, agent, localAddress) {
  return new Promise((ok) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path, agent, localAddress, headers: { 'content-length': 0 } }, (res) => {
      res.resume();
      res.on('end', () => ok(res.statusCode));
    });
    req.on('error', () => ok(0));
    req.end();
  });
}

async function lockout() {
  const node = await startChatd({ name: 'figures-lockout', args: ['--max-connections', '2000'] });
  try {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const t0 = Date.now();
    let made = 0, refused = 0, firstRefusalMs = null, firstRefusal = null, otherDuring = null;
    while (Date.now() - t0 < 4_000) {
      const status = await post(node.port, `/ws-stomp/000/s${made + refused}x/xhr`, agent, '127.0.0.1');
      if (status === 200) { made++; continue; }
      refused++;
      if (firstRefusalMs === null) {
        firstRefusalMs = Date.now() - t0;
        firstRefusal = status;
        // While the flooding address is refused: does another address still get a session?
        otherDuring = await post(node.port, '/ws-stomp/000/other/xhr', false, '127.0.0.2');
      }
    }
    // Sessions without a receiver expire after SockJS's 5 s disconnect delay, so the run stops at 4 s.
    console.log(JSON.stringify({ figure: 'lockout', sessionsMadeIn4s: made, refused, firstRefusalMs, firstRefusal,
      otherAddressWhileRefused: otherDuring }));
    agent.destroy();
  } finally {
    await node.stop();
  }
}

await flood();
await lockout();
