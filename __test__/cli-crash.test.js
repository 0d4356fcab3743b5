'use strict';

// A crashing app: restarts with growing back-off, then every slot stops in a
// crash loop and the CLI exits 1 with a message saying so.

const test = require('node:test');
const assert = require('node:assert');
const { cli } = require('./cli-lib');

test('a crashing app reaches the crash-loop stop: clear message, exit code 1', { timeout: 30000 }, async () => {
  const p = cli(['-w', '2', '--max-restarts', '2', '--backoff-initial', '20', '--min-uptime', '2s', 'cli-crash.js']);
  try {
    const { code, signal } = await p.done;
    const err = p.stderr();
    assert.strictEqual(signal, null);
    assert.strictEqual(code, 1, err);
    assert.match(err, /Error: boom: the app cannot start/, "the app's own stderr reaches the terminal");
    assert.match(err, /exit\s+slot 1: worker \d+ \(pid \d+\) exited with code 1 after/);
    assert.match(err, /backoff\s+slot 1: worker \d+ exited after \d+ ms \(minUptime 2000 ms\); restarting in 20 ms \(crash 1 of at most 2\)/);
    assert.match(err, /backoff\s+slot 1: .*restarting in 40 ms \(crash 2 of at most 2\)/);
    assert.match(err, /restart\s+slot 1: started worker \d+ \(pid \d+\) after an exit with code 1 \(restart 1\)/);
    assert.match(err, /crashloop slot 1: stopped, crash loop: 3 consecutive exits within minUptime \(2000 ms\); maxRestarts is 2 \(last exit: code 1\)/);
    assert.match(err, /crashloop slot 2: stopped/);
    assert.match(err, /every worker slot stopped in a crash loop.*Exiting with code 1\./);
    // 2 slots x (1 start + 2 restarts).
    assert.strictEqual(p.lines.filter((m) => m.event === 'started').length, 6);
  } finally {
    await p.kill();
  }
});

test('--restart never: the CLI exits once every worker has exited, with their status', { timeout: 30000 }, async () => {
  const p = cli(['-w', '1', '--restart', 'never', 'cli-crash.js']);
  try {
    const { code } = await p.done;
    assert.strictEqual(code, 1, p.stderr());
    assert.match(p.stderr(), /every worker exited \(--restart never; last exits: code 1\)\. Exiting with code 1\./);
    assert.doesNotMatch(p.stderr(), /restart\s+slot/);
  } finally {
    await p.kill();
  }
});
