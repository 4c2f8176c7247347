// SockJS end to end: sockjs-client in Node with each transport forced, carrying a STOMP chat
// conversation through a real chatd; plus the protocol's own answers checked on the wire.
// Until chatd serves SockJS (GET /ws-stomp/info is 404) every test here skips, saying why.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { createRoom, eventually, sockjsInfoStatus, startChatd, stompOverSockJS, stompOverWebSocket } from './harness.mjs';

let node;
let skipReason = '';

before(async () => {
  // The long message below is 9000 bytes of UTF-8, over the default 4000-byte text limit:
  // raise it so a big frame crosses every transport.
  node = await startChatd({ name: 'chatd-sockjs', args: ['--max-message-bytes', '10000'] });
  const status = await sockjsInfoStatus(node.base);
  if (status !== 200) {
    skipReason = `chatd does not serve SockJS yet (GET /ws-stomp/info -> ${status}); ` +
      'these tests run once it does';
    console.log(`# SKIP sockjs.test.mjs: ${skipReason}`);
  }
});

after(async () => {
  await node?.stop();
});

// Runs `fn` unless SockJS is not served, in which case the test is skipped with the reason.
function sockjsTest(name, fn) {
  test(name, async (t) => {
    if (skipReason) {
      t.skip(skipReason);
      return;
    }
    await fn(t);
  });
}

const sessionId = () => Math.random().toString(36).slice(2, 10);

describe('SockJS protocol answers', () => {
  sockjsTest('GET /ws-stomp/info', async () => {
    const res = await fetch(`${node.base}/ws-stomp/info`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    assert.match(res.headers.get('cache-control') ?? '', /no-(store|cache)/);
    const info = await res.json();
    assert.equal(info.websocket, true);
    assert.equal(info.cookie_needed, false);
    assert.deepEqual(info.origins, ['*:*']);
    assert.equal(typeof info.entropy, 'number');
  });

  sockjsTest('GET /ws-stomp greets', async () => {
    const res = await fetch(`${node.base}/ws-stomp`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'Welcome to SockJS!\n');
  });

  sockjsTest('xhr opens a session with "o" and xhr_send checks its payload', async () => {
    const url = `${node.base}/ws-stomp/000/${sessionId()}`;
    const open = await fetch(`${url}/xhr`, { method: 'POST' });
    assert.equal(open.status, 200);
    assert.equal(await open.text(), 'o\n');

    const empty = await fetch(`${url}/xhr_send`, { method: 'POST', body: '' });
    assert.equal(empty.status, 500);
    assert.equal(await empty.text(), 'Payload expected.');

    const broken = await fetch(`${url}/xhr_send`, { method: 'POST', body: '["a"' });
    assert.equal(broken.status, 500);
    assert.equal(await broken.text(), 'Broken JSON encoding.');

    const ok = await fetch(`${url}/xhr_send`, { method: 'POST', body: '["\\n"]' });
    assert.equal(ok.status, 204);
  });

  sockjsTest('xhr_streaming starts with the 2 KiB prelude then "o"', async () => {
    const res = await fetch(`${node.base}/ws-stomp/000/${sessionId()}/xhr_streaming`, { method: 'POST' });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    let text = '';
    const deadline = Date.now() + 5_000;
    while (text.length < 2049 + 2 && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await reader.cancel();
    assert.equal(text.slice(0, 2049), 'h'.repeat(2048) + '\n');
    assert.equal(text.slice(2049, 2051), 'o\n');
  });

  sockjsTest('xhr_send to an unknown session is 404; bad paths are 404', async () => {
    const res = await fetch(`${node.base}/ws-stomp/000/${sessionId()}/xhr_send`, { method: 'POST', body: '["x"]' });
    assert.equal(res.status, 404);
    for (const path of ['/ws-stomp/000/a.b/xhr', '/ws-stomp//abc/xhr', '/ws-stomp/000/abc/jsonp_bogus']) {
      const r = await fetch(`${node.base}${path}`, { method: 'POST' });
      assert.equal(r.status, 404, path);
    }
  });
});

const post = (url, body) => fetch(url, { method: 'POST', body });
const metric = async (base, name) =>
  Number((await (await fetch(`${base}/metrics`)).text()).match(new RegExp(`^${name} (\\d+)`, 'm'))[1]);

// Collects an xhr_streaming response as it arrives; `done` settles when the server ends it
// (or the connection fails), and `until(re, ms)` when `re` matches, the response ends or ms pass.
function collectStream(res) {
  const s = { text: '', bytes: 0, ended: false };
  const waiters = new Set();
  const wake = () => waiters.forEach((w) => w());
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  s.done = (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        s.bytes += value.length;
        s.text += decoder.decode(value, { stream: true });
        wake();
      }
    } catch (e) {
      s.error = e;
    }
    s.ended = true;
    wake();
  })();
  s.until = (re, timeoutMs) => new Promise((ok) => {
    const finish = () => { clearTimeout(timer); waiters.delete(check); ok(); };
    const check = () => { if (s.ended || re.test(s.text)) finish(); };
    const timer = setTimeout(finish, timeoutMs);
    waiters.add(check);
    check();
  });
  s.cancel = () => reader.cancel().catch(() => {});
  return s;
}

// Reads an xhr_streaming response until `until` matches what arrived (or it ends / times out).
async function readStream(res, until, timeoutMs = 5_000) {
  const s = collectStream(res);
  await s.until(until, timeoutMs);
  const { text, ended } = s;
  if (!ended) await s.cancel();
  return { text, ended };
}

const subscribeReceipted = (dest) => JSON.stringify([`SUBSCRIBE\nid:0\ndestination:${dest}\nreceipt:sub\n\n\0`]);
const bigText = (i) => `${i} ${'가'.repeat(3000)}`;  // about 9 KB of UTF-8

// The leading numbers of chat messages `"<n> ..."` inside SockJS a[...] frames, in order.
const numbered = (text) => [...text.matchAll(/\\"message\\":\\"(\d+) /g)].map((m) => Number(m[1]));
const stompConnect = JSON.stringify(['CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0']);

// Opens the xhr session at `url` and CONNECTs it: "o", then CONNECTED.
async function openXhr(url) {
  assert.equal(await (await post(`${url}/xhr`)).text(), 'o\n');
  assert.equal((await post(`${url}/xhr_send`, stompConnect)).status, 204);
  assert.match(await (await post(`${url}/xhr`)).text(), /^a\["CONNECTED/);
}

// Sends DISCONNECT with a receipt on the xhr session at `url`; resolves with what the polls got
// up to the close frame.
async function disconnectXhr(url) {
  await post(`${url}/xhr_send`, JSON.stringify(['DISCONNECT\nreceipt:bye\n\n\0']));
  let all = '';
  for (let i = 0; i < 3 && !all.includes('c['); i++) all += await (await post(`${url}/xhr`)).text();
  return all;
}

describe('STOMP over sockjs-client', () => {
  for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling']) {
    sockjsTest(`a conversation over ${transport}`, async () => {
      const room = await createRoom(node.base, `sockjs ${transport} 방`);
      const alice = await stompOverSockJS(node.base, transport);
      const bob = await stompOverSockJS(node.base, transport);
      const watcher = await stompOverWebSocket(node.base); // a plain WebSocket client sees the same
      try {
        // sockjs-client names the transport it settled on.
        assert.equal(alice.client.webSocket.transport, transport);
        assert.equal(bob.client.webSocket.transport, transport);

        const dest = `/sub/chat/room/${room.roomId}`;
        const atAlice = await alice.subscribeConfirmed(dest);
        const atBob = await bob.subscribeConfirmed(dest);
        const atWatcher = await watcher.subscribeConfirmed(dest);

        const tricky = '안녕하세요 😀 "quotes" \\ back\\slash \u2028 line-sep \u0001 <b>bold</b> 🍜🍣';
        const long = '가'.repeat(3000);
        alice.chat('ENTER', room.roomId, 'alice');
        await atBob.waitFor(1);
        bob.chat('ENTER', room.roomId, '밥친구');
        await atAlice.waitFor(2);
        alice.chat('TALK', room.roomId, 'alice', tricky);
        await atBob.waitFor(3);
        bob.chat('TALK', room.roomId, '밥친구', '좋아요 👍');
        await atAlice.waitFor(4);
        alice.chat('TALK', room.roomId, 'alice', long);
        alice.chat('QUIT', room.roomId, 'alice');

        const expected = [
          ['ENTER', 'alice', 'alice님 등장!'],
          ['ENTER', '밥친구', '밥친구님 등장!'],
          ['TALK', 'alice', tricky],
          ['TALK', '밥친구', '좋아요 👍'],
          ['TALK', 'alice', long],
          ['QUIT', 'alice', null],
        ];
        for (const [who, c] of [['alice', atAlice], ['bob', atBob], ['watcher', atWatcher]]) {
          const got = await c.waitForMessages(expected.length, 10_000);
          got.forEach((m, i) => {
            const [type, sender, message] = expected[i];
            assert.equal(m.type, type, `${who} #${i}`);
            assert.equal(m.sender, sender, `${who} #${i}`);
            assert.equal(m.roomId, room.roomId, `${who} #${i}`);
            if (message !== null) assert.equal(m.message, message, `${who} #${i}`);
            assert.ok(m.id !== undefined && m.id !== '', `${who} #${i} has an id`);
            assert.equal(typeof m.ts, 'number', `${who} #${i} has ts`);
            assert.ok(Math.abs(m.ts - Date.now()) < 60_000, `${who} #${i} ts is server time in ms`);
          });
          const seqs = got.map((m) => Number(m.seq));
          for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `${who}: seq increases ${seqs}`);
        }
        // Everyone saw the same messages (same ids) in the same order.
        const ids = (c) => c.messages.map((m) => m.id);
        assert.deepEqual(ids(atAlice), ids(atBob));
        assert.deepEqual(ids(atAlice), ids(atWatcher));
        assert.equal(alice.errors.length + bob.errors.length, 0);
      } finally {
        await Promise.all([alice.close(), bob.close(), watcher.close()]);
      }
    });

    sockjsTest(`chat errors arrive on /user/queue/errors over ${transport}`, async () => {
      const s = await stompOverSockJS(node.base, transport);
      try {
        const errors = await s.subscribeConfirmed('/user/queue/errors');
        s.chat('TALK', 'no-such-room-' + sessionId(), 'alice', 'hello?');
        const [e] = await errors.waitForMessages(1, 5_000);
        assert.equal(typeof e.status, 'number');
        assert.ok(e.status >= 400, JSON.stringify(e));
        assert.equal(typeof e.error, 'string');
        assert.ok(e.error.length > 0);
      } finally {
        await s.close();
      }
    });
  }
});

describe('SockJS sessions', () => {
  sockjsTest('a second receiver gets c[2010] and the first one keeps the session', async () => {
    const url = `${node.base}/ws-stomp/000/${sessionId()}`;
    assert.equal(await (await post(`${url}/xhr`)).text(), 'o\n');
    const first = post(`${url}/xhr`); // waits: nothing is queued
    await new Promise((ok) => setTimeout(ok, 200));
    const second = await post(`${url}/xhr`);
    assert.equal(second.status, 200);
    assert.equal(await second.text(), 'c[2010,"Another connection still open"]\n');
    assert.equal((await post(`${url}/xhr_send`, stompConnect)).status, 204);
    const text = await (await first).text();
    assert.match(text, /^a\["CONNECTED\\nversion:1\.2\\n/);
    assert.ok(text.endsWith('"]\n'), text);
  });

  sockjsTest('DISCONNECT over xhr: RECEIPT, then c[3000] and the session is gone', async () => {
    const url = `${node.base}/ws-stomp/000/${sessionId()}`;
    await openXhr(url);
    const all = await disconnectXhr(url);
    assert.match(all, /RECEIPT\\nreceipt-id:bye/);
    assert.match(all, /c\[3000,"[^"]+"\]\n$/);
    const after = await post(`${url}/xhr_send`, '["x"]');
    assert.equal(after.status, 404);
  });

  // SockJS 0.3 (test_closeSession): "until the timeout occurs, the server must constantly serve
  // the close message". A closed id used to be forgotten at once: the next poll got "o", a
  // session nobody asked for.
  sockjsTest('a closed xhr session answers with its close frame for the disconnect delay, then its id is free', async () => {
    const own = await startChatd({ name: 'chatd-sockjs-closed', args: ['--sockjs-disconnect-delay-ms', '1500'] });
    try {
      const url = `${own.base}/ws-stomp/000/${sessionId()}`;
      await openXhr(url);
      const all = await disconnectXhr(url);
      const close = all.match(/c\[3000,"[^"]+"\]\n$/)?.[0];
      assert.ok(close, all);
      const closedAt = Date.now();

      assert.equal(await (await post(`${url}/xhr`)).text(), close, 'a poll gets the close frame again');
      assert.equal(await (await post(`${url}/xhr`)).text(), close, 'and again');
      assert.equal(await (await post(`${url}/xhr_streaming`)).text(), `${'h'.repeat(2048)}\n${close}`, 'so does a stream');
      assert.equal((await post(`${url}/xhr_send`, '["\\n"]')).status, 404, 'nothing can be sent to it');
      const holding = await metric(own.base, 'chatd_connections');

      // Past the delay the id is forgotten, and its place under --max-connections with it.
      await new Promise((ok) => setTimeout(ok, Math.max(0, closedAt + 2_000 - Date.now())));
      await eventually('the closed id lets go of its connection slot',
        async () => (await metric(own.base, 'chatd_connections')) === holding - 1, 5_000);
      assert.equal(await (await post(`${url}/xhr`)).text(), 'o\n', 'the id is free again');
    } finally {
      await own.stop();
    }
  });

  sockjsTest('SIGTERM does not wait for closed xhr sessions to time out', async () => {
    const own = await startChatd({
      name: 'chatd-sockjs-closed-term',
      args: ['--sockjs-disconnect-delay-ms', '30000', '--drain-timeout-ms', '10000'],
    });
    try {
      const url = `${own.base}/ws-stomp/000/${sessionId()}`;
      assert.equal(await (await post(`${url}/xhr`)).text(), 'o\n');
      await post(`${url}/xhr_send`, stompConnect);
      await post(`${url}/xhr_send`, JSON.stringify(['DISCONNECT\n\n\0']));
      let all = '';
      for (let i = 0; i < 3 && !all.includes('c['); i++) all += await (await post(`${url}/xhr`)).text();
      assert.match(all, /c\[3000,/);
      const t0 = Date.now();
      assert.equal((await own.stop()).code, 0);
      assert.ok(Date.now() - t0 < 5_000, `exited after ${Date.now() - t0} ms`);
    } finally {
      await own.stop();
    }
  });

  sockjsTest('xhr_streaming ends a response after 128 KiB; the next request carries on with nothing lost', async () => {
    const room = await createRoom(node.base, 'rollover');
    const url = `${node.base}/ws-stomp/000/${sessionId()}`;
    const first = collectStream(await post(`${url}/xhr_streaming`));
    const speaker = await stompOverWebSocket(node.base);
    try {
      await eventually('the session opens', () => first.text.includes('o\n'), 5_000);
      assert.equal((await post(`${url}/xhr_send`, stompConnect)).status, 204);
      assert.equal((await post(`${url}/xhr_send`, subscribeReceipted(`/sub/chat/room/${room.roomId}`))).status, 204);
      await eventually('the RECEIPT', () => first.text.includes('receipt-id:sub'), 5_000);

      // 40 messages of about 9 KB each, about 360 KB: well past one response's 128 KiB. Until the
      // first response ends, each message is sent once the previous one arrived, so the response
      // rolls over at 128 KiB instead of carrying one batch that all arrived before its first
      // write; the rest is sent while no response is attached and must wait for the next one.
      const total = 40;
      let sent = 0;
      while (!first.ended && sent < total) {
        speaker.chat('TALK', room.roomId, 'big', bigText(sent++));
        await eventually(`message ${sent} in the first response`, () => first.ended || numbered(first.text).length >= sent, 10_000);
      }
      await Promise.race([first.done, new Promise((_, no) => setTimeout(() => no(new Error('first response never ended')), 10_000))]);
      assert.ok(sent < total, `the first response ended only after all ${total} messages`);
      for (; sent < total; sent++) speaker.chat('TALK', room.roomId, 'big', bigText(sent));
      assert.ok(first.bytes >= 128 * 1024, `ended after ${first.bytes} bytes`);
      assert.ok(first.text.endsWith('\n'), 'ends on a frame boundary');
      assert.doesNotMatch(first.text, /c\[/, 'a rollover is not a close');

      const seen = numbered(first.text);
      let requests = 1;
      while (seen.length < total && requests < 20) {
        const next = collectStream(await post(`${url}/xhr_streaming`));
        requests++;
        await Promise.race([next.done, eventually('more messages', () => numbered(next.text).length + seen.length >= total, 10_000)]);
        next.cancel();
        await next.done.catch(() => {});
        assert.doesNotMatch(next.text, /^h{2048}\no\n/, 'the same session continues: no second "o"');
        seen.push(...numbered(next.text));
      }
      // What waited between responses leaves in one frame when the next one attaches.
      assert.ok(requests >= 2, `${requests} responses carried ${total} messages`);
      assert.deepEqual(seen, Array.from({ length: total }, (_, i) => i), 'every message once, in order');
    } finally {
      first.cancel();
      await speaker.close();
    }
  });

  sockjsTest('an xhr session that stops polling is closed as a slow consumer; the room goes on', async () => {
    const own = await startChatd({ name: 'chatd-sockjs-slow', args: ['--max-outbound-bytes', '65536', '--max-message-bytes', '10000'] });
    const speaker = await stompOverWebSocket(own.base);
    try {
      const room = await createRoom(own.base, 'slow');
      const dest = `/sub/chat/room/${room.roomId}`;
      const url = `${own.base}/ws-stomp/000/${sessionId()}`;
      assert.equal(await (await post(`${url}/xhr`)).text(), 'o\n');
      await post(`${url}/xhr_send`, stompConnect);
      await post(`${url}/xhr_send`, subscribeReceipted(dest));
      let opening = '';
      for (let i = 0; i < 3 && !opening.includes('receipt-id:sub'); i++) opening += await (await post(`${url}/xhr`)).text();
      assert.match(opening, /receipt-id:sub/);

      // No poll from here on: about 180 KB for a reader allowed 64 KiB.
      const watcher = await speaker.subscribeConfirmed(dest);
      // One message at a time, so the WebSocket reader never has more than one waiting even on
      // a loaded machine; the xhr session piles them up.
      const total = 20;
      for (let i = 0; i < total; i++) {
        speaker.chat('TALK', room.roomId, 'big', bigText(i));
        await watcher.waitForMessages(i + 1, 5_000);
      }
      const got = watcher.messages;
      assert.deepEqual(got.map((m) => Number(m.message.split(' ')[0])), Array.from({ length: total }, (_, i) => i),
        'the other subscriber gets everything');

      let rest = '';
      for (let i = 0; i < 5 && !/c\[\d+,"[^"]*"\]\n$/.test(rest); i++) rest += await (await post(`${url}/xhr`)).text();
      assert.match(rest, /ERROR\\nmessage:slow consumer/, 'the slow session is told why');
      assert.match(rest, /c\[\d+,"[^"]*"\]\n$/, 'then closed');
      assert.ok(numbered(rest).length < total, 'it was cut off before everything was queued for it');
      assert.equal((await post(`${url}/xhr_send`, '["\\n"]')).status, 404, 'the session is gone');

      speaker.chat('TALK', room.roomId, 'big', `${total} still here`);
      await watcher.waitForMessages(total + 1, 5_000);
      const metrics = await (await fetch(`${own.base}/metrics`)).text();
      assert.match(metrics, /chatd_slow_consumers_total 1\b/);
    } finally {
      await speaker.close();
      await own.stop();
    }
  });

  // The STOMP session sends an x-history replay whole, past --max-outbound-bytes by its own
  // size; the xhr session's hard bound behind it used to refuse it, killing the session as a
  // slow consumer mid-replay (or, with no poll attached, silently, so the next poll got a new
  // "o"). About 360 KB of history here against a hard bound of 64 + 2 × 16 + 64 KiB.
  sockjsTest('an x-history replay larger than --max-outbound-bytes reaches xhr clients whole', async () => {
    const own = await startChatd({
      name: 'chatd-sockjs-replay',
      args: ['--max-outbound-bytes', '65536', '--max-frame-bytes', '16384', '--max-message-bytes', '10000'],
    });
    const speaker = await stompOverWebSocket(own.base);
    try {
      const room = await createRoom(own.base, 'replay');
      const dest = `/sub/chat/room/${room.roomId}`;
      const watcher = await speaker.subscribeConfirmed(dest);
      const total = 40;
      for (let i = 0; i < total; i++) speaker.chat('TALK', room.roomId, 'big', bigText(i));
      await watcher.waitForMessages(total, 10_000);
      const subscribe = JSON.stringify([`SUBSCRIBE\nid:0\ndestination:${dest}\nx-history:1000\nreceipt:sub\n\n\0`]);
      const everything = Array.from({ length: total }, (_, i) => i);
      const whole = (text) => numbered(text).length >= total || /c\[/.test(text);
      // Short, so a failure does not print 360 KB of history.
      const notCutOff = (text, what) =>
        assert.ok(!/c\[/.test(text), `${what}: cut off after ${numbered(text).length} of ${total}: ${text.slice(-80)}`);

      // xhr polling, with no poll attached while the replay lands.
      const detached = `${own.base}/ws-stomp/000/${sessionId()}`;
      await openXhr(detached);
      assert.equal((await post(`${detached}/xhr_send`, subscribe)).status, 204);
      await new Promise((ok) => setTimeout(ok, 300));
      let polled = '';
      for (let i = 0; i < 10 && !whole(polled); i++) polled += await (await post(`${detached}/xhr`)).text();
      assert.ok(!polled.startsWith('o\n'), 'the same session, not a new one');
      notCutOff(polled, 'xhr, no poll attached');
      assert.deepEqual(numbered(polled), everything, 'xhr: the whole history, in order');

      // xhr polling with a poll waiting, and xhr_streaming.
      const waiting = `${own.base}/ws-stomp/000/${sessionId()}`;
      await openXhr(waiting);
      const poll = post(`${waiting}/xhr`);
      await new Promise((ok) => setTimeout(ok, 200));
      assert.equal((await post(`${waiting}/xhr_send`, subscribe)).status, 204);
      let waited = await (await poll).text();
      for (let i = 0; i < 10 && !whole(waited); i++) waited += await (await post(`${waiting}/xhr`)).text();
      notCutOff(waited, 'xhr, a poll waiting');
      assert.deepEqual(numbered(waited), everything, 'xhr with a poll waiting: the whole history, in order');

      const streamed = `${own.base}/ws-stomp/000/${sessionId()}`;
      const stream = collectStream(await post(`${streamed}/xhr_streaming`));
      let text = '';
      try {
        await eventually('the session opens', () => stream.text.includes('o\n'), 5_000);
        // As a STOMP client does: CONNECTED before SUBSCRIBE.
        assert.equal((await post(`${streamed}/xhr_send`, stompConnect)).status, 204);
        await eventually('CONNECTED', () => stream.text.includes('CONNECTED'), 5_000);
        assert.equal((await post(`${streamed}/xhr_send`, subscribe)).status, 204);
        await eventually('the replay or the end of the response', () => stream.ended || whole(stream.text), 10_000);
        text = stream.text;
      } finally {
        stream.cancel();
      }
      // The 128 KiB rollover ends the first response once the replay is written: read on.
      for (let i = 0; i < 5 && !whole(text); i++) {
        const next = collectStream(await post(`${streamed}/xhr_streaming`));
        await eventually('more of the replay', () => next.ended || whole(text + next.text), 10_000);
        next.cancel();
        text += next.text;
      }
      notCutOff(text, 'xhr_streaming');
      assert.deepEqual(numbered(text), everything, 'xhr_streaming: the whole history, in order');

      // The session goes on live.
      speaker.chat('TALK', room.roomId, 'big', `${total} live`);
      let live = '';
      for (let i = 0; i < 5 && !numbered(live).includes(total); i++) live += await (await post(`${detached}/xhr`)).text();
      assert.deepEqual(numbered(live), [total]);
      assert.match(await (await fetch(`${own.base}/metrics`)).text(), /chatd_slow_consumers_total 0\b/);
    } finally {
      await speaker.close();
      await own.stop();
    }
  });

  sockjsTest('an xhr session without a receiver ends after the 5 s disconnect delay', async () => {
    const url = `${node.base}/ws-stomp/000/${sessionId()}`;
    assert.equal(await (await post(`${url}/xhr`)).text(), 'o\n');
    assert.equal((await post(`${url}/xhr_send`, stompConnect)).status, 204);
    await new Promise((ok) => setTimeout(ok, 6_500));
    assert.equal((await post(`${url}/xhr_send`, '["\\n"]')).status, 404);
  });

  sockjsTest('the websocket transport speaks SockJS frames; broken JSON closes it', async () => {
    const ws = new WebSocket(`${node.base.replace(/^http/, 'ws')}/ws-stomp/000/${sessionId()}/websocket`);
    const inbox = [];
    const waiters = [];
    ws.onmessage = (e) => { inbox.push(String(e.data)); waiters.splice(0).forEach((w) => w()); };
    const closed = new Promise((ok) => { ws.onclose = (e) => ok(e); });
    const next = async (n) => {
      const deadline = Date.now() + 5_000;
      while (inbox.length < n && Date.now() < deadline) await new Promise((ok) => { waiters.push(ok); setTimeout(ok, 100); });
      assert.ok(inbox.length >= n, `got ${JSON.stringify(inbox)}`);
      return inbox[n - 1];
    };
    assert.equal(await next(1), 'o');
    ws.send(stompConnect);
    assert.match(await next(2), /^a\["CONNECTED\\nversion:1\.2\\n/);
    ws.send('["not closed');
    assert.match(await next(3), /^c\[3000,"[^"]*"\]$/);
    const e = await closed;
    assert.equal(e.code, 1000);
  });

  sockjsTest('/ws-stomp/websocket is a raw WebSocket', async () => {
    const s = await stompOverWebSocket(node.base, { path: '/ws-stomp/websocket' });
    await s.close();
  });

  sockjsTest('SIGTERM ends open xhr_streaming responses with c[3000] and exits in bounded time', async () => {
    const own = await startChatd({ name: 'chatd-sockjs-term', args: ['--drain-timeout-ms', '3000'] });
    try {
      const url = `${own.base}/ws-stomp/000/${sessionId()}`;
      const res = await post(`${url}/xhr_streaming`);
      const reading = readStream(res, /c\[3000,[^\n]*\n/, 8_000);
      await new Promise((ok) => setTimeout(ok, 100));
      await post(`${url}/xhr_send`, stompConnect);
      await new Promise((ok) => setTimeout(ok, 200));
      const t0 = Date.now();
      const exit = await own.stop();
      assert.equal(exit.code, 0);
      assert.ok(Date.now() - t0 < 4_500, 'exits within the drain bound');
      const { text } = await reading;
      assert.match(text, /a\["CONNECTED/);
      assert.match(text, /shutting down/);
      assert.match(text, /c\[3000,"[^"]*"\]\n/);
    } finally {
      await own.stop();
    }
  });
});
