'use strict';

// listen(0) in workers: one port per key for every worker, another key (a
// second server in the same worker) another port; the addresses seen by the
// worker and by the primary's 'listening' event.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('listen(0): same port in every worker, another port for a second server', async (mod) => {
  const p = run('compat-listen-port0.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    const [w1, w2] = r.addresses;
    assert.deepStrictEqual(w1, w2, 'both workers see the same addresses');
    assert.deepStrictEqual({ ...w1.a, port: 0 }, { address: '127.0.0.1', family: 'IPv4', port: 0 });
    assert.deepStrictEqual({ ...w1.b, port: 0 }, { address: '127.0.0.1', family: 'IPv4', port: 0 });
    // No host: the primary binds '::' (dual stack), as Node does.
    assert.deepStrictEqual({ ...w1.c, port: 0 }, { address: '::', family: 'IPv6', port: 0 });
    assert.ok(w1.a.port > 0 && w1.b.port > 0 && w1.c.port > 0);
    assert.notStrictEqual(w1.a.port, w1.b.port);
    assert.notStrictEqual(w1.a.port, w1.c.port);
    // tls: every worker gets the first worker's session ticket keys.
    assert.strictEqual(r.ticketKeys[0].length, 96);
    assert.strictEqual(r.ticketKeys[0], r.ticketKeys[1]);
    // Each server answers on its own port, from both workers.
    for (const name of ['a', 'b']) {
      const ids = new Set(r.served[name].map((s) => s.split(':')[0]));
      assert.deepStrictEqual([...ids].sort(), ['1', '2'], JSON.stringify(r.served));
      assert.ok(r.served[name].every((s) => s.endsWith(`:${name}`)));
    }
    assert.match(r.served.c, /^[12]:c$/);
    // The primary's 'listening' events: addressType 4, the requested address
    // (null without a host) and the bound port, once per server per worker.
    const seen = r.listening.map((l) => `${l.id} ${l.info.addressType} ${l.info.address} ${l.info.port} ${l.info.fd}`).sort();
    const want = [];
    for (const id of [1, 2]) {
      want.push(`${id} 4 127.0.0.1 ${w1.tlsPort} undefined`);
      want.push(`${id} 4 127.0.0.1 ${w1.a.port} undefined`, `${id} 4 127.0.0.1 ${w1.b.port} undefined`,
        `${id} 4 null ${w1.c.port} undefined`);
    }
    assert.deepStrictEqual(seen, want.sort());
  } finally {
    await p.kill();
  }
});
