'use strict';

// Figure 5: what the number of workers costs the primary. For 2, 4, 8 and 16
// workers, the primary's CPU time per connection (new connection per
// request), node:cluster rr vs rcluster rr. For each count both servers are
// started once and stay up (an idle server costs nothing); the load then
// alternates between them round after round, each run after a warm-up of its
// own, as in figures 1-3: what is measured is the steady cost under load.
// (rcluster's rr listener goes back to exact dispatch while the other server
// is loaded, and the first 50-150 ms of a load, up to 250 ms on a crowded
// machine by the cost rule, are dispatched exactly again before it spreads.)

const { stopServer } = require('../lib/procs');
const S = require('../lib/suite');

const title = 'Primary CPU per connection vs number of workers';

async function run(ctx) {
  const { p, loader, log } = ctx;
  const load = { connections: p.connections, duration: p.scaleDuration };
  const perConn = (r) => (r.cpu.primary / r.requests) * 1e6;
  const rps = (r) => r.rps;
  const rows = [];
  const checks = [];
  for (const n of p.scaleWorkers) {
    log(` ${n} workers`);
    const variants = [
      { name: 'cluster rr', kind: 'cluster', policy: 'rr', workers: n },
      { name: 'rcluster rr', kind: 'rcluster', policy: 'rr', workers: n },
    ];
    const servers = {};
    const startErr = {};
    for (const v of variants) {
      try {
        servers[v.name] = await S.startVariant(v, { startTimeoutMs: 20000 + n * 3000 });
      } catch (err) {
        startErr[v.name] = err.message;
        log(`  ${v.name}: FAILED to start: ${err.message}`);
      }
    }
    let out;
    try {
      out = await S.alternate(
        variants.filter((v) => servers[v.name]),
        p.rounds,
        (v) => S.measureOn(servers[v.name], loader, { ...load, port: servers[v.name].port }, { warmup: p.scaleWarmup }),
        log
      );
    } finally {
      for (const s of Object.values(servers)) await stopServer(s);
    }
    const R = { 'cluster rr': [], 'rcluster rr': [], ...out.results };
    const failed = { ...startErr, ...out.failures };
    const c = S.summary(S.values(R['cluster rr'], perConn));
    const rc = S.summary(S.values(R['rcluster rr'], perConn));
    const ratio = S.ratio(R['rcluster rr'], R['cluster rr'], perConn);
    const bad = failed['cluster rr'] || failed['rcluster rr'];
    rows.push(
      `| ${n} | ${S.fmt(c.median, 2)} (${S.pct(c.spread)}) | ${S.fmt(rc.median, 2)} (${S.pct(rc.spread)}) | ${S.fmt(ratio.median, 2)} | ` +
        `${S.fmt(S.summary(S.values(R['cluster rr'], rps)).median)} | ${S.fmt(S.summary(S.values(R['rcluster rr'], rps)).median)} |` +
        (bad ? ` ${bad}` : '')
    );
    checks.push(
      S.check({
        figure: 5,
        label: `primary CPU µs/connection, ${n} workers, rcluster / cluster`,
        op: 'info',
        value: ratio.median,
        min: ratio.min,
        max: ratio.max,
        ratio: true,
        na: bad,
        note: `${S.fmt(rc.median, 2)} µs vs ${S.fmt(c.median, 2)} µs`,
      })
    );
  }
  const details = [
    `\`wrk -t1 -c${p.connections} -d${p.scaleDuration}s -H 'Connection: close'\` (+${p.scaleWarmup}s warm-up before each run), ${p.rounds} rounds per worker count; for each count both servers stay up and the load alternates between them. ` +
      'Primary CPU = utime+stime of the primary process (all its threads) over the measured run, divided by the requests completed. Cells: median (spread).',
    '',
    '| workers | cluster rr µs/conn | rcluster rr µs/conn | rcluster / cluster | cluster req/s | rcluster req/s |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
  return { title, details, checks };
}

module.exports = { title, run };
