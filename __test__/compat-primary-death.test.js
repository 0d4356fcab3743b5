'use strict';

// When the primary dies, a worker leaves as Node's cluster workers do: its
// channel's end of file emits 'disconnect', then it exits with code 0 and
// its 'exit' handlers run (pino's final flush, temporary files). rcluster
// also kills one that has not left 500 ms after the primary's death (a
// stuck event loop), which Node leaves running.
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const test = require('node:test');
const { both } = require('./compat');
const { run, waitGone, alive, linuxOnly } = require('./helpers');

function logs(t, specs) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-death-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return specs.map((s, i) => ({ ...s, file: path.join(dir, `w${i}.log`) }));
}

async function until(fn, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return fn();
}

both('SIGKILL of the primary: each worker emits disconnect, then exits with code 0', async (mod, t) => {
  const specs = logs(t, [{}, {}]);
  const p = run('compat-primary-death.js', [], { env: { MODULE: mod, LOGS: JSON.stringify(specs) } });
  let workers = [];
  try {
    const ready = await p.next((m) => m.event === 'ready');
    workers = ready.workers;
    process.kill(ready.pid, 'SIGKILL');
    await p.done;
    assert.deepStrictEqual(await waitGone(workers, 3000), []);
    const read = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
    for (const s of specs) {
      assert.strictEqual(read(s.file), 'worker disconnect\nexit 0\n');
    }
  } finally {
    for (const pid of workers) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await p.kill();
  }
});

test('[rcluster] SIGKILL of the primary: a worker whose event loop is stuck is killed too', { timeout: 30000, skip: linuxOnly('the primary is watched through a pidfd') }, async (t) => {
  const specs = logs(t, [{ busy: true }, {}]);
  const p = run('compat-primary-death.js', [], { env: { MODULE: 'rcluster', LOGS: JSON.stringify(specs) } });
  let workers = [];
  try {
    const ready = await p.next((m) => m.event === 'ready');
    workers = ready.workers;
    // The busy one is spinning by now.
    await new Promise((r) => setTimeout(r, 100));
    process.kill(ready.pid, 'SIGKILL');
    await p.done;
    // The design's bound for a worker outliving its primary, with room.
    assert.deepStrictEqual(await waitGone(workers, 1500), [], 'both gone');
    // The idle one left by itself; the stuck one ran nothing.
    assert.ok(await until(() => fs.existsSync(specs[1].file), 500));
    assert.strictEqual(fs.readFileSync(specs[1].file, 'utf8'), 'worker disconnect\nexit 0\n');
    assert.strictEqual(fs.existsSync(specs[0].file), false);
  } finally {
    for (const pid of workers) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await p.kill();
  }
});
