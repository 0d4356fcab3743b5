'use strict';

// `rcluster --metrics host:port` serves cluster.metrics() for Prometheus.

const test = require('node:test');
const assert = require('node:assert');
const { cli, stderrMatch } = require('./cli-lib');
const { get } = require('./helpers');

test('--metrics serves Prometheus text from the primary', { timeout: 30000 }, async () => {
  const p = cli(['-w', '2', '--metrics', '127.0.0.1:0', 'cli-app.js']);
  try {
    const [, port] = await stderrMatch(p, /Prometheus metrics at http:\/\/127\.0\.0\.1:(\d+)\/metrics/);
    const app = await p.next((m) => m.event === 'listening');
    for (let i = 0; i < 4; i++) assert.strictEqual((await get(app.port)).status, 200);
    const r = await get(Number(port), '/metrics');
    assert.strictEqual(r.status, 200);
    assert.match(r.body, /^rcluster_workers\{\} 2$/m);
    assert.match(r.body, /^rcluster_listener_accepted_total\{[^}]*\} 4$/m);
    assert.strictEqual((await get(Number(port), '/other')).status, 404);
  } finally {
    await p.kill();
  }
});
