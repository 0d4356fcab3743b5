'use strict';

// The benchmark suite: every figure of bench/figures/, one after the other
// (never in parallel: they would measure each other), rcluster against Node's
// built-in cluster side by side. Waits for an idle machine first, then writes
// bench/results/latest.md (summary: target, measured, pass/miss; details of
// each figure) and bench/results/latest.svg (chart of the ratios).
//
//   npm run bench                   # everything, ~10 minutes (more when figures are retried)
//   node bench/run.js --quick       # everything, shorter runs, ~2-3 minutes
//   node bench/run.js --only 1,3    # some figures
//   node bench/run.js --rounds 5 --duration 10 --no-idle-wait --out /tmp/r
//   node bench/run.js --pin --only 2,3   # servers on CPU 0..n-2, the load on the last
//   node bench/run.js --pin=0:1          # or name them: SERVERS:LOAD (taskset lists)
//
// Exit code: 0 when every figure ran (misses included), 1 when a variant or a
// figure failed, 2 when the time budget ran out.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { pick } = require('./lib/loaders');
const { killAll, killAllSync } = require('./lib/procs');
const { waitForIdle, readStat, stealShare } = require('./lib/cpu');
const pin = require('./lib/pin');
const report = require('./lib/report');

const FIGURES_DIR = path.join(__dirname, 'figures');

const DEFAULTS = {
  rounds: 5, // the machine is shared: 3 rounds let one noisy round move a median
  duration: 5, // s of each measured HTTP run (figures 1-3)
  warmup: 1, // s of unmeasured load before each measured run
  connections: 32,
  workers: 2,
  msgSeconds: 1, // figure 4
  msgWarmup: 0.3,
  scaleDuration: 3, // figure 5
  scaleWarmup: 1, // s of unmeasured load before each run of figure 5
  scaleWorkers: [2, 4, 8, 16],
  startupRounds: 15, // figure 6: a start takes ~70 ms and its time is bimodal, so many
  idleWait: 30, // s at most, before the run
  idleWaitBetween: 8, // s at most, before each figure
  budget: 25 * 60, // s for the whole suite, hard stop (retries included)
  stealMax: 0.05, // a figure during which the host's other guests took more CPU is run again...
  stealRetries: 2, // ...at most this many times; the run with the least steal counts
};

// wrk takes whole seconds: durations are rounded, 1 s at least.
const QUICK = {
  rounds: 3,
  duration: 1,
  warmup: 1,
  msgSeconds: 0.4,
  msgWarmup: 0.1,
  scaleDuration: 1,
  scaleWarmup: 1,
  startupRounds: 3,
  idleWait: 10,
  idleWaitBetween: 2,
  budget: 5 * 60,
  stealRetries: 1,
};

function usage() {
  return fs
    .readFileSync(__filename, 'utf8')
    .split('\n')
    .slice(2, 18)
    .map((l) => l.replace(/^\/\/ ?/, ''))
    .join('\n');
}

function parseArgs(argv) {
  const p = { ...DEFAULTS };
  let only = null;
  let out = path.join(__dirname, 'results');
  let loader;
  let quick = false;
  let pinSpec = null;
  const numeric = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      console.log(usage());
      process.exit(0);
    }
    if (arg === '--quick') {
      quick = true;
      continue;
    }
    if (arg === '--pin' || arg.startsWith('--pin=')) {
      pinSpec = arg === '--pin' ? true : arg.slice('--pin='.length);
      continue;
    }
    if (arg === '--no-idle-wait') {
      numeric.idleWait = 0;
      numeric.idleWaitBetween = 0;
      continue;
    }
    const [key, inline] = arg.replace(/^--/, '').split('=', 2);
    const value = inline ?? argv[++i];
    if (value === undefined) throw new Error(`missing value for --${key}`);
    if (key === 'only') only = value.split(',').map((s) => Number(s.trim()));
    else if (key === 'out') out = path.resolve(value);
    else if (key === 'loader') loader = value;
    else if (key === 'scale-workers') p.scaleWorkers = value.split(',').map(Number);
    else {
      const name = key.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
      if (!(name in DEFAULTS) || Array.isArray(DEFAULTS[name])) throw new Error(`unknown option --${key}`);
      const n = Number(String(value).replace(/s$/, ''));
      if (!Number.isFinite(n) || n < 0) throw new Error(`bad value for --${key}: ${value}`);
      numeric[name] = n;
    }
  }
  Object.assign(p, quick ? QUICK : {}, numeric);
  if (p.rounds < 1 || p.duration <= 0 || p.workers < 1 || p.connections < 1) {
    throw new Error('--rounds, --duration, --workers and --connections must be positive');
  }
  return { p, only, out, loader, quick, pinSpec };
}

// One run of figure `f`: { fig (details, seconds, steal), checks, failed }.
async function runFigure(f, mod, ctx) {
  const t0 = Date.now();
  const stat0 = procStat();
  const fig = { id: f.id, title: mod.title };
  let checks = [];
  let failed = false;
  try {
    const r = await mod.run(ctx);
    fig.details = r.details;
    checks = r.checks;
    if (r.checks.some((c) => c.na && c.na !== 'not available' && c.na !== 'no measurement')) {
      failed = true;
    }
  } catch (err) {
    fig.error = err.stack || err.message;
    failed = true;
    ctx.log(`  figure ${f.id} failed: ${err.message}`);
  }
  await killAll(); // nothing of one figure survives into the next
  fig.seconds = (Date.now() - t0) / 1000;
  const stat1 = procStat();
  if (stat0 && stat1) fig.steal = stealShare(stat0, stat1);
  return { fig, checks, failed };
}

// /proc/stat's CPU line, or null where there is none.
function procStat() {
  try {
    return readStat();
  } catch {
    return null;
  }
}

function figures(only) {
  return fs
    .readdirSync(FIGURES_DIR)
    .filter((f) => /^\d+-.*\.js$/.test(f))
    .sort((a, b) => parseInt(a, 10) - parseInt(b, 10))
    .map((f) => ({ id: parseInt(f, 10), file: path.join(FIGURES_DIR, f) }))
    .filter((f) => !only || only.includes(f.id));
}

// Variables that change what every Node process does at startup, for both
// modules alike, and that would hide the difference figure 6 measures:
// NODE_EXTRA_CA_CERTS makes Node 20 parse the whole certificate file before
// any code runs (about 80 ms per process on the project's machines, which
// set it). The servers run without them; the report says which were removed.
const STARTUP_VARIABLES = ['NODE_EXTRA_CA_CERTS', 'NODE_OPTIONS'];

function cleanEnvironment() {
  const removed = STARTUP_VARIABLES.filter((k) => process.env[k] !== undefined);
  for (const k of removed) delete process.env[k];
  return removed;
}

function environment(loaderName, argv) {
  const cpus = os.cpus();
  let commit = '';
  const g = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: __dirname, encoding: 'utf8', timeout: 5000 });
  if (!g.error && g.status === 0) commit = g.stdout.trim();
  let wrk = '';
  const w = spawnSync('wrk', ['-v'], { encoding: 'utf8', timeout: 5000 });
  if (!w.error) wrk = (/wrk ([^ ]+)/.exec(`${w.stdout}${w.stderr}`) || [])[1] || '';
  return {
    date: new Date().toISOString(),
    argv,
    node: process.version,
    rcluster: require('../package.json').version,
    commit,
    machine: `${os.platform()}-${os.arch()}, ${cpus.length} × ${cpus[0] ? cpus[0].model.trim() : '?'}, ` +
      `${Math.round(os.totalmem() / 2 ** 30)} GiB, load avg ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} at start`,
    loader: loaderName === 'wrk' && wrk ? `wrk ${wrk}` : loaderName,
    idle: 'not checked',
  };
}

const log = (...a) => console.log(...a);

async function main() {
  const argv = process.argv.slice(2);
  let args;
  try {
    args = parseArgs(argv);
    pin.configure(args.pinSpec);
  } catch (err) {
    console.error(`bench: ${err.message} (see --help)`);
    return 1;
  }
  const { p, only, out, loader: loaderName, quick } = args;
  const started = Date.now();
  const loader = pick(loaderName);
  const env = environment(loader.name, argv.join(' '));
  env.removed = cleanEnvironment();
  env.pin = pin.describe();
  const state = { env, figures: [], checks: [], partial: true, out };

  const guard = setTimeout(() => {
    console.error(`bench: time budget of ${p.budget}s exceeded, stopping`);
    killAllSync();
    write(state, started);
    process.exit(2);
  }, p.budget * 1000);
  guard.unref();

  log(`# rcluster benchmark suite${quick ? ' (quick)' : ''}`);
  log(`${env.machine}; node ${env.node}; load: ${env.loader}`);
  if (env.pin) log(env.pin);
  if (p.idleWait > 0) {
    log(`waiting for an idle machine (at most ${p.idleWait}s)...`);
    const idle = await waitForIdle({ maxSeconds: p.idleWait, log: (m) => log(`  ${m}`) });
    env.idle = idle.unsupported
      ? 'not supported here'
      : idle.ok
        ? `idle (${(idle.idle * 100).toFixed(0)}% idle after ${idle.waited.toFixed(0)} s)`
        : `**busy**: only ${(idle.idle * 100).toFixed(0)}% idle after waiting ${idle.waited.toFixed(0)} s; figures may be noisy`;
    if (!idle.ok) console.warn(`WARNING: machine still busy after ${p.idleWait}s (${(idle.idle * 100).toFixed(0)}% idle); going on, figures may be noisy`);
    else log(`  ${env.idle}`);
  }

  let failed = false;
  for (const f of figures(only)) {
    const mod = require(f.file);
    log(`\n## ${f.id}. ${mod.title}`);
    if (p.idleWaitBetween > 0) {
      const idle = await waitForIdle({ maxSeconds: p.idleWaitBetween, needed: 1 });
      if (!idle.ok) log(`  (machine busy: ${(idle.idle * 100).toFixed(0)}% idle; going on)`);
    }
    // On a shared virtual machine the host's other guests may take CPU time
    // in the middle of a figure ("steal"), which no idle check before it can
    // see: such a figure is run again, and the run with the least steal
    // counts. Every run's steal is reported.
    let best = null;
    const steals = [];
    for (let attempt = 0; attempt <= p.stealRetries; attempt++) {
      if (attempt > 0) {
        const left = p.budget - (Date.now() - started) / 1000;
        if (best.fig.seconds * 1.5 > left) break;
        log(`  the host took ${(100 * best.fig.steal).toFixed(1)}% of the CPU time ("steal"): running figure ${f.id} again`);
      }
      const run = await runFigure(f, mod, { p, loader, log });
      steals.push(run.fig.steal);
      if (!best || (run.fig.steal ?? 0) < (best.fig.steal ?? 0)) best = run;
      if ((best.fig.steal ?? 0) <= p.stealMax) break;
    }
    best.fig.steals = steals;
    state.checks.push(...best.checks);
    if (best.failed) failed = true;
    state.figures.push(best.fig);
  }
  state.partial = false;
  const files = write(state, started);
  log('\n## Summary\n');
  log(report.summaryTable(state.checks));
  log(`\nwritten: ${files.join(', ')} (${Math.round((Date.now() - started) / 1000)} s)`);
  return failed ? 1 : 0;
}

function write(state, started) {
  const elapsed = (Date.now() - started) / 1000;
  fs.mkdirSync(state.out, { recursive: true });
  const md = path.join(state.out, 'latest.md');
  const chart = path.join(state.out, 'latest.svg');
  fs.writeFileSync(md, report.markdown({ ...state, elapsed }));
  fs.writeFileSync(chart, report.svg(state));
  return [path.relative(process.cwd(), md), path.relative(process.cwd(), chart)];
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    console.error(`bench: ${sig}, stopping`);
    killAllSync();
    process.exit(130);
  });
}
process.on('exit', killAllSync);

main()
  .catch((err) => {
    console.error(`bench: ${err.stack || err.message}`);
    return 1;
  })
  .then(async (code) => {
    await killAll();
    process.exitCode = code;
  });
