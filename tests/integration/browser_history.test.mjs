// The room page's history in Debian's chromium (playwright-core) against a real chatd: a page
// that goes offline while another client talks comes back with every message once, in order,
// and no "missing" notice (over SockJS, plain WebSocket and xhr-streaming); a page opened late
// shows the last messages; "이전 메시지 보기" pages older ones in; a send cut off before its
// RECEIPT is sent again after the reconnect and published once; a real loss (history trimmed
// while away) is said, and a gap larger than one replay is filled without a notice.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { chromium } from 'playwright-core';

import { artifactsDir, createRoom, eventually, startChatd, stompOverWebSocket } from './harness.mjs';
import { closeAll, dest, talkWithSeq } from './resume.mjs';

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
// The other client sends faster than a person types.
const UNLIMITED = ['--send-rate', '0', '--room-send-rate', '0'];
const shots = join(artifactsDir, 'browser');

let browser;
const nodes = [];
const sessions = [];

before(async () => {
  mkdirSync(shots, { recursive: true });
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium', args: CHROMIUM_ARGS });
});

after(async () => {
  await closeAll(sessions);
  await browser?.close();
  for (const n of nodes) await n.stop();
});

async function node(name, args = []) {
  const n = await startChatd({ name, args: [...UNLIMITED, ...args] });
  nodes.push(n);
  return n;
}

// The node most tests share, started on first use.
let shared;
const sharedNode = () => (shared ??= node('chatd-browser-history'));

async function talker(n) {
  const s = await stompOverWebSocket(n.base);
  sessions.push(s);
  return s;
}

// Sends TALKs `prefix`0.. `prefix`(count-1) in order, each once its predecessor's RECEIPT came;
// resolves with their seqs.
async function sendAll(session, roomId, sender, prefix, count) {
  const seqs = [];
  for (let i = 0; i < count; i++) {
    const seq = await talkWithSeq(session, roomId, sender, `${prefix}${i}`);
    assert.equal(typeof seq, 'number', `RECEIPT for ${prefix}${i}`);
    seqs.push(seq);
  }
  return seqs;
}

// A person (own browser context, nickname already chosen) on the room page.
async function openRoom(n, roomId, nick, query = '') {
  const context = await browser.newContext({ viewport: { width: 800, height: 700 }, locale: 'ko-KR' });
  await context.addInitScript((name) => localStorage.setItem('chatd.nickname', name), nick);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${n.base}/chat/room/enter/${encodeURIComponent(roomId)}${query}`);
  await page.waitForSelector('#conn[data-state="connected"]', { timeout: 15_000 });
  return { context, page, errors };
}

// The chat lines the page shows, in order: [seq, text].
function talkOn(page) {
  return page.$$eval('#messages li.msg', (lis) => lis.map((li) => [Number(li.dataset.seq), li.querySelector('.text').textContent]));
}

async function waitForTexts(page, texts, timeoutMs = 20_000) {
  let shown = [];
  await eventually(`the page shows ${texts.length} lines`, async () => {
    shown = (await talkOn(page)).map(([, t]) => t);
    const has = new Set(shown);
    return texts.every((t) => has.has(t));
  }, timeoutMs).catch((e) => {
    throw new Error(`${e.message}; missing ${JSON.stringify(texts.filter((t) => !shown.includes(t)))}, shown ${JSON.stringify(shown)}`);
  });
}

// Notices that say messages are missing (HISTORY notices and any error notice).
function lossNotices(page) {
  return page.$$eval('#messages li.notice.error, #messages li[data-history]', (lis) => lis.map((li) => li.textContent));
}

// Takes the page offline until it has noticed, runs `meanwhile`, and brings it back online
// and connected.
async function awayWhile(person, meanwhile) {
  await person.context.setOffline(true);
  await person.page.waitForSelector('#conn[data-state="reconnecting"]', { timeout: 30_000 });
  const result = await meanwhile();
  await person.context.setOffline(false);
  await person.page.waitForSelector('#conn[data-state="connected"]', { timeout: 30_000 });
  return result;
}

const names = (prefix, from, to) => Array.from({ length: to - from }, (_, i) => `${prefix}${from + i}`);

describe('the room page keeps the whole conversation', () => {
  for (const [label, query] of [['SockJS (websocket)', ''], ['plain WebSocket', '?raw=1'], ['SockJS xhr-streaming', '?transport=xhr-streaming']]) {
    test(`offline while 20 messages are sent, then online: each shows once, in order, no loss notice (${label})`, async () => {
      const n = await sharedNode();
      const room = await createRoom(n.base, `offline ${label}`);
      const other = await talker(n);
      const a = await openRoom(n, room.roomId, '지하철', query);
      try {
        await a.page.locator('#messages li.notice', { hasText: '지하철님 등장!' }).waitFor({ timeout: 10_000 });
        const [first] = await sendAll(other, room.roomId, 'other', 'before-', 1);
        await waitForTexts(a.page, ['before-0']);

        const missed = await awayWhile(a, async () => {
          const seqs = await sendAll(other, room.roomId, 'other', 'away-', 20);
          // Nothing can reach the page while it is offline.
          assert.deepEqual((await talkOn(a.page)).map(([, t]) => t), ['before-0']);
          await a.page.screenshot({ path: join(shots, `history-offline-${query ? query.slice(1).replace(/\W/g, '-') : 'sockjs'}.png`) });
          return seqs;
        });
        const expected = ['before-0', ...names('away-', 0, 20)];
        await waitForTexts(a.page, expected);
        await sendAll(other, room.roomId, 'other', 'live-', 1);
        await waitForTexts(a.page, [...expected, 'live-0']);
        await sleep(300); // a duplicate would be here by now
        const shown = await talkOn(a.page);
        assert.deepEqual(shown.map(([, t]) => t), [...expected, 'live-0'], 'every message once, in order');
        assert.deepEqual(shown.slice(0, 21).map(([s]) => s), [first, ...missed], 'with the seqs the server gave');
        assert.deepEqual(await lossNotices(a.page), [], 'no "missing" notice when nothing is missing');
        assert.equal(await a.page.locator('#messages li.notice', { hasText: '지하철님 등장!' }).count(), 1, 'ENTER once');
        assert.deepEqual(a.errors, []);
      } finally {
        await a.context.close();
      }
    });
  }

  test('a page opened later shows the last messages; "이전 메시지 보기" pages the older ones in, in order', async () => {
    const n = await sharedNode();
    const room = await createRoom(n.base, 'late comer');
    const other = await talker(n);
    await sendAll(other, room.roomId, 'other', 'old-', 120);
    const b = await openRoom(n, room.roomId, '늦게옴');
    try {
      // x-history: 50 on entering: the room's newest 50, in order. The page's own ENTER may be
      // one of them (it is published while the history is read), so 49 or 50 of the lines.
      await waitForTexts(b.page, names('old-', 71, 120));
      await b.page.locator('#messages li.notice', { hasText: '늦게옴님 등장!' }).waitFor({ timeout: 10_000 });
      const first = (await talkOn(b.page)).map(([, t]) => t);
      assert.ok(first.length === 49 || first.length === 50, `${first.length} lines`);
      assert.deepEqual(first, names('old-', 120 - first.length, 120));
      const older = b.page.locator('#older');
      assert.ok(await older.isVisible(), 'the load-older control is there');
      await b.page.screenshot({ path: join(shots, 'history-late-comer.png') });

      await older.click();
      const more = 120 - first.length - 50;
      await waitForTexts(b.page, names('old-', more, 120));
      assert.deepEqual((await talkOn(b.page)).map(([, t]) => t), names('old-', more, 120), '50 more above, in order');
      await older.click();
      await waitForTexts(b.page, names('old-', 0, 120));
      const shown = await talkOn(b.page);
      assert.deepEqual(shown.map(([, t]) => t), names('old-', 0, 120), 'all 120, oldest first, each once');
      for (let i = 1; i < shown.length; i++) assert.ok(shown[i][0] > shown[i - 1][0], 'seqs rise down the page');
      await eventually('the control hides at the start of the room', async () => !(await older.isVisible()));

      // Live messages still land at the bottom.
      await sendAll(other, room.roomId, 'other', 'new-', 1);
      await waitForTexts(b.page, ['new-0']);
      assert.equal((await talkOn(b.page)).at(-1)[1], 'new-0');
      assert.deepEqual(await lossNotices(b.page), []);
      assert.deepEqual(b.errors, []);
    } finally {
      await b.context.close();
    }
  });

  test('a send cut off before its RECEIPT is sent again after the reconnect and published once', async () => {
    const n = await sharedNode();
    const room = await createRoom(n.base, 'retry');
    const watcher = await talker(n);
    const seen = await watcher.subscribeConfirmed(dest(room));
    const a = await openRoom(n, room.roomId, '재전송');
    try {
      await a.page.locator('#messages li.notice', { hasText: '재전송님 등장!' }).waitFor({ timeout: 10_000 });
      await eventually('ENTER confirmed', () => a.page.evaluate(() => window.chatdRoom.outbox.size === 0));
      await a.page.fill('#text', '한 번만 ☝️');
      // Send, and drop the socket in the same turn: the RECEIPT cannot reach the page.
      const waiting = await a.page.evaluate(() => {
        document.querySelector('#composer').requestSubmit();
        window.chatdRoom.client.forceDisconnect();
        return window.chatdRoom.outbox.size;
      });
      assert.equal(waiting, 1, 'the send waits for its RECEIPT');
      await a.page.waitForSelector('#conn[data-state="connected"]', { timeout: 15_000 });
      await waitForTexts(a.page, ['한 번만 ☝️']);
      await eventually('the retry was confirmed', () => a.page.evaluate(() => window.chatdRoom.outbox.size === 0));
      watcher.chat('TALK', room.roomId, 'watcher', 'after');
      await waitForTexts(a.page, ['한 번만 ☝️', 'after']);
      await sleep(300);
      assert.deepEqual((await talkOn(a.page)).map(([, t]) => t), ['한 번만 ☝️', 'after'], 'shown once');
      const published = seen.messages.filter((m) => m.type === 'TALK').map((m) => m.message);
      assert.deepEqual(published, ['한 번만 ☝️', 'after'], 'published once');
      assert.deepEqual(a.errors, []);
    } finally {
      await a.context.close();
    }
  });
});

describe('what the server could not replay', () => {
  test('history trimmed while away: the page says so and shows what is kept', async () => {
    const n = await node('chatd-browser-history-small', ['--history-size', '10']);
    const room = await createRoom(n.base, 'trimmed');
    const other = await talker(n);
    const a = await openRoom(n, room.roomId, '오래자리비움');
    try {
      await sendAll(other, room.roomId, 'other', 'before-', 1);
      await waitForTexts(a.page, ['before-0']);
      await awayWhile(a, () => sendAll(other, room.roomId, 'other', 'away-', 30));
      await waitForTexts(a.page, names('away-', 20, 30));
      const notice = a.page.locator('#messages li[data-history="partial/retention"]');
      await notice.waitFor({ timeout: 10_000 });
      assert.equal(await notice.count(), 1);
      assert.deepEqual((await talkOn(a.page)).map(([, t]) => t), ['before-0', ...names('away-', 20, 30)]);
      await a.page.screenshot({ path: join(shots, 'history-trimmed.png') });
      assert.deepEqual(a.errors, []);
    } finally {
      await a.context.close();
    }
  });

  test('more missed than one replay holds: the rest is paged in over REST, no notice', async () => {
    const n = await node('chatd-browser-history-replay', ['--max-replay', '20']);
    const room = await createRoom(n.base, 'long away');
    const other = await talker(n);
    const a = await openRoom(n, room.roomId, '긴터널');
    try {
      await sendAll(other, room.roomId, 'other', 'before-', 1);
      await waitForTexts(a.page, ['before-0']);
      await awayWhile(a, () => sendAll(other, room.roomId, 'other', 'away-', 75));
      const expected = ['before-0', ...names('away-', 0, 75)];
      await waitForTexts(a.page, expected);
      await sleep(300);
      assert.deepEqual((await talkOn(a.page)).map(([, t]) => t), expected, 'all 75 once, in order');
      assert.deepEqual(await lossNotices(a.page), []);
      assert.deepEqual(a.errors, []);
    } finally {
      await a.context.close();
    }
  });
});
