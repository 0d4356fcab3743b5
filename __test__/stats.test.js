'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { run, get } = require('./helpers');

test('cluster.stats() and cluster.metrics() report workers and listeners', { timeout: 30000 }, async () => {
  const p = run('stats.js');
  try {
    const { port, pids } = await p.next((m) => m.event === 'serving');
    for (let i = 0; i < 10; i++) assert.strictEqual((await get(port)).status, 200);
    // Heartbeats measure the event-loop delay once a second.
    await new Promise((r) => setTimeout(r, 1300));
    p.child.stdin.write('stats\n');
    const { stats, metrics } = await p.next((m) => m.event === 'stats');
    assert.deepStrictEqual(stats.workers.map((w) => w.pid).sort(), [...pids].sort());
    for (const w of stats.workers) {
      assert.strictEqual(w.state, 'listening');
      assert.strictEqual(w.connected, true);
      assert.strictEqual(w.restarts, 0);
      assert.strictEqual(w.messages, 1);
      assert.ok(w.rss > 1e6, `rss ${w.rss}`);
      assert.strictEqual(typeof w.eventLoopDelayMs, 'number');
      assert.ok(w.uptimeMs > 0);
    }
    assert.strictEqual(stats.workers.reduce((a, w) => a + w.connections, 0), 10);
    assert.strictEqual(stats.listeners.length, 1);
    assert.strictEqual(stats.listeners[0].accepted, 10);
    assert.strictEqual(stats.listeners[0].port, port);
    assert.strictEqual(stats.listeners[0].policy, 'rr');
    assert.match(metrics, /^rcluster_listener_accepted_total\{listener="[^"]+",policy="rr"\} 10$/m);
    assert.match(metrics, /^# TYPE rcluster_worker_rss_bytes gauge$/m);
  } finally {
    await p.kill();
  }
});
