// The pages under --auth jwt, in Debian's chromium: a person logs in from a nickname with the
// DEV-ONLY --auth-dev-mint token endpoint, creates and enters a room, and talks; the name others
// see is the token's, and a page that tries to speak as someone else is refused by the server.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { artifactsDir, startChatd } from './harness.mjs';

const SECRET = 'browser-test-secret-of-at-least-32-bytes';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];

let node;
let browser;
let dir;
const shots = join(artifactsDir, 'browser-auth');

before(async () => {
  mkdirSync(shots, { recursive: true });
  dir = mkdtempSync(join(tmpdir(), 'chatd-browser-auth-'));
  writeFileSync(join(dir, 'secret'), `${SECRET}\n`);
  node = await startChatd({
    name: 'chatd-browser-auth',
    args: ['--auth', 'jwt', '--jwt-secret-file', join(dir, 'secret'), '--auth-dev-mint', 'on'],
  });
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium', args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await node?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function openPerson() {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 }, locale: 'ko-KR' });
  const page = await context.newPage();
  const person = { context, page, errors: [] };
  page.on('pageerror', (e) => person.errors.push(String(e)));
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) person.errors.push(m.text()); });
  return person;
}

function talkOn(page) {
  return page.$$eval('#messages li.msg', (lis) => lis.map((li) => [
    li.querySelector('.sender').textContent, li.querySelector('.text').textContent,
  ]));
}

test('log in from a nickname, create a room, talk as the token\'s name; speaking as another is refused', async () => {
  const a = await openPerson();
  const b = await openPerson();
  try {
    // The list page asks for a nickname before it can list anything.
    await a.page.goto(`${node.base}/chat/room`);
    await a.page.waitForFunction(() => /로그인/.test(document.querySelector('#status').textContent), null, { timeout: 10_000 });
    await a.page.fill('#nickname', '짱구');
    await a.page.dispatchEvent('#nickname', 'change');
    await a.page.fill('#room-name', '점심 약속');
    await a.page.press('#room-name', 'Enter');
    const link = a.page.locator('#room-list a', { hasText: '점심 약속' });
    await link.waitFor({ timeout: 10_000 });
    const token = await a.page.evaluate(() => window.chatdAuth.token());
    assert.match(token ?? '', /^[\w-]+\.[\w-]+\.[\w-]+$/, 'the page holds a JWT');
    await link.click();
    await a.page.waitForSelector('#conn[data-state="connected"]', { timeout: 15_000 });
    const roomUrl = a.page.url();

    await b.page.goto(`${node.base}/chat/room`);
    await b.page.fill('#nickname', '철수');
    await b.page.dispatchEvent('#nickname', 'change');
    await b.page.locator('#room-list a', { hasText: '점심 약속' }).click();
    await b.page.waitForSelector('#conn[data-state="connected"]', { timeout: 15_000 });
    assert.equal(b.page.url(), roomUrl);

    await a.page.fill('#text', '12시 어때?');
    await a.page.press('#text', 'Enter');
    await b.page.waitForFunction(() => [...document.querySelectorAll('#messages li.msg .text')].some((t) => t.textContent === '12시 어때?'),
      null, { timeout: 10_000 });

    // A page script that sends as someone else: the server refuses it, nobody sees it.
    const refused = await b.page.evaluate(async (roomId) => {
      const { client } = window.chatdRoom;
      const errors = [];
      const sub = client.subscribe('/user/queue/errors', (m) => errors.push(JSON.parse(m.body)));
      client.publish({ destination: '/pub/chat/message', body: JSON.stringify({ type: 'TALK', roomId, sender: '짱구', message: '나 짱구인데' }) });
      for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      sub.unsubscribe();
      return errors;
    }, roomUrl.split('/').pop().split('?')[0]);
    assert.equal(refused.length, 1, JSON.stringify(refused));
    assert.equal(refused[0].status, 403);

    await b.page.fill('#text', '좋아');
    await b.page.press('#text', 'Enter');
    await a.page.waitForFunction(() => [...document.querySelectorAll('#messages li.msg .text')].some((t) => t.textContent === '좋아'),
      null, { timeout: 10_000 });
    const seenByA = await talkOn(a.page);
    assert.deepEqual(seenByA.filter(([, t]) => t !== ''), [['짱구', '12시 어때?'], ['철수', '좋아']]);
    assert.ok(!seenByA.some(([, t]) => t === '나 짱구인데'));
    await a.page.screenshot({ path: join(shots, 'a.png') });
    assert.deepEqual(a.errors, []);
    assert.deepEqual(b.errors, []);
  } finally {
    await a.context.close();
    await b.context.close();
  }
});

// An HS256 token for `name`, valid for `ttl` seconds, as --auth-dev-mint would make it.
function mint(name, ttl) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const exp = Math.floor(Date.now() / 1000) + ttl;
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: `dev:${name}`, name, exp })}`;
  return { token: `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`, exp };
}

test('a token about to expire is replaced before the room page connects, and CONNECT carries it', async () => {
  // 30 s left: the server still takes it, the page must not start a connection on it (its
  // margin is 60 s), or the connection ends at expiry and every reconnect is refused.
  const old = mint('맹구', 30);
  const res = await fetch(`${node.base}/chat/room?name=${encodeURIComponent('저녁')}`, {
    method: 'POST', headers: { Authorization: `Bearer ${old.token}` },
  });
  assert.equal(res.status, 200);
  const { roomId } = await res.json();
  const p = await openPerson();
  try {
    await p.context.addInitScript(([t, exp]) => {
      localStorage.setItem('chatd.nickname', '맹구');
      if (!sessionStorage.getItem('chatd.token')) {
        sessionStorage.setItem('chatd.token', JSON.stringify({ token: t, name: '맹구', nick: '맹구', exp }));
      }
    }, [old.token, old.exp]);
    const connects = [];
    p.page.on('websocket', (ws) => ws.on('framesent', (f) => {
      const s = String(f.payload);
      if (s.includes('CONNECT')) connects.push({ url: ws.url(), frame: s });
    }));
    await p.page.goto(`${node.base}/chat/room/enter/${roomId}?transport=websocket`);
    await p.page.waitForSelector('#conn[data-state="connected"]', { timeout: 15_000 });
    const now = await p.page.evaluate(() => window.chatdAuth.token());
    assert.ok(now && now !== old.token, 'the page fetched a new token');
    assert.ok(connects.length >= 1);
    const last = connects.at(-1);
    assert.ok(last.frame.includes(`Bearer ${now}`), 'CONNECT carries the new token in Authorization');
    assert.ok(!last.url.includes(encodeURIComponent(old.token)), 'the old token is not on the URL');
    assert.deepEqual(p.errors, []);
  } finally {
    await p.context.close();
  }
});
