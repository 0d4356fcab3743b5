'use strict';

const assert = require('node:assert');
const net = require('net');
const { both } = require('./compat');
const { run } = require('./helpers');

function open(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.setEncoding('utf8');
    s.once('data', (d) => resolve({ s, id: d }));
    s.once('error', reject);
    s.setTimeout(10000, () => reject(new Error('no greeting')));
  });
}

both('dispatched connections behave like local accepts; maxConnections sends the rest elsewhere', async (mod) => {
  const p = run('compat-connection.js', [], { env: { MODULE: mod } });
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    const held = [];
    for (let i = 0; i < 5; i++) held.push(await open(port));
    const byWorker = {};
    for (const c of held) byWorker[c.id] = (byWorker[c.id] || 0) + 1;
    // Worker 1 takes at most one (maxConnections = 1); worker 2 the others.
    assert.deepStrictEqual(byWorker, { 1: 1, 2: 4 });
    const reports = await Promise.all([1, 2].map((w) => p.next((m) => m.event === 'report' && m.worker === w)));
    for (const r of reports) {
      assert.strictEqual(r.sameServer, true);
      assert.strictEqual(r.paused, true);
      assert.strictEqual(r.allowHalfOpen, true);
      assert.strictEqual(r.remote, true);
      assert.strictEqual(r.connections, 1);
      assert.strictEqual(r.count, 1);
    }
    for (const c of held) c.s.end();
  } finally {
    await p.kill();
  }
});
