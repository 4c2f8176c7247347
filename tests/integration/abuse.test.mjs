// Abuse resistance (issue 13): what one hostile client tries, and that it costs only that
// client. Each test names the finding it guards; each failed against the code before its fix.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createConnection } from 'node:net';

import { startChatd } from './harness.mjs';

// Writes `bytes` in one write on a fresh TCP connection and collects what comes back until the
// server closes, resets, or `ms` pass. Resolves { text, end: 'eof' | 'reset' | 'timeout' }.
function rawExchange(port, bytes, ms = 3_000) {
  return new Promise((ok) => {
    const s = createConnection({ host: '127.0.0.1', port });
    const chunks = [];
    let done = false;
    const finish = (end) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      ok({ text: Buffer.concat(chunks).toString('latin1'), end });
    };
    const timer = setTimeout(() => finish('timeout'), ms);
    s.on('connect', () => s.write(bytes));
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => finish('eof'));
    s.on('error', (e) => finish(e.code === 'ECONNRESET' ? 'reset' : `error ${e.code}`));
  });
}

// Returns the value of chatd_refusals_total{reason} from /metrics (-1 when it is missing).
async function refusals(base, reason) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = text.match(new RegExp(`^chatd_refusals_total\\{reason="${reason}"\\} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : -1;
}

// Every response's status line, wherever it starts (a body has no line break before the next).
const statusLines = (text) => text.match(/HTTP\/1\.1 \d{3} [^\r]*/g) ?? [];

describe('finding 8: HTTP framing', () => {
  let node;
  before(async () => { node = await startChatd({ name: 'chatd-abuse-http' }); });
  after(async () => { await node?.stop(); });

  for (const te of ['gzip', 'identity', 'xchunked', 'chunked, gzip']) {
    test(`Transfer-Encoding: ${te} is refused with 400 and the connection closes`, async () => {
      const before = await refusals(node.base, 'http_framing');
      // The body, were it read as a request, would be answered too: only one answer may come.
      const smuggled = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n';
      const r = await rawExchange(node.port,
        `POST /chat/room HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${te}\r\n\r\n${smuggled}`);
      assert.deepEqual(statusLines(r.text), ['HTTP/1.1 400 Bad Request'], r.text);
      assert.match(r.text, /Transfer-Encoding must end in chunked/);
      assert.notEqual(r.end, 'timeout', 'the connection stays open after the refusal');
      assert.ok(before >= 0, 'chatd_refusals_total{reason="http_framing"} is in /metrics');
      assert.equal(await refusals(node.base, 'http_framing'), before + 1);
    });
  }

  test('chunked requests still work', async () => {
    const body = 'name=chunky';
    const r = await rawExchange(node.port,
      'POST /chat/room HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n' +
      `Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
    assert.deepEqual(statusLines(r.text), ['HTTP/1.1 200 OK'], r.text);
    assert.match(r.text, /"name":"chunky"/);
  });

  // Past the first read's 512 bytes the rest waited in the socket; the watch on the first
  // open response saw it readable, returned, and dropped the last reference to the
  // connection, which closed with unread input: a reset, nothing answered.
  test('ten pipelined SockJS xhr POSTs in one write are all answered', async () => {
    const n = 10;
    const tag = Math.random().toString(36).slice(2, 8);
    let reqs = '';
    for (let i = 0; i < n; i++)
      reqs += `POST /ws-stomp/000/${tag}${i}/xhr HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`;
    assert.ok(reqs.length > 512, 'the requests must not fit in the first read');
    const r = await rawExchange(node.port, reqs, 3_000);
    const opened = r.text.match(/\r\n2\r\no\n\r\n0\r\n\r\n/g) ?? [];
    assert.equal(statusLines(r.text).length, n, `answers: ${JSON.stringify(r.text.slice(-200))} end ${r.end}`);
    assert.equal(opened.length, n);
    assert.notEqual(r.end, 'reset');
  });
});
