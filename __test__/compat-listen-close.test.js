'use strict';

// server.close() in workers: dispatch stops for that worker and key; the
// port is freed when the last worker closes.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('server.close() in a worker stops its dispatch; the last close frees the port', async (mod) => {
  const p = run('compat-listen-close.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    assert.deepStrictEqual([...new Set(r.before)].sort(), ['1', '2']);
    assert.deepStrictEqual(r.afterOne, ['2', '2', '2', '2'], 'worker 1 closed: only worker 2 serves');
    // The other key still goes to both workers.
    assert.deepStrictEqual([...new Set(r.otherAfterOne)].sort(), ['1:other', '2:other']);
    assert.strictEqual(r.bindWhileOne, 'EADDRINUSE', 'still held while a worker listens');
    assert.strictEqual(r.bindAfterAll, true, 'the primary closed the listener');
    assert.match(r.probeAfterAll, /^[12]:other$/);
    assert.deepStrictEqual(r.connectAfterAll, { error: 'ECONNREFUSED' });
  } finally {
    await p.kill();
  }
});
