// Tests of the harness itself: these need no chatd, only redis-server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';

import { freePort, redisCommand, startChatd, startRedis } from './harness.mjs';

test('freePort returns distinct usable ports', async () => {
  const a = await freePort();
  const b = await freePort();
  assert.ok(a > 1024 && b > 1024);
  assert.notEqual(a, b);
});

test('a private redis-server starts, answers and stops', async () => {
  const redis = await startRedis();
  try {
    assert.equal(await redisCommand(redis.port, 'PING'), '+PONG');
    assert.equal(await redisCommand(redis.port, 'SET chatd-harness 1'), '+OK');
    assert.equal(await redisCommand(redis.port, 'GET chatd-harness'), '$1');
  } finally {
    const exit = await redis.stop();
    assert.ok(exit.code === 0 || exit.signal === 'SIGTERM', JSON.stringify(exit));
  }
  assert.equal(redis.isAlive(), false);
  await assert.rejects(redisCommand(redis.port, 'PING', { timeoutMs: 500 }));
  assert.ok(existsSync(redis.log));
  assert.match(readFileSync(redis.log, 'utf8'), /Ready to accept connections/);
});

test('startChatd reports a missing binary clearly', async () => {
  const saved = process.env.CHATD_BIN;
  process.env.CHATD_BIN = '/nonexistent/chatd';
  try {
    await assert.rejects(startChatd(), /chatd binary not found at \/nonexistent\/chatd/);
  } finally {
    if (saved === undefined) delete process.env.CHATD_BIN; else process.env.CHATD_BIN = saved;
  }
});
