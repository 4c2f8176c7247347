// The transports' limits are options (net::Limits, chat::Limits' HTTP sizes): set from the
// command line or CHATD_* variables, they change what the node accepts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startChatd } from './harness.mjs';

describe('HTTP and SockJS limits are options', () => {
  let node;
  before(async () => {
    node = await startChatd({
      args: ['--max-http-target', '100', '--max-http-header', '2048'],
      env: { CHATD_SOCKJS_DISCONNECT_DELAY_MS: '300' },
    });
  });
  after(async () => node?.stop());

  test('--max-http-target: a longer target gets 414, a shorter one is routed', async () => {
    const long = await fetch(`${node.base}/chat/room/${'a'.repeat(120)}`);
    assert.equal(long.status, 414);
    const short = await fetch(`${node.base}/chat/room/${'a'.repeat(60)}`);
    assert.equal(short.status, 404);  // routed: no such room
  });

  test('--max-http-header: a larger request head gets 431', async () => {
    const big = await fetch(`${node.base}/chat/rooms`, { headers: { 'x-pad': 'p'.repeat(3000) } });
    assert.equal(big.status, 431);
    const small = await fetch(`${node.base}/chat/rooms`, { headers: { 'x-pad': 'p'.repeat(500) } });
    assert.equal(small.status, 200);
  });

  test('CHATD_SOCKJS_DISCONNECT_DELAY_MS: an xhr session without a receiver ends after it', async () => {
    const url = `${node.base}/ws-stomp/000/limits-${process.pid}`;
    const open = await fetch(`${url}/xhr`, { method: 'POST' });
    assert.equal(await open.text(), 'o\n');
    // Within the default 5 s the session would still be there; with 300 ms it is gone.
    const deadline = Date.now() + 3_000;
    let status = 204;
    while (Date.now() < deadline) {
      status = (await fetch(`${url}/xhr_send`, { method: 'POST', body: '[]' })).status;
      if (status === 404) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 404, 'xhr_send finds no session once the delay passed');
  });
});
