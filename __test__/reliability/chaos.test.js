'use strict';

// Chaos: steady HTTP load on new connections while a random worker is
// SIGKILLed every 200 ms, with restarts on. The cluster keeps serving, and
// the dispatcher accounts for every connection: each one the clients opened
// was accepted by the primary, and each accepted one was acknowledged by a
// worker or closed with a reason (none here). The only failed requests are
// those a worker had taken when it was killed. Afterwards the primary's fds,
// threads and RSS are back where they were and no zombie is left.
//
// CI-sized (8 s of kills); bench/chaos.js runs the same for 30 s.
//
// It runs twice: with every connection through the dispatcher (the rr
// offload off), where the accounting is exact, and with the rr offload
// forced on (a low burst), where the kernel queues most connections on the
// workers' own sockets: a killed worker's queue must be handed to the others,
// so the failures stay bounded the same way.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const net = require('net');
const { run, waitGone, alive, linuxOnly } = require('../helpers');
const { procStats, zombies, load, counters } = require('./lib');

const WORKERS = 4;
const CONCURRENCY = 8;
const CHAOS_MS = Number(process.env.CHAOS_MS || 8000);
const EVERY_MS = 200;
const RSS_GROWTH_KIB = 40 * 1024;

const VARIANTS = [
  ['', { RCLUSTER_RR_OFFLOAD: '0' }, true],
  [' (rr offload on)', { RCLUSTER_RR_OFFLOAD_BURST: '16' }, false],
];
for (const [variant, offloadEnv, exact] of VARIANTS) test(`SIGKILL a random worker every 200 ms under load: nothing is lost, nothing leaks${variant}`, { timeout: 90000, skip: linuxOnly('reads /proc') }, async (t) => {
  const settings = { restart: 'always', minUptime: 0, backoffInitial: 10, backoffMax: 50, maxRestarts: 1e6 };
  const p = run('reliability.js', [], { env: { WORKERS: String(WORKERS), SETTINGS: JSON.stringify(settings), ...offloadEnv } });
  try {
    const { port, pid } = await p.next((m) => m.event === 'serving');
    // Warm up (lazy allocations, JIT), then take the baseline.
    await load(port, { concurrency: CONCURRENCY, total: 400 });
    const c0 = await counters(p, (c) => c.held === 0 && c.listening === WORKERS);
    const base = procStats(pid);

    p.child.stdin.write(`chaos ${CHAOS_MS} ${EVERY_MS}\n`);
    let done = false;
    const chaos = p.next((m) => m.event === 'chaos-done', CHAOS_MS + 20000).then((m) => {
      // Keep the load on a little longer: the last victim's connections.
      setTimeout(() => { done = true; }, 300);
      return m;
    });
    const r = await load(port, { concurrency: CONCURRENCY, stop: () => done });
    const { kills } = await chaos;

    // Every slot is serving again and every connection is settled.
    const c1 = await counters(p, (c) => c.held === 0 && c.listening === WORKERS && c.live === WORKERS, 15000);
    const exits = p.lines.filter((m) => m.event === 'exit').length;
    const after = procStats(pid);
    const d = {
      accepted: c1.accepted - c0.accepted,
      acknowledged: c1.acknowledged - c0.acknowledged,
      redispatched: c1.redispatched - c0.redispatched,
      closed: c1.closed - c0.closed,
    };
    const figures = { kills, exits, requests: r.ok + r.failed, ...r, ...d, base, after };
    t.diagnostic(JSON.stringify(figures));

    assert.ok(kills >= CHAOS_MS / EVERY_MS / 2, `faults injected: ${kills}`);
    assert.strictEqual(exits, kills, 'every killed worker was reaped and reported');
    assert.ok(r.ok > kills * CONCURRENCY, `the cluster kept serving: ${r.ok} ok`);
    // A failed request is one a worker had taken (acknowledged) when it was
    // killed: at most CONCURRENCY per kill, and never a timeout (a
    // connection stuck in the primary) or a refusal (no listener).
    assert.ok(r.failed <= kills * CONCURRENCY, `${r.failed} failed for ${kills} kills`);
    for (const code of Object.keys(r.errors)) {
      assert.ok(['ECONNRESET', 'EPIPE', 'socket hang up'].includes(code), `unexpected failure ${code}: ${JSON.stringify(r.errors)}`);
    }
    // The accounting: every client connection was accepted by the primary
    // (with the offload, the kernel handed most of them to the workers);
    // every accepted one was acknowledged by a worker or closed with a
    // reason, and nothing is held any more.
    if (exact) assert.strictEqual(d.accepted, r.ok + r.failed, 'every connection the clients opened was accepted');
    else assert.ok(d.accepted <= r.ok + r.failed);
    assert.strictEqual(c1.held, 0);
    assert.strictEqual(d.acknowledged + d.closed, d.accepted, JSON.stringify(d));
    assert.strictEqual(d.closed, 0, 'the primary closed no connection');

    // Resources of the primary: back to the start (small constant allowed).
    assert.ok(after.fds <= base.fds + 2, `fds ${base.fds} -> ${after.fds}`);
    assert.ok(after.threads <= base.threads + 2, `threads ${base.threads} -> ${after.threads}`);
    assert.ok(after.rssKiB - base.rssKiB < RSS_GROWTH_KIB, `RSS ${base.rssKiB} -> ${after.rssKiB} KiB`);
    assert.deepStrictEqual(zombies(pid), [], 'no zombie child of the primary');
  } finally {
    const left = await p.kill();
    assert.deepStrictEqual(left, [], 'every worker is gone with the primary');
  }
});

test('SIGKILL of the primary under load, restarts on: every worker is gone within a second', { timeout: 30000, skip: linuxOnly('reads /proc') }, async (t) => {
  const settings = { restart: 'always', minUptime: 0, backoffInitial: 10, maxRestarts: 1e6 };
  const p = run('reliability.js', [], {
    env: { WORKERS: String(WORKERS), SETTINGS: JSON.stringify(settings), GRANDCHILD: '1' },
  });
  const children = [];
  try {
    const { port, pid } = await p.next((m) => m.event === 'serving');
    for (let i = 0; i < WORKERS; i++) {
      await p.next((m) => m.event === 'grandchild' && !children.includes(m.child) && children.push(m.child));
    }
    // The workers' own children hold no socket beyond their stdio (which
    // is the test's pipes here): not the channel, not a listener, no pidfd.
    for (const child of children) {
      const fds = fs.readdirSync(`/proc/${child}/fd`).filter((n) => Number(n) > 2)
        .map((n) => { try { return fs.readlinkSync(`/proc/${child}/fd/${n}`); } catch { return ''; } });
      assert.deepStrictEqual(fds.filter((f) => f.startsWith('socket:') || f.includes('pidfd')), [],
        `a worker's child inherited ${fds}`);
    }
    const { pids } = await counters(p, (c) => c.listening === WORKERS);
    let stop = false;
    const running = load(port, { concurrency: CONCURRENCY, stop: () => stop });
    await new Promise((r) => setTimeout(r, 500));
    process.kill(pid, 'SIGKILL');
    await p.done;
    const left = await waitGone(pids, 1000);
    stop = true;
    const r = await running;
    assert.deepStrictEqual(left, [], `workers outlived their primary by more than a second: ${left}`);
    // Nobody holds the port any more (no orphan kept a listener).
    const refused = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve(false); });
      s.on('error', (err) => resolve(err.code));
    });
    assert.strictEqual(refused, 'ECONNREFUSED');
    t.diagnostic(JSON.stringify({ servedBeforeDeath: r.ok, failedAtDeath: r.failed, workers: pids.length }));
  } finally {
    await p.kill();
    for (const c of children) if (alive(c)) process.kill(c, 'SIGKILL');
  }
});
