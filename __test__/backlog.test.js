'use strict';

// Node's primary listens with the backlog of the first worker that asked;
// rcluster does too, and raises the queue when a later worker asks for more.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('listen(..., backlog) sets the primary listener queue; the default is 511', async (mod) => {
  const p = run('backlog.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report');
    assert.strictEqual(r.first, 17);
    assert.strictEqual(r.default, 511);
    // rcluster honours the largest backlog asked for a listener.
    if (mod === 'rcluster') assert.strictEqual(r.raised, 100);
  } finally {
    await p.kill();
  }
});
