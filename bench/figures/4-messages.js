'use strict';

// Figure 4: worker messages. One-way throughput primary -> worker and
// worker -> primary for {i: n} and for 4 KiB payloads, and the round trip
// of a ping-pong, node:cluster vs rcluster. Each test runs in its own
// process tree (bench/lib/messages.js), pinned to CPU 0 with taskset when
// it is available.

const path = require('node:path');
const { run: runCmd } = require('../lib/procs');
const { hasTaskset } = require('../lib/pin');
const S = require('../lib/suite');

const title = 'Worker messages';
const SCRIPT = path.join(__dirname, '..', 'lib', 'messages.js');
const TESTS = [
  { test: 'p2w-small', label: 'primary → worker, {i: n}' },
  { test: 'p2w-4k', label: 'primary → worker, 4 KiB' },
  { test: 'w2p-small', label: 'worker → primary, {i: n}' },
  { test: 'w2p-4k', label: 'worker → primary, 4 KiB' },
  { test: 'pingpong', label: 'round trip (ping-pong)' },
];

async function once(kind, test, p, pin) {
  const args = [SCRIPT, kind, test, String(p.msgSeconds), String(p.msgWarmup)];
  const [cmd, argv] = pin ? ['taskset', ['-c', '0', process.execPath, ...args]] : [process.execPath, args];
  const r = await runCmd(cmd, argv, { timeoutMs: (p.msgSeconds + p.msgWarmup) * 1000 + 20000, trackWorkers: true });
  if (r.code !== 0) {
    throw new Error(`${kind} ${test}: exited with ${r.signal || r.code}: ${(r.stderr || '').trim().slice(0, 300)}`);
  }
  const line = r.stdout.trim().split('\n').pop();
  return JSON.parse(line);
}

async function run(ctx) {
  const { p, log } = ctx;
  const pin = hasTaskset();
  const variants = [
    { name: 'cluster', kind: 'cluster' },
    { name: 'rcluster', kind: 'rcluster' },
  ];
  const all = {};
  for (const t of TESTS) {
    log(` ${t.label}`);
    all[t.test] = await S.alternate(variants, p.rounds, (v) => once(v.kind, t.test, p, pin), log);
  }

  const rate = (r) => r.rate;
  const rtt = (r) => (r.rttUs ? r.rttUs.median : NaN);
  const rtt99 = (r) => (r.rttUs ? r.rttUs.p99 : NaN);
  const rows = [];
  const checks = [];
  for (const t of TESTS) {
    const { results: R, failures } = all[t.test];
    const bad = failures.cluster || failures.rcluster;
    if (t.test === 'pingpong') {
      const c = S.summary(S.values(R.cluster, rtt));
      const rc = S.summary(S.values(R.rcluster, rtt));
      const ratio = S.ratio(R.rcluster, R.cluster, rtt);
      rows.push(`| ${t.label}: median µs | ${S.fmt(c.median, 1)} (${S.pct(c.spread)}) | ${S.fmt(rc.median, 1)} (${S.pct(rc.spread)}) | ${S.fmt(ratio.median, 2)} |${bad ? ` ${bad}` : ''}`);
      const c99 = S.summary(S.values(R.cluster, rtt99));
      const rc99 = S.summary(S.values(R.rcluster, rtt99));
      rows.push(`| ${t.label}: p99 µs | ${S.fmt(c99.median, 1)} | ${S.fmt(rc99.median, 1)} | ${S.fmt(rc99.median / c99.median, 2)} |`);
      checks.push(S.check({ figure: 4, label: `${t.label}, median µs, rcluster / cluster (lower is better)`, op: 'info', ...pick(ratio), ratio: true, na: bad }));
    } else {
      const c = S.summary(S.values(R.cluster, rate));
      const rc = S.summary(S.values(R.rcluster, rate));
      const ratio = S.ratio(R.rcluster, R.cluster, rate);
      rows.push(`| ${t.label}: msg/s | ${S.fmt(c.median)} (${S.pct(c.spread)}) | ${S.fmt(rc.median)} (${S.pct(rc.spread)}) | ${S.fmt(ratio.median, 2)} |${bad ? ` ${bad}` : ''}`);
      checks.push(S.check({ figure: 4, label: `${t.label}, msg/s, rcluster / cluster`, op: 'info', ...pick(ratio), ratio: true, na: bad }));
    }
  }
  const details = [
    `One primary, one worker, ${p.msgSeconds}s per test (+${p.msgWarmup}s warm-up), ${p.rounds} rounds, ` +
      (pin ? 'both processes pinned to CPU 0 (`taskset -c 0`). ' : 'not pinned (taskset not available). ') +
      `One-way: at most 2000 messages in flight, the receiver acknowledges every 100. JSON serialization. Cells: median (spread).`,
    '',
    '| test | cluster | rcluster | rcluster / cluster |',
    '| --- | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
  return { title, details, checks };
}

function pick(s) {
  return { value: s.median, min: s.min, max: s.max };
}

module.exports = { title, run };
