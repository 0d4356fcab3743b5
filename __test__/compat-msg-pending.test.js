'use strict';

// A large message sent just before its sender's loop runs out is delivered
// (Node's test-cluster-send-handle-large-payload case), run against
// node:cluster and rcluster alike; rcluster also with the reader-thread
// channel (RCLUSTER_WORKER_IO=thread).
const assert = require('node:assert');
const test = require('node:test');
const { both } = require('./compat');
const { run } = require('./helpers');

async function worker(mod, env) {
  const p = run('compat-msg-pending.js', [], { env: { MODULE: mod, CASE: 'worker', ...env } });
  try {
    const r = await p.next((m) => m.event === 'result', 20000);
    assert.deepStrictEqual(r.got, { length: 3 * 1024 * 1024, intact: true, handle: env.HANDLE === '1' });
    assert.deepStrictEqual([r.code, r.signal], [0, null]);
    assert.deepStrictEqual(await p.done, { code: 0, signal: null });
  } finally {
    await p.kill();
  }
}

both("a worker's large message sent before channel.unref() arrives whole", (mod) => worker(mod, {}));
both('... and with a socket', (mod) => worker(mod, { HANDLE: '1' }));

// The reader thread, rcluster's alternative to polling on Node's loop.
for (const HANDLE of ['0', '1']) {
  test(`[rcluster] the same with the reader-thread channel${HANDLE === '1' ? ', with a socket' : ''}`,
    { timeout: 30000 }, () => worker('rcluster', { RCLUSTER_WORKER_IO: 'thread', HANDLE }));
}

both("the primary's large message sent before it unreferences the worker arrives whole", async (mod) => {
  const p = run('compat-msg-pending.js', [], { env: { MODULE: mod, CASE: 'primary' } });
  try {
    const r = await p.next((m) => m.event === 'result', 20000);
    assert.deepStrictEqual({ length: r.length, intact: r.intact }, { length: 3 * 1024 * 1024, intact: true });
    assert.deepStrictEqual(await p.done, { code: 0, signal: null });
  } finally {
    await p.kill();
  }
});

// A worker that disconnects right after sending it. Node's worker exits on
// its 'disconnect' (process.exit) with the message still in its pipe's write
// queue: the message is lost and the send callback never runs. rcluster's
// worker writes what it queued before it closes its channel (for up to 2 s),
// so the primary gets the message before 'disconnect' and the callback
// reports success. (A difference: DIFFERENCES-messaging.)
both("a worker's large message sent right before process.disconnect()", async (mod) => {
  const p = run('compat-msg-pending.js', [], { env: { MODULE: mod, CASE: 'disconnect' } });
  try {
    const r = await p.next((m) => m.event === 'result', 20000);
    assert.deepStrictEqual([r.code, r.signal], [0, null]);
    const { called } = await p.next((m) => m.event === 'callback', 5000);
    if (mod === 'rcluster') {
      assert.deepStrictEqual(r.seen, [{ length: 3 * 1024 * 1024, intact: true }, 'disconnect']);
      assert.strictEqual(called, 'ok');
    } else {
      // Lost (never delivered in part), and the callback says nothing.
      assert.ok(r.seen.every((e) => e === 'disconnect' || e.intact), JSON.stringify(r.seen));
      if (!r.seen.some((e) => e !== 'disconnect')) assert.strictEqual(called, null);
    }
    assert.deepStrictEqual(await p.done, { code: 0, signal: null });
  } finally {
    await p.kill();
  }
});

test('[rcluster] the same with the reader-thread channel', { timeout: 30000 }, async () => {
  const p = run('compat-msg-pending.js', [], { env: { MODULE: 'rcluster', CASE: 'disconnect', RCLUSTER_WORKER_IO: 'thread' } });
  try {
    const r = await p.next((m) => m.event === 'result', 20000);
    assert.deepStrictEqual(r.seen, [{ length: 3 * 1024 * 1024, intact: true }, 'disconnect']);
    assert.strictEqual((await p.next((m) => m.event === 'callback', 5000)).called, 'ok');
    assert.deepStrictEqual(await p.done, { code: 0, signal: null });
  } finally {
    await p.kill();
  }
});
