// HTTP/1.1 where RFC 9110 and 9112 say MUST: HEAD, Expect: 100-continue, Host, the absolute
// form, the per-route body bound; and what a client following the room list's links gets.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';

import { rawExchange as exchange, startChatd } from './harness.mjs';

describe('HTTP/1.1 as the RFCs ask', () => {
  let node;
  before(async () => { node = await startChatd(); });
  after(async () => node?.stop());

  test('HEAD answers like GET without a body, on every route and for errors too', async () => {
    for (const path of ['/healthz', '/metrics', '/chat/rooms', '/chat/room', '/ws-stomp/info', '/no/such/path', '/assets/rooms.js']) {
      const get = await fetch(`${node.base}${path}`);
      const getBody = await get.arrayBuffer();
      // Two requests on one connection: a body after the HEAD answer would be read as the
      // second answer's start.
      const r = await exchange(node.port,
        `HEAD ${path} HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      const head = r.text.slice(0, r.text.indexOf('\r\n\r\n') + 4);
      const after = r.text.slice(head.length);
      assert.match(head, new RegExp(`^HTTP/1\\.1 ${get.status} `), `${path}: HEAD has GET's status`);
      // /ws-stomp/info's entropy is a random number of varying length.
      const length = path === '/ws-stomp/info' ? '[1-9]\\d*' : getBody.byteLength;
      assert.match(head, new RegExp(`\r\nContent-Length: ${length}\r\n`, 'i'), `${path}: GET's length`);
      assert.match(after, /^HTTP\/1\.1 200 /, `${path}: the next answer follows the head at once`);
    }
    // A route that only takes POST says so, still without a body.
    const r = await exchange(node.port, 'HEAD /ws-stomp/000/abc/xhr_send HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(r.text, /^HTTP\/1\.1 405 /);
    assert.ok(r.text.endsWith('\r\n\r\n'), 'no body after the 405 head');
  });

  test('every answer says nosniff; the pages carry a CSP and may not be framed by other sites', async () => {
    for (const path of ['/chat/rooms', '/no/such/path', '/assets/room.js', '/ws-stomp/info', '/healthz']) {
      assert.equal((await fetch(`${node.base}${path}`)).headers.get('x-content-type-options'), 'nosniff', path);
    }
    const page = await fetch(`${node.base}/chat/room`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'self'/);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    assert.equal(page.headers.get('x-frame-options'), 'SAMEORIGIN');
    assert.equal((await fetch(`${node.base}/assets/room.js`)).headers.get('content-security-policy'), null, 'pages only');
  });

  test('pages and assets carry an ETag; a revalidation gets 304 without a body, on a kept-alive connection', async () => {
    const first = await fetch(`${node.base}/assets/room.js`);
    const tag = first.headers.get('etag');
    assert.match(tag ?? '', /^"[0-9a-f]{16}"$/);
    await first.arrayBuffer();
    const r = await exchange(node.port,
      `GET /assets/room.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: "other", W/${tag}\r\n\r\n` +
      'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const head = r.text.slice(0, r.text.indexOf('\r\n\r\n') + 4);
    assert.match(head, /^HTTP\/1\.1 304 /);
    assert.match(head, new RegExp(`\r\nETag: ${tag}\r\n`, 'i'));
    assert.doesNotMatch(head, /Content-Length/i);
    assert.match(r.text.slice(head.length), /^HTTP\/1\.1 200 /, 'the next answer follows the 304 head at once');
    const changed = await fetch(`${node.base}/assets/room.js`, { headers: { 'if-none-match': '"0000000000000000"' } });
    assert.equal(changed.status, 200);
  });

  // s20 probe: a chunk-size line (or extension, or trailer) that never ends was kept whole in
  // the read buffer: one connection took chatd from 15 MiB to over 1 GiB.
  test('a chunked body line that never ends is refused with 413, not buffered', async () => {
    const s = connect(node.port, '127.0.0.1');
    let text = '';
    s.on('data', (d) => { text += d.toString('latin1'); });
    s.on('error', () => {});
    await new Promise((ok) => s.once('connect', ok));
    s.write('POST /chat/room HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n' +
      'Content-Type: application/x-www-form-urlencoded\r\n\r\n1;');
    const block = 'a'.repeat(64 * 1024);
    let sent = 0;
    // A block at a time, reading between: the server answers and closes once its bound is hit.
    for (; sent < 64 && !text.includes('\r\n\r\n') && !s.destroyed; sent++) {
      s.write(block);
      await new Promise((ok) => setTimeout(ok, 50));
    }
    s.destroy();
    assert.match(text, /^HTTP\/1\.1 413 /, `after ${sent} blocks of 64 KiB: ${text.slice(0, 80)}`);
    assert.ok(sent < 16, `read ${sent} blocks before refusing`);
  });

  test('Expect: 100-continue gets "100 Continue" before the body, or the final refusal at once', async () => {
    const body = JSON.stringify({ name: 'continued' });
    let sent = false;
    const r = await exchange(node.port,
      `POST /chat/room HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n` +
      'Expect: 100-continue\r\nConnection: close\r\n\r\n', {
        then: (text, s) => { if (!sent && text.includes('\r\n\r\n')) { sent = true; s.write(body); } },
      });
    assert.match(r.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
    assert.match(r.text, /"name":"continued"/);
    // Too large for the route: 413 without waiting for a body that was never sent.
    const big = await exchange(node.port,
      'POST /chat/room HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\nExpect: 100-continue\r\n\r\n',
      { until: (t) => t.includes('\r\n\r\n') });
    assert.match(big.text, /^HTTP\/1\.1 413 /);
  });

  test('the body bound follows the route, not the query string', async () => {
    // SockJS xhr_send takes a batch of frames (~129 KiB), with or without a query (access_token).
    const batch = JSON.stringify(['x'.repeat(60_000)]);
    for (const q of ['', '?access_token=abc']) {
      const res = await fetch(`${node.base}/ws-stomp/000/nosuch${q ? 'q' : ''}/xhr_send${q}`, { method: 'POST', body: batch });
      assert.equal(res.status, 404, `xhr_send${q}: read, then no such session (not 413)`);
    }
    // Other routes keep --max-http-body (16 KiB), whatever their query ends with.
    const res = await fetch(`${node.base}/chat/room?name=x&y=/xhr_send`, { method: 'POST', body: 'a'.repeat(100_000) });
    assert.equal(res.status, 413);
  });

  test('Host: an HTTP/1.1 request without one, or with two, is refused; HTTP/1.0 needs none', async () => {
    const none = await exchange(node.port, 'GET /healthz HTTP/1.1\r\n\r\n');
    assert.match(none.text, /^HTTP\/1\.1 400 /);
    const two = await exchange(node.port, 'GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n');
    assert.match(two.text, /^HTTP\/1\.1 400 /);
    const old = await exchange(node.port, 'GET /healthz HTTP/1.0\r\n\r\n');
    assert.match(old.text, /^HTTP\/1\.0 200 /);
  });

  test('the absolute form (GET http://host/path) is served like the path', async () => {
    const r = await exchange(node.port,
      `GET http://127.0.0.1:${node.port}/chat/rooms?limit=1 HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n`);
    assert.match(r.text, /^HTTP\/1\.1 200 /);
    const bad = await exchange(node.port, 'GET ftp://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(bad.text, /^HTTP\/1\.1 400 /);
  });

  test('a WebSocket key that is not 16 bytes of base64 is refused', async () => {
    const upgrade = (key) => 'GET /ws-stomp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`;
    const bad = await exchange(node.port, upgrade('!!!!!!!!!!!!!!!!!!!!!!!!'), { until: (t) => t.includes('\r\n\r\n') });
    assert.match(bad.text, /^HTTP\/1\.1 400 /);
    const good = await exchange(node.port, upgrade('dGhlIHNhbXBsZSBub25jZQ=='), { until: (t) => t.includes('\r\n\r\n') });
    assert.match(good.text, /^HTTP\/1\.1 101 /);
  });

  // RFC 9110 §5.3: two field lines of one name are one list (Beast reads only the first line).
  test('header lines of one name: Connection and Sec-WebSocket-Protocol join; a second key is refused', async () => {
    const split = await exchange(node.port, 'GET /ws-stomp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n' +
      'Connection: keep-alive\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', { until: (t) => t.includes('\r\n\r\n') });
    assert.match(split.text, /^HTTP\/1\.1 101 /);
    const protocols = await exchange(node.port, 'GET /ws-stomp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Protocol: v10.stomp\r\nSec-WebSocket-Protocol: v12.stomp\r\nSec-WebSocket-Version: 13\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', { until: (t) => t.includes('\r\n\r\n') });
    assert.match(protocols.text, /^HTTP\/1\.1 101 [^]*Sec-WebSocket-Protocol: v12\.stomp\r\n/);
    const twoKeys = await exchange(node.port, 'GET /ws-stomp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n',
    { until: (t) => t.includes('\r\n\r\n') });
    assert.match(twoKeys.text, /^HTTP\/1\.1 400 /, 'RFC 6455 §11.3.1: the key appears once');
    const close = await exchange(node.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: foo\r\nConnection: close\r\n\r\n');
    assert.match(close.text, /^HTTP\/1\.1 200 /);
    assert.equal(close.end, 'eof', 'the server closed after answering');
  });

  // RFC 9110 §8.3.1: media types are case-insensitive (Spring reads them so).
  test('POST /chat/room reads the media type in any case, and only that type', async () => {
    for (const [type, body] of [['Application/JSON', '{"name":"json"}'], ['APPLICATION/X-WWW-FORM-URLENCODED; charset=UTF-8', 'name=form']]) {
      const res = await fetch(`${node.base}/chat/room`, { method: 'POST', headers: { 'content-type': type }, body });
      assert.equal(res.status, 200, type);
    }
    const other = await fetch(`${node.base}/chat/room`, { method: 'POST', headers: { 'content-type': 'application/jsonx' }, body: '{"name":"x"}' });
    assert.equal(other.status, 400, 'application/jsonx is not JSON');
  });

  // s20 probe: any JSON body that did not parse was told "name is required".
  test('POST /chat/room with a JSON body that is not JSON, or a name that is no string, says so', async () => {
    const post = async (body) => {
      const r = await fetch(`${node.base}/chat/room`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      return { status: r.status, error: (await r.json()).error };
    };
    const bad = await post('{"name": "x"');
    assert.equal(bad.status, 400);
    assert.match(bad.error, /not valid JSON/);
    assert.deepEqual(await post('["x"]'), { status: 400, error: 'the body must be a JSON object' });
    assert.deepEqual(await post('{"name": 5}'), { status: 400, error: 'name must be a string' });
    assert.equal((await fetch(`${node.base}/chat/room`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: '{"name":"json room"}' })).status, 200);
  });

  test('GET /chat/rooms?limit=0 is refused: its "next" link would be itself', async () => {
    const res = await fetch(`${node.base}/chat/rooms?limit=0`);
    assert.equal(res.status, 400);
    assert.match((await res.json()).error, /limit/);
  });
});
