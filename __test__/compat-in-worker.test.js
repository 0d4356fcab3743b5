'use strict';

// Inside a worker: the module's flags, cluster.worker and its events,
// process.disconnect(), process errors re-emitted on cluster.worker.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('cluster and cluster.worker as the worker sees them', async (mod) => {
  const p = run('compat-in-worker.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report');
    const said = (DO, key) => p.lines.find((l) => l.event === 'w' && l.DO === DO && key in l);
    assert.deepStrictEqual(said('surface', 'surface').surface, {
      isPrimary: false, isMaster: false, isWorker: true, hasWorkers: false, hasSettings: false,
      fork: 'undefined', setupPrimary: 'undefined', Worker: 'function', isInstance: true, emitter: true,
      id: 1, state: 'online', after: 'undefined', processIsProcess: true, connected: true,
      isConnected: true, isDead: false, send: 'function', newWorker: ['none', 3],
    });
    assert.deepStrictEqual(said('surface', 'builtin').builtin, {
      isPrimary: false, isWorker: true, fork: 'undefined', hasWorkers: false, sameWorker: true,
      getServer: 'function', uniqueId: false,
    });
    // 'message' on cluster.worker (message, handle) and on process; 'disconnect'
    // on cluster.worker; send() after the channel closed and a second
    // process.disconnect() surface as 'error' on cluster.worker.
    const s = said('surface', 'seen');
    assert.deepStrictEqual(s.seen, [
      ['worker-message', { hi: 'surface' }, true],
      ['process-message', { hi: 'surface' }],
      ['worker-disconnect', false, false],
      ['worker-error', 'ERR_IPC_CHANNEL_CLOSED'],
      ['worker-error', 'ERR_IPC_DISCONNECTED'],
    ]);
    assert.strictEqual(s.state, 'disconnecting');
    assert.strictEqual(s.after, true);
    assert.deepStrictEqual(said('surface', 'exit').exit, 0);
    // The primary sees 'disconnect' and 'exit' in either order with Node (the
    // worker exits at once after closing its channel); rcluster: in this order.
    const ending = (x) => ({ ...x, events: mod === 'rcluster' ? x.events : [x.events[0], ...x.events.slice(1).sort()] });
    assert.deepStrictEqual(ending(r.surface), { events: [['message', 'ack'], ['disconnect'], ['exit', 0, null]], after: true });

    // process.disconnect() in a worker: 'disconnect' on cluster.worker, then exit 0
    // at once (the interval does not keep it); the primary sees no intent to exit.
    assert.deepStrictEqual(said('process-disconnect', 'seen').seen, [
      ['worker-message', { hi: 'process-disconnect' }, true],
      ['process-message', { hi: 'process-disconnect' }],
      ['worker-disconnect', false, false],
    ]);
    assert.deepStrictEqual(said('process-disconnect', 'exit').exit, 0);
    assert.deepStrictEqual(ending(r['process-disconnect']),
      { events: [['message', 'ack'], ['disconnect'], ['exit', 0, null]], after: false });
  } finally {
    await p.kill();
  }
});
