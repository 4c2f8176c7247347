// The transports' limits are options (net::Limits, chat::Limits' HTTP sizes): set from the
// command line or CHATD_* variables, they change what the node accepts.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { chatdBinary, createRoom, eventually, startChatd, stompOverWebSocket } from './harness.mjs';

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

// Every connection is a file. Past the process's open-file limit accept() fails and a client
// waits in the backlog unanswered, so chatd keeps --max-connections below that limit (and says
// so), and when files run out anyway it pauses accepting instead of retrying at full speed.
describe('the open-file limit', () => {
  // Opens `n` TCP connections; each records whether chatd answered it with a 503.
  function openConnections(port, n) {
    return Array.from({ length: n }, () => {
      const s = connect(port, '127.0.0.1');
      s.got503 = false;
      s.on('data', (d) => { if (d.toString().startsWith('HTTP/1.1 503')) s.got503 = true; });
      s.on('error', () => {});
      return s;
    });
  }
  const metric = (text, name) => Number(text.match(new RegExp(`^${name} (\\d+)$`, 'm'))?.[1]);

  test('--max-connections is lowered under a small limit, and the connections past it get a 503', async () => {
    const node = await startChatd({ launcher: ['prlimit', '--nofile=300', '--'] });
    let socks = [];
    try {
      assert.match(readFileSync(node.log, 'utf8'), /--max-connections 18000 lowered to 172: the open-file limit is 300/);
      socks = openConnections(node.port, 190);
      await eventually('the connections past 172 are answered 503',
        () => socks.filter((s) => s.got503).length >= 190 - 172 && !socks.some((s) => s.connecting));
      for (const s of socks) s.destroy();
      await eventually('chatd serves again once they are gone', async () =>
        (await fetch(`${node.base}/healthz`).catch(() => ({ status: 0 }))).status === 200);
      const m = await (await fetch(`${node.base}/metrics`)).text();
      assert.equal(metric(m, 'chatd_accept_failures_total'), 0, 'accept() never ran out of files');
      assert.ok(metric(m, 'chatd_connections_refused_total') >= 190 - 172);
    } finally {
      for (const s of socks) s.destroy();
      await node.stop();
    }
  });

  test('out of files, chatd pauses accepting instead of spinning, and catches up when files free', async () => {
    const node = await startChatd();
    let socks = [];
    try {
      // Lowered after start-up, so --max-connections (18000) is far above what the process may open.
      execFileSync('prlimit', ['--pid', String(node.child.pid), '--nofile=100:100']);
      socks = openConnections(node.port, 200);
      await eventually('the log says accepts are paused', () => /accept_paused why="Too many open files"/.test(readFileSync(node.log, 'utf8')));
      await new Promise((r) => setTimeout(r, 2_000));
      for (const s of socks) s.destroy();
      await eventually('chatd serves again once files are free', async () =>
        (await fetch(`${node.base}/healthz`).catch(() => ({ status: 0 }))).status === 200);
      const m = await (await fetch(`${node.base}/metrics`)).text();
      const failures = metric(m, 'chatd_accept_failures_total');
      // About 10 a second while paused; a loop retrying at once fails hundreds of thousands of times.
      assert.ok(failures >= 1 && failures <= 200, `accept failures ${failures}`);
      assert.ok(metric(m, 'chatd_connections_accepted_total') >= 200, 'the waiting connections were accepted');
    } finally {
      for (const s of socks) s.destroy();
      await node.stop();
    }
  });
});

describe('options the node cannot honour are refused at start-up', () => {
  const refusal = (args) => {
    const r = spawnSync(chatdBinary(), ['--port', '0', ...args], { encoding: 'utf8', timeout: 10_000 });
    return { status: r.status, stderr: r.stderr };
  };

  test('--node-id goes unescaped into JSON, headers and keys: only plain names', () => {
    for (const id of ['eu"1', 'a\\b', 'a:b', 'x'.repeat(65), '']) {
      const r = refusal(['--node-id', id]);
      assert.notEqual(r.status, 0, `--node-id ${JSON.stringify(id)} was accepted`);
      assert.match(r.stderr, /--node-id must be 1 to 64 of/);
    }
  });

  // A second process on the embedded engines' data dir folded and unlinked the running node's
  // history journal (--check-config did, by opening the engines) and shared its seq counters.
  test('the embedded data dir serves one chatd: a second is refused, --check-config leaves it alone', async (t) => {
    const node = await startChatd({ name: 'chatd-dir-owner' });
    t.after(() => node.stop());
    const room = await createRoom(node.base, 'journal');
    const s = await stompOverWebSocket(node.base);
    t.after(() => s.close());
    const box = await s.subscribeConfirmed(`/sub/chat/room/${room.roomId}`);
    s.chat('TALK', room.roomId, 'amy', 'kept in the journal');
    await box.waitFor(1);
    const journals = () => readdirSync(node.dataDir).filter((f) => f.startsWith('history.journal')).sort();
    const before = journals();
    assert.ok(before.length > 0, 'the running node has a journal');

    const second = refusal(['--data-dir', node.dataDir]);
    assert.equal(second.status, 1);
    assert.match(second.stderr, /data dir .* is in use by another chatd/);
    const check = spawnSync(chatdBinary(), ['--check-config', '--data-dir', node.dataDir], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(check.status, 0, check.stderr);
    assert.match(check.stdout, /belong to the chatd running there: not opened/);
    assert.deepEqual(journals(), before, 'the running node\'s journal is untouched');
    const page = await (await fetch(`${node.base}/chat/room/${room.roomId}/messages`)).json();
    assert.deepEqual(page.map((m) => m.message), ['kept in the journal']);
  });

  // --check-config said "configuration ok" for files and URLs a start then refused.
  test('--check-config refuses what a start would: secret files, JWT keys, webhook URLs, the address', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'chatd-check-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'short'), 'nineteen-bytes-only\n');
    const cases = [
      [['--api-key-file', join(dir, 'none')], /--api-key-file .*missing, unreadable or empty/],
      [['--auth', 'jwt', '--jwt-secret-file', join(dir, 'none')], /cannot be read/],
      [['--auth', 'jwt', '--jwt-secret-file', join(dir, 'short')], /32/],
      [['--webhook-url', '%%bogus%%'], /--webhook-url: '%%bogus%%' is not a URL/],
      [['--webhook-url', 'https://backend.example/hook'], /only http:\/\/ is supported/],
      [['--webhook-url', 'http://127.0.0.1:1/h', '--webhook-secret-file', join(dir, 'none')], /--webhook-secret-file .*missing/],
      [['--address', '999.1.1.1'], /--address '999.1.1.1' is not an IP address/],
    ];
    for (const [args, why] of cases) {
      const r = spawnSync(chatdBinary(), ['--check-config', '--data-dir', join(dir, 'data'), ...args], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, why, args.join(' '));
      assert.doesNotMatch(r.stdout, /configuration ok/, args.join(' '));
    }
    const r = spawnSync(chatdBinary(), ['--check-config', '--data-dir', join(dir, 'data'), '--web-root', join(dir, 'no-pages')],
      { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /WARNING --web-root .*no-pages is not a folder/);
  });

  // A log shipper reading --log-format json got the start, stop and webhook lines as prose.
  test('--log-format json: every line the node writes is one JSON object', async (t) => {
    const node = await startChatd({ name: 'chatd-json-log', args: ['--log-format', 'json', '--webhook-url', 'http://127.0.0.1:1/hook', '--webhook-drain-ms', '300'] });
    let stopped = false;
    t.after(() => stopped || node.stop());
    await createRoom(node.base, 'json');  // a webhook event its backend never takes
    await eventually('a webhook failure logged', () => /webhooks: POST/.test(readFileSync(node.log, 'utf8')), 10_000);
    await node.stop();
    stopped = true;
    const lines = readFileSync(node.log, 'utf8').split('\n').filter((l) => l.trim() !== '');
    const events = lines.map((l) => {
      try { return JSON.parse(l).event; } catch { assert.fail(`not JSON: ${l}`); }
    });
    for (const e of ['listening', 'webhooks', 'draining', 'stopped']) assert.ok(events.includes(e), `${e} in ${events}`);
  });

  // hiredis writes with send(fd, …, 0): a Redis that reset the connection under a write would
  // have ended the process with SIGPIPE.
  test('SIGPIPE does not end the node', async (t) => {
    const node = await startChatd({ name: 'chatd-sigpipe' });
    t.after(() => node.stop());
    process.kill(node.child.pid, 'SIGPIPE');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await fetch(`${node.base}/healthz`)).status, 200);
  });

  // README: /etc/default/chatd holds every option; it held six.
  test('the service\'s settings file names every option of --help (scripts/env-file.py writes it)', () => {
    const help = spawnSync(chatdBinary(), ['--help'], { encoding: 'utf8' }).stdout;
    const options = [...help.matchAll(/^ {2}--([a-z0-9-]+) <v>/gm)].map((m) => m[1]);
    assert.ok(options.length > 50, `${options.length} options in --help`);
    const file = readFileSync(join(import.meta.dirname, '../../packaging/chatd.default'), 'utf8');
    const missing = options.filter((o) => !file.includes(`\n#CHATD_${o.toUpperCase().replaceAll('-', '_')}=`));
    assert.deepEqual(missing, [], 'run scripts/env-file.py build/src/app/chatd > packaging/chatd.default');
  });

  test('TCP keepalive periods past what Linux takes (32767 s) are refused, not silently ignored', () => {
    for (const opt of ['--tcp-keepalive-idle-ms', '--tcp-keepalive-interval-ms']) {
      const r = refusal([opt, '40000000']);
      assert.notEqual(r.status, 0, `${opt} 40000000 was accepted`);
      assert.match(r.stderr, new RegExp(`${opt}: '40000000' is not a number between`));
    }
  });
});
