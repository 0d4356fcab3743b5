'use strict';

// Figure 3: rcluster's reuseport policy (every worker has its own listening
// socket with SO_REUSEPORT, the kernel spreads connections) against
// node:cluster's none policy, a new connection per request.
//
// If rcluster rejects the policy, or accepts it without giving each worker
// its own listening socket (checked in /proc/net/tcp), the figure is
// "n/a (not available)".

const S = require('../lib/suite');

const title = 'reuseport, new connection per request';

async function run(ctx) {
  const { p, loader, log } = ctx;
  const variants = [
    { name: 'cluster none', kind: 'cluster', policy: 'none', workers: p.workers },
    { name: 'rcluster reuseport', kind: 'rcluster', policy: 'reuseport', workers: p.workers },
  ];
  const load = { connections: p.connections, duration: p.duration };
  const listeners = {};
  const { results: R, failures, unavailable } = await S.alternate(
    variants,
    p.rounds,
    async (v) => {
      // A fixed port, so that an implementation binding in each worker
      // does not have to agree on a port 0.
      const port = await S.freePort();
      return S.measureFresh(v, loader, load, {
        warmup: p.warmup,
        perWorker: true,
        server: { port },
        check: (server) => {
          const n = S.listeningSockets(server.port);
          listeners[v.name] = n;
          if (v.policy === 'reuseport' && n < p.workers) {
            throw Object.assign(
              new Error(`policy accepted but ${n} listening socket(s) on port ${server.port} for ${p.workers} workers: not in effect`),
              { unavailable: true }
            );
          }
        },
      });
    },
    log,
    { essential: ['rcluster reuseport'] }
  );

  const rps = (r) => r.rps;
  const share = (r) => (r.perWorker ? S.maxShare(r.perWorker) : NaN);
  const rows = variants.map((v) => {
    const list = R[v.name];
    const s = S.summary(S.values(list, rps));
    const splits = list.filter((r) => r && r.perWorker).map((r) => S.splitText(r.perWorker));
    const why = failures[v.name] || (unavailable[v.name] && `n/a (not available): ${unavailable[v.name]}`);
    return `| ${v.name} | ${s.n} | ${S.fmt(s.median)} | ${S.fmt(s.min)} | ${S.fmt(s.max)} | ${S.pct(s.spread)} | ` +
      `${S.fmt(S.ratio(list, R['cluster none'], rps).ofMedians, 2)} | ${listeners[v.name] ?? '-'} | ${splits.join(', ') || '-'} |` +
      (why ? ` ${why}` : '');
  });
  const details = [
    `${p.workers} workers, \`wrk -t1 -c${p.connections} -d${p.duration}s -H 'Connection: close'\` (+${p.warmup}s warm-up), ${p.rounds} rounds, ` +
      'rcluster started with `NODE_CLUSTER_SCHED_POLICY=reuseport` (and `cluster.schedulingPolicy` set to `SCHED_REUSEPORT`/`\'reuseport\'` if the variable was not recognised).',
    '',
    '| variant | runs | median req/s | min | max | spread | vs cluster none | listening sockets | split per round |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...rows,
  ].join('\n');

  const naReason = unavailable['rcluster reuseport']
    ? 'not available'
    : failures['rcluster reuseport'] || failures['cluster none'];
  const r1 = S.ratio(R['rcluster reuseport'], R['cluster none'], rps);
  const sh = S.summary(S.values(R['rcluster reuseport'], share));
  const splitNote = R['rcluster reuseport'].filter((r) => r && r.perWorker).map((r) => S.splitText(r.perWorker)).join(', ');
  const checks = [
    S.check({ figure: 3, label: 'req/s, rcluster reuseport / cluster none', op: '>=', goal: 1.0, ...pick(r1), ratio: true, na: naReason }),
    S.check({
      figure: 3,
      label: 'rcluster reuseport split, largest worker share in the worst round (40/60 → ≤ 60%)',
      op: '<=',
      goal: 60,
      ...pick(sh),
      value: sh.max,
      unit: '%',
      digits: 1,
      na: naReason,
      note: splitNote && `per round ${splitNote}`,
    }),
  ];
  return { title, details, checks };
}

function pick(s) {
  return { value: s.median, min: s.min, max: s.max };
}

module.exports = { title, run };
