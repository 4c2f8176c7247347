// Browser end to end: Debian's chromium driven by playwright-core against a real chatd.
// Two people (separate browser contexts) create a room on the list page, enter it with their
// nicknames, talk both ways (Korean + emoji), and must see the same messages in the same order.
// Markup in a room name or a message must show as text and never run. Screenshots go to
// test-artifacts/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { chromium } from 'playwright-core';

import { artifactsDir, listRooms, sockjsInfoStatus, startChatd } from './harness.mjs';

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
const XSS = '<img src=x onerror=alert(1)>';

let node;
let browser;
let query = ''; // '' = SockJS (the pages' default); '?raw=1' while chatd has no SockJS yet
const shots = join(artifactsDir, 'browser');

before(async () => {
  mkdirSync(shots, { recursive: true });
  node = await startChatd({ name: 'chatd-browser' });
  const info = await sockjsInfoStatus(node.base);
  if (info !== 200) {
    query = '?raw=1';
    console.log(`# browser.test.mjs: GET /ws-stomp/info -> ${info}; pages use plain WebSocket (?raw=1) until chatd serves SockJS`);
  }
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium', args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await node?.stop();
});

// Opens a page that records dialogs, page errors and failed console output.
async function openPerson(name, viewport) {
  const context = await browser.newContext({ viewport, locale: 'ko-KR' });
  const page = await context.newPage();
  const person = { name, context, page, dialogs: [], errors: [] };
  page.on('dialog', (d) => { person.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => person.errors.push(String(e)));
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) person.errors.push(m.text()); });
  return person;
}

// Returns [[sender, text], ...] of the chat messages the page shows, in order.
function talkOn(page) {
  return page.$$eval('#messages li.msg', (lis) => lis.map((li) => [
    li.querySelector('.sender').textContent, li.querySelector('.text').textContent,
  ]));
}

async function waitForTalk(page, n) {
  await page.waitForFunction((k) => document.querySelectorAll('#messages li.msg').length >= k, n, { timeout: 10_000 });
}

async function say(person, text) {
  await person.page.fill('#text', text);
  await person.page.press('#text', 'Enter');
  // The box empties once the page has handed the message to STOMP.
  await person.page.waitForFunction(() => document.querySelector('#text').value === '', null, { timeout: 5_000 });
}

// Sets the nickname on the list page and enters the room named `roomName`.
async function enter(person, nickname, roomName) {
  await person.page.goto(`${node.base}/chat/room${query}`);
  await person.page.fill('#nickname', nickname);
  const link = person.page.locator('#room-list a', { hasText: roomName });
  await link.waitFor({ timeout: 5_000 });
  await link.click();
  await person.page.waitForURL(/\/chat\/room\/enter\//);
  await person.page.waitForSelector('#conn[data-state="connected"]', { timeout: 10_000 });
}

test('two people create a room, talk both ways, and see the same conversation', async () => {
  const a = await openPerson('a', { width: 1100, height: 760 });
  const b = await openPerson('b', { width: 390, height: 844 }); // a phone
  try {
    // A creates the room from the list page; its name carries Korean, emoji and markup.
    const roomName = `점심 약속 🍜 ${XSS}`;
    await a.page.goto(`${node.base}/chat/room${query}`);
    await a.page.fill('#room-name', roomName);
    await a.page.click('#create-room button[type=submit]');
    const link = a.page.locator('#room-list a', { hasText: roomName });
    await link.waitFor({ timeout: 5_000 });
    assert.equal(await link.locator('.room-name').textContent(), roomName);
    assert.equal(await a.page.locator('#room-list img').count(), 0, 'room name was parsed as HTML');
    const rooms = await listRooms(node.base);
    assert.ok(rooms.some((r) => r.name === roomName), 'the server has the room');
    await a.page.fill('#nickname', '');
    await a.page.screenshot({ path: join(shots, '1-room-list.png'), fullPage: true });

    // Without a nickname the list page refuses to enter.
    await link.click();
    assert.match(a.page.url(), /\/chat\/room(\?|$)/);
    assert.match(await a.page.textContent('#status'), /닉네임/);

    await enter(a, '김밥🍙', roomName);
    await enter(b, `Bob ${XSS}`, roomName);
    assert.equal(await a.page.textContent('#room-name'), roomName);
    assert.equal(await b.page.textContent('#room-name'), roomName);
    if (!query) {
      // By default the page goes through SockJS, which settles on its WebSocket transport.
      assert.equal(await a.page.evaluate(() => window.chatdRoom.client.webSocket.transport), 'websocket');
    }

    // Both see B's arrival announced.
    const bobEnter = `Bob ${XSS}님 등장!`;
    for (const p of [a, b]) {
      await p.page.locator('#messages li.notice', { hasText: bobEnter }).waitFor({ timeout: 5_000 });
    }
    assert.equal(await a.page.locator('#messages li.notice', { hasText: '김밥🍙님 등장!' }).count(), 1);

    const lines = [
      [a, '김밥🍙', '안녕하세요 😀 내일 12시에 만나요?'],
      [b, `Bob ${XSS}`, '좋아요 👍 메뉴는 비빔밥 🍲'],
      [a, '김밥🍙', '더치페이 할까요? 💸\n두 줄째'],
      [b, `Bob ${XSS}`, XSS],
    ];
    for (const [i, [person, , text]] of lines.entries()) {
      await say(person, text);
      // Wait for the echo before the next line, so the expected order is the only order.
      await Promise.all([waitForTalk(a.page, i + 1), waitForTalk(b.page, i + 1)]);
    }
    const expected = lines.map(([, sender, text]) => [sender, text]);
    assert.deepEqual(await talkOn(a.page), expected);
    assert.deepEqual(await talkOn(b.page), expected);

    // Each page marks its own messages; the XSS text is visible as text.
    assert.equal(await a.page.locator('#messages li.msg.mine').count(), 2);
    assert.equal(await b.page.locator('#messages li.msg.mine').count(), 2);
    const xssText = b.page.locator('#messages li.msg .text', { hasText: XSS });
    assert.ok(await xssText.isVisible());
    for (const p of [a, b]) {
      assert.equal(await p.page.locator('img').count(), 0, `${p.name}: markup became an element`);
    }

    // Sequence numbers on the page rise in the order shown.
    const seqs = await a.page.$$eval('#messages li[data-seq]', (lis) => lis.map((li) => Number(li.dataset.seq)));
    assert.ok(seqs.length >= 5, `seqs ${seqs}`);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `seq order ${seqs}`);

    await a.page.screenshot({ path: join(shots, '2-room-desktop.png') });
    await b.page.screenshot({ path: join(shots, '3-room-phone.png') });

    for (const p of [a, b]) {
      assert.deepEqual(p.dialogs, [], `${p.name}: a dialog fired`);
      assert.deepEqual(p.errors, [], `${p.name}: page errors`);
    }
  } finally {
    await a.context.close();
    await b.context.close();
  }
});

test('the room page reconnects after the connection drops and keeps talking', async () => {
  const res = await fetch(`${node.base}/chat/room`, { method: 'POST', body: new URLSearchParams({ name: '재연결 테스트' }) });
  assert.ok(res.ok);
  const room = await res.json();
  const a = await openPerson('a', { width: 800, height: 600 });
  try {
    await a.page.goto(`${node.base}/chat/room${query}`);
    await a.page.fill('#nickname', '끊김이');
    await a.page.goto(`${node.base}/chat/room/enter/${encodeURIComponent(room.roomId)}${query}`);
    await a.page.waitForSelector('#conn[data-state="connected"]', { timeout: 10_000 });
    await say(a, '끊기기 전 ✂️');
    await waitForTalk(a.page, 1);

    await a.page.evaluate(() => window.chatdRoom.client.forceDisconnect());
    await a.page.waitForSelector('#conn[data-state="reconnecting"]', { timeout: 5_000 });
    await a.page.screenshot({ path: join(shots, '4-reconnecting.png') });
    await a.page.waitForSelector('#conn[data-state="connected"]', { timeout: 15_000 });

    await say(a, '다시 연결됨 🔌');
    await waitForTalk(a.page, 2);
    assert.deepEqual((await talkOn(a.page)).map(([, t]) => t), ['끊기기 전 ✂️', '다시 연결됨 🔌']);
    // ENTER is announced once, not again on reconnect.
    assert.equal(await a.page.locator('#messages li.notice', { hasText: '끊김이님 등장!' }).count(), 1);
    assert.deepEqual(a.errors, []);
  } finally {
    await a.context.close();
  }
});

// A planned restart (SIGTERM) sends every client ERROR "server shutting down": the page said
// "서버 오류" in red for what is routine news, then reconnected on its own.
test('a restart of the server is news on the page, not an error, and the page comes back', async () => {
  const own = await startChatd({ name: 'chatd-browser-restart', keepData: true });
  const a = await openPerson('a', { width: 800, height: 600 });
  let again;
  try {
    const res = await fetch(`${own.base}/chat/room`, { method: 'POST', body: new URLSearchParams({ name: '재시작' }) });
    const room = await res.json();
    await a.page.addInitScript(() => localStorage.setItem('chatd.nickname', '재시작이'));
    await a.page.goto(`${own.base}/chat/room/enter/${room.roomId}${query}`);
    await a.page.waitForSelector('#conn[data-state="connected"]', { timeout: 10_000 });
    await own.stop();
    await a.page.locator('#messages li.notice', { hasText: '서버가 재시작합니다' }).waitFor({ timeout: 5_000 });
    assert.equal(await a.page.locator('#messages li.notice.error').count(), 0, 'no red error for a restart');
    again = await startChatd({ name: 'chatd-browser-restart-2', port: own.port, dataDir: own.dataDir });
    await a.page.waitForSelector('#conn[data-state="connected"]', { timeout: 20_000 });
    assert.deepEqual(a.errors, []);
  } finally {
    await a.context.close();
    await again?.stop();
    rmSync(own.dataDir, { recursive: true, force: true });
  }
});

test('a forced SockJS transport carries the page conversation', async (t) => {
  if (query) {
    t.skip('chatd does not serve SockJS yet (GET /ws-stomp/info is not 200)');
    return;
  }
  const res = await fetch(`${node.base}/chat/room`, { method: 'POST', body: new URLSearchParams({ name: 'transports' }) });
  const room = await res.json();
  for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling']) {
    const p = await openPerson(transport, { width: 800, height: 600 });
    try {
      await p.page.goto(`${node.base}/chat/room`);
      await p.page.fill('#nickname', `${transport} 사용자`);
      await p.page.goto(`${node.base}/chat/room/enter/${room.roomId}?transport=${transport}`);
      await p.page.waitForSelector('#conn[data-state="connected"]', { timeout: 10_000 });
      assert.equal(await p.page.evaluate(() => window.chatdRoom.client.webSocket.transport), transport);
      await say(p, `${transport} 로 보냄 📨`);
      await p.page.locator('#messages li.msg .text', { hasText: `${transport} 로 보냄 📨` }).waitFor({ timeout: 10_000 });
      assert.deepEqual(p.errors, []);
    } finally {
      await p.context.close();
    }
  }
});

test('a direct link asks for a nickname first; nicknames over the byte limit are refused', async () => {
  const res = await fetch(`${node.base}/chat/room`, { method: 'POST', body: new URLSearchParams({ name: '바로 입장' }) });
  const room = await res.json();
  const p = await openPerson('direct', { width: 390, height: 700 });
  try {
    // The list page refuses a nickname of 30 Korean syllables (90 UTF-8 bytes > 64).
    await p.page.goto(`${node.base}/chat/room${query}`);
    await p.page.fill('#nickname', '가'.repeat(30));
    await p.page.locator('#room-list a', { hasText: '바로 입장' }).click();
    assert.match(p.page.url(), /\/chat\/room(\?|$)/);
    assert.match(await p.page.textContent('#status'), /너무 깁니다/);
    await p.page.fill('#nickname', '');

    await p.page.goto(`${node.base}/chat/room/enter/${room.roomId}${query}`);
    await p.page.waitForSelector('#nick-form:not([hidden])');
    assert.equal(await p.page.isVisible('#composer'), false);
    assert.equal(await p.page.getAttribute('#conn', 'data-state'), 'idle');
    await p.page.fill('#nick-input', '바로왔어요');
    await p.page.press('#nick-input', 'Enter');
    await p.page.waitForSelector('#conn[data-state="connected"]', { timeout: 10_000 });
    await p.page.locator('#messages li.notice', { hasText: '바로왔어요님 등장!' }).waitFor({ timeout: 5_000 });
    assert.equal(await p.page.evaluate(() => localStorage.getItem('chatd.nickname')), '바로왔어요');
    assert.deepEqual(p.errors, []);
  } finally {
    await p.context.close();
  }
});

// s20 probe: a stored nickname the server refuses (zero-width only, a bidi override, a tab)
// was kept: the page said connected and every ENTER and TALK failed, with no way to change it.
test('a stored nickname the server would refuse is asked for again; the list page refuses it too', async () => {
  const res = await fetch(`${node.base}/chat/room`, { method: 'POST', body: new URLSearchParams({ name: '이름 검사' }) });
  const room = await res.json();
  for (const [i, bad] of ['\u200b\u200b', 'abc\u202edef', 'tab\there'].entries()) {
    const p = await openPerson('badnick', { width: 390, height: 700 });
    try {
      await p.page.goto(`${node.base}/chat/room${query}`);
      await p.page.fill('#nickname', bad);
      await p.page.locator('#room-list a', { hasText: '이름 검사' }).click();
      assert.match(p.page.url(), /\/chat\/room(\?|$)/, `the list page let ${JSON.stringify(bad)} through`);
      await p.page.evaluate((v) => localStorage.setItem('chatd.nickname', v), bad);
      await p.page.goto(`${node.base}/chat/room/enter/${room.roomId}${query}`);
      await p.page.waitForSelector('#nick-form:not([hidden])', { timeout: 5_000 });
      assert.equal(await p.page.getAttribute('#conn', 'data-state'), 'idle', `connected as ${JSON.stringify(bad)}`);
      await p.page.fill('#nick-input', bad);
      await p.page.press('#nick-input', 'Enter');
      assert.equal(await p.page.isVisible('#nick-form'), true, 'the form refuses it as well');
      await p.page.fill('#nick-input', `  고친이름${i} `);
      await p.page.press('#nick-input', 'Enter');
      await p.page.waitForSelector('#conn[data-state="connected"]', { timeout: 10_000 });
      await p.page.locator('#messages li.notice', { hasText: `고친이름${i}님 등장!` }).waitFor({ timeout: 5_000 });
      assert.deepEqual(p.errors, []);
    } finally {
      await p.context.close();
    }
  }
});

test('an unknown room id says so', async () => {
  const p = await openPerson('unknown', { width: 800, height: 600 });
  try {
    // A well-formed id that no room has: the page (or chatd) answers that it does not exist.
    const res = await p.page.goto(`${node.base}/chat/room/enter/00000000-0000-4000-8000-000000000000${query}`);
    if (res.status() === 200) {
      await p.page.locator('#messages li.notice.error').waitFor({ timeout: 5_000 });
      assert.equal(await p.page.textContent('#room-name'), '없는 채팅방');
      assert.equal(await p.page.getAttribute('#conn', 'data-state'), 'idle');
    } else {
      assert.equal(res.status(), 404);
    }
  } finally {
    await p.context.close();
  }
});

test('a room list that answers late does not hide the room just created', async () => {
  const p = await openPerson('late-list', { width: 800, height: 600 });
  try {
    // The page's first list request answers after the room is created (a slow network or a busy
    // server): its older list must not replace the one drawn after the create.
    let first = true;
    let releaseFirst;
    const firstHeld = new Promise((ok) => { releaseFirst = ok; });
    await p.page.route('**/chat/rooms', async (route) => {
      if (!first) return route.continue();
      first = false;
      const response = await route.fetch();  // the list as it is now, before the create
      await firstHeld;
      await route.fulfill({ response });
    });
    await p.page.goto(`${node.base}/chat/room${query}`);
    await p.page.fill('#nickname', '늦은목록');
    await p.page.fill('#room-name', '늦게 온 목록');
    await p.page.press('#room-name', 'Enter');
    const link = p.page.locator('#room-list a', { hasText: '늦게 온 목록' });
    await link.waitFor({ timeout: 10_000 });
    releaseFirst();
    await sleep(500);
    assert.equal(await link.count(), 1, 'the room is still listed after the older list arrived');
  } finally {
    await p.context.close();
  }
});
