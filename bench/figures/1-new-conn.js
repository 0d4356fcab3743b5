'use strict';

// Figure 1: a new TCP connection per request (wrk -H 'Connection: close').
// single process, node:cluster rr, node:cluster none, rcluster rr; CPU of the
// primary and the workers read from /proc/<pid>/stat around the measured run.

const S = require('../lib/suite');

const title = 'New TCP connection per request';

async function run(ctx) {
  const { p, loader, log } = ctx;
  const variants = [
    { name: 'single', kind: 'single' },
    { name: 'cluster rr', kind: 'cluster', policy: 'rr', workers: p.workers },
    { name: 'cluster none', kind: 'cluster', policy: 'none', workers: p.workers },
    { name: 'rcluster rr', kind: 'rcluster', policy: 'rr', workers: p.workers },
  ];
  const load = { connections: p.connections, duration: p.duration };
  const { results, failures, unavailable } = await S.alternate(
    variants,
    p.rounds,
    async (v) => {
      return S.measureFresh(v, loader, load, { warmup: p.warmup });
    },
    log
  );

  const cpuPerReq = (r) => (r.cpu.total / r.requests) * 1e6;
  const primaryPct = (r) => (r.cpu.primary / r.seconds) * 100;
  const primaryPerConn = (r) => (r.cpu.primary / r.requests) * 1e6;
  const rps = (r) => r.rps;
  const R = results;

  const rows = variants.map((v) => {
    const list = R[v.name];
    const s = S.summary(S.values(list, rps));
    const ref = S.ratio(list, R['cluster rr'], rps);
    return `| ${v.name} | ${s.n} | ${S.fmt(s.median)} | ${S.fmt(s.min)} | ${S.fmt(s.max)} | ${S.pct(s.spread)} | ` +
      `${S.fmt(ref.ofMedians, 2)} | ${S.fmt(S.summary(S.values(list, cpuPerReq)).median, 1)} | ` +
      `${v.kind === 'single' ? '-' : S.fmt(S.summary(S.values(list, primaryPct)).median, 1)} | ` +
      `${v.kind === 'single' ? '-' : S.fmt(S.summary(S.values(list, primaryPerConn)).median, 2)} | ` +
      `${list.filter(Boolean).reduce((a, r) => a + r.errors + r.non2xx, 0)} |` +
      (failures[v.name] || unavailable[v.name] ? ` ${failures[v.name] || unavailable[v.name]}` : '');
  });
  const details = [
    `${p.workers} workers, \`wrk -t1 -c${p.connections} -d${p.duration}s -H 'Connection: close'\` (+${p.warmup}s warm-up), ${p.rounds} rounds. ` +
      'CPU = utime+stime of the primary and its workers over the measured run, per completed request.',
    '',
    '| variant | runs | median req/s | min | max | spread | vs cluster rr | CPU µs/req | primary % of a core | primary CPU µs/conn | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');

  const fig = 1;
  const rr = S.ratio(R['rcluster rr'], R['cluster rr'], rps);
  const none = S.ratio(R['rcluster rr'], R['cluster none'], rps);
  const cpu = S.ratio(R['rcluster rr'], R['cluster none'], cpuPerReq);
  const prim = S.summary(S.values(R['rcluster rr'], primaryPct));
  const na = (name) => failures[name] || unavailable[name];
  const checks = [
    S.check({ figure: fig, label: 'req/s, rcluster rr / cluster rr', op: '>=', goal: 1.7, ...pick(rr), ratio: true, na: na('rcluster rr') || na('cluster rr') }),
    S.check({ figure: fig, label: 'req/s, rcluster rr / cluster none', op: '>=', goal: 1.0, ...pick(none), ratio: true, na: na('rcluster rr') || na('cluster none') }),
    S.check({ figure: fig, label: 'CPU per request (primary+workers), rcluster rr / cluster none', op: '<=', goal: 1.1, ...pick(cpu), ratio: true, na: na('rcluster rr') || na('cluster none') }),
    S.check({ figure: fig, label: 'rcluster primary CPU, % of one core', op: '<', goal: 5, ...pick(prim), unit: '%', digits: 1, na: na('rcluster rr') }),
  ];
  return { title, details, checks };
}

function pick(s) {
  return { value: s.median, min: s.min, max: s.max };
}

module.exports = { title, run };
