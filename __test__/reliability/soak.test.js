'use strict';

// Soak: many connections through the dispatcher, one per request, and the
// primary's fds, threads and RSS stay flat. CI-sized (20,000 connections by
// default, SOAK_CONNECTIONS to change); bench/soak.js runs 1,000,000.

const test = require('node:test');
const assert = require('node:assert');
const { run, linuxOnly } = require('../helpers');
const { procStats, load, counters, netOnce } = require('./lib');

const N = Number(process.env.SOAK_CONNECTIONS || 20000);
const WARMUP = 2000;
const RSS_GROWTH_KIB = 16 * 1024;

test(`${N} connections through the dispatcher: fds, threads and RSS stay flat`, { timeout: 120000, skip: linuxOnly('reads /proc') }, async (t) => {
  // The dispatcher itself: the rr offload (kernel hand-off under load) is off.
  const p = run('reliability.js', [], { env: { WORKERS: '2', PROTO: 'net', RCLUSTER_RR_OFFLOAD: '0' } });
  try {
    const { port, pid } = await p.next((m) => m.event === 'serving');
    await load(port, { concurrency: 8, total: WARMUP, once: netOnce });
    const c0 = await counters(p, (c) => c.held === 0);
    const base = procStats(pid);
    let peakFds = base.fds;
    let peakThreads = base.threads;
    const sample = setInterval(() => {
      const s = procStats(pid);
      peakFds = Math.max(peakFds, s.fds);
      peakThreads = Math.max(peakThreads, s.threads);
    }, 200);
    const r = await load(port, { concurrency: 8, total: N, once: netOnce });
    clearInterval(sample);
    const c1 = await counters(p, (c) => c.held === 0);
    const after = procStats(pid);
    const figures = {
      connections: N, ...r, accepted: c1.accepted - c0.accepted,
      acknowledged: c1.acknowledged - c0.acknowledged, closed: c1.closed - c0.closed,
      base, after, peakFds, peakThreads,
    };
    t.diagnostic(JSON.stringify(figures));

    assert.deepStrictEqual(r, { ok: N, failed: 0, errors: {} });
    assert.strictEqual(figures.accepted, N);
    assert.strictEqual(figures.acknowledged, N);
    assert.strictEqual(figures.closed, 0);
    assert.strictEqual(c1.held, 0);
    assert.ok(after.fds <= base.fds + 2, `fds ${base.fds} -> ${after.fds}`);
    // In flight at most: the 8 client connections plus a window per worker.
    assert.ok(peakFds <= base.fds + 8 + 2 * 16, `peak fds ${peakFds} (base ${base.fds})`);
    assert.strictEqual(peakThreads, base.threads, 'no thread was started');
    assert.ok(after.rssKiB - base.rssKiB < RSS_GROWTH_KIB, `RSS ${base.rssKiB} -> ${after.rssKiB} KiB`);
  } finally {
    assert.deepStrictEqual(await p.kill(), []);
  }
});
