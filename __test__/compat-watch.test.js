'use strict';

// Programs run under `node --watch`, and hooks on Module._load that report
// over process.send(): a worker's send() must not require a module itself
// (each require() runs the hook, which sends again: a stack overflow before
// the first message), and the primary hears about the program's modules,
// never rcluster's own.

const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { both } = require('./compat');
const { run, waitGone, FIXTURES, ROOT } = require('./helpers');

const LIB = path.join(ROOT, 'lib') + path.sep;

function check(r) {
  assert.deepStrictEqual(r.done, { dep: 42, missingArgs: 'ERR_MISSING_ARGS' });
}

both('a worker reports its modules as under node --watch (WATCH_REPORT_DEPENDENCIES)', async (mod) => {
  const p = run('compat-watch.js', [], { env: { MODULE: mod, WATCH_REPORT_DEPENDENCIES: '1' } });
  try {
    const r = await p.next((m) => m.event === 'report');
    check(r);
    const files = r.heard.filter((m) => m && Array.isArray(m['watch:require']))
      .flatMap((m) => m['watch:require']).filter((f) => f !== null);
    assert.ok(files.includes(path.join(FIXTURES, 'compat-watch.js')), files.join());
    assert.ok(files.includes(path.join(FIXTURES, 'compat-watch-dep.js')), files.join());
    assert.deepStrictEqual(files.filter((f) => f.startsWith(LIB)), []);
    // Nothing else on the channel.
    assert.deepStrictEqual(r.heard.filter((m) => !(m && m['watch:require'])), ['plain']);
  } finally {
    await p.kill();
  }
});

both('a worker whose Module._load hook sends on every require', async (mod) => {
  const p = run('compat-watch.js', [], { env: { MODULE: mod, HOOK: '1' } });
  try {
    const r = await p.next((m) => m.event === 'report');
    check(r);
    const hooked = r.heard.filter((m) => m && m.hook).map((m) => m.hook);
    assert.ok(hooked.includes(path.join(FIXTURES, 'compat-watch-dep.js')), hooked.join());
    assert.ok(hooked.includes('http'), hooked.join());
    assert.deepStrictEqual(hooked.filter((f) => f.startsWith(LIB)), []);
  } finally {
    await p.kill();
  }
});

both('node --watch restarts a clustered program when its file changes, and leaves no process', async (mod) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-watch-'));
  const app = path.join(dir, 'app.js');
  fs.copyFileSync(path.join(FIXTURES, 'compat-watch.js'), app);
  fs.copyFileSync(path.join(FIXTURES, 'compat-watch-dep.js'), path.join(dir, 'compat-watch-dep.js'));
  const p = run(path.relative(FIXTURES, app), [], { nodeArgs: ['--watch'], env: { MODULE: mod, RCLUSTER_PATH: ROOT, WORKERS: '2' } });
  try {
    // The 'listening' lines of the first primary (other than `not`) whose 2 workers listen.
    const of = (primary) => p.lines.filter((m) => m.event === 'listening' && m.primary === primary);
    const listening = async (not) => of((await p.next((m) =>
      m.event === 'listening' && m.primary !== not && of(m.primary).length === 2, 15000)).primary);
    const first = await listening();
    const primary = first[0].primary;
    fs.appendFileSync(app, '\n// edited\n');
    const second = await listening(primary);
    assert.strictEqual(second.length, 2);
    // The first primary and its workers are gone once the second runs.
    assert.deepStrictEqual(await waitGone(first.map((m) => m.pids[1]).concat(primary), 5000), []);
    p.child.kill('SIGTERM');
    await p.done;
    const pids = p.lines.filter((m) => m.event === 'listening').flatMap((m) => m.pids);
    assert.deepStrictEqual(await waitGone(pids, 5000), []);
  } finally {
    await p.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
