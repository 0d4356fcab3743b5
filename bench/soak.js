'use strict';

// The long soak (not run in CI; __test__/reliability/soak.test.js runs
// 20,000): N connections through the dispatcher, one per request (raw TCP:
// the worker writes its pid and closes), with the primary's fds, threads and
// RSS sampled as it goes. They must stay flat.
//
//   node bench/soak.js                 1,000,000 connections (about 2 minutes on 2 cores)
//   SOAK_CONNECTIONS=100000 node bench/soak.js

const { run } = require('../__test__/helpers');
const { procStats, load, counters, netOnce } = require('../__test__/reliability/lib');

const N = Number(process.env.SOAK_CONNECTIONS || 1e6);
const WORKERS = Number(process.env.WORKERS || 2);
const CONCURRENCY = Number(process.env.CONCURRENCY || 8);
const STEP = Math.max(10000, Math.floor(N / 20));

async function main() {
  // Every connection through the primary's dispatcher: the rr offload would
  // let the workers accept most of them themselves.
  const p = run('reliability.js', [], {
    env: { WORKERS: String(WORKERS), PROTO: 'net', RCLUSTER_RR_OFFLOAD: process.env.RCLUSTER_RR_OFFLOAD || '0' },
  });
  let ok = true;
  try {
    const { port, pid } = await p.next((m) => m.event === 'serving');
    await load(port, { concurrency: CONCURRENCY, total: 5000, once: netOnce });
    const c0 = await counters(p, (c) => c.held === 0);
    const base = procStats(pid);
    console.log(JSON.stringify({ at: 0, ...base }));
    const t0 = Date.now();
    let done = 0;
    let failed = 0;
    let peak = { ...base };
    while (done < N) {
      const n = Math.min(STEP, N - done);
      const r = await load(port, { concurrency: CONCURRENCY, total: n, once: netOnce });
      done += n;
      failed += r.failed;
      const s = procStats(pid);
      peak = { fds: Math.max(peak.fds, s.fds), threads: Math.max(peak.threads, s.threads), rssKiB: Math.max(peak.rssKiB, s.rssKiB) };
      console.log(JSON.stringify({ at: done, ...s, failed, perSec: Math.round(done / ((Date.now() - t0) / 1000)) }));
    }
    const c1 = await counters(p, (c) => c.held === 0);
    const after = procStats(pid);
    const summary = {
      connections: N, failed, seconds: (Date.now() - t0) / 1000,
      accepted: c1.accepted - c0.accepted, acknowledged: c1.acknowledged - c0.acknowledged,
      closed: c1.closed - c0.closed, base, after, peak,
    };
    console.log(JSON.stringify(summary, null, 2));
    ok = failed === 0 && summary.accepted === N && summary.acknowledged === N && summary.closed === 0 &&
      after.fds <= base.fds + 2 && peak.threads === base.threads && after.rssKiB - base.rssKiB < 32 * 1024;
    console.log(ok ? 'ok: flat' : 'FAIL: not flat');
  } finally {
    await p.kill();
  }
  process.exitCode = ok ? 0 : 1;
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
