'use strict';

// The Rust supervisor: restart with back-off and crash-loop stop, hang
// detection while the primary's JS is blocked, recycling with jitter,
// readiness by message and its timeout, shutdown ending in SIGKILL.

const test = require('node:test');
const assert = require('node:assert');
const { run, get } = require('./helpers');

test('a crashing worker is restarted with growing delays, then the slot stops', { timeout: 30000 }, async () => {
  const p = run('supervise.js', ['crashloop']);
  try {
    const stop = await p.next((m) => m.event === 'crashloop');
    assert.match(stop.info.reason, /crash loop/);
    const delays = p.lines.filter((m) => m.event === 'backoff').map((m) => m.info.delay);
    assert.deepStrictEqual(delays, [50, 100, 200]);
    const restarts = p.lines.filter((m) => m.event === 'restart');
    assert.strictEqual(restarts.length, 3);
    assert.ok(restarts.every((r) => r.slot === 1), 'a restarted worker keeps its slot');
    const forks = p.lines.filter((m) => m.event === 'fork').map((m) => m.id);
    assert.deepStrictEqual(forks, [1, 2, 3, 4], 'every spawn is a fork event with a new id');
    assert.strictEqual(p.lines.filter((m) => m.event === 'exit').length, 4);
  } finally {
    await p.kill();
  }
});

test('a stuck worker is detected and replaced while the primary JS is blocked too', { timeout: 30000 }, async () => {
  const p = run('supervise.js', ['stuck']);
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    const first = (await get(port)).body;
    assert.strictEqual((await get(port, '/stuck')).body, 'stuck');
    await p.next((m) => m.event === 'busy-start');
    // While the primary's JS spins for 3 s, the supervisor kills the stuck
    // worker and a new one serves.
    let served = null;
    const end = Date.now() + 2500;
    while (Date.now() < end && served === null) {
      try {
        const r = await get(port);
        if (r.body !== first) served = r.body;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    assert.ok(served, 'a replacement worker served during the block');
    assert.strictEqual(p.lines.some((m) => m.event === 'busy-end'), false);
    const u = await p.next((m) => m.event === 'unresponsive');
    assert.match(u.info.reason, /heartbeat/);
    await p.next((m) => m.event === 'restart');
  } finally {
    await p.kill();
  }
});

test('recycling after N connections, with jitter', { timeout: 30000 }, async () => {
  const p = run('supervise.js', ['recycle'], { env: { WORKERS: '2' } });
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    // Until 4 recycles (two equal draws in a row are likely, four are not).
    const recycled = () => p.lines.filter((m) => m.event === 'recycle');
    for (let i = 0; i < 400 && (i < 120 || recycled().length < 4); i++) {
      assert.strictEqual((await get(port)).status, 200);
    }
    const recycles = recycled();
    assert.ok(recycles.length >= 4, JSON.stringify(recycles));
    const counts = recycles.map((r) => Number(/served (\d+)/.exec(r.info.reason)[1]));
    assert.ok(counts.every((c) => c >= 10 && c <= 30), String(counts));
    assert.ok(new Set(counts).size > 1, `jitter: counts differ (${counts})`);
  } finally {
    await p.kill();
  }
});

test("readiness by process.send('ready'), and a readiness timeout is an error event", { timeout: 30000 }, async () => {
  const p = run('supervise.js', ['ready'], { env: { WORKERS: '2' } });
  try {
    const ready = await p.next((m) => m.event === 'ready');
    assert.strictEqual(ready.id, 1);
    const unready = await p.next((m) => m.event === 'unready');
    assert.strictEqual(unready.id, 2);
    assert.match(unready.info.reason, /not ready within readyTimeout/);
    const exit = await p.next((m) => m.event === 'exit' && m.id === 2);
    assert.ok(exit);
  } finally {
    await p.kill();
  }
});

test('shutdown: a worker that ignores SIGTERM ends by SIGKILL at the deadline', { timeout: 30000 }, async () => {
  const p = run('supervise.js', ['shutdown']);
  try {
    await p.next((m) => m.event === 'shut');
    // The worker ignored SIGTERM: the shutdown ended it with SIGKILL.
    const exit = p.lines.find((m) => m.event === 'exit');
    assert.deepStrictEqual([exit.info, exit.extra], [null, 'SIGKILL']);
    assert.strictEqual(p.lines.some((m) => m.event === 'restart'), false, 'no restart during shutdown');
  } finally {
    await p.kill();
  }
});
