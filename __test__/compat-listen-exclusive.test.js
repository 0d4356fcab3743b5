'use strict';

// exclusive: true binds in the worker: no sharing, no 'listening' event in
// the primary, EADDRINUSE between workers on a fixed port, and recovery.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('exclusive: true binds in the worker itself', async (mod) => {
  const p = run('compat-listen-exclusive.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    assert.deepStrictEqual(r.r1.fixed, { address: '127.0.0.1', family: 'IPv4', port: r.port });
    assert.strictEqual(r.r1.ownHandle, 'number', 'the worker owns a real handle');
    // listen(0) exclusive: each worker its own port.
    assert.notStrictEqual(r.r1.zero.port, r.r2.zero.port);
    // The second worker on the same fixed port: EADDRINUSE from its own listen().
    assert.deepStrictEqual(r.r2.error, {
      code: 'EADDRINUSE', errno: -98, syscall: 'listen', address: '127.0.0.1', port: r.port,
      message: `listen EADDRINUSE: address already in use 127.0.0.1:${r.port}`,
    });
    assert.ok(r.r2.recovered.port > 0 && r.r2.recovered.port !== r.port);
    assert.strictEqual(r.r2.ownHandle, 'number');
    assert.deepStrictEqual(r.served, { fixed: '1', zero1: '1', zero2: '2' });
    // Exclusive servers are not the primary's business: no 'listening' events.
    assert.deepStrictEqual(r.listening, []);
  } finally {
    await p.kill();
  }
});
