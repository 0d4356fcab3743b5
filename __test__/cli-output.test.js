'use strict';

// Worker output goes to files the primary opens and hands over as the
// workers' stdout/stderr: --log-dir (one pair per slot) and --output.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { get } = require('./helpers');
const { cli, stderrMatch } = require('./cli-lib');

async function untilFile(file, re, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (re.test(text)) return text;
    if (Date.now() > end) throw new Error(`${file} never matched ${re}: ${JSON.stringify(text)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('--log-dir: each slot writes its own files, and keeps them across a reload', { timeout: 30000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-logs-'));
  const p = cli(['-w', '2', '--log-dir', dir, 'cli-app.js']);
  try {
    await stderrMatch(p, /started[^]*SIGHUP/);
    const out1 = path.join(dir, 'worker-1.out.log');
    const out2 = path.join(dir, 'worker-2.out.log');
    const first = JSON.parse((await untilFile(out1, /listening/)).split('\n')[0]);
    const second = JSON.parse((await untilFile(out2, /listening/)).split('\n')[0]);
    assert.strictEqual(first.instance, '0');
    assert.strictEqual(second.instance, '1');
    assert.ok(fs.existsSync(path.join(dir, 'worker-1.err.log')));
    assert.strictEqual(p.lines.length, 0, 'nothing on the terminal');
    for (let i = 0; i < 6; i++) await get(first.port, '/log');
    const logs = fs.readFileSync(out1, 'utf8') + fs.readFileSync(out2, 'utf8');
    assert.strictEqual((logs.match(/log line from/g) || []).length, 6);
    p.child.kill('SIGHUP');
    await stderrMatch(p, /reload\s+done/);
    // The replacement of slot 1 appends to slot 1's file.
    await untilFile(out1, /listening[^]*listening/);
    p.child.kill('SIGTERM');
    assert.strictEqual((await p.done).code, 0);
  } finally {
    for (const f of fs.readdirSync(dir)) {
      try {
        const m = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8').split('\n')[0]);
        p.lines.push(m); // So that kill() reaps its pids.
      } catch {}
    }
    await p.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--output and --error: one file for every worker', { timeout: 30000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-out-'));
  const out = path.join(dir, 'sub', 'app.log');
  const err = path.join(dir, 'app.err');
  const p = cli(['-w', '2', '--output', out, '--error', err, '--max-restarts', '1', '--backoff-initial', '10', 'cli-crash.js']);
  try {
    // The crash app writes a line to stdout, then throws (stderr).
    const { code } = await p.done;
    assert.strictEqual(code, 1);
    assert.match(await untilFile(out, /"started"[^]*"started"/), /"event":"started"/);
    assert.match(await untilFile(err, /boom/), /Error: boom: the app cannot start/);
    assert.doesNotMatch(fs.readFileSync(out, 'utf8'), /boom/);
    assert.doesNotMatch(p.stderr(), /boom/, 'the app\'s stderr is not on the terminal');
    assert.match(p.stderr(), /crashloop/, 'the CLI\'s own lines are');
  } finally {
    for (const line of fs.existsSync(out) ? fs.readFileSync(out, 'utf8').split('\n') : []) {
      try { p.lines.push(JSON.parse(line)); } catch {}
    }
    await p.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
