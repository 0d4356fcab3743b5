'use strict';

// Signals of the CLI's primary: SIGHUP reloads with no failed request under
// load, SIGTERM drains an in-flight request and exits 0, Ctrl-C (SIGINT to
// the whole process group) does the same, SIGUSR2 prints per-worker status.

const test = require('node:test');
const assert = require('node:assert');
const { spawn } = require('child_process');
const readline = require('readline');
const path = require('path');
const { get, waitGone, ROOT, FIXTURES } = require('./helpers');
const { cli, stderrMatch, load, BIN } = require('./cli-lib');

const count = (s, re) => (s.match(re) || []).length;

test('SIGHUP: rolling reload under load drops no request; SIGUSR2 prints status', { timeout: 60000 }, async () => {
  const p = cli(['-w', '2', 'cli-app.js']);
  try {
    const { port } = await p.next((m) => m.event === 'listening');
    await p.next((m) => m.event === 'listening' && m.pid !== p.lines[0].pid);
    const before = new Set(p.lines.map((m) => m.pid));
    const l = load(port, { concurrency: 6 });
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 1; i <= 2; i++) {
      p.child.kill('SIGHUP');
      await stderrMatch(p, new RegExp(`(reload\\s+done in[^]*){${i}}`), 30000);
    }
    const stats = await l.stop();
    assert.deepStrictEqual(stats.errors, [], `errors after ${stats.ok} good responses`);
    assert.ok(stats.ok > 50, `only ${stats.ok} requests`);
    const err = p.stderr();
    assert.strictEqual(count(err, /reload\s+slot \d: worker \d+ ready, draining worker \d+/g), 4, err);
    assert.doesNotMatch(err, /reload\s+failed/);
    // The workers now serving are new ones.
    const now = new Set();
    for (let i = 0; i < 20; i++) now.add(Number((await get(port)).body));
    for (const pid of now) assert.ok(!before.has(pid), `pid ${pid} is an old worker`);

    // SIGUSR2's status; connections the workers took themselves (the rr
    // offload, under this load) are counted up to a second late, so it is
    // asked again until the 20 requests above show.
    const hasStats = typeof require('..').stats === 'function';
    let served = 0;
    for (let attempt = 1; ; attempt++) {
      const from = p.stderr().length;
      p.child.kill('SIGUSR2');
      const status = (await stderrMatch({ ...p, stderr: () => p.stderr().slice(from) }, /status\s+primary pid[^\n]*\n(.*\n){3}/))[0];
      assert.match(status, /slot\s+worker\s+pid\s+state\s+uptime\s+restarts\s+conns\s+served\s+rss\s+loop delay/);
      const rows = status.trim().split('\n').slice(2);
      assert.strictEqual(rows.length, 2, status);
      served = 0;
      // The rows are the new workers, among them every one that served the
      // 20 requests (under the offload one worker may have taken them all).
      const listed = new Set(rows.map((row) => Number(row.trim().split(/\s+/)[2])));
      for (const pid of now) assert.ok(listed.has(pid), `${pid} served but is not in ${status}`);
      for (const row of rows) {
        const [slot, , pid, state, uptime, restarts, conns, total, rss] = row.trim().split(/\s+/);
        assert.match(slot, /^[12]$/);
        assert.ok(!before.has(Number(pid)), `${pid} in ${status} is an old worker`);
        assert.strictEqual(state, 'ready');
        assert.match(uptime, /^[\d.]+(ms|s)$/);
        assert.strictEqual(restarts, '0', 'a reload is not a restart');
        assert.match(rss, /^[\d.]+[KMG]$/);
        if (hasStats) {
          assert.match(conns, /^\d+$/);
          served += Number(total);
        }
      }
      if (!hasStats || served >= 20 || attempt === 5) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    if (hasStats) assert.ok(served >= 20, `the new workers served ${served}`);
    p.child.kill('SIGTERM');
    assert.strictEqual((await p.done).code, 0);
  } finally {
    await p.kill();
  }
});

test('SIGTERM: an in-flight request completes, then the CLI exits 0', { timeout: 30000 }, async () => {
  const p = cli(['-w', '2', 'cli-app.js'], { env: { SLOW_MS: '800' } });
  try {
    const { port } = await p.next((m) => m.event === 'listening');
    await stderrMatch(p, /started/);
    const slow = get(port, '/slow');
    await new Promise((r) => setTimeout(r, 200));
    p.child.kill('SIGTERM');
    const r = await slow;
    assert.strictEqual(r.status, 200);
    assert.match(r.body, /^slow \d+$/);
    const { code, signal } = await p.done;
    assert.strictEqual(signal, null);
    assert.strictEqual(code, 0, p.stderr());
    assert.match(p.stderr(), /exit\s+stopped in/);
  } finally {
    await p.kill();
  }
});

test('Ctrl-C (SIGINT to the process group): workers are drained, not killed; exit 0', { timeout: 30000 }, async () => {
  // A terminal's Ctrl-C signals every process of the foreground group: run
  // the CLI in a group of its own and signal that group.
  const child = spawn(process.execPath, [BIN, '-w', '2', path.join(FIXTURES, 'cli-app.js')], {
    cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SLOW_MS: '800' },
  });
  const pids = [];
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const done = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  try {
    const port = await new Promise((resolve, reject) => {
      readline.createInterface({ input: child.stdout }).on('line', (line) => {
        const m = JSON.parse(line);
        pids.push(m.pid);
        if (pids.length === 2) resolve(m.port);
      });
      child.on('exit', () => reject(new Error(stderr)));
    });
    const slow = get(port, '/slow');
    await new Promise((r) => setTimeout(r, 200));
    process.kill(-child.pid, 'SIGINT');
    const r = await slow;
    assert.strictEqual(r.status, 200);
    const { code } = await done;
    assert.strictEqual(code, 0, stderr);
    assert.match(stderr, /SIGINT: draining 2 worker/);
    assert.deepStrictEqual(await waitGone(pids), []);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await done;
    for (const pid of await waitGone(pids, 2000)) {
      try { process.kill(pid, 'SIGKILL'); } catch {}
    }
  }
});
