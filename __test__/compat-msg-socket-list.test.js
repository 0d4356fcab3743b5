'use strict';

// server.getConnections() and server.close() of a server whose sockets were
// sent to a worker ("works when sockets were sent to forks"), run against
// node:cluster and rcluster alike.
const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both("a server counts and waits for the sockets it sent to a worker", async (mod) => {
  const p = run('compat-msg-socket-list.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.deepStrictEqual(r.counts, [4, 3], 'getConnections() counts the sockets open in the worker');
    // 'close' waits for the worker's copies (the worker's own message that
    // it closed them may come just before or just after it).
    assert.deepStrictEqual(r.order.slice(0, 2), ['close called', 'close-rest asked']);
    assert.deepStrictEqual(r.order.slice(2).sort(), ['server close', 'worker closed the rest']);
  } finally {
    await p.kill();
  }
});
