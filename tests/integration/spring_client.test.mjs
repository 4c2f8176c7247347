// Spring's own STOMP client (WebSocketStompClient, from Maven Central), as a Spring backend would
// talk to chatd: over a plain WebSocket, over SockJS's WebSocket transport and over SockJS's xhr
// transports only, in one room with @stomp/stompjs (javaclients/.../SpringClients.java has its checks).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { createRoom, installedClient, runToEnd, startChatd, stompOverWebSocket } from './harness.mjs';

const { site, skip } = installedClient('javaclients');

describe('Spring\'s WebSocketStompClient as a client', { skip }, () => {
  let node;
  before(async () => { node = await startChatd(); });
  after(async () => { await node?.stop(); });

  test('over WebSocket, SockJS WebSocket and SockJS xhr: receipts with seqs, one order, the room stompjs sees', async () => {
    const { roomId } = await createRoom(node.base, 'spring');
    const js = await stompOverWebSocket(node.base);
    try {
      const seen = await js.subscribeConfirmed(`/sub/chat/room/${roomId}`);
      const cp = readFileSync(join(site, 'classpath'), 'utf8').trim();
      const r = await runToEnd('java', ['-cp', cp, 'chatd.interop.SpringClients', node.base, roomId]);
      assert.equal(r.code, 0, `SpringClients exited ${r.code ?? r.signal}:\n${r.stderr}\n${r.stdout}\nchatd:\n${node.tail()}`);
      const { messages } = JSON.parse(r.stdout.trim().split('\n').at(-1));
      assert.equal(messages.length, 6);
      assert.deepEqual(await seen.waitForMessages(6), messages);
      assert.deepEqual(new Set(messages.map((m) => m.sender)),
                       new Set(['spring-websocket', 'spring-sockjs-websocket', 'spring-sockjs-xhr']));
    } finally {
      await js.close();
    }
  });
});
