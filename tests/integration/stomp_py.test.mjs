// stomp.py (PyPI), a Python STOMP 1.2 client written by others, against one chatd node: it
// connects without a WebSocket subprotocol, in text and in binary frames, and talks with
// @stomp/stompjs in the same room (tests/integration/pyclients/stomp_py_client.py has its checks).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { createRoom, installedClient, repoRoot, runToEnd, startChatd, stompOverWebSocket } from './harness.mjs';

const pyclients = join(repoRoot, 'tests', 'integration', 'pyclients');

const { site, skip } = installedClient('pyclients');

describe('stomp.py (Python) as a client', { skip }, () => {
  let node;
  before(async () => { node = await startChatd(); });
  after(async () => { await node?.stop(); });

  test('talks in a room with stompjs: escaped headers, binary frames, receipts with seqs, ACK, refusals, DISCONNECT', async () => {
    const { roomId } = await createRoom(node.base, 'py');
    const js = await stompOverWebSocket(node.base);
    try {
      const seen = await js.subscribeConfirmed(`/sub/chat/room/${roomId}`);
      const r = await runToEnd('python3', [join(pyclients, 'stomp_py_client.py'), String(node.port), roomId],
                               { env: { PYTHONPATH: site, PYTHONIOENCODING: 'utf-8' } });
      assert.equal(r.code, 0, `stomp_py_client.py exited ${r.code ?? r.signal}:\n${r.stderr}\n${r.stdout}\nchatd:\n${node.tail()}`);
      const { messages } = JSON.parse(r.stdout.trim().split('\n').at(-1));
      assert.equal(messages.length, 5);
      // stompjs saw what the Python clients sent, byte for byte, in the same order.
      assert.deepEqual(await seen.waitForMessages(5), messages);
      assert.deepEqual(messages.map((m) => m.seq), [1, 2, 3, 4, 5]);
      assert.ok(messages.some((m) => m.message === '짜장면 어때? 🍜' && m.sender === '파이썬'));
    } finally {
      await js.close();
    }
  });
});
