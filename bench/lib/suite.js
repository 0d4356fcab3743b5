'use strict';

// Shared pieces of the benchmark suite (bench/run.js and bench/figures/*):
// one HTTP measurement with CPU accounting and per-worker counts, the
// alternating round loop, ratios with their spread, and check records.

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { startServer, stopServer } = require('./procs');
const { serverCpu, cpuDelta } = require('./cpu');
const { median } = require('./stats');

const SERVER = path.join(__dirname, 'server.js');

// Variant: { name, kind: single|cluster|rcluster, policy, workers }.
async function startVariant(v, extra = {}) {
  const policyEnv = v.policy === 'reuseport' ? { NODE_CLUSTER_SCHED_POLICY: 'reuseport' } : undefined;
  const env = policyEnv || v.env ? { ...policyEnv, ...v.env } : undefined;
  return startServer(SERVER, v.kind, v.kind === 'single' ? 1 : v.workers, {
    policy: v.kind === 'single' ? undefined : v.policy,
    env,
    ...extra,
  });
}

async function counts(server) {
  const r = await server.request({ cmd: 'counts' });
  return { requests: r.counts || {}, conns: r.conns || {} };
}

// One measured load run against a started server: optional warm-up, then
// CPU and request counts read before and after the measured run.
// Returns the loader's result plus { cpu: {primary, workers, total} seconds,
// perWorker: [requests...], perWorkerConns: [connections accepted...] }.
async function measureOn(server, loader, load, { warmup = 0, perWorker = false } = {}) {
  if (warmup > 0) await loader.run({ ...load, duration: warmup });
  const c0 = perWorker ? await counts(server) : null;
  const cpu0 = serverCpu(server);
  const r = await loader.run(load);
  const cpu1 = serverCpu(server);
  const out = { ...r, cpu: cpuDelta(cpu0, cpu1) };
  if (perWorker) {
    const c1 = await counts(server);
    const pids = Object.keys(c1.requests);
    out.perWorker = pids.map((pid) => c1.requests[pid] - (c0.requests[pid] || 0));
    out.perWorkerConns = pids.map((pid) => (c1.conns[pid] || 0) - (c0.conns[pid] || 0));
  }
  return out;
}

// Start, measure once, stop.
async function measureFresh(v, loader, load, opts = {}) {
  const server = await startVariant(v, opts.server);
  try {
    if (opts.check) await opts.check(server);
    const r = await measureOn(server, loader, { ...load, port: server.port }, opts);
    return { ...r, startup: server.startup };
  } finally {
    await stopServer(server);
  }
}

// Runs `fn(variant, round)` for every variant in every round; the order
// rotates from round to round. Returns { results: {name: [r...]} (one entry
// per round, undefined when that run failed), failures: {name: message},
// unavailable: {name: message} }. A variant that fails is not retried.
// `essential`: names of variants without which the figure means nothing:
// when one of them is unavailable, the remaining rounds are skipped.
async function alternate(variants, rounds, fn, log, { essential = [] } = {}) {
  const results = Object.fromEntries(variants.map((v) => [v.name, []]));
  const failures = {};
  const unavailable = {};
  for (let round = 0; round < rounds; round++) {
    if (essential.some((name) => unavailable[name])) break;
    const order = variants.map((_, i) => variants[(i + round) % variants.length]);
    for (const v of order) {
      if (failures[v.name] || unavailable[v.name]) continue;
      try {
        const r = await fn(v, round);
        results[v.name][round] = r;
        log(`  round ${round + 1} ${v.name.padEnd(20)} ${describe(r)}`);
      } catch (err) {
        const message = String(err.message).replace(/\s+/g, ' ').trim();
        if (err.unavailable) unavailable[v.name] = message;
        else failures[v.name] = message;
        log(`  round ${round + 1} ${v.name.padEnd(20)} ${err.unavailable ? 'n/a' : 'FAILED'}: ${message}`);
      }
    }
  }
  return { results, failures, unavailable };
}

function describe(r) {
  if (!r) return '';
  const parts = [];
  if (r.rps !== undefined) parts.push(`${Math.round(r.rps)} req/s`);
  if (r.latencyMs && r.latencyMs.p99 !== undefined) parts.push(`p99 ${r.latencyMs.p99.toFixed(2)} ms`);
  if (r.cpu && r.requests) parts.push(`${((r.cpu.total / r.requests) * 1e6).toFixed(1)} µs CPU/req`);
  if (r.cpu && r.seconds) parts.push(`primary ${((r.cpu.primary / r.seconds) * 100).toFixed(1)}% core`);
  if (r.perWorker && r.perWorker.length > 1) parts.push(`split ${splitText(r.perWorker)}`);
  if (r.errors || r.non2xx) parts.push(`errors ${r.errors}, non-2xx ${r.non2xx}`);
  if (r.rate !== undefined) parts.push(`${Math.round(r.rate)} msg/s`);
  if (r.rttUs) parts.push(`rtt median ${r.rttUs.median.toFixed(1)} µs, p99 ${r.rttUs.p99.toFixed(1)} µs`);
  if (r.allListeningMs !== undefined) parts.push(`fork->listening ${r.allListeningMs.toFixed(1)} ms, RSS ${(r.rssKiB / 1024).toFixed(1)} MiB`);
  return parts.join(', ');
}

// Per-worker request counts -> "48/52" (percent, sorted ascending).
function splitText(perWorker) {
  const total = perWorker.reduce((a, b) => a + b, 0);
  if (!total) return '-';
  return [...perWorker]
    .sort((a, b) => a - b)
    .map((n) => Math.round((100 * n) / total))
    .join('/');
}

// Largest share of one worker, in percent.
function maxShare(perWorker) {
  const total = perWorker.reduce((a, b) => a + b, 0);
  return total ? (100 * Math.max(...perWorker)) / total : NaN;
}

// Values of `pick(r)` over the rounds where the run succeeded.
function values(list, pick) {
  return list.filter(Boolean).map(pick).filter((x) => Number.isFinite(x));
}

// Summary { median, min, max, n, spread } of a list of numbers.
function summary(xs) {
  if (!xs.length) return { median: NaN, min: NaN, max: NaN, n: 0, spread: NaN };
  const m = median(xs);
  const min = Math.min(...xs);
  const max = Math.max(...xs);
  return { median: m, min, max, n: xs.length, spread: m ? (max - min) / Math.abs(m) : NaN };
}

// Ratio a/b of two variants: the median of the per-round ratios (both sides
// of one measured in the same round, side by side), with their min and max.
// Pairing by round cancels the machine's drift between rounds, which on a
// shared host moves every variant's rate by half from one minute to the next;
// `ofMedians` (the ratio of the medians) is kept for the details. With fewer
// than 3 paired rounds the value is the ratio of the medians.
function ratio(listA, listB, pick) {
  const a = values(listA, pick);
  const b = values(listB, pick);
  const perRound = [];
  for (let i = 0; i < Math.max(listA.length, listB.length); i++) {
    if (!listA[i] || !listB[i]) continue;
    const x = pick(listA[i]);
    const y = pick(listB[i]);
    if (Number.isFinite(x) && Number.isFinite(y) && y !== 0) perRound.push(x / y);
  }
  if (!a.length || !b.length) return { median: NaN, min: NaN, max: NaN, n: 0, ofMedians: NaN };
  const ofMedians = median(a) / median(b);
  return {
    median: perRound.length >= 3 ? median(perRound) : ofMedians,
    ofMedians,
    min: perRound.length ? Math.min(...perRound) : NaN,
    max: perRound.length ? Math.max(...perRound) : NaN,
    n: perRound.length,
  };
}

// A check (one line of the summary): `value` compared with `goal` by `op`
// ('>=', '<=', '<', or 'info' for a figure without a target). `ratio: true`
// puts it on the chart. `na` (a reason) makes it "n/a".
function check({ figure, label, op, goal, value, min, max, unit = '×', ratio: isRatio = false, na, note, digits = 2 }) {
  let pass = null;
  if (!na && op !== 'info' && Number.isFinite(value)) {
    pass = op === '>=' ? value >= goal : op === '<=' ? value <= goal : op === '<' ? value < goal : value > goal;
  }
  if (!na && op !== 'info' && !Number.isFinite(value)) na = 'no measurement';
  if (na) na = String(na).replace(/\s+/g, ' ').replace(/\|/g, '/').slice(0, 200);
  return { figure, label, op, goal, value, min, max, unit, ratio: isRatio, na, note, digits, pass };
}

// A free TCP port on 127.0.0.1 (for servers that must be told their port).
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Number of listening TCP sockets on `port` (all addresses, IPv4 and IPv6).
function listeningSockets(port) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      if (f[3] === '0A' && f[1].endsWith(`:${hex}`)) inodes.add(f[9]);
    }
  }
  return inodes.size;
}

const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '-');
const pct = (n) => (Number.isFinite(n) ? `${(n * 100).toFixed(1)}%` : '-');

module.exports = {
  startVariant,
  measureOn,
  measureFresh,
  alternate,
  describe,
  splitText,
  maxShare,
  values,
  summary,
  ratio,
  check,
  freePort,
  listeningSockets,
  fmt,
  pct,
  median,
};
