'use strict';

// A worker's channel keeps it alive as a forked child's does in Node:
// while its process has 'message' or 'disconnect' listeners, unless
// process.channel.ref()/unref() was called. Run against node:cluster and
// rcluster alike.
const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

const CASES = {
  'nothing': 'alive',
  'unref': 'exited',
  'unref-then-listen': 'exited',
  'unref-then-ref': 'alive',
  'no-listeners': 'exited',
  'no-listeners-then-listen': 'alive',
  'no-listeners-after-ref': 'alive',
};

for (const [name, expected] of Object.entries(CASES)) {
  both(`worker channel: ${name} -> ${expected}`, async (mod) => {
    const p = run('compat-channel-ref.js', [], { env: { MODULE: mod, CASE: name } });
    try {
      const r = await p.next((m) => m.event === 'result', 10000);
      assert.strictEqual(r.result, expected);
      if (expected === 'exited') assert.deepStrictEqual([r.code, r.signal], [0, null]);
      assert.deepStrictEqual(await p.done, { code: 0, signal: null });
    } finally {
      await p.kill();
    }
  });
}
