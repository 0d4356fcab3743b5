'use strict';

// bench/run.js --pin: the CPU split and the real taskset wrapping.

const test = require('node:test');
const assert = require('node:assert');
const { spawnSync } = require('node:child_process');
const pin = require('../bench/lib/pin');

const hasTaskset = pin.hasTaskset();

test('pin: CPU lists and the split between servers and load', () => {
  assert.deepStrictEqual(pin.parseList('0-2,5,1'), [0, 1, 2, 5]);
  assert.throws(() => pin.parseList('3-1'), /bad CPU range/);
  assert.throws(() => pin.parseList('a'), /bad CPU list/);
  assert.deepStrictEqual(pin.split(true, [0, 1]), { servers: '0', load: '1' });
  assert.deepStrictEqual(pin.split(true, [2, 3, 4, 7]), { servers: '2,3,4', load: '7' });
  assert.deepStrictEqual(pin.split('0-1:3', [0, 1, 2, 3]), { servers: '0,1', load: '3' });
  assert.throws(() => pin.split(true, [0]), /needs 2 CPUs/);
  assert.throws(() => pin.split('0:0', [0, 1]), /in both lists/);
  assert.throws(() => pin.split('0:9', [0, 1]), /CPU 9 is not available/);
  assert.throws(() => pin.split('0', [0, 1]), /expected SERVERS:LOAD/);
  assert.ok(pin.allowedCpus().length >= 1);
});

test('pin: a wrapped command runs on its CPUs, with its own pid', {
  skip: !hasTaskset || pin.allowedCpus().length < 2 ? 'needs taskset and 2 CPUs' : false,
  timeout: 20000,
}, () => {
  const s = pin.configure(true);
  try {
    const script = "process.stdout.write(JSON.stringify({ pid: process.pid, cpus: /Cpus_allowed_list:\\s*(\\S+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1] }))";
    for (const role of ['servers', 'load']) {
      const [cmd, args] = pin.wrap(role, process.execPath, ['-e', script]);
      assert.strictEqual(cmd, 'taskset');
      const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10000 });
      assert.strictEqual(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.deepStrictEqual(pin.parseList(out.cpus), pin.parseList(s[role]));
      assert.strictEqual(out.pid, r.pid, 'taskset execs the command: the pid is the command\'s');
    }
    assert.match(pin.describe(), /servers pinned to CPU/);
  } finally {
    pin.configure(null);
  }
  assert.deepStrictEqual(pin.wrap('load', 'wrk', ['-t1']), ['wrk', ['-t1']]);
  assert.strictEqual(pin.describe(), '');
});
