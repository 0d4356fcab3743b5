'use strict';

// Node's permission model (`--permission`; Node 20's `--experimental-permission`).
// rcluster's spawner and dispatcher are native code, which the model does
// not see: forking must be refused as Node refuses it, and a process whose
// addons are disabled must say why rcluster cannot load.

const assert = require('node:assert');
const test = require('node:test');
const { both } = require('./compat');
const { run } = require('./helpers');

const PERMISSION = process.allowedNodeEnvironmentFlags.has('--permission') ? '--permission' : '--experimental-permission';
const ADDONS = process.allowedNodeEnvironmentFlags.has('--allow-addons');
const needsAddons = ADDONS ? {} : { skip: 'this Node has no --allow-addons' };
// Node 25 added network permissions: a server and its client need them.
const NET = process.allowedNodeEnvironmentFlags.has('--allow-net') ? ['--allow-net'] : [];

function report(mod, flags) {
  const p = run('compat-permission.js', [], {
    env: { MODULE: mod },
    nodeArgs: ['--no-warnings', PERMISSION, '--allow-fs-read=*', ...flags],
  });
  return { p, r: p.next((m) => m.event === 'report') };
}

both('without --allow-child-process, fork() throws ERR_ACCESS_DENIED and starts nothing', needsAddons, async (mod) => {
  const { p, r } = report(mod, ['--allow-addons']);
  try {
    assert.deepStrictEqual((await r), { event: 'report', fork: { code: 'ERR_ACCESS_DENIED', permission: 'ChildProcess' }, workers: 0 });
    assert.deepStrictEqual(await p.done, { code: 0, signal: null });
  } finally {
    await p.kill();
  }
});

both('with --allow-child-process (and --allow-addons), workers serve', needsAddons, async (mod) => {
  const { p, r } = report(mod, ['--allow-addons', '--allow-child-process', ...NET]);
  try {
    assert.strictEqual((await r).body, 'worker 1');
  } finally {
    await p.kill();
  }
});

// rcluster's primary binds in native code, which the permission model does
// not see: without --allow-net its workers' listen() must fail all the same,
// as a process's own would. (Node's cluster fails the bind in its primary,
// which dies of the uncaught error.)
test('[rcluster] without --allow-net, a worker\'s listen() fails with ERR_ACCESS_DENIED', {
  skip: NET.length === 0 ? 'this Node has no network permissions' : !ADDONS && 'this Node has no --allow-addons',
}, async () => {
  const { p, r } = report('rcluster', ['--allow-addons', '--allow-child-process']);
  try {
    const { listen } = await r;
    assert.deepStrictEqual(listen, {
      code: 'ERR_ACCESS_DENIED',
      permission: 'Net',
      message: 'Access to this API has been restricted. Use --allow-net to manage permissions.',
    });
  } finally {
    await p.kill();
  }
});

test('[rcluster] with addons disabled, loading rcluster says why', async () => {
  const { p, r } = report('rcluster', ['--allow-child-process']);
  try {
    const { load } = await r;
    assert.strictEqual(load.code, 'ERR_RCLUSTER_ADDONS_DISABLED');
    assert.match(load.message, /addons are disabled.*--allow-addons/);
  } finally {
    await p.kill();
  }
});

test('[rcluster] with --no-addons, loading rcluster says why', async () => {
  const p = run('compat-permission.js', [], { env: { MODULE: 'rcluster' }, nodeArgs: ['--no-addons'] });
  try {
    const { load } = await p.next((m) => m.event === 'report');
    assert.strictEqual(load.code, 'ERR_RCLUSTER_ADDONS_DISABLED');
    assert.match(load.message, /--no-addons/);
  } finally {
    await p.kill();
  }
});
