'use strict';

// Handles sent with messages, run against node:cluster and rcluster alike.
const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('net.Socket and net.Server travel with messages and work on the other side', async (mod) => {
  const p = run('compat-msg-handles.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report' || m.event === 'error', 25000);
    assert.strictEqual(r.event, 'report', r.message);
    // Socket primary -> worker: the worker writes to and reads from the client.
    assert.strictEqual(r.socket.ret, true);
    assert.deepStrictEqual(r.socket.worker,
      { kind: 'socket-got', isSocket: true, remotePort: true, readable: true, writable: true });
    assert.strictEqual(r.socket.client, 'hello from worker;pong:ping');
    assert.deepStrictEqual(r.socket.cbArgs, [[null]]);
    // The sender's socket lets go of its handle (not destroyed, no 'close').
    assert.deepStrictEqual(r.socket.afterSend, { destroyed: false, hasHandle: false });
    assert.deepStrictEqual(r.socket.later, { destroyed: false, hasHandle: false });
    assert.deepStrictEqual(r.socket.closeEvents, []);
    // keepOpen: both ends can still write.
    assert.deepStrictEqual(r.keep.afterSend, { destroyed: false, hasHandle: true });
    assert.strictEqual(r.keep.client, '[worker][primary]');
    // Server primary -> worker: listening there, accepts once ours is closed.
    assert.deepStrictEqual(r.server.worker, { kind: 'server-got', isServer: true, listening: true, port: true });
    assert.strictEqual(r.server.primaryStillListening, true);
    assert.strictEqual(r.server.client, 'served by worker');
    // Socket worker -> primary, through cluster 'message' (worker, message, handle).
    assert.strictEqual(r.fromWorker.isSocket, true);
    assert.deepStrictEqual(r.fromWorker.message,
      { kind: 'client', order: ['socket', 'after-socket', 'keep', 'server', 'send-me-a-socket'] });
    assert.strictEqual(r.fromWorker.echo, '0123456789');
  } finally {
    await p.kill();
  }
});
