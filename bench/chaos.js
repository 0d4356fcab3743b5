'use strict';

// The long chaos run (not run in CI; __test__/reliability/chaos.test.js is
// its 8-second version): HTTP load on new connections from CONCURRENCY
// closed loops while a random worker is SIGKILLed every EVERY_MS, restarts
// on, for CHAOS_MS. Prints the accounting and the primary's resources, and
// exits non-zero when a check fails.
//
//   node bench/chaos.js                       30 s, 4 workers, 8 loops, a kill every 200 ms
//   CHAOS_MS=120000 WORKERS=8 node bench/chaos.js
//   RCLUSTER_RR_OFFLOAD=0 node bench/chaos.js   every connection through the dispatcher

const { run } = require('../__test__/helpers');
const { procStats, zombies, load, counters } = require('../__test__/reliability/lib');

const WORKERS = Number(process.env.WORKERS || 4);
const CONCURRENCY = Number(process.env.CONCURRENCY || 8);
const CHAOS_MS = Number(process.env.CHAOS_MS || 30000);
const EVERY_MS = Number(process.env.EVERY_MS || 200);
// RCLUSTER_RR_OFFLOAD=0: every connection goes through the primary's dispatcher.
const EXACT = process.env.RCLUSTER_RR_OFFLOAD === '0';

async function main() {
  const settings = { restart: 'always', minUptime: 0, backoffInitial: 10, backoffMax: 50, maxRestarts: 1e6 };
  const p = run('reliability.js', [], { env: { WORKERS: String(WORKERS), SETTINGS: JSON.stringify(settings) } });
  let ok = true;
  const check = (cond, what) => {
    console.log(`${cond ? 'ok  ' : 'FAIL'} ${what}`);
    if (!cond) ok = false;
  };
  try {
    const { port, pid } = await p.next((m) => m.event === 'serving');
    await load(port, { concurrency: CONCURRENCY, total: 1000 });
    const c0 = await counters(p, (c) => c.held === 0 && c.listening === WORKERS);
    const base = procStats(pid);
    const t0 = Date.now();
    p.child.stdin.write(`chaos ${CHAOS_MS} ${EVERY_MS}\n`);
    let done = false;
    const chaos = p.next((m) => m.event === 'chaos-done', CHAOS_MS + 60000).then((m) => {
      setTimeout(() => { done = true; }, 300);
      return m;
    });
    const r = await load(port, { concurrency: CONCURRENCY, stop: () => done });
    const secs = (Date.now() - t0) / 1000;
    const { kills } = await chaos;
    const c1 = await counters(p, (c) => c.held === 0 && c.listening === WORKERS && c.live === WORKERS, 30000);
    const after = procStats(pid);
    const d = {
      accepted: c1.accepted - c0.accepted, acknowledged: c1.acknowledged - c0.acknowledged,
      redispatched: c1.redispatched - c0.redispatched, closed: c1.closed - c0.closed, held: c1.held,
    };
    console.log(JSON.stringify({
      workers: WORKERS, concurrency: CONCURRENCY, seconds: secs, kills, requests: r.ok + r.failed,
      reqPerSec: Math.round((r.ok + r.failed) / secs), ...r, ...d, base, after, zombies: zombies(pid),
    }, null, 2));
    check(r.failed <= kills * CONCURRENCY, `failed requests (${r.failed}) <= kills x concurrency (${kills * CONCURRENCY})`);
    check(Object.keys(r.errors).every((c) => c === 'ECONNRESET' || c === 'EPIPE'), 'failures are resets only (no timeout, no refusal)');
    // With the rr offload (the default) workers accept what queues on the
    // shared socket under load themselves: the primary accepts only the rest.
    if (EXACT) check(d.accepted === r.ok + r.failed, 'every client connection was accepted by the primary');
    else check(d.accepted <= r.ok + r.failed, 'the primary accepted no more connections than the clients opened');
    check(d.acknowledged + d.closed === d.accepted && d.held === 0, 'accepted = acknowledged + closed, nothing held');
    check(d.closed === 0, 'the primary closed nothing');
    check(after.fds <= base.fds + 2, `fds ${base.fds} -> ${after.fds}`);
    check(after.threads <= base.threads + 2, `threads ${base.threads} -> ${after.threads}`);
    check(after.rssKiB - base.rssKiB < 64 * 1024, `RSS ${base.rssKiB} -> ${after.rssKiB} KiB`);
    check(zombies(pid).length === 0, 'no zombie');
  } finally {
    const left = await p.kill();
    check(left.length === 0, 'every process gone');
  }
  process.exitCode = ok ? 0 : 1;
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
