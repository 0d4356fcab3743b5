'use strict';

// Message events, run against node:cluster and rcluster alike.
const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('messages: worker.send, process.send, message events, internal messages, queueing, process.disconnect()', async (mod) => {
  const p = run('compat-msg-events.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report');
    const wr = await p.next((m) => m.event === 'worker');
    const fromWorker = [{ cmd: 'NODE_' }, { cmd: 'NODEX' }, 'from-worker', 'queue-please'];
    // Primary side: worker 'message' (message, handle), cluster 'message'
    // (worker, message, handle), worker.process 'message'; NODE_* is internal.
    assert.deepStrictEqual(r.worker, fromWorker.map((message) => ({ message, handle: true, args: 2 })));
    assert.deepStrictEqual(r.cluster, fromWorker.map((message) => ({ id: 1, same: true, message, handle: true, args: 3 })));
    assert.deepStrictEqual(r.proc, fromWorker);
    assert.deepStrictEqual(r.internal, [{ cmd: 'NODE_FROM_WORKER', v: 1 }]);
    assert.strictEqual(r.connectedAtOnline, true);
    assert.strictEqual(r.sendReturned, true);
    assert.deepStrictEqual(r.cbs, [[null]]);
    assert.deepStrictEqual(r.disconnect, { isConnected: false, connected: false, state: 'disconnected' });
    assert.deepStrictEqual(r.exit, { code: 0, signal: null, exitedAfterDisconnect: false });
    // Worker side.
    assert.deepStrictEqual(wr.got, [{ m: 'to-worker', handle: true, args: 2 }]);
    assert.deepStrictEqual(wr.workerGot, [{ m: 'to-worker', handle: true }]);
    assert.deepStrictEqual(wr.internal, [{ cmd: 'NODE_TEST_SENT' }]);
    assert.strictEqual(wr.pendingBeforeListen, 0);
    assert.deepStrictEqual(wr.queued, [{ m: 'q1', args: 2 }, { m: { q: 2 }, args: 2 }],
      'messages that arrived with no listener are delivered when one is added');
    assert.strictEqual(wr.connected, true);
    assert.strictEqual(wr.sendType, 'function');
    assert.strictEqual(wr.disconnectType, 'function');
    assert.strictEqual(wr.channel, true);
    assert.strictEqual(wr.listenersAtStart, 1, "cluster's worker forwards process 'message'");
    assert.deepStrictEqual(wr.sendCb, [null]);
    assert.strictEqual(wr.connectedAfterDisconnect, false);
    assert.strictEqual(wr.workerDisconnectEvent, true);
    assert.strictEqual(wr.exitCode, 0);
  } finally {
    await p.kill();
  }
});

both("messages: a throwing 'message' listener is an uncaught exception before the next message, and loses none", async (mod) => {
  const p = run('compat-msg-throw.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 15000);
    assert.deepStrictEqual(r.worker, [0, 1, 'caught worker listener', 2, 3, 4]);
    assert.deepStrictEqual(r.primary, [0, 1, 'caught primary listener', 2, 3, 4]);
    assert.deepStrictEqual(r.exit, [0, null]);
    assert.deepStrictEqual(r.crash.exit, [1, null]);
    assert.ok(r.crash.message, 'the crash report shows the error');
    assert.match(r.crash.firstLine, /compat-msg-throw\.js:\d+$/, 'the first line of the crash report is the throw site');
  } finally {
    await p.kill();
  }
});
