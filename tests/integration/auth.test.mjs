// --auth jwt end to end: a real chatd with an HS256 secret and a JWKS (RS256, by kid), tokens
// signed here with node:crypto, driven by @stomp/stompjs (WebSocket and SockJS), the old
// stomp.js 2.3.3 over SockJS (passcode), and a raw client writing STOMP frames by hand.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import SockJS from 'sockjs-client';

import { eventually, startChatd, startRedis, stompOverSockJS, stompOverWebSocket } from './harness.mjs';

const require = createRequire(import.meta.url);
const { Stomp } = require('stompjs/lib/stomp.js'); // stomp.js 2.3.3, as the seed's page used it

const SECRET = 'integration-secret-of-at-least-32-bytes';
const b64url = (buf) => Buffer.from(buf).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

function hs256(claims) {
  const signing = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
  return `${signing}.${b64url(createHmac('sha256', SECRET).update(signing).digest())}`;
}

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
function rs256(claims, kid = 'rsa-1') {
  const signing = `${b64url(JSON.stringify({ alg: 'RS256', kid }))}.${b64url(JSON.stringify(claims))}`;
  return `${signing}.${b64url(sign('sha256', Buffer.from(signing), rsa.privateKey))}`;
}

const token = (sub, name, ttl = 600) => hs256({ sub, name, exp: now() + ttl });

let node;
let dir;
let room;

async function rest(path, { tok, method = 'GET', body, origin } = {}) {
  const headers = {};
  if (tok) headers.authorization = `Bearer ${tok}`;
  if (origin) headers.origin = origin;
  return fetch(`${node.base}${path}`, { method, headers, body });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'chatd-auth-'));
  writeFileSync(join(dir, 'secret'), `${SECRET}\n`);
  const jwk = { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'rsa-1', use: 'sig', alg: 'RS256' };
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [jwk] }));
  node = await startChatd({
    name: 'chatd-auth',
    args: ['--auth', 'jwt', '--jwt-secret-file', join(dir, 'secret'), '--jwt-jwks-file', join(dir, 'jwks.json'),
      '--jwt-clock-skew', '0'],
  });
  const res = await rest('/chat/room', { tok: token('owner', 'Owner'), method: 'POST', body: new URLSearchParams({ name: 'lunch' }) });
  assert.equal(res.status, 200, await res.clone().text());
  room = (await res.json()).roomId;
});

after(async () => {
  await node?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const talk = (sender, message) => JSON.stringify({ type: 'TALK', roomId: room, ...(sender ? { sender } : {}), message });

describe('REST needs the token', () => {
  test('no token: 401 JSON; a valid one: 200', async () => {
    for (const path of ['/chat/rooms', `/chat/room/${room}`, `/chat/room/${room}/messages`]) {
      const res = await rest(path);
      assert.equal(res.status, 401, path);
      assert.match(res.headers.get('www-authenticate') ?? '', /Bearer/);
      const body = await res.json();
      assert.equal(body.status, 401);
      assert.match(body.error, /unauthorized/);
    }
    assert.equal((await rest('/chat/room', { method: 'POST', body: new URLSearchParams({ name: 'x' }) })).status, 401);
    assert.equal((await rest('/chat/rooms', { tok: hs256({ sub: 'a', exp: now() - 5 }) })).status, 401);
    const ok = await rest('/chat/rooms', { tok: token('a', 'A') });
    assert.equal(ok.status, 200);
    assert.ok((await ok.json()).some((r) => r.roomId === room));
    assert.equal((await rest('/chat/rooms', { tok: rs256({ sub: 'a', exp: now() + 60 }) })).status, 200, 'RS256 from the JWKS');
    // RFC 9110 §11.1 / RFC 6750 §2.1: the scheme in any case, one or more blanks after it.
    for (const value of [`BEARER ${token('a', 'A')}`, `bearer  ${token('a', 'A')}`]) {
      const res = await fetch(`${node.base}/chat/rooms`, { headers: { authorization: value } });
      assert.equal(res.status, 200, value.slice(0, 8));
    }
    // The pages stay public.
    assert.equal((await rest('/chat/room')).status, 200);
  });
});

describe('STOMP with @stomp/stompjs', () => {
  test('the sender comes from the token; spoofing and ENTER for someone else are refused', async () => {
    const jjang = await stompOverWebSocket(node.base, { connectHeaders: { Authorization: `Bearer ${token('u-jj', '짱구')}` } });
    const other = await stompOverWebSocket(node.base, { connectHeaders: { passcode: token('u-cs', '철수') } });
    try {
      const errors = jjang.subscribe('/user/queue/errors');
      const seen = await other.subscribeConfirmed(`/sub/chat/room/${room}`);
      jjang.publish('/pub/chat/message', talk('철수', 'I am 철수'));
      jjang.publish('/pub/chat/message', JSON.stringify({ type: 'ENTER', roomId: room, sender: '철수' }));
      jjang.publish('/pub/chat/message', talk('짱구', 'mine'));
      jjang.publish('/pub/chat/message', talk(null, 'no sender'));
      const [a, b] = await errors.waitForMessages(2);
      for (const e of [a, b]) {
        assert.equal(e.status, 403);
        assert.match(e.error, /sender must be your own name/);
      }
      const got = await seen.waitForMessages(2);
      assert.deepEqual(got.map((m) => [m.sender, m.message]), [['짱구', 'mine'], ['짱구', 'no sender']]);
      assert.equal(jjang.errors.length, 0, 'a refused SEND keeps the session');
    } finally {
      await jjang.close();
      await other.close();
    }
  });

  test('no, expired or forged token: ERROR with the reason, then close', async () => {
    const cases = [
      [{}, /unauthorized \(no token\)/],
      [{ Authorization: `Bearer ${hs256({ sub: 'a', exp: now() - 1 })}` }, /unauthorized \(token expired\)/],
      [{ passcode: hs256({ sub: 'a', nbf: now() + 60, exp: now() + 600 }) }, /unauthorized \(token not yet valid/],
      [{ passcode: hs256({ sub: 'a' }) }, /unauthorized \(token has no exp\)/],
      [{ passcode: `${token('a', 'A').slice(0, -4)}AAAA` }, /unauthorized \(bad signature\)/],
      [{ passcode: `${b64url('{"alg":"none"}')}.${b64url('{"sub":"a"}')}.` }, /unauthorized \(unsigned tokens/],
      [{ passcode: rs256({ sub: 'a' }, 'rsa-9') }, /unauthorized \(unknown kid\)/],
    ];
    for (const [connectHeaders, reason] of cases) {
      await assert.rejects(stompOverWebSocket(node.base, { connectHeaders }), reason);
    }
  });

  test('a token in the WebSocket URL (access_token) is used when CONNECT has none', async () => {
    const s = await stompOverWebSocket(node.base, { path: `/ws-stomp?access_token=${rs256({ sub: 'u-url', name: 'Url', exp: now() + 60 })}` });
    try {
      const seen = await s.subscribeConfirmed(`/sub/chat/room/${room}`);
      s.publish('/pub/chat/message', talk(null, 'via url'));
      const [m] = await seen.waitForMessages(1);
      assert.equal(m.sender, 'Url');
    } finally {
      await s.close();
    }
  });

  test('a session whose token expires is closed while connected', async () => {
    const s = await stompOverWebSocket(node.base, { connectHeaders: { passcode: token('u-exp', 'Brief', 2) } });
    const seen = await s.subscribeConfirmed(`/sub/chat/room/${room}`);
    await eventually('the expired session closed', () => s.closed, 10_000);
    assert.ok(s.errors.some((f) => f.headers.message === 'token expired'), JSON.stringify(s.errors.map((f) => f.headers)));
    assert.equal(seen.frames.length, 0);
  });

  test('SockJS (xhr-streaming) with access_token', async () => {
    const s = await stompOverSockJS(node.base, 'xhr-streaming', { path: `/ws-stomp?access_token=${token('u-sj', 'Sock')}` });
    try {
      const seen = await s.subscribeConfirmed(`/sub/chat/room/${room}`);
      s.publish('/pub/chat/message', talk('Sock', 'over xhr'));
      assert.equal((await seen.waitForMessages(1))[0].sender, 'Sock');
    } finally {
      await s.close();
    }
  });
});

describe('stomp.js 2.3.3 over SockJS', () => {
  test('passcode carries the token; the sender is the token\'s', async () => {
    const client = Stomp.over(new SockJS(`${node.base}/ws-stomp`, null, { transports: ['xhr-polling'] }));
    client.debug = null;
    client.heartbeat.outgoing = 0;
    client.heartbeat.incoming = 0;
    await new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error('stomp.js CONNECT timed out')), 10_000);
      client.connect('ignored-login', token('u-old', '옛날'), () => { clearTimeout(timer); ok(); },
        (e) => { clearTimeout(timer); fail(new Error(`stomp.js: ${e?.headers?.message ?? e}`)); });
    });
    const got = [];
    const errors = [];
    client.subscribe(`/sub/chat/room/${room}`, (m) => got.push(JSON.parse(m.body)));
    client.subscribe('/user/queue/errors', (m) => errors.push(JSON.parse(m.body)));
    // stomp.js 2.3.3 has no receipts for SUBSCRIBE: send until our own message comes back.
    await eventually('own message delivered', () => {
      client.send('/pub/chat/message', {}, talk('옛날', 'hello from 2014'));
      return got.length > 0;
    });
    client.send('/pub/chat/message', {}, talk('짱구', 'spoof'));
    await eventually('spoof refused', () => errors.length > 0);
    assert.equal(errors[0].status, 403);
    assert.ok(got.every((m) => m.sender === '옛날'));
    await new Promise((ok) => client.disconnect(ok));
  });

  test('without a token: refused with the reason', async () => {
    const client = Stomp.over(new SockJS(`${node.base}/ws-stomp`, null, { transports: ['xhr-streaming'] }));
    client.debug = null;
    const err = await new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error('no ERROR within 10 s')), 10_000);
      client.connect({}, () => fail(new Error('connected without a token')), (e) => { clearTimeout(timer); ok(e); });
    });
    assert.equal(err.headers.message, 'unauthorized (no token)');
  });
});

describe('restricted rooms', () => {
  test('only members and tokens naming the room may list, read, subscribe or send', async () => {
    const alice = token('u-alice', 'Alice');
    const res = await rest('/chat/room', { tok: alice, method: 'POST', body: new URLSearchParams({ name: 'private', members: 'u-bob' }) });
    assert.equal(res.status, 200, await res.clone().text());
    const priv = await res.json();
    assert.equal(priv.restricted, true);
    assert.deepEqual(priv.members.sort(), ['u-alice', 'u-bob']);
    const bob = token('u-bob', 'Bob');
    const eve = token('u-eve', 'Eve');
    const carol = hs256({ sub: 'u-carol', name: 'Carol', rooms: [priv.roomId], exp: now() + 600 });

    const ids = async (tok) => (await (await rest('/chat/rooms', { tok })).json()).map((r) => r.roomId);
    assert.ok((await ids(bob)).includes(priv.roomId));
    assert.ok((await ids(carol)).includes(priv.roomId), 'the rooms claim opens it');
    assert.ok(!(await ids(eve)).includes(priv.roomId), 'not listed for others');
    assert.ok((await ids(eve)).includes(room), 'public rooms still are');
    assert.equal((await rest(`/chat/room/${priv.roomId}`, { tok: eve })).status, 403);
    assert.equal((await rest(`/chat/room/${priv.roomId}/messages`, { tok: eve })).status, 403);
    assert.equal((await rest(`/chat/room/${priv.roomId}/members`, { tok: eve })).status, 403);
    assert.equal((await rest(`/chat/room/${priv.roomId}/messages`, { tok: bob })).status, 200);

    const sBob = await stompOverWebSocket(node.base, { connectHeaders: { passcode: bob } });
    const sEve = await stompOverWebSocket(node.base, { connectHeaders: { passcode: eve } });
    const sCarol = await stompOverWebSocket(node.base, { connectHeaders: { passcode: carol } });
    try {
      const seen = await sBob.subscribeConfirmed(`/sub/chat/room/${priv.roomId}`);
      const carolSeen = await sCarol.subscribeConfirmed(`/sub/chat/room/${priv.roomId}`);
      const eveErrors = sEve.subscribe('/user/queue/errors');
      const eveSeen = sEve.subscribe(`/sub/chat/room/${priv.roomId}`, { receipt: 'eve-sub' });
      sEve.publish('/pub/chat/message', JSON.stringify({ type: 'TALK', roomId: priv.roomId, message: 'let me in' }));
      const [subRefused, sendRefused] = await eveErrors.waitForMessages(2);
      assert.equal(subRefused.status, 403);
      assert.equal(subRefused.receipt, 'eve-sub');
      assert.match(subRefused.error, /may not enter/);
      assert.equal(sendRefused.status, 403);
      sBob.publish('/pub/chat/message', JSON.stringify({ type: 'TALK', roomId: priv.roomId, message: 'members only' }));
      assert.equal((await seen.waitForMessages(1))[0].message, 'members only');
      assert.equal((await carolSeen.waitForMessages(1))[0].sender, 'Bob');
      assert.equal(eveSeen.frames.length, 0);
      assert.equal(sEve.errors.length, 0, 'a refusal keeps the session');
    } finally {
      await Promise.all([sBob.close(), sEve.close(), sCarol.close()]);
    }
  });
});

describe('presence keys on the token', () => {
  test('two people who chose one name are two members; one person with two tabs is one', async () => {
    const res = await rest('/chat/room', { tok: token('owner', 'Owner'), method: 'POST', body: new URLSearchParams({ name: 'namesakes' }) });
    const roomId = (await res.json()).roomId;
    const tabs = [];
    const enter = async (tok) => {
      const s = await stompOverWebSocket(node.base, { connectHeaders: { passcode: tok } });
      tabs.push(s);
      const inbox = await s.subscribeConfirmed(`/sub/chat/room/${roomId}`);
      const receipt = `enter-${tabs.length}`;
      const confirmed = new Promise((ok) => s.client.watchForReceipt(receipt, ok));
      s.publish('/pub/chat/message', JSON.stringify({ type: 'ENTER', roomId, message: '' }), { receipt });
      await confirmed;
      return inbox;
    };
    const members = async () => (await (await rest(`/chat/room/${roomId}/members`, { tok: token('owner', 'Owner') })).json());
    try {
      const first = await enter(token('u-kim-1', 'Kim'));
      await enter(token('u-kim-1', 'Kim')); // the same person's second tab
      await enter(token('u-kim-2', 'Kim'));
      const list = await members();
      assert.equal(list.count, 2);
      assert.deepEqual(list.members, ['Kim', 'Kim'], 'the names shown, never the token subs');
      const entered = () => first.messages.filter((m) => m.type === 'ENTER').map((m) => m.sender);
      await eventually('both people announced, once each', () => entered().length === 2);
      assert.deepEqual(entered(), ['Kim', 'Kim']);
      await tabs.pop().close(); // u-kim-2 leaves: a QUIT, though a Kim is still here
      await eventually('the second Kim left', async () => (await members()).count === 1);
      await eventually('QUIT announced', () => first.messages.some((m) => m.type === 'QUIT' && m.sender === 'Kim'));
    } finally {
      await Promise.all(tabs.map((s) => s.close()));
    }
  });
});

describe('two nodes sharing Redis, one secret', () => {
  let redis, a, b;
  before(async () => {
    redis = await startRedis({ name: 'redis-auth' });
    const args = ['--auth', 'jwt', '--jwt-secret-file', join(dir, 'secret'), '--bus', 'redis', '--store', 'redis', '--redis', redis.url];
    a = await startChatd({ name: 'chatd-auth-a', args });
    b = await startChatd({ name: 'chatd-auth-b', args });
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.stop();
  });

  test('a token proves the same person on every node: sender, presence and restricted rooms', async () => {
    const alice = token('u-alice', 'Alice');
    const bob = token('u-bob', 'Bob');
    const eve = token('u-eve', 'Eve');
    const post = (node, tok, body) => fetch(`${node.base}/chat/room`, { method: 'POST', headers: { authorization: `Bearer ${tok}` }, body });
    const open = await (await post(a, alice, new URLSearchParams({ name: 'both nodes' }))).json();
    const closed = await (await post(a, alice, new URLSearchParams({ name: 'alice and bob', members: 'u-bob' }))).json();
    const sA = await stompOverWebSocket(a.base, { connectHeaders: { passcode: alice } });
    const sB = await stompOverWebSocket(b.base, { connectHeaders: { passcode: bob } });
    const sE = await stompOverWebSocket(b.base, { connectHeaders: { passcode: eve } });
    try {
      const onA = await sA.subscribeConfirmed(`/sub/chat/room/${open.roomId}`);
      const onB = await sB.subscribeConfirmed(`/sub/chat/room/${open.roomId}`);
      for (const s of [sA, sB]) s.publish('/pub/chat/message', JSON.stringify({ type: 'ENTER', roomId: open.roomId, message: '' }));
      sA.publish('/pub/chat/message', JSON.stringify({ type: 'TALK', roomId: open.roomId, message: 'from node a' }));
      const bobErrors = sB.subscribe('/user/queue/errors');
      sB.publish('/pub/chat/message', JSON.stringify({ type: 'TALK', roomId: open.roomId, sender: 'Alice', message: 'spoofed' }));
      assert.equal((await bobErrors.waitForMessages(1))[0].status, 403, 'the other node refuses a spoofed sender too');
      await eventually('bob on b sees alice talk', () => onB.messages.some((m) => m.type === 'TALK' && m.sender === 'Alice'));
      assert.ok(!onA.messages.some((m) => m.message === 'spoofed'));
      for (const node of [a, b]) {
        await eventually(`both members on ${node.base}`, async () => {
          const res = await fetch(`${node.base}/chat/room/${open.roomId}/members`, { headers: { authorization: `Bearer ${eve}` } });
          const body = await res.json();
          return body.count === 2 && body.members.slice().sort().join() === 'Alice,Bob';
        });
      }
      // A restricted room made on a is restricted on b.
      assert.equal((await fetch(`${b.base}/chat/room/${closed.roomId}`, { headers: { authorization: `Bearer ${eve}` } })).status, 403);
      assert.equal((await fetch(`${b.base}/chat/room/${closed.roomId}`, { headers: { authorization: `Bearer ${bob}` } })).status, 200);
      const eveErrors = sE.subscribe('/user/queue/errors');
      sE.subscribe(`/sub/chat/room/${closed.roomId}`, { receipt: 'eve-in' });
      const [refused] = await eveErrors.waitForMessages(1);
      assert.equal(refused.status, 403);
      await sB.subscribeConfirmed(`/sub/chat/room/${closed.roomId}`);
    } finally {
      await Promise.all([sA.close(), sB.close(), sE.close()]);
    }
  });
});

describe('a raw client', () => {
  // Sends frames written by hand and resolves with everything the server wrote until it closed
  // or `untilText` appeared.
  function raw(frames, untilText, path = '/ws-stomp') {
    return new Promise((ok, fail) => {
      const ws = new WebSocket(`${node.base.replace(/^http/, 'ws')}${path}`, ['v12.stomp']);
      let text = '';
      const timer = setTimeout(() => { ws.terminate(); fail(new Error(`raw client: timed out; got ${text}`)); }, 10_000);
      ws.on('open', () => { for (const f of frames) ws.send(f); });
      ws.on('message', (d) => {
        text += d.toString();
        if (untilText && text.includes(untilText)) { clearTimeout(timer); ws.close(); ok(text); }
      });
      ws.on('close', () => { clearTimeout(timer); ok(text); });
      ws.on('error', (e) => { clearTimeout(timer); fail(e); });
    });
  }

  test('a spoofed SEND gets 403 on the error queue; ENTER announces the token\'s name', async () => {
    const out = await raw([
      `CONNECT\naccept-version:1.2\nhost:chatd\npasscode:${token('u-raw', 'Raw')}\n\n\0`,
      'SUBSCRIBE\nid:e\ndestination:/user/queue/errors\n\n\0',
      `SUBSCRIBE\nid:r\ndestination:/sub/chat/room/${room}\nreceipt:ready\n\n\0`,
      `SEND\ndestination:/pub/chat/message\nreceipt:s1\n\n${JSON.stringify({ type: 'ENTER', roomId: room, sender: 'Admin' })}\0`,
      `SEND\ndestination:/pub/chat/message\n\n${JSON.stringify({ type: 'ENTER', roomId: room })}\0`,
    ], 'Raw님 등장!');
    assert.match(out, /"status":403/);
    assert.match(out, /receipt-id:s1/);
    assert.doesNotMatch(out, /Admin님/);
    assert.match(out, /"sender":"Raw"/);
  });

  test('CONNECT without a token: ERROR, then the server closes', async () => {
    const out = await raw(['CONNECT\naccept-version:1.2\nhost:chatd\n\n\0']);
    assert.match(out, /^ERROR\nmessage:unauthorized \(no token\)/);
  });
});

describe('SockJS sessions bound to the token\'s user', () => {
  test('another user\'s token cannot send into or read a session', async () => {
    const sid = Math.random().toString(36).slice(2, 10);
    const url = (t, tok) => `${node.base}/ws-stomp/000/${sid}/${t}?access_token=${tok}`;
    const mine = token('u-bind', 'Bound');
    const theirs = token('u-thief', 'Thief');
    const open = await fetch(url('xhr', mine), { method: 'POST' });
    assert.equal(await open.text(), 'o\n');
    const connect = JSON.stringify(['CONNECT\naccept-version:1.2\n\n\0']);
    assert.equal((await fetch(url('xhr_send', theirs), { method: 'POST', body: connect })).status, 404);
    assert.equal((await fetch(url('xhr', theirs), { method: 'POST' })).status, 404);
    assert.equal((await fetch(`${node.base}/ws-stomp/000/${sid}/xhr_send`, { method: 'POST', body: connect })).status, 404);
    assert.equal((await fetch(url('xhr_send', mine), { method: 'POST', body: connect })).status, 204);
    const reply = await (await fetch(url('xhr', mine), { method: 'POST' })).text();
    assert.match(reply, /CONNECTED/);
  });
});

describe('origins', () => {
  test('a foreign Origin is refused on the WebSocket upgrade, SockJS and REST; our own is not', async () => {
    const upgrade = (origin) => new Promise((ok) => {
      const ws = new WebSocket(`${node.base.replace(/^http/, 'ws')}/ws-stomp`, ['v12.stomp'], { origin });
      ws.on('open', () => { ws.close(); ok(101); });
      ws.on('unexpected-response', (_req, res) => { ok(res.statusCode); res.resume(); });
      ws.on('error', () => {});
    });
    assert.equal(await upgrade('https://evil.example'), 403);
    assert.equal(await upgrade(node.base), 101);
    assert.equal(await upgrade('http://localhost:3000'), 101, 'localhost pages are allowed by default');

    const info = await fetch(`${node.base}/ws-stomp/info`, { headers: { origin: 'https://evil.example' } });
    assert.equal(info.status, 403);
    const xhr = await fetch(`${node.base}/ws-stomp/000/abcdefgh/xhr`, { method: 'POST', headers: { origin: 'https://evil.example' } });
    assert.equal(xhr.status, 403);
    assert.equal((await fetch(`${node.base}/ws-stomp/info`, { headers: { origin: node.base } })).status, 200);

    const list = await rest('/chat/rooms', { tok: token('a', 'A'), origin: 'https://evil.example' });
    assert.equal(list.status, 403);
    assert.match((await list.json()).error, /origin not allowed/);
    const local = await rest('/chat/rooms', { tok: token('a', 'A'), origin: 'http://localhost:5173' });
    assert.equal(local.status, 200);
    assert.equal(local.headers.get('access-control-allow-origin'), 'http://localhost:5173');
    const metrics = await (await fetch(`${node.base}/metrics`)).text();
    assert.match(metrics, /reason="foreign_origin"\} [4-9]/);
    // The log line names the client's address, and the Origin apart (it was in client=).
    assert.match(readFileSync(node.log, 'utf8'), /refused reason=foreign_origin client=127\.0\.0\.1 origin=https:\/\/evil\.example/);
  });
});
