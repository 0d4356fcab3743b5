'use strict';

// dgram in workers: shared handles bound once by the primary per key.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('dgram sockets bound in workers are shared handles', async (mod) => {
  const p = run('compat-listen-dgram.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    const [a, b] = r.addresses;
    // Same key, same socket: every worker sees the same port (port 0 too).
    for (const k of ['s4', 's4b', 's6']) assert.deepStrictEqual(a[k], b[k], k);
    assert.deepStrictEqual({ ...a.s4, port: 0 }, { address: '127.0.0.1', family: 'IPv4', port: 0 });
    assert.deepStrictEqual({ ...a.s6, port: 0 }, { address: '::1', family: 'IPv6', port: 0 });
    // A second socket in the same worker is another key: another port.
    assert.notStrictEqual(a.s4.port, a.s4b.port);
    // exclusive: bound in each worker.
    assert.notStrictEqual(a.ex.port, b.ex.port);
    assert.match(r.served.s4, /^[12]:s4$/);
    assert.match(r.served.s4b, /^[12]:s4b$/);
    assert.match(r.served.s6, /^[12]:s6$/);
    assert.strictEqual(r.served.ex1, '1:ex');
    assert.strictEqual(r.served.ex2, '2:ex');
    // A routed bind that fails reaches the socket's 'error' event; it recovers.
    for (const busy of r.busy) {
      assert.deepStrictEqual(busy, { recovered: true, error: {
        code: 'EADDRINUSE', errno: -98, syscall: 'bind', address: '127.0.0.1', port: r.heldPort,
        message: `bind EADDRINUSE 127.0.0.1:${r.heldPort}`,
      } });
    }
    assert.strictEqual(r.bindWhileOpen, 'EADDRINUSE', 'the primary holds the shared socket');
    assert.strictEqual(r.bindAfterClose, true, 'closed once every worker closed');
    // 'listening' in the primary: addressType 'udp4'/'udp6', fd -1; none for exclusive.
    const seen = new Set(r.listening.map((l) => `${l.id} ${l.info.addressType} ${l.info.address} ${l.info.port} ${l.info.fd}`));
    for (const id of [1, 2]) {
      assert.ok(seen.has(`${id} udp4 127.0.0.1 ${a.s4.port} -1`), [...seen].join());
      assert.ok(seen.has(`${id} udp4 127.0.0.1 ${a.s4b.port} -1`));
      assert.ok(seen.has(`${id} udp6 ::1 ${a.s6.port} -1`));
    }
    assert.ok(!r.listening.some((l) => l.info.port === a.ex.port || l.info.port === b.ex.port));
  } finally {
    await p.kill();
  }
});
