'use strict';

// Messages sent in one synchronous stretch travel as one frame (lib/ipc.js):
// nothing is lost or reordered at exit, at disconnect, next to a handle or a
// big message, and readiness by message still works.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { run } = require('./helpers');

async function finish(scenario, env) {
  const p = run('batching.js', [scenario], { env });
  try {
    return { p, exit: await p.next((m) => m.event === 'exit', 20000) };
  } finally {
    await p.kill();
  }
}

test('a burst sent right before process.exit() arrives whole and in order', { timeout: 30000 }, async () => {
  const { exit } = await finish('exit');
  assert.strictEqual(exit.code, 0);
  assert.strictEqual(exit.count, 1000);
  assert.ok(exit.ordered);
});

test('a burst sent right before process.disconnect() arrives before the disconnect', { timeout: 30000 }, async () => {
  const { p, exit } = await finish('disconnect');
  const disconnect = p.lines.find((m) => m.event === 'disconnect');
  assert.strictEqual(disconnect.count, 1000);
  assert.strictEqual(exit.count, 1000);
  assert.ok(exit.ordered);
});

test('JSON messages, a handle and a message past the batch limit keep their order; callbacks run', { timeout: 30000 }, async () => {
  const { p, exit } = await finish('mixed');
  assert.deepStrictEqual(exit.got.map((m) => (m.length > 100 ? `big:${m.length}` : m)),
    ['a', 'b', 'handle:1', 'c', `big:${40 * 1024}`, 'd']);
  assert.strictEqual(exit.handles, 1);
  assert.ok(p.lines.some((m) => m.event === 'callback'));
});

test('the first message before a long synchronous block arrives during the block', { timeout: 30000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcl-block-'));
  try {
    const { exit } = await finish('block', { FLAG: path.join(dir, 'go') });
    // The worker only gets out of its block once the primary got 'before'.
    assert.deepStrictEqual(exit.got, ['before', { unblocked: true }]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("readiness by process.send('ready') inside a batch", { timeout: 30000 }, async () => {
  const { p, exit } = await finish('ready');
  const ready = p.lines.find((m) => m.event === 'ready');
  assert.ok(ready, JSON.stringify(p.lines));
  assert.deepStrictEqual(exit.got, ['one', 'ready', 'two']);
});

test('worker to worker: 3,000 sendTo() messages in one stretch arrive in order', { timeout: 30000 }, async () => {
  const { exit } = await finish('relay');
  assert.deepStrictEqual({ n: exit.n, ordered: exit.ordered, from: exit.from }, { n: 3000, ordered: true, from: 1 });
});

test('primary to worker: 5,000 messages in one stretch arrive in order', { timeout: 30000 }, async () => {
  const { exit } = await finish('to-worker');
  assert.deepStrictEqual(exit.got, [{ n: 5000, ordered: true }]);
});
