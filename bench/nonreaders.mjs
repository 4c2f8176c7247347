// Issue 13, findings 1-2, as figures for BENCHMARKS.md (the pass/fail versions are in
// tests/integration/backpressure.test.mjs): a client that uploads pings and never reads (MiB
// taken, server RSS growth), and 30 subscribers that never read (still connected how long after
// they are found slow, and what the kernel holds for them).
//   LABEL=x CHATD_BIN=path node bench/nonreaders.mjs   (CHATD_SEND_RATE=0 CHATD_ROOM_SEND_RATE=0
//   for a chatd with send rate limits: one talker fills the sockets on purpose)
import net from 'node:net';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRoom, eventually, startChatd, stompOverWebSocket } from '../tests/integration/harness.mjs';
function clientFrame(opcode, payload) {
  const body = Buffer.from(payload); const mask = Buffer.from([1, 2, 3, 4]);
  const head = body.length < 126 ? Buffer.from([0x80 | opcode, 0x80 | body.length]) : Buffer.from([0x80 | opcode, 0x80 | 126, body.length >> 8, body.length & 0xff]);
  const m = Buffer.alloc(body.length); for (let i = 0; i < body.length; i++) m[i] = body[i] ^ mask[i & 3];
  return Buffer.concat([head, mask, m]);
}
async function rawClient(port, frames, until) {
  const s = net.connect(port, '127.0.0.1'); s.on('error', () => {}); await once(s, 'connect');
  let got = ''; s.on('data', (d) => { got += d.toString('latin1'); });
  s.write('GET /ws-stomp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n');
  for (const f of frames) s.write(clientFrame(1, f));
  await eventually('reply', () => until.test(got), 5000); return s;
}
const metric = async (base, name) => { const m = (await (await fetch(`${base}/metrics`)).text()).match(new RegExp(`^${name} (\\d+)`, 'm')); return m ? Number(m[1]) : -1; };
const rss = (pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);
const est = (port, peers) => { const p = new Set(peers.map(String)); return execFileSync('ss', ['-Htn', 'state', 'established', `( sport = :${port} )`]).toString().split('\n').filter(Boolean).filter((l) => p.has(l.trim().split(/\s+/).at(-1).split(':').at(-1))).length; };
const CONNECT = 'CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0';
const label = process.env.LABEL;
{ // ping flood
  const node = await startChatd({ name: 'b13-ping' });
  const s = await rawClient(node.port, [CONNECT], /CONNECTED/); s.pause();
  const before = rss(node.child.pid); const t0 = Date.now();
  const chunk = Buffer.concat(Array(512).fill(clientFrame(9, Buffer.alloc(125, 0x70))));
  let up = 0, stalled = false; const cap = 400 * 1024 * 1024;
  while (up < cap && !s.destroyed) { up += chunk.length; if (s.write(chunk)) continue; const d = await Promise.race([once(s, 'drain').then(() => true, () => false), sleep(3000).then(() => false)]); if (!d) { stalled = true; break; } }
  console.log(`${label} ping flood: uploaded ${(up / 1048576).toFixed(1)} MiB in ${Date.now() - t0} ms, stalled=${stalled}, RSS +${((rss(node.child.pid) - before) / 1024).toFixed(1)} MiB`);
  s.destroy(); await node.stop();
}
{ // 30 non-readers
  const node = await startChatd({ name: 'b13-slow', args: ['--max-outbound-bytes', '262144'] });
  const room = await createRoom(node.base, 'nr');
  const sub = `SUBSCRIBE\nid:0\ndestination:/sub/chat/room/${room.roomId}\nreceipt:s\n\n\0`;
  const silent = []; for (let i = 0; i < 30; i++) silent.push(await rawClient(node.port, [CONNECT, sub], /RECEIPT/));
  silent.forEach((s) => s.pause()); const mine = silent.map((s) => s.localPort);
  const talker = await stompOverWebSocket(node.base); const inbox = await talker.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
  let sent = 0; while (sent < 20000 && (await metric(node.base, 'chatd_slow_consumers_total')) < 30) { for (let i = 0; i < 50; i++) talker.chat('TALK', room.roomId, 't', 'z'.repeat(3900)); sent += 50; await inbox.waitFor(sent, 20000); }
  const t = Date.now(); let left = est(node.port, mine);
  while (left > 0 && Date.now() - t < 30000) { await sleep(200); left = est(node.port, mine); }
  const sendq = execFileSync('ss', ['-Htn', 'state', 'established', `( sport = :${node.port} )`]).toString().split('\n').filter(Boolean).map((l) => Number(l.trim().split(/\s+/)[1]));
  console.log(`${label} non-readers: slow=${await metric(node.base, 'chatd_slow_consumers_total')} after ${sent} msgs; still ESTABLISHED ${left}/30 after ${Date.now() - t} ms (cap 30 s); max Send-Q ${(Math.max(0, ...sendq) / 1048576).toFixed(2)} MiB`);
  await talker.close(); silent.forEach((s) => s.destroy()); await node.stop();
}
