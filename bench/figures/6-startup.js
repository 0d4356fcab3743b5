'use strict';

// Figure 6: fork-to-listening time and primary RSS. The server times each
// cluster.fork() to the worker's 'listening' event and reports the time from
// the first fork() to the last 'listening' (N workers), and its VmRSS
// (/proc/self/status) at that moment.

const { stopServer } = require('../lib/procs');
const S = require('../lib/suite');

const title = 'Fork-to-listening time and primary RSS';

async function run(ctx) {
  const { p, log } = ctx;
  const variants = [
    { name: 'cluster', kind: 'cluster', policy: 'rr', workers: p.workers },
    { name: 'rcluster', kind: 'rcluster', policy: 'rr', workers: p.workers },
  ];
  const { results: R, failures } = await S.alternate(
    variants,
    p.startupRounds,
    async (v) => {
      const server = await S.startVariant(v);
      await stopServer(server);
      return server.startup;
    },
    log
  );
  const ms = (r) => r.allListeningMs;
  const perWorker = (r) => S.median(r.forkToListeningMs);
  const rss = (r) => r.rssKiB / 1024;
  const rows = variants.map((v) => {
    const a = S.summary(S.values(R[v.name], ms));
    const b = S.summary(S.values(R[v.name], perWorker));
    const c = S.summary(S.values(R[v.name], rss));
    return `| ${v.name} | ${a.n} | ${S.fmt(a.median, 1)} | ${S.fmt(a.min, 1)} | ${S.fmt(a.max, 1)} | ${S.pct(a.spread)} | ${S.fmt(b.median, 1)} | ${S.fmt(c.median, 1)} | ${S.fmt(c.min, 1)} | ${S.fmt(c.max, 1)} |` +
      (failures[v.name] ? ` ${failures[v.name]}` : '');
  });
  const details = [
    `${p.workers} workers, ${p.startupRounds} starts of each, alternating. "all listening" = first \`fork()\` to the last worker's \`'listening'\` ` +
      "(measured in the primary); \"per worker\" = each worker's own `fork()` to `'listening'`. RSS = the primary's VmRSS when all workers listen.",
    '',
    '| variant | starts | all listening ms (median) | min | max | spread | per worker ms | primary RSS MiB | min | max |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
  const bad = failures.cluster || failures.rcluster;
  const t = S.ratio(R.rcluster, R.cluster, ms);
  const rc = S.summary(S.values(R.rcluster, rss));
  const c = S.summary(S.values(R.cluster, rss));
  const checks = [
    S.check({ figure: 6, label: `fork-to-listening (${p.workers} workers), rcluster / cluster`, op: '<=', goal: 1.0, value: t.median, min: t.min, max: t.max, ratio: true, na: bad }),
    S.check({
      figure: 6,
      label: 'primary RSS, rcluster − cluster (MiB)',
      op: '<=',
      goal: 3,
      value: rc.median - c.median,
      unit: ' MiB',
      digits: 1,
      na: bad,
      note: `${S.fmt(rc.median, 1)} vs ${S.fmt(c.median, 1)} MiB`,
    }),
  ];
  return { title, details, checks };
}

module.exports = { title, run };
