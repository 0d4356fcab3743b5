'use strict';

// listen({ fd }) in workers: the primary listens on ITS fd with that number.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('listen({ fd }) in a worker listens on the primary\'s fd', async (mod) => {
  const p = run('compat-listen-fd.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    for (const w of r.reports) {
      assert.deepStrictEqual(w.address, { address: '127.0.0.1', family: 'IPv4', port: r.port });
      // fd 0 of the primary is not a listening socket: EINVAL, from 'bind'.
      assert.deepStrictEqual(w.badError, { code: 'EINVAL', errno: -22, syscall: 'bind', address: null, message: 'bind EINVAL' });
    }
    assert.deepStrictEqual([...new Set(r.served)].sort(), ['1', '2'], 'round robin over both workers');
    // 'listening': addressType and address null, the bound port, the fd.
    const seen = r.listening.map((l) => JSON.stringify([l.id, l.info])).sort();
    const want = [1, 2].map((id) => JSON.stringify([id, { addressType: null, address: null, port: r.port, fd: r.fd }]));
    assert.deepStrictEqual(seen, want);
  } finally {
    await p.kill();
  }
});
