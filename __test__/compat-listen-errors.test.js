'use strict';

// Listen errors in a worker: what the server's 'error' event gets, what
// throws synchronously, recovery, and the primary's 'listening' events.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('listen errors reach the worker server as in Node, and it recovers', async (mod) => {
  const p = run('compat-listen-errors.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    const inUse = {
      code: 'EADDRINUSE', errno: -98, syscall: 'bind', address: '127.0.0.1', port: r.port,
      message: `bind EADDRINUSE 127.0.0.1:${r.port}`,
    };
    assert.deepStrictEqual(r.inUse, inUse);
    assert.deepStrictEqual(r.inUseAgain, inUse);
    // Port 0 is left out of the message and the error, as Node does.
    assert.deepStrictEqual(r.notAvail, {
      code: 'EADDRNOTAVAIL', errno: -99, syscall: 'bind', address: '192.0.2.1',
      message: 'bind EADDRNOTAVAIL 192.0.2.1',
    });
    // Bad ports never reach the primary: net throws in the worker.
    assert.deepStrictEqual(r.badPort, { thrown: {
      code: 'ERR_SOCKET_BAD_PORT',
      message: 'options.port should be >= 0 and < 65536. Received type number (70000).',
    } });
    assert.strictEqual(r.negPort.thrown.code, 'ERR_SOCKET_BAD_PORT');
    assert.strictEqual(r.ok, null);
    assert.deepStrictEqual({ ...r.recovered, port: 0 }, { address: '127.0.0.1', family: 'IPv4', port: 0 });
    assert.strictEqual(r.served, 'ok');
    // Node quirk kept: every routed listen() left a once('listening') behind,
    // so the successful one reports four times, with each attempt's address.
    assert.deepStrictEqual(r.listening.map((l) => [l.id, l.info.addressType, l.info.address, l.info.port]), [
      [1, 4, '127.0.0.1', r.recovered.port],
      [1, 4, '192.0.2.1', r.recovered.port],
      [1, 4, '127.0.0.1', r.recovered.port],
      [1, 4, '127.0.0.1', r.recovered.port],
    ]);
  } finally {
    await p.kill();
  }
});
