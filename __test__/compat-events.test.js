'use strict';

// cluster and Worker events: order, arguments, and worker.state at each one.

const assert = require('node:assert');
const net = require('node:net');
const { both } = require('./compat');
const { run } = require('./helpers');

let ipv6 = null;
function hasIPv6() {
  if (ipv6 !== null) return Promise.resolve(ipv6);
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(ipv6 = false));
    s.listen(0, '::1', () => s.close(() => resolve(ipv6 = true)));
  });
}

both('fork, online, message, listening (4, -1, 6), disconnect, exit in Node\'s order', async (mod) => {
  const v6 = await hasIPv6();
  const p = run('compat-events.js', [], { env: { MODULE: mod, IPV6: v6 ? '1' : '' } });
  try {
    const r = await p.next((m) => m.event === 'report');
    const tcp = (type, address) => ({ addressType: type, address, port: 'port', fd: 'undefined' });
    const pipe = { addressType: -1, address: r.pipe, port: -1, fd: 'undefined' };
    const listening = (info) => [
      ['worker', 'listening', 'listening', 1, info],
      ['cluster', 'listening', 'listening', 2, 'worker1', info],
    ];
    const expected = [
      ['cluster', 'fork', 'none', 1, 'worker1'],
      ['worker', 'online', 'online', 0],
      ['cluster', 'online', 'online', 1, 'worker1'],
      // cluster 'message' first: fork() attached its relay before the user did.
      ['cluster', 'message', 'online', 3, 'worker1', { hello: 1 }, 'undefined'],
      ['worker', 'message', 'online', 2, { hello: 1 }, 'undefined'],
      ...listening(tcp(4, '127.0.0.1')),
      ...listening(pipe),
      ...(v6 ? listening(tcp(6, '::1')) : []),
      ['cluster', 'message', 'listening', 3, 'worker1', 'last', 'undefined'],
      ['worker', 'message', 'listening', 2, 'last', 'undefined'],
      ['worker', 'disconnect', 'disconnected', 0],
      ['cluster', 'disconnect', 'disconnected', 1, 'worker1'],
      ['worker', 'exit', 'dead', 2, 0, null],
      ['cluster', 'exit', 'dead', 3, 'worker1', 0, null],
    ];
    assert.strictEqual(r.stateAtFork, 'none');
    assert.deepStrictEqual(r.log, expected);
  } finally {
    await p.kill();
  }
});
