'use strict';

// rcluster/register: `node -r rcluster/register` and `node --import
// rcluster/register` make require('cluster'), require('node:cluster') and
// import 'node:cluster' return rcluster, so that programs and libraries
// written for node:cluster (a throng-like library, prom-client's
// AggregatorRegistry) run on rcluster unchanged.

const test = require('node:test');
const assert = require('node:assert');
const { get } = require('./helpers');
const { runNode } = require('./cli-lib');

test('node -r rcluster/register: a library that uses require("cluster") forks rcluster workers', { timeout: 30000 }, async () => {
  const q = runWith(['-r', 'rcluster/register'], 'register-app.js');
  try {
    const primary = await q.next((m) => m.event === 'primary');
    assert.strictEqual(primary.same, true, "require('cluster') and require('node:cluster') are rcluster");
    assert.strictEqual(primary.builtin, true, "process.getBuiltinModule('cluster') is rcluster");
    assert.strictEqual(primary.reload, 'function');
    assert.strictEqual((await q.next((m) => m.event === 'primary-esm')).same, true, "import('node:cluster') too");
    const { port } = await q.next((m) => m.event === 'serving');
    const workers = q.lines.filter((m) => m.event === 'worker');
    assert.strictEqual(workers.length, 2);
    assert.ok(workers.every((w) => w.rcluster), "a worker's require('cluster') is rcluster's worker side");
    const seen = new Set();
    for (let i = 0; i < 40 && seen.size < 2; i++) seen.add((await get(port)).body.split(' ')[1]);
    assert.strictEqual(seen.size, 2);
  } finally {
    await q.kill();
  }
});

test('node --import rcluster/register: an ES module program importing node:cluster', { timeout: 30000 }, async () => {
  const q = runWith(['--import', 'rcluster/register'], 'register-app.mjs');
  try {
    assert.strictEqual((await q.next((m) => m.event === 'primary')).same, true);
    const { port } = await q.next((m) => m.event === 'serving');
    await q.next((m) => m.event === 'worker' && q.lines.filter((x) => x.event === 'worker').length === 2);
    assert.ok(q.lines.filter((m) => m.event === 'worker').every((w) => w.same));
    assert.strictEqual((await get(port)).status, 200);
  } finally {
    await q.kill();
  }
});

test("prom-client's AggregatorRegistry aggregates the metrics of rcluster workers", { timeout: 30000 }, async () => {
  const q = runWith(['-r', 'rcluster/register'], 'register-prom.js');
  try {
    const { port, metricsPort, same } = await q.next((m) => m.event === 'serving');
    assert.strictEqual(same, true, 'the program runs on rcluster');
    for (let i = 0; i < 10; i++) assert.strictEqual((await get(port)).status, 200);
    const metrics = await get(metricsPort, '/metrics');
    assert.strictEqual(metrics.status, 200, metrics.body);
    assert.match(metrics.body, /^test_requests_total 10$/m, metrics.body);
  } finally {
    await q.kill();
  }
});

function runWith(nodeArgs, fixture) {
  return runNode(nodeArgs, fixture);
}
