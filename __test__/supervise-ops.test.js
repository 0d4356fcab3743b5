'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { run, get } = require('./helpers');

test('cluster.scale() adds workers and drains the extra ones', { timeout: 30000 }, async () => {
  const p = run('supervise-ops.js', ['scale']);
  try {
    const up = await p.next((m) => m.event === 'scaled-up');
    assert.strictEqual(up.live, 4);
    const down = await p.next((m) => m.event === 'scaled-down');
    assert.deepStrictEqual(down.ids, [1], 'the newest workers are drained first');
    assert.strictEqual(p.lines.some((m) => m.event === 'restart'), false, 'drained slots are not restarted');
  } finally {
    await p.kill();
  }
});

test('a reload whose new worker is never ready rejects and keeps the old workers', { timeout: 30000 }, async () => {
  const flag = require('path').join(require('os').tmpdir(), `rcluster-never-ready-${process.pid}`);
  const p = run('supervise-ops.js', ['bad-reload'], { env: { FLAG_FILE: flag } });
  try {
    const { port, pids } = await p.next((m) => m.event === 'serving');
    const failed = await p.next((m) => m.event === 'reload-failed');
    assert.strictEqual(failed.code, 'ERR_RCLUSTER_RELOAD');
    assert.match(failed.message, /not ready/);
    await p.next((m) => m.event === 'unready');
    for (let i = 0; i < 10; i++) {
      const r = await get(port);
      assert.strictEqual(r.status, 200);
      assert.ok(pids.includes(Number(r.body)), 'still served by the old workers');
    }
  } finally {
    await p.kill();
    try { require('fs').unlinkSync(flag); } catch {}
  }
});

test('signals: SIGHUP reloads, SIGTERM drains and exits 0', { timeout: 30000 }, async () => {
  const p = run('supervise-ops.js', ['signals']);
  try {
    const { port, pid } = await p.next((m) => m.event === 'serving');
    process.kill(pid, 'SIGHUP');
    await p.next((m) => m.event === 'reload' && m.info.phase === 'done' &&
      p.lines.filter((x) => x.event === 'reload' && x.info.phase === 'done').length === 2);
    assert.strictEqual((await get(port)).status, 200);
    process.kill(pid, 'SIGTERM');
    const { code } = await p.done;
    assert.strictEqual(code, 0);
    assert.strictEqual(p.lines.find((m) => m.event === 'primary-exit').code, 0);
  } finally {
    await p.kill();
  }
});

for (const when of ['never', 'gone']) {
  test(`reload() and shutdown() settle with no live worker (${when === 'never' ? 'none forked' : 'the only one exited'})`, { timeout: 20000 }, async () => {
    const p = run('supervise-idle.js', [when]);
    try {
      await p.next((m) => m.event === 'shut-down');
      assert.deepStrictEqual(p.lines.map((m) => m.event), when === 'gone' ? ['exit', 'reloaded', 'shut-down'] : ['reloaded', 'shut-down']);
      assert.deepStrictEqual(await p.done, { code: 0, signal: null });
    } finally {
      await p.kill();
    }
  });
}
