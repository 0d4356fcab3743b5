'use strict';

// New connection per request against a hello-world HTTP server:
// node:cluster (round robin) vs rcluster (same program, `require('rcluster')`)
// vs one process without cluster, side by side on the same machine and load.
//
//   node bench/http-new-conn.js [--workers 2] [--duration 5] [--rounds 3]
//        [--connections 32] [--warmup 1] [--only single,cluster,rcluster]
//        [--loader wrk|autocannon|node]
//
// Variants alternate within each round (the starting variant rotates from
// round to round) so that drift of a shared machine hits all of them alike.
// Every variant runs in its own child process (bench/lib/server.js); every
// process started is killed by pid at the end, also on error or Ctrl-C.

const os = require('node:os');
const path = require('node:path');
const { pick } = require('./lib/loaders');
const { startServer, stopServer, killAll, killAllSync } = require('./lib/procs');
const { median, formatTable } = require('./lib/stats');

const VARIANTS = ['single', 'cluster', 'rcluster'];
const SERVER = path.join(__dirname, 'lib', 'server.js');

function parseArgs(argv) {
  const opts = {
    workers: 2,
    duration: 5,
    rounds: 3,
    connections: 32,
    warmup: 1,
    only: VARIANTS,
    loader: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      console.log(require('node:fs').readFileSync(__filename, 'utf8').split('\n').slice(2, 10).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
      process.exit(0);
    }
    const [key, inline] = arg.replace(/^--/, '').split('=', 2);
    const value = inline ?? argv[++i];
    if (value === undefined) throw new Error(`missing value for --${key}`);
    if (key === 'only') {
      opts.only = value.split(',').map((s) => s.trim()).filter(Boolean);
      const bad = opts.only.filter((v) => !VARIANTS.includes(v));
      if (bad.length) throw new Error(`unknown variant(s) ${bad.join(', ')} (known: ${VARIANTS.join(', ')})`);
    } else if (key === 'loader') {
      opts.loader = value;
    } else if (key in opts) {
      const n = Number(String(value).replace(/s$/, ''));
      if (!Number.isFinite(n) || n < 0) throw new Error(`bad value for --${key}: ${value}`);
      opts[key] = n;
    } else {
      throw new Error(`unknown option --${key}`);
    }
  }
  if (opts.rounds < 1 || opts.duration <= 0 || opts.workers < 1 || opts.connections < 1) {
    throw new Error('--rounds, --duration, --workers and --connections must be positive');
  }
  return opts;
}

async function measure(kind, opts, loader) {
  const server = await startServer(SERVER, kind, kind === 'single' ? 1 : opts.workers);
  try {
    const load = { port: server.port, connections: opts.connections };
    if (opts.warmup > 0) await loader.run({ ...load, duration: opts.warmup });
    return await loader.run({ ...load, duration: opts.duration });
  } finally {
    await stopServer(server);
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const loader = pick(opts.loader);
  const cpus = os.cpus();
  console.log('# http-new-conn: hello world, one new TCP connection per request');
  console.log();
  console.log(
    `node ${process.version}, ${os.platform()}-${os.arch()}, ${cpus.length} x ${cpus[0] ? cpus[0].model.trim() : '?'}, ` +
      `load avg ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`
  );
  console.log(
    `load: ${loader.name}, ${opts.connections} connections, ${opts.duration}s per run (+${opts.warmup}s warm-up), ` +
      `${opts.rounds} rounds; ${opts.workers} workers for cluster and rcluster`
  );
  console.log();

  const results = Object.fromEntries(opts.only.map((v) => [v, []]));
  const failures = {};
  for (let round = 0; round < opts.rounds; round++) {
    const order = opts.only.map((_, i) => opts.only[(i + round) % opts.only.length]);
    for (const kind of order) {
      if (failures[kind]) continue;
      try {
        const r = await measure(kind, opts, loader);
        results[kind].push(r);
        console.log(
          `round ${round + 1} ${kind.padEnd(8)} ${Math.round(r.rps).toString().padStart(7)} req/s` +
            (r.errors || r.non2xx ? `  (errors ${r.errors}, non-2xx ${r.non2xx})` : '')
        );
      } catch (err) {
        failures[kind] = err.message;
        console.log(`round ${round + 1} ${kind.padEnd(8)} FAILED: ${err.message}`);
      }
    }
  }

  const rows = opts.only.map((kind) => {
    const rps = results[kind].map((r) => r.rps);
    return {
      kind,
      runs: rps.length,
      median: median(rps),
      min: rps.length ? Math.min(...rps) : NaN,
      max: rps.length ? Math.max(...rps) : NaN,
      errors: results[kind].reduce((s, r) => s + r.errors + r.non2xx, 0),
      failed: failures[kind],
    };
  });
  console.log();
  console.log(formatTable(rows, 'cluster'));
  const byKind = Object.fromEntries(rows.map((r) => [r.kind, r]));
  if (byKind.rcluster && byKind.cluster && byKind.rcluster.runs && byKind.cluster.runs) {
    console.log();
    console.log(`rcluster / cluster = ${(byKind.rcluster.median / byKind.cluster.median).toFixed(2)} (medians)`);
  }
  return Object.keys(failures).length ? 1 : 0;
}

// Hard stop: the whole bench is bounded whatever a child does.
function budgetSeconds() {
  try {
    const o = parseArgs(process.argv.slice(2));
    return o.rounds * o.only.length * (o.duration + o.warmup + 2 * 20 + 25) + 60;
  } catch {
    return 60;
  }
}

const guard = setTimeout(() => {
  console.error(`http-new-conn: time budget exceeded, stopping`);
  killAllSync();
  process.exit(2);
}, budgetSeconds() * 1000);
guard.unref();

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    console.error(`http-new-conn: ${sig}, stopping`);
    killAllSync();
    process.exit(130);
  });
}
process.on('exit', killAllSync);

main()
  .catch((err) => {
    console.error(`http-new-conn: ${err.message}`);
    return 1;
  })
  .then(async (code) => {
    await killAll();
    process.exitCode = code;
  });
