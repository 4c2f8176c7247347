// Two chatd nodes behind no balancer at all: one browser per node, rooms and messages shared
// through a private redis-server (--store redis --bus redis). The person on node 2 must find
// the room created on node 1 and both must see one conversation in one order.
// Until chatd starts with the Redis engines, the test skips, saying why.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { artifactsDir, sockjsInfoStatus, startChatd, startRedis, stompOverWebSocket } from './harness.mjs';

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
const shots = join(artifactsDir, 'browser-cluster');

let redis;
const nodes = [];
let browser;
let skipReason = '';
let query = '';

before(async () => {
  mkdirSync(shots, { recursive: true });
  redis = await startRedis();
  try {
    for (const name of ['node1', 'node2']) {
      nodes.push(await startChatd({
        name: `chatd-${name}`,
        args: ['--store', 'redis', '--bus', 'redis', '--redis', redis.url, '--node-id', name],
      }));
    }
  } catch (e) {
    // Only "not there yet" skips; any other start-up failure is a real failure.
    if (!/not (built|implemented|available)|yet/i.test(e.message)) throw e;
    const said = String(e.message).split('\n').filter(Boolean);
    skipReason = `chatd does not run on the Redis engines yet (it said: ${said.at(-1)})`;
    console.log(`# SKIP browser_cluster.test.mjs: ${skipReason}`);
    return;
  }
  if ((await sockjsInfoStatus(nodes[0].base)) !== 200) query = '?raw=1';
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium', args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  for (const n of nodes) await n.stop();
  await redis?.stop();
});

async function person(name) {
  const context = await browser.newContext({ viewport: { width: 700, height: 640 }, locale: 'ko-KR' });
  const page = await context.newPage();
  const p = { name, context, page, errors: [], dialogs: [] };
  page.on('pageerror', (e) => p.errors.push(String(e)));
  page.on('dialog', (d) => { p.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  return p;
}

const talk = (page) => page.$$eval('#messages li.msg', (lis) => lis.map((li) => [
  li.querySelector('.sender').textContent, li.querySelector('.text').textContent]));

test('a room made on node 1 is found and shared from node 2', async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  const [n1, n2] = nodes;
  const a = await person('a');
  const b = await person('b');
  try {
    const roomName = `노드 간 약속 🌉 ${Date.now()}`;
    await a.page.goto(`${n1.base}/chat/room${query}`);
    await a.page.fill('#nickname', '일번노드');
    await a.page.fill('#room-name', roomName);
    await a.page.click('#create-room button[type=submit]');
    await a.page.locator('#room-list a', { hasText: roomName }).click();
    await a.page.waitForSelector('#conn[data-state="connected"]', { timeout: 10_000 });

    // Node 2 lists the room from the shared store.
    // Person b goes through SockJS's xhr-streaming fallback, as a browser without WebSocket would.
    const bQuery = query === '?raw=1' ? query : '?transport=xhr-streaming';
    await b.page.goto(`${n2.base}/chat/room${bQuery}`);
    await b.page.fill('#nickname', '이번노드');
    await b.page.locator('#room-list a', { hasText: roomName }).click({ timeout: 5_000 });
    await b.page.waitForSelector('#conn[data-state="connected"]', { timeout: 10_000 });
    if (bQuery !== '?raw=1') {
      assert.equal(await b.page.evaluate(() => window.chatdRoom.client.webSocket.transport), 'xhr-streaming');
    }
    // B's arrival crosses the bus to A.
    await a.page.locator('#messages li.notice', { hasText: '이번노드님 등장!' }).waitFor({ timeout: 5_000 });

    const lines = [[a, '일번노드', '1번 노드에서 안녕 👋'], [b, '이번노드', '2번 노드에서 반가워요 🙌'],
      [a, '일번노드', '12시 정각 🕛'], [b, '이번노드', '좋아요 ✅']];
    for (const [i, [p, , text]] of lines.entries()) {
      await p.page.fill('#text', text);
      await p.page.press('#text', 'Enter');
      for (const q of [a, b]) {
        await q.page.waitForFunction((k) => document.querySelectorAll('#messages li.msg').length >= k, i + 1, { timeout: 10_000 });
      }
    }
    const expected = lines.map(([, s, m]) => [s, m]);
    assert.deepEqual(await talk(a.page), expected);
    assert.deepEqual(await talk(b.page), expected);
    await a.page.screenshot({ path: join(shots, 'node1.png') });
    await b.page.screenshot({ path: join(shots, 'node2.png') });
    for (const p of [a, b]) {
      assert.deepEqual(p.errors, [], `${p.name}: page errors`);
      assert.deepEqual(p.dialogs, [], `${p.name}: dialogs`);
    }
  } finally {
    await a.context.close();
    await b.context.close();
  }
});

// A page that (re)connects while Redis is away is refused the room's SUBSCRIBE (503 on its
// error queue; the connection stays): it must try again by itself, or it would sit connected
// and deaf once Redis is back.
test('a page refused its room while Redis was away joins it again by itself', async (t) => {
  if (skipReason) {
    t.skip(skipReason);
    return;
  }
  const [n1] = nodes;
  const created = await fetch(`${n1.base}/chat/room?name=${encodeURIComponent(`정전 ${Date.now()}`)}`, { method: 'POST' });
  const { roomId } = await created.json();
  const a = await person('a');
  const health = async () => (await fetch(`${n1.base}/healthz`)).status;
  let frozen = false;
  try {
    await a.page.addInitScript(() => localStorage.setItem('chatd.nickname', '정전'));
    await a.page.goto(`${n1.base}/chat/room/enter/${roomId}${query || '?transport=websocket'}`);
    await a.page.waitForSelector('#conn[data-state="connected"]', { timeout: 10_000 });

    redis.signal('SIGSTOP');
    frozen = true;
    for (let i = 0; i < 100 && (await health()) !== 503; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await health(), 503, 'the node sees Redis away');
    await a.page.evaluate(() => window.chatdRoom.client.forceDisconnect());  // a network blip
    await a.page.locator('#messages li', { hasText: 'message engine unavailable' }).first().waitFor({ timeout: 15_000 });
    redis.signal('SIGCONT');
    frozen = false;

    // Once Redis answers again the page is back in the room: a line sent now reaches it.
    const other = await stompOverWebSocket(nodes[1].base);
    t.after(() => other.close());
    const deadline = Date.now() + 30_000;
    let seen = false;
    while (!seen && Date.now() < deadline) {
      other.chat('TALK', roomId, '다른사람', '다시 연결됨');
      await new Promise((r) => setTimeout(r, 500));
      seen = await a.page.evaluate(() => [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes('다시 연결됨')));
    }
    assert.ok(seen, 'the page hears the room again after Redis came back');
    assert.deepEqual(a.errors, []);
  } finally {
    if (frozen) redis.signal('SIGCONT');
    await a.context.close();
  }
});
