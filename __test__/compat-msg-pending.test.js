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
