// Presence in the browser: two people on two chatd nodes sharing Redis open the same room in
// Chromium; each sees the other in the page's member list; when one closes the tab, the other
// page shows the leave (the QUIT notice) and the list shrinks. Screenshots go to test-artifacts/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { artifactsDir, createRoom, startChatd, startRedis } from './harness.mjs';
import { presenceArgs } from './presence.mjs';

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
const shots = join(artifactsDir, 'browser-presence');

let redis, a, b, browser;

before(async () => {
  mkdirSync(shots, { recursive: true });
  redis = await startRedis({ name: 'redis-browser-presence' });
  const args = ['--bus', 'redis', '--store', 'redis', '--redis', redis.url, ...presenceArgs];
  a = await startChatd({ name: 'browser-presence-a', args });
  b = await startChatd({ name: 'browser-presence-b', args });
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium', args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await a?.stop();
  await b?.stop();
  await redis?.stop();
});

// Opens the room page on `node` as `nickname` (typed into the page's nickname form).
async function openRoom(node, roomId, nickname) {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 }, locale: 'ko-KR' });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${node.base}/chat/room/enter/${roomId}`);
  await page.fill('#nick-input', nickname);
  await page.click('#nick-form button[type="submit"]');
  await page.waitForSelector('#conn[data-state="connected"]', { timeout: 10_000 });
  return { context, page, errors };
}

const memberNames = (page) => page.$$eval('#member-list li', (lis) => lis.map((li) => li.textContent).sort());

async function waitForMembers(page, names) {
  await page.waitForFunction((want) => {
    const got = [...document.querySelectorAll('#member-list li')].map((li) => li.textContent).sort();
    return JSON.stringify(got) === JSON.stringify(want) &&
      document.querySelector('#member-count').textContent === String(want.length);
  }, names.slice().sort(), { timeout: 15_000 });
}

test('two people each see the other in the member list; a closed tab shows the leave', async () => {
  const room = await createRoom(a.base, '누가 있나');
  const alice = await openRoom(a, room.roomId, '앨리스');
  const bob = await openRoom(b, room.roomId, '밥');
  try {
    await waitForMembers(alice.page, ['밥', '앨리스']);
    await waitForMembers(bob.page, ['밥', '앨리스']);
    assert.deepEqual(await memberNames(bob.page), ['밥', '앨리스'].sort());
    await alice.page.click('#members summary');
    await alice.page.screenshot({ path: join(shots, '1-both-here.png') });

    await bob.context.close(); // the tab closes: a QUIT if the page gets to send it, else a drop
    await alice.page.locator('#messages li.notice', { hasText: '밥님 퇴장!' }).waitFor({ timeout: 15_000 });
    await waitForMembers(alice.page, ['앨리스']);
    await alice.page.screenshot({ path: join(shots, '2-bob-left.png') });
    assert.equal(await alice.page.locator('#messages li.notice', { hasText: '밥님 등장!' }).count(), 1,
      'bob entered once');
    assert.deepEqual(alice.errors, []);
  } finally {
    await alice.context.close();
  }
});
