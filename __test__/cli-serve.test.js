'use strict';

// `rcluster app.js`: an unmodified server (CommonJS or ESM entry) served by
// 2 workers on one port, with the start-up table, app arguments, --env and
// --node-arg reaching the workers.

const test = require('node:test');
const assert = require('node:assert');
const { get } = require('./helpers');
const { cli, stderrMatch } = require('./cli-lib');

async function distinctPids(port, want, tries = 60) {
  const pids = new Set();
  for (let i = 0; i < tries && pids.size < want; i++) {
    const r = await get(port);
    assert.strictEqual(r.status, 200);
    pids.add(r.body);
  }
  return pids;
}

test('a CommonJS app on 2 workers: one port, both workers serve, start-up table, SIGTERM exits 0', { timeout: 30000 }, async () => {
  const p = cli(['-w', '2', '-e', 'EXTRA=hello', '--node-arg=--max-old-space-size=100', 'cli-app.js', 'one', '--two']);
  try {
    await p.next((m) => m.event === 'listening' && m.instance === '0');
    await p.next((m) => m.event === 'listening' && m.instance === '1');
    const workers = p.lines.filter((m) => m.event === 'listening');
    assert.strictEqual(workers.length, 2);
    assert.strictEqual(workers[0].port, workers[1].port, 'every worker listens on the same port');
    for (const w of workers) {
      assert.strictEqual(w.rcluster, true, "require('cluster') in the app is rcluster");
      assert.strictEqual(w.extra, 'hello');
      assert.deepStrictEqual(w.argv, ['one', '--two'], 'arguments after the app are the app\'s');
      assert.deepStrictEqual(w.execArgv, ['--max-old-space-size=100'], 'only the user\'s node arguments are visible');
    }
    const pids = await distinctPids(workers[0].port, 2);
    assert.deepStrictEqual([...pids].sort(), workers.map((w) => String(w.pid)).sort());

    const table = (await stderrMatch(p, /started .*cli-app\.js on 2 workers[^]*?SIGHUP/))[0];
    assert.match(table, /slot\s+worker\s+pid\s+state/);
    for (const w of workers) assert.match(table, new RegExp(`\\s${w.pid}\\s+ready`));
    assert.match(table, new RegExp(`listening on 127\\.0\\.0\\.1:${workers[0].port}`));

    p.child.kill('SIGTERM');
    const { code } = await p.done;
    assert.strictEqual(code, 0, p.stderr());
    assert.match(p.stderr(), /SIGTERM: draining 2 worker/);
  } finally {
    await p.kill();
  }
});

test('an ES module app on 2 workers: import cluster from "node:cluster" is rcluster', { timeout: 30000 }, async () => {
  const p = cli(['--workers', '2', 'cli-app.mjs']);
  try {
    await p.next((m) => m.event === 'listening' && p.lines.filter((x) => x.event === 'listening').length === 2);
    const workers = p.lines.filter((m) => m.event === 'listening');
    for (const w of workers) {
      assert.strictEqual(w.esm, true);
      assert.strictEqual(w.isWorker, true);
      assert.strictEqual(w.rcluster, true);
    }
    assert.strictEqual(workers[0].port, workers[1].port);
    const pids = await distinctPids(workers[0].port, 2);
    assert.strictEqual(pids.size, 2);
    p.child.kill('SIGTERM');
    assert.strictEqual((await p.done).code, 0, p.stderr());
  } finally {
    await p.kill();
  }
});

test('rcluster ecosystem.config.js: the app PM2 would run, with its instances, args, env, cwd and node_args', { timeout: 30000 }, async () => {
  const eco = require('path').join(__dirname, 'fixtures', 'ecosystem', 'ecosystem.config.js');
  const p = cli([eco]);
  try {
    await p.next((m) => m.event === 'listening' && p.lines.filter((x) => x.event === 'listening').length === 2);
    const workers = p.lines.filter((m) => m.event === 'listening');
    assert.deepStrictEqual(workers.map((w) => w.instance).sort(), ['0', '1']);
    for (const w of workers) {
      assert.strictEqual(w.rcluster, true);
      assert.strictEqual(w.extra, 'from-ecosystem');
      assert.deepStrictEqual(w.argv, ['one', '--two']);
      assert.deepStrictEqual(w.execArgv, ['--max-old-space-size=100', '--no-deprecation']);
      assert.strictEqual(w.cwd, require('path').join(__dirname, 'fixtures'), 'cwd: relative to the file');
    }
    await distinctPids(workers[0].port, 2);
    await stderrMatch(p, /ecosystem\.config\.js: ignored \(no equivalent here\): watch, cron_restart/);
    await stderrMatch(p, /started   api \(\S*cli-app\.js\) on 2 workers/);
    p.child.kill('SIGTERM');
    const { code } = await p.done;
    assert.strictEqual(code, 0, p.stderr());
  } finally {
    await p.kill();
  }
});
