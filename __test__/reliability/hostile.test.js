'use strict';

// Hostile or broken workers (fixtures/hostile-worker.js writes to one of its
// two channels behind rcluster's back: the control channel, read by the
// primary's reactor, or the message channel, read by the primary's
// JavaScript): garbage, a frame claiming 4 GiB, 253 fds in one frame (the
// kernel's SCM_MAX_FD; 1,000 is refused by sendmsg), a message flood, and a
// worker whose event loop is stuck with connections in hand. Each one gets a clear error event (or is noticed and killed),
// while HTTP load on the other workers sees no failure, the dispatcher
// loses no connection, and the primary keeps no fd of it.

const test = require('node:test');
const assert = require('node:assert');
const { run, linuxOnly } = require('../helpers');
const { procStats, load, counters } = require('./lib');

function start(env = {}) {
  // Every connection goes through the dispatcher (its counters are checked):
  // the rr offload (kernel hand-off under load) is off.
  return run('reliability.js', [], { env: { WORKERS: '2', RCLUSTER_RR_OFFLOAD: '0', ...env } });
}

/** Forks a hostile worker of kind `what` with load running on the others until `until` resolves. */
async function attack(p, port, what, until) {
  const seen = p.lines.length;
  const after = (pred) => (m) => p.lines.indexOf(m) >= seen && pred(m);
  p.child.stdin.write(`hostile ${what}\n`);
  const { id } = await p.next(after((m) => m.event === 'hostile-says' && m.ready));
  let stop = false;
  const running = load(port, { concurrency: 4, stop: () => stop });
  let result;
  try {
    result = await until(id, after);
  } finally {
    stop = true;
  }
  return { id, result, load: await running };
}

// Node cannot attach fds to a write: the many-fds worker uses python3.
const PYTHON = require('child_process').spawnSync('python3', ['-c', 'import socket; socket.socket.sendmsg'],
  { stdio: 'ignore' }).status === 0;

// A seqpacket channel names the size of the packet that lied; a stream
// (RCLUSTER_PORTABLE=1, the macOS channel) has no packets, and the bytes
// after the header may be frames the worker's rcluster wrote next.
const PORTABLE = !!process.env.RCLUSTER_PORTABLE && process.env.RCLUSTER_PORTABLE !== '0';

const CHANNEL_ATTACKS = [
  ['garbage', /bad frame on channel: unknown frame kind 238; channel closed/],
  ['huge-length', PORTABLE ?
    /frame length lies: header says 4294967295 payload bytes, more than the 65536 a frame can carry; channel closed/ :
    /frame length lies: header says 4294967295 payload bytes, packet has 7; channel closed/],
  ...(PYTHON ? [['many-fds', /truncated|fds/]] : []),
];

test('a worker writing garbage, lying lengths or 253 fds gets an error event; nothing else is touched', { timeout: 60000, skip: linuxOnly('reads /proc and the seqpacket channel') }, async (t) => {
  const p = start();
  try {
    const { port, pid } = await p.next((m) => m.event === 'serving');
    const figures = {};
    const attacks = CHANNEL_ATTACKS.flatMap(([w, m]) => [[`${w}@control`, m], [`${w}@messages`, m]]);
    for (const [what, message] of attacks) {
      const c0 = await counters(p, (c) => c.held === 0);
      const before = procStats(pid).fds;
      const r = await attack(p, port, what, async (id, after) => {
        const err = await p.next(after((m) => m.event === 'worker-error' && m.id === id));
        await p.next(after((m) => m.event === 'hostile-gone' && m.id === id));
        return err;
      });
      assert.strictEqual(r.result.code, 'ERR_RCLUSTER_CHANNEL');
      assert.match(r.result.message, message);
      assert.match(r.result.message, new RegExp(`^worker ${r.id}: `), 'the error names the worker');
      assert.deepStrictEqual(r.load.errors, {}, `${what}: the other workers lost nothing`);
      assert.ok(r.load.ok > 0);
      const c1 = await counters(p, (c) => c.held === 0);
      assert.strictEqual(c1.accepted - c0.accepted, r.load.ok, 'every connection accepted was served');
      assert.strictEqual(c1.closed - c0.closed, 0);
      assert.strictEqual(c1.listening, 2, 'the other workers are still serving');
      assert.strictEqual(procStats(pid).fds, before, `${what}: no fd of the hostile worker is left in the primary`);
      figures[what] = { served: r.load.ok, error: r.result.message };
    }
    if (!PYTHON) t.diagnostic('python3 not found: the 253-fd case was not run (tests/reactor_hostile.rs covers it)');
    t.diagnostic(JSON.stringify(figures));
  } finally {
    assert.deepStrictEqual(await p.kill(), []);
  }
});

async function flood(t, channel, check) {
  // Each message costs the primary's JS 200 us: the worker writes ~10x faster.
  const p = start({ MESSAGE_COST_US: '200' });
  try {
    const { port, pid } = await p.next((m) => m.event === 'serving');
    const before = procStats(pid);
    const r = await attack(p, port, `flood@${channel}`, (id, after) =>
      p.next(after((m) => m.event === 'hostile-says' && m.id === id && m.flooded !== undefined), 30000));
    // The 'flooded' count comes after the flood on the same channel: by
    // then the primary has delivered every one of them.
    assert.ok(r.result.flooded > 1000, `flooded ${r.result.flooded}`);
    assert.strictEqual(r.result.flood, r.result.flooded, 'every flood message was delivered');
    check(p.lines.filter((m) => m.event === 'worker-error' && m.id === r.id));
    assert.deepStrictEqual(r.load.errors, {});
    assert.ok(r.load.ok > 0);
    const mid = procStats(pid);
    p.child.stdin.write('kill-hostile\n');
    await p.next((m) => m.event === 'hostile-gone' && m.id === r.id);
    await counters(p, (c) => c.held === 0 && c.live === 2);
    const after = procStats(pid);
    assert.strictEqual(after.fds, before.fds, 'no fd left');
    // At most the backlog limit (16 MiB) plus the JS garbage of handling
    // it; without a bound the primary would buffer everything written.
    assert.ok(mid.rssKiB - before.rssKiB < 96 * 1024, `RSS ${before.rssKiB} -> ${mid.rssKiB} KiB`);
    t.diagnostic(JSON.stringify({ flooded: r.result.flooded, served: r.load.ok, rssKiB: [before.rssKiB, mid.rssKiB, after.rssKiB] }));
  } finally {
    assert.deepStrictEqual(await p.kill(), []);
  }
}

test('a message flood faster than the primary reads: the worker waits, nothing lost, memory bounded', { timeout: 60000, skip: linuxOnly('reads /proc and the seqpacket channel') }, async (t) => {
  // The primary's JS reads the message channel at its own pace, a batch at a
  // time: the flood fills the worker's socket, and its writes wait. Not an error.
  await flood(t, 'messages', (errors) => assert.deepStrictEqual(errors, []));
});

test('a message flood on the control channel: paused with an error event, nothing lost, memory bounded', { timeout: 60000, skip: linuxOnly('reads /proc and the seqpacket channel') }, async (t) => {
  // The reactor reads the control channel for JS; it stops reading that
  // worker once 16 MiB wait for JS, and says so.
  await flood(t, 'control', (errors) => {
    assert.ok(errors.length > 0, 'an error event about the flood');
    assert.match(errors[0].message, /sends messages faster than the primary's JavaScript takes them .*paused/);
  });
});

test('a worker that never acknowledges: its connections go to the others once it is found stuck', { timeout: 60000, skip: linuxOnly('reads /proc and the seqpacket channel') }, async (t) => {
  const p = start();
  try {
    const { port, pid } = await p.next((m) => m.event === 'serving');
    const before = procStats(pid).fds;
    const c0 = await counters(p, (c) => c.held === 0);
    const seen = p.lines.length;
    p.child.stdin.write('hostile never-ack\n');
    const { id } = await p.next((m) => p.lines.indexOf(m) >= seen && m.event === 'hostile-says' && m.stuck);
    // Load starts once its event loop is stuck: every connection sent to it
    // from now on stays unacknowledged (at most a window of them).
    const r = await load(port, { concurrency: 8, total: 300 });
    const u = await p.next((m) => m.event === 'unresponsive' && m.id === id);
    assert.match(u.reason, /did not answer a heartbeat/);
    await p.next((m) => m.event === 'hostile-gone' && m.id === id);
    assert.deepStrictEqual(r, { ok: 300, failed: 0, errors: {} }, 'no connection was lost to the stuck worker');
    const c1 = await counters(p, (c) => c.held === 0 && c.live === 2);
    const d = { accepted: c1.accepted - c0.accepted, redispatched: c1.redispatched - c0.redispatched, closed: c1.closed - c0.closed };
    assert.strictEqual(d.accepted, 300);
    assert.ok(d.redispatched >= 1, `the stuck worker's connections were re-dispatched: ${JSON.stringify(d)}`);
    assert.ok(d.redispatched <= 16, `at most a window (16) waited on it: ${JSON.stringify(d)}`);
    assert.strictEqual(d.closed, 0);
    assert.strictEqual(procStats(pid).fds, before, 'no fd left');
    t.diagnostic(JSON.stringify(d));
  } finally {
    assert.deepStrictEqual(await p.kill(), []);
  }
});
