// The installed chatd (the .deb, laid out under /usr): it finds its own pages without
// --web-root, reports its version, checks its configuration, and chats. tests/package/deb_test.sh
// builds and installs the package, then runs this file with CHATD_BIN=/usr/bin/chatd.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { chatdBinary, createRoom, freePort, startChatd, stompOverSockJS, stompOverWebSocket } from '../integration/harness.mjs';

const bin = chatdBinary();

test('the installed binary is the packaged one and says its version', () => {
  assert.ok(bin.startsWith('/usr/'), `CHATD_BIN should be the installed binary, not ${bin}`);
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^chatd \d+\.\d+\.\d+\n$/);
});

test('--check-config: 0 for a usable configuration, 1 with the reason for an unreachable engine', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'chatd-pkg-'));
  try {
    const ok = spawnSync(bin, ['--check-config', '--data-dir', dir], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /configuration ok/);
    const port = await freePort(); // nothing listens there
    const bad = spawnSync(bin, ['--check-config', '--data-dir', dir, '--store', 'redis', '--redis', `redis://127.0.0.1:${port}`],
      { encoding: 'utf8', timeout: 20_000 });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /cannot start/);
    const typo = spawnSync(bin, ['--check-config', '--bus', 'rabbit'], { encoding: 'utf8', timeout: 20_000 });
    assert.notEqual(typo.status, 0);
    assert.match(typo.stderr, /--bus must be/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('without --web-root it serves the installed pages and their vendor bundles, and chats', async (t) => {
  const node = await startChatd({ webRoot: null });
  t.after(() => node.stop());
  const page = await fetch(`${node.base}/chat/room`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<html/i);
  for (const asset of ['/assets/vendor/stomp.umd.min.js', '/assets/vendor/sockjs.min.js', '/assets/room.js']) {
    const res = await fetch(`${node.base}${asset}`);
    assert.equal(res.status, 200, asset);
    assert.ok((await res.arrayBuffer()).byteLength > 100, `${asset} is not empty`);
  }

  const room = await createRoom(node.base, '설치 확인');
  const alice = await stompOverWebSocket(node.base);
  const bob = await stompOverSockJS(node.base, 'xhr-streaming');
  t.after(() => Promise.all([alice.close(), bob.close()]));
  const seen = await bob.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
  alice.chat('TALK', room.roomId, 'alice', '패키지로 설치했어요');
  const [m] = await seen.waitForMessages(1);
  assert.equal(m.sender, 'alice');
  assert.equal(m.message, '패키지로 설치했어요');
  assert.equal(m.seq, 1);
});
