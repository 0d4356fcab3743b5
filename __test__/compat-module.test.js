'use strict';

// The module surface, run against node:cluster and rcluster.

const assert = require('node:assert');
const { both } = require('./compat');
const { run, get } = require('./helpers');

async function report(mod, scenario, env = {}) {
  const p = run('compat-module.js', [scenario], { env: { MODULE: mod, ...env } });
  try {
    return await p.next((m) => m.event === 'report');
  } finally {
    await p.kill();
  }
}

const SHAPE = ['function', 'function', 'function', 'function', 'function', 'function'];
const blank = (over = {}) => ({
  state: 'none', id: 0, exitedAfterDisconnect: 'undefined', hasAfter: true, process: 'undefined',
  emitter: true, isWorker: true, methods: SHAPE, ...over,
});

both('primary flags, settings, setup event, Worker constructor, disconnect(cb)', async (mod) => {
  const r = await report(mod, 'surface');
  assert.deepStrictEqual(r.primary, {
    isPrimary: true, isMaster: true, isWorker: false, hasWorker: false, worker: 'undefined',
    hasWorkers: true, hasSettings: true, fork: 'function', setupPrimary: 'function',
    setupMaster: 'function', disconnect: 'function', Worker: 'function',
    SCHED_NONE: 1, SCHED_RR: 2, emitter: true,
  });
  assert.strictEqual(r.same, true, 'setupMaster is setupPrimary');
  assert.deepStrictEqual(r.settingsBefore, {});
  assert.deepStrictEqual(r.workersBefore, {});
  assert.strictEqual(r.policy, 2);
  // new Worker() and Worker() without new: Node's defaults.
  assert.deepStrictEqual(r.newWorker, blank());
  assert.deepStrictEqual(r.callWorker, blank());
  assert.deepStrictEqual(r.nullWorker, blank());
  assert.deepStrictEqual(r.optWorker, blank({ state: 'online', id: 7 }));
  // Defaults after setupPrimary(): args, exec, execArgv (process.execArgv itself), silent.
  assert.deepStrictEqual(r.defaults, {
    keys: ['args', 'exec', 'execArgv', 'silent'], args: ['a'], silent: false, exec: true, execArgv: true,
  });
  // Later calls merge into the current settings.
  assert.deepStrictEqual(r.merged, { args: ['b'], foo: 1, silent: false });
  // --prof gets a per-process log file unless one is given.
  assert.deepStrictEqual(r.prof, ['--prof', '--logfile=v8-%p.log']);
  assert.deepStrictEqual(r.prof2, ['--prof', '--logfile=x.log']);
  // 'setup' is asynchronous, once per call, with that call's settings.
  assert.strictEqual(r.setupSync, 0);
  assert.deepStrictEqual(r.setups, [['a'], ['b'], ['b'], ['b']]);
  assert.strictEqual(r.lastIsCurrent, true);
  // The policy is frozen at the first setupPrimary(): setting it later is inert.
  assert.strictEqual(r.policyAfter, 42);
  // disconnect(cb) without workers calls back, asynchronously.
  assert.strictEqual(r.disconnectSync, 0);
  assert.strictEqual(r.disconnectAsync, 1);
});

// The worker reports its server's handle: a real TCP handle when the primary
// passed the listening socket (SCHED_NONE), a plain object in round robin.
const policies = [
  ['default is round robin', {}, 2, 'Object'],
  ['NODE_CLUSTER_SCHED_POLICY=none', { NODE_CLUSTER_SCHED_POLICY: 'none' }, 1, 'TCP'],
  ['NODE_CLUSTER_SCHED_POLICY=rr', { NODE_CLUSTER_SCHED_POLICY: 'rr' }, 2, 'Object'],
  ['NODE_CLUSTER_SCHED_POLICY=bogus falls back to rr', { NODE_CLUSTER_SCHED_POLICY: 'bogus' }, 2, 'Object'],
  ['schedulingPolicy = SCHED_NONE before the first fork wins over the env', { NODE_CLUSTER_SCHED_POLICY: 'rr', SET: 'none' }, 2, 'TCP'],
  ['schedulingPolicy = SCHED_RR before the first fork wins over the env', { NODE_CLUSTER_SCHED_POLICY: 'none', SET: 'rr' }, 1, 'Object'],
];
for (const [name, env, initial, handle] of policies) {
  both(`schedulingPolicy: ${name}, frozen at the first fork()`, async (mod) => {
    const r = await report(mod, 'policy', env);
    assert.strictEqual(r.initial, initial);
    assert.deepStrictEqual(r.handles, { 1: handle, 2: handle });
  });
}

both('an invalid schedulingPolicy throws from setupPrimary()', async (mod) => {
  const r = await report(mod, 'policy', { SET: 'bad' });
  assert.strictEqual(r.threw, true);
});

both('fork(env) adds to process.env; ids count up; disconnect(cb) after workers leave', async (mod) => {
  const r = await report(mod, 'fork-env', { COMPAT_PARENT_VAR: 'p' });
  assert.strictEqual(r.forkId, 1);
  // Values are strings, undefined ones are left out, NODE_UNIQUE_ID is not visible.
  assert.deepStrictEqual(r.env, {
    FOO: 'bar', NUM: '42', UNDEF: false, EMPTY: '', NODE_UNIQUE_ID: false, id: 1, inherited: 'p',
  });
  assert.deepStrictEqual(r.env2, { UNDEF: false, NODE_UNIQUE_ID: false, id: 2, inherited: 'p' });
  assert.deepStrictEqual(r.ids, [1, 2]);
  assert.deepStrictEqual(r.disconnectCb.workers, []);
});

both('cluster.workers: a worker leaves after both disconnect and exit; primary disconnect() removes it at once', async (mod) => {
  const r = await report(mod, 'membership');
  // Worker-side disconnect, then exit later.
  assert.deepStrictEqual(r.seen[1], [['disconnect', true], ['exit', false]]);
  // Killed: whichever of disconnect/exit comes second removes it.
  assert.deepStrictEqual(r.seen[2].map(([, inside]) => inside), [true, false]);
  assert.deepStrictEqual(r.seen[2].map(([ev]) => ev).sort(), ['disconnect', 'exit']);
  assert.strictEqual(r.afterOnline, true);
  // Primary-side disconnect(): returns the worker, removes it synchronously,
  // the channel is still open at that moment.
  assert.strictEqual(r.disconnectReturns, true);
  assert.strictEqual(r.removedAtOnce, true);
  assert.strictEqual(r.connectedAfterCall, true);
  assert.strictEqual(r.afterFlag, true);
  assert.deepStrictEqual(r.seen[3], [['exit', false]]);
  assert.deepStrictEqual(r.workers, []);
});

// With --experimental-default-type=module (Node 20.10 to 22), a .js file
// without a "type" in its package.json is an ES module outside
// node_modules: an npm link or a workspace checkout of rcluster. Its
// package.json says "commonjs".
const DEFAULT_TYPE = process.allowedNodeEnvironmentFlags.has('--experimental-default-type');
both('a program run with --experimental-default-type=module', DEFAULT_TYPE ? {} : { skip: 'this Node has no --experimental-default-type' }, async (mod) => {
  const p = run('http-cluster.js', [], {
    env: { MODULE: mod, WORKERS: '1' },
    nodeArgs: ['--no-warnings', '--experimental-default-type=module'],
  });
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    assert.strictEqual((await get(port)).body, '1');
  } finally {
    await p.kill();
  }
});
