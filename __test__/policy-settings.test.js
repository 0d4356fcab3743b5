'use strict';

// Choosing a dispatch policy: cluster.schedulingPolicy (numbers or names),
// the schedulingPolicy setting (ESM programs), NODE_CLUSTER_SCHED_POLICY with
// the new names, and per listener through listen({ schedulingPolicy }).

const test = require('node:test');
const assert = require('node:assert');
const { run, linuxOnly } = require('./helpers');
const { command, getFrom } = require('./policy-lib');

const cases = [
  ['NODE_CLUSTER_SCHED_POLICY=least', { NODE_CLUSTER_SCHED_POLICY: 'least', POLICY_VIA: 'env' }, 4, 'Object'],
  ['NODE_CLUSTER_SCHED_POLICY=hash', { NODE_CLUSTER_SCHED_POLICY: 'hash', POLICY_VIA: 'env' }, 5, 'Object'],
  ['NODE_CLUSTER_SCHED_POLICY=reuseport', { NODE_CLUSTER_SCHED_POLICY: 'reuseport', POLICY_VIA: 'env' }, 3, 'TCP'],
  ['cluster.schedulingPolicy = \'hash\'', { POLICY: 'hash', POLICY_VIA: 'assign' }, 5, 'Object'],
  ['cluster.schedulingPolicy = SCHED_REUSEPORT', { POLICY: '3', POLICY_VIA: 'assign' }, 3, 'TCP'],
  ['setupPrimary({ schedulingPolicy: \'reuseport\' }) wins over the env', { POLICY: 'reuseport', NODE_CLUSTER_SCHED_POLICY: 'rr' }, 3, 'TCP'],
  ['setupPrimary({ schedulingPolicy: SCHED_LEAST })', { POLICY: '4' }, 4, 'Object'],
  ['setupPrimary({ schedulingPolicy: \'none\' })', { POLICY: 'none' }, 1, 'TCP'],
];

for (const [name, env, number, handle] of cases) {
  test(`policy by ${name}`, { timeout: 30000, skip: /reuseport/.test(name) && linuxOnly('SO_REUSEPORT balancing') }, async () => {
    const p = run('policy-cluster.js', [], { env: { WORKERS: '1', ...env } });
    try {
      const ready = await p.next((m) => m.event === 'ready');
      assert.strictEqual(ready.policy, number, 'schedulingPolicy reads back as the number');
      command(p, { cmd: 'handle', id: 1 });
      const h = await p.next((m) => m.event === 'handle');
      // Workers accept themselves (a real handle) under none and reuseport;
      // the primary dispatches (a stand-in object) under rr, least and hash.
      assert.strictEqual(h.ctor, handle);
      const r = await getFrom(ready.port);
      assert.deepStrictEqual(r, { status: 200, body: '1' });
    } finally {
      await p.kill();
    }
  });
}

test('an unknown policy name throws from setupPrimary() like a bad number', { timeout: 30000 }, async () => {
  const p = run('policy-cluster.js', [], { env: { POLICY: 'bogus' } });
  try {
    const m = await p.next((l) => l.event === 'setup-error');
    assert.strictEqual(m.message, 'Bad cluster.schedulingPolicy: bogus');
    assert.strictEqual(m.code, 'ERR_INTERNAL_ASSERTION', "the code of Node's own assertion");
  } finally {
    await p.kill();
  }
});

test('per listener: listen({ schedulingPolicy }) overrides the cluster policy', { timeout: 30000, skip: linuxOnly('SO_REUSEPORT balancing') }, async () => {
  const p = run('policy-cluster.js', [], {
    env: { WORKERS: '1', POLICY: 'reuseport', POLICY_VIA: 'listen', NODE_CLUSTER_SCHED_POLICY: 'rr' },
  });
  try {
    const ready = await p.next((m) => m.event === 'ready');
    assert.strictEqual(ready.policy, 2, 'the cluster policy is still rr');
    command(p, { cmd: 'handle', id: 1 });
    assert.strictEqual((await p.next((m) => m.event === 'handle')).ctor, 'TCP', 'this listener is reuseport');
    assert.deepStrictEqual(await getFrom(ready.port), { status: 200, body: '1' });
  } finally {
    await p.kill();
  }
});

test('ESM: the schedulingPolicy setting before the first fork; named SCHED_* exports', { timeout: 30000 }, async () => {
  const p = run('policy-esm.mjs');
  try {
    const ready = await p.next((m) => m.event === 'ready');
    assert.deepStrictEqual(
      { policy: ready.policy, least: ready.SCHED_LEAST, hash: ready.SCHED_HASH, reuseport: ready.SCHED_REUSEPORT },
      { policy: 4, least: 4, hash: 5, reuseport: 3 },
    );
  } finally {
    await p.kill();
  }
});
