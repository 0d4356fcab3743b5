'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { run, waitGone, alive, linuxOnly } = require('./helpers');

test('SIGKILL of the primary leaves no worker behind', { timeout: 30000 }, async () => {
  const p = run('lifecycle.js', ['orphans']);
  try {
    const { pids, pid } = await p.next((m) => m.event === 'ready');
    assert.strictEqual(pids.length, 2);
    assert.ok(pids.every(alive));
    process.kill(pid, 'SIGKILL');
    await p.done;
    const left = await waitGone(pids, 1000);
    assert.deepStrictEqual(left, [], `workers outlived their primary: ${left}`);
  } finally {
    await p.kill();
  }
});

test("a worker's child sees no rcluster fd, variable or preload", { timeout: 30000, skip: linuxOnly('reads /proc') }, async () => {
  const p = run('lifecycle.js', ['grandchild']);
  try {
    const r = await p.next((m) => m.event === 'report');
    assert.deepStrictEqual(r.workerEnv, []);
    assert.deepStrictEqual(r.child.env, []);
    assert.deepStrictEqual(r.child.fds.filter(([, t]) => t.startsWith('socket:')), [],
      `child inherited sockets: ${JSON.stringify(r.child.fds)}`);
    assert.ok(!r.workerExecArgv.some((a) => /bootstrap/.test(a)), String(r.workerExecArgv));
    assert.ok(!r.child.execArgv.some((a) => /bootstrap/.test(a)));
  } finally {
    await p.kill();
  }
});

test('online, disconnect and exit events carry code and signal', { timeout: 30000 }, async () => {
  const p = run('lifecycle.js', ['exit-codes']);
  try {
    const r = await p.next((m) => m.event === 'done');
    const of = (id) => r.events.filter((e) => e[0] === id).map((e) => e.slice(1));
    assert.deepStrictEqual(of(1), [['online'], ['disconnect'], ['exit', 3, null]]);
    assert.deepStrictEqual(of(2), [['online'], ['disconnect'], ['exit', null, 'SIGTERM']]);
    assert.deepStrictEqual(r.a, { dead: true, state: 'dead', after: false });
    assert.deepStrictEqual(r.b, { dead: true, state: 'dead', killed: true, sig: 'SIGTERM' });
    assert.deepStrictEqual(r.workers, []);
  } finally {
    await p.kill();
  }
});

test('EADDRINUSE reaches the worker server like in Node, and it can recover', { timeout: 30000 }, async () => {
  const p = run('lifecycle.js', ['addr-in-use']);
  try {
    const r = await p.next((m) => m.event === 'report');
    assert.strictEqual(r.code, 'EADDRINUSE');
    assert.strictEqual(r.syscall, 'bind');
    assert.strictEqual(r.recovered, true);
  } finally {
    await p.kill();
  }
});
