'use strict';

// A worker's servers on an address the other workers listen on too: a
// second one while the first listens is refused, and after closing it the
// worker can listen there again (Node 22+; Node 20's built-in refuses that
// too, and rcluster does not: see DIFFERENCES).

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

const NODE_MAJOR = Number(process.versions.node.split('.')[0]);

both('a worker listens again on an address after closing its server there', async (mod) => {
  const p = run('compat-listen-relisten.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    assert.strictEqual(r.second, 'EADDRINUSE', 'a second server of the same worker on the same address');
    if (mod === 'cluster' && NODE_MAJOR < 22) {
      // Node 20 keys the primary's handle by the worker's listen count too.
      assert.strictEqual(r.again, 'EADDRINUSE');
      assert.deepStrictEqual([...new Set(r.served)], ['2']);
    } else {
      assert.strictEqual(r.again, 'listening');
      assert.deepStrictEqual([...new Set(r.served)].sort(), ['1', '2'], 'both workers serve');
    }
  } finally {
    await p.kill();
  }
});
