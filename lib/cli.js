'use strict';

// The `rcluster` command: runs an unmodified single-process server on N
// supervised workers.
//
//   rcluster [options] app.js [app arguments...]
//
// The primary is this file. The app runs only in the workers, preloaded with
// rcluster/register (so `require('cluster')` there is rcluster), and its own
// `server.listen()` is routed to the primary's Rust listener as with any
// rcluster worker. Workers write to the terminal (inherited fds) or to files
// opened here and passed as their stdio: their output never goes through
// this process's JavaScript.
//
// Decisions written down here:
// - Options come first; the first non-option argument is the app and every
//   argument after it is the app's (as with `node`).
// - The CLI's own lines (start-up table, supervisor events, status) go to
//   stderr, so that the app's stdout stays the app's.
// - Supervision is on (`--restart always`); when no slot is left running
//   (every slot in a crash loop, or exited with --restart never/on-failure)
//   the CLI exits, non-zero unless every worker exited with code 0.
// - Exit codes: 0 after a SIGTERM/SIGINT graceful stop, 1 on a crash loop or
//   a failed worker, 2 on a usage error.
// - Workers ignore the terminal's SIGINT (Ctrl-C reaches the whole process
//   group): the primary drains them instead (lib/register-cli.js).
// - A `.json` or `*.config.js` argument is a PM2 ecosystem file (PM2's rule),
//   not an app: its app is run with its keys as options (lib/ecosystem.js);
//   its relative paths are the file's, and the command line's flags win.

const fs = require('fs');
const os = require('os');
const path = require('path');
const util = require('util');
const ecosystem = require('./ecosystem');

const REGISTER_CLI = path.join(__dirname, 'register-cli.js');
const POLICIES = ['rr', 'none', 'reuseport', 'least', 'hash'];

class UsageError extends Error {}

function usage(msg) {
  return new UsageError(msg);
}

// Value parsers: each returns the value or throws a UsageError naming the option.

function integer(min, max = Number.MAX_SAFE_INTEGER) {
  return (v, flag) => {
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
      throw usage(`${flag} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`}, got '${v}'`);
    }
    return Number(v);
  };
}

function number(min, max = Infinity) {
  return (v, flag) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
      throw usage(`${flag} must be a number ${max === Infinity ? `>= ${min}` : `from ${min} to ${max}`}, got '${v}'`);
    }
    return n;
  };
}

const DURATION_UNITS = { ms: 1, s: 1000, m: 60000, h: 3600000 };
/** '500', '500ms', '10s', '1.5m', '1h' -> milliseconds. */
function duration(v, flag) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v);
  if (!m) throw usage(`${flag} must be a duration (milliseconds, or with a unit: 500ms, 10s, 2m, 1h), got '${v}'`);
  const ms = Math.round(Number(m[1]) * DURATION_UNITS[m[2] || 'ms']);
  if (ms > 2 ** 31 - 1) throw usage(`${flag} is too large: '${v}'`);
  return ms;
}

const SIZE_UNITS = { '': 1, b: 1, k: 1024, kb: 1024, m: 1024 ** 2, mb: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3 };
/** '1073741824', '512M', '1G', '300MB' -> bytes. */
function size(v, flag) {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(v);
  const unit = m ? m[2].toLowerCase() : '';
  if (!m || !(unit in SIZE_UNITS)) {
    throw usage(`${flag} must be a size (bytes, or with a unit: 512K, 300M, 1G), got '${v}'`);
  }
  return Math.round(Number(m[1]) * SIZE_UNITS[unit]);
}

function oneOf(values) {
  return (v, flag) => {
    if (!values.includes(v)) throw usage(`${flag} must be one of ${values.join(', ')}, got '${v}'`);
    return v;
  };
}

// As PM2's -i: a count, 'max' or 0 for one per CPU, -N for N fewer than
// that (at least one).
function workersValue(v, flag) {
  const cpus = os.availableParallelism();
  if (v === 'max' || v === '0') return cpus;
  if (/^-\d+$/.test(v)) return Math.max(1, cpus + Number(v));
  return integer(1, 1024)(v, flag);
}

function envPair(v, flag) {
  const i = v.indexOf('=');
  if (i <= 0) {
    // PM2's `-e <file>` is its error log: ours is --error.
    throw usage(`${flag} must be KEY=VALUE, got '${v}'${flag === '--env' ? " (PM2's -e <file> is --error <file> here)" : ''}`);
  }
  return [v.slice(0, i), v.slice(i + 1)];
}

// Every option, in the order of --help. `key`: the setupPrimary() setting it
// sets; `def`: the default as --help shows it (and as the Rust supervisor or
// lib/primary.js apply it, when `value` is undefined).
const OPTIONS = [
  { name: 'workers', short: 'w', arg: 'n|max', def: 'os.availableParallelism()', parse: workersValue,
    help: 'number of workers (also -i, as in PM2); "max" or 0 is one per CPU, -N that many fewer' },
  { name: 'policy', short: 'p', arg: 'name', def: 'rr', parse: oneOf(POLICIES), key: 'schedulingPolicy',
    help: `connection dispatch policy: ${POLICIES.join(', ')}` },
  { section: 'Restart' },
  { name: 'restart', arg: 'mode', def: 'always', parse: oneOf(['always', 'on-failure', 'never']), key: 'restart',
    help: 'which exits restart a worker: always, on-failure (non-zero code or signal), never' },
  { name: 'min-uptime', arg: 'ms', def: '1000', parse: duration, key: 'minUptime',
    help: 'a worker that exits sooner than this counts as a crash' },
  { name: 'max-restarts', arg: 'n', def: '16', parse: integer(0), key: 'maxRestarts',
    help: 'consecutive crashes after which the slot stops (crash loop)' },
  { name: 'stop-exit-codes', arg: 'codes', def: '-', parse: exitCodes, key: 'stopExitCodes',
    help: 'comma-separated exit codes that mean "stopped on purpose": never restarted' },
  { name: 'restart-delay', arg: 'ms', def: '0', parse: duration, key: 'restartDelay',
    help: 'delay before restarting a worker that ran at least --min-uptime' },
  { name: 'backoff-initial', arg: 'ms', def: '100', parse: duration, key: 'backoffInitial',
    help: 'delay before restarting after the first crash' },
  { name: 'backoff-factor', arg: 'x', def: '2', parse: number(1), key: 'backoffFactor',
    help: 'the delay is multiplied by this after each further crash' },
  { name: 'backoff-max', arg: 'ms', def: '15000', parse: duration, key: 'backoffMax',
    help: 'longest delay between restarts' },
  { section: 'Readiness' },
  { name: 'readiness', arg: 'how', def: 'listening', parse: oneOf(['listening', 'message']), key: 'readiness',
    help: "a worker is ready when it listens, or when it calls process.send('ready')" },
  { name: 'ready-timeout', arg: 'ms', def: '30000', parse: duration, key: 'readyTimeout',
    help: 'a worker not ready by then is killed and replaced (0: no limit; use 0 for apps that never listen)' },
  { section: 'Stopping and reloading' },
  { name: 'drain-timeout', arg: 'ms', def: '10000', parse: duration, key: 'drainTimeout',
    help: 'time a retiring worker (reload, recycle) gets to finish its connections before SIGTERM' },
  { name: 'kill-timeout', arg: 'ms', def: '5000', parse: duration, key: 'killTimeout',
    help: 'time between SIGTERM and SIGKILL for a retiring worker' },
  { name: 'shutdown-timeout', arg: 'ms', def: '10000', parse: duration, key: 'shutdownTimeout',
    help: 'SIGTERM/SIGINT: deadline of the graceful stop (drain, SIGTERM at 70%, SIGKILL at the deadline)' },
  { section: 'Recycling and liveness' },
  { name: 'max-memory', arg: 'size', def: '0 (off)', parse: size, key: 'maxMemory',
    help: 'replace a worker whose RSS is above this (512M, 1G...), checked every second' },
  { name: 'max-connections', arg: 'n', def: '0 (off)', parse: integer(0), key: 'recycleConnections',
    help: 'replace a worker after it was given this many connections' },
  { name: 'recycle-jitter', arg: 'fraction', def: '0.1', parse: number(0, 1), key: 'recycleJitter',
    help: '--max-connections is moved by up to +/- this fraction, per worker' },
  { name: 'heartbeat-interval', arg: 'ms', def: '0 (off)', parse: duration, key: 'heartbeatInterval',
    help: "heartbeats answered by each worker's event loop" },
  { name: 'heartbeat-timeout', arg: 'ms', def: '5000', parse: duration, key: 'heartbeatTimeout',
    help: 'a worker silent this long is killed and replaced' },
  { section: 'Workers' },
  { name: 'env', short: 'e', arg: 'KEY=VALUE', def: '-', parse: envPair, multiple: true,
    help: 'environment variable for the workers (repeatable); workers also get NODE_APP_INSTANCE=0..n-1' },
  { name: 'cwd', arg: 'dir', def: '-', parse: directory, key: 'cwd',
    help: "the workers' working directory (the app's path is still relative to the current one)" },
  { name: 'node-arg', arg: 'arg', def: '-', parse: (v) => v, multiple: true, dashValue: true,
    help: 'argument for the workers\' node (repeatable), e.g. --node-arg=--max-old-space-size=512' },
  { name: 'output', short: 'o', arg: 'file', def: 'terminal', parse: (v) => v,
    help: "append the workers' stdout (and stderr, unless --error) to this file" },
  { name: 'error', arg: 'file', def: 'terminal', parse: (v) => v,
    help: "append the workers' stderr to this file" },
  { name: 'log-dir', arg: 'dir', def: '-', parse: (v) => v,
    help: 'one pair of files per slot: <dir>/worker-<slot>.out.log and worker-<slot>.err.log' },
  { section: 'Other' },
  { name: 'metrics', arg: 'host:port', def: 'off', parse: hostPort,
    help: 'serve cluster.metrics() (Prometheus text format) at http://host:port/metrics' },
  { name: 'name', arg: 'name', def: '-', parse: (v) => v,
    help: "the app's name in the start-up line (PM2's --name; an ecosystem file's app name)" },
  { name: 'only', arg: 'name', def: '-', parse: (v) => v,
    help: 'with an ecosystem file of several apps: the one to run (as in PM2)' },
  { name: 'quiet', short: 'q', def: 'false', boolean: true,
    help: 'no start-up table and no event lines (errors, crash loops and status still print)' },
  { name: 'help', short: 'h', def: '', boolean: true, help: 'show this help' },
  { name: 'version', short: 'v', def: '', boolean: true, help: 'show the version' },
];
function exitCodes(v, flag) {
  const codes = String(v).split(',').map((c) => c.trim()).filter((c) => c !== '');
  if (codes.length === 0 || !codes.every((c) => /^\d+$/.test(c) && Number(c) <= 255)) {
    throw usage(`${flag} must be exit codes (0-255) separated by commas, got '${v}'`);
  }
  return codes.map(Number);
}

function directory(v, flag) {
  const dir = path.resolve(v);
  let st;
  try {
    st = fs.statSync(dir);
  } catch {
    throw usage(`${flag}: no such directory '${v}'`);
  }
  if (!st.isDirectory()) throw usage(`${flag}: not a directory: '${v}'`);
  return dir;
}

function hostPort(v, flag) {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(v) || /^()()(\d+)$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw usage(`${flag} must be host:port or port (0-65535), got '${v}'`);
  }
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

// PM2's spellings: `-i`/`--instances` for --workers, the names of its flags
// that mean what one of ours does (`split`: PM2's one string of
// space-separated node arguments), and its switches that set one of ours
// (`preset`, unless that option is given too).
const ALIASES = {
  instances: { name: 'instances', short: 'i', alias: 'workers' },
  'max-memory-restart': { name: 'max-memory-restart', alias: 'max-memory' },
  'listen-timeout': { name: 'listen-timeout', alias: 'ready-timeout' },
  'exp-backoff-restart-delay': { name: 'exp-backoff-restart-delay', alias: 'backoff-initial' },
  'node-args': { name: 'node-args', alias: 'node-arg', split: true },
  'interpreter-args': { name: 'interpreter-args', alias: 'node-arg', split: true },
  'wait-ready': { name: 'wait-ready', boolean: true, preset: ['readiness', 'message'] },
  'no-autorestart': { name: 'no-autorestart', boolean: true, preset: ['restart', 'never'] },
};

const LONG = new Map();
const SHORT = new Map();
for (const o of [...OPTIONS, ...Object.values(ALIASES)]) {
  if (o.section) continue;
  LONG.set(o.name, o);
  if (o.short) SHORT.set(o.short, o);
}

function helpText() {
  const rows = [];
  for (const o of OPTIONS) {
    if (o.section) {
      rows.push(null, o.section);
      continue;
    }
    const flags = `${o.short ? `-${o.short}, ` : '    '}--${o.name}${o.arg ? ` <${o.arg}>` : ''}`;
    // The default stays in one piece when the description wraps.
    const def = o.def && o.def !== '-' ? ` (default: ${o.def})`.replace(/(?!^) /g, '\u0000') : '';
    rows.push([flags, `${o.help}${def}`]);
  }
  const width = Math.max(...rows.filter(Array.isArray).map((r) => r[0].length)) + 2;
  // Descriptions wrap at 100 columns, under their own column.
  const wrap = (text) => {
    const lines = [''];
    for (const word of text.split(' ')) {
      const cur = lines[lines.length - 1];
      if (cur && 2 + width + cur.length + 1 + word.length > 100) lines.push(word);
      else lines[lines.length - 1] = cur ? `${cur} ${word}` : word;
    }
    return lines.join(`\n${' '.repeat(2 + width)}`).replace(/\u0000/g, ' ');
  };
  const body = rows.map((r) => {
    if (r === null) return '';
    if (typeof r === 'string') return `${r}:`;
    return `  ${r[0].padEnd(width)}${wrap(r[1])}`;
  }).join('\n');
  return `Usage: rcluster [options] <app.js|app.mjs> [app arguments...]
       rcluster [options] <ecosystem.config.js|file.json> (PM2's file: its app and options)

Runs an unmodified Node server on N supervised workers (rcluster, a drop-in
for node:cluster with a Rust core). The app's own server.listen() is shared by
every worker. Durations are in ms unless suffixed (500ms, 10s, 2m, 1h).

Options:
${body.replace(/^\n/, '')}

PM2's flag names work too: --instances, --max-memory-restart, --listen-timeout,
--exp-backoff-restart-delay, --node-args and --interpreter-args (one string of
node arguments), --wait-ready (--readiness message), --no-autorestart
(--restart never).

Signals:
  SIGHUP            rolling reload: one slot at a time, new worker ready before the old one drains
  SIGTERM, SIGINT   graceful stop within --shutdown-timeout, then exit 0 (a second one forces)
  SIGUSR2           print each worker's state, uptime, restarts, connections, RSS, event-loop delay

Exit codes: 0 stopped by a signal (or every worker exited with 0), 1 crash loop
or failed workers, 2 bad command line.

Also: node -r rcluster/register app.js (or --import rcluster/register) makes
require('cluster') and import 'node:cluster' return rcluster in that process.
`;
}

/** argv -> { values, app, appArgs }; throws UsageError. */
function parse(argv) {
  // Split at the app: options before it are ours, everything after is its own.
  let i = 0;
  const ours = [];
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') break;
    if (!a.startsWith('-') || a === '-') break;
    ours.push(a);
    let opt;
    let inline = false;
    if (a.startsWith('--')) {
      const name = a.slice(2).split('=')[0];
      opt = LONG.get(name);
      inline = a.includes('=');
      if (!opt) throw usage(`unknown option '--${name}'`);
    } else {
      opt = SHORT.get(a[1]);
      inline = a.length > 2;
      if (!opt) throw usage(`unknown option '-${a[1]}'`);
    }
    const target = opt.alias ? LONG.get(opt.alias) : opt;
    if (!target.boolean && !inline && i + 1 < argv.length) {
      i++;
      // A negative number as a separate value (PM2's `-i -1`), or a node
      // argument: joined to its option, since parseArgs takes a leading '-'
      // for an option.
      if (/^-\d+$/.test(argv[i]) || (target.dashValue && argv[i].startsWith('-'))) {
        ours[ours.length - 1] = `--${opt.name}=${argv[i]}`;
      } else {
        ours.push(argv[i]);
      }
    }
  }
  let rest = argv.slice(i);
  if (rest[0] === '--') rest = rest.slice(1);
  const config = {};
  for (const o of LONG.values()) {
    const t = o.alias ? LONG.get(o.alias) : o;
    config[o.name] = { type: t.boolean ? 'boolean' : 'string', multiple: !!t.multiple || !t.boolean };
    if (o.short) config[o.name].short = o.short;
  }
  let parsed;
  try {
    parsed = util.parseArgs({ args: ours, options: config, strict: true, allowPositionals: false });
  } catch (err) {
    throw usage(err.message.replace(/^Option/, 'option'));
  }
  const values = {};
  const presets = [];
  for (const [name, raw] of Object.entries(parsed.values)) {
    const o = LONG.get(name);
    const t = o.alias ? LONG.get(o.alias) : o;
    const flag = `--${t.name}`;
    if (o.preset) {
      presets.push(o.preset);
    } else if (t.boolean) {
      values[t.name] = raw === true || (Array.isArray(raw) && raw.includes(true));
    } else if (t.multiple) {
      const list = o.split ? raw.flatMap((v) => v.split(/\s+/).filter(Boolean)) : raw;
      values[t.name] = [...(values[t.name] || []), ...list.map((v) => t.parse(v, flag))];
    } else {
      // The last one wins, as with most CLIs.
      values[t.name] = t.parse(raw[raw.length - 1], flag);
    }
  }
  for (const [name, value] of presets) {
    if (values[name] === undefined) values[name] = LONG.get(name).parse(value, `--${name}`);
  }
  if (values.help || values.version) return { values, app: undefined, appArgs: [] };
  if (rest.length === 0) throw usage('missing the app to run (rcluster [options] app.js)');
  let app;
  let appArgs = rest.slice(1);
  const warnings = [];
  if (ecosystem.isConfigFile(rest[0])) {
    const file = path.resolve(rest[0]);
    let eco;
    try {
      eco = ecosystem.load(file, values.only);
    } catch (err) {
      throw usage(err.message);
    }
    // What the file sets, unless the command line does.
    const fromFile = new Map();
    for (const [name, value, label] of eco.options) {
      if (values[name] !== undefined) continue;
      // --log-dir on the command line replaces the file's log files.
      if ((name === 'output' || name === 'error') && values['log-dir'] !== undefined) continue;
      const t = LONG.get(name);
      const parsedValue = t.multiple ? value.map((v) => t.parse(v, label)) : t.parse(value, label);
      fromFile.set(name, t.multiple ? [...(fromFile.get(name) || []), ...parsedValue] : parsedValue);
    }
    for (const [name, value] of fromFile) values[name] = value;
    app = resolveApp(eco.app);
    if (appArgs.length === 0) appArgs = eco.args;
    if (eco.ignored.length > 0) {
      warnings.push(`${path.basename(file)}: ignored (no equivalent here): ${eco.ignored.join(', ')}`);
    }
  } else {
    if (values.only !== undefined) throw usage('--only picks an app of an ecosystem file');
    app = resolveApp(rest[0]);
  }
  if (values['log-dir'] !== undefined && (values.output !== undefined || values.error !== undefined)) {
    throw usage('--log-dir cannot be combined with --output or --error');
  }
  return { values, app, appArgs, warnings };
}

const PM2_VERBS = new Set(['start', 'restart', 'reload', 'stop', 'delete', 'status', 'list', 'ls', 'logs', 'monit']);

function resolveApp(name) {
  const abs = path.resolve(name);
  try {
    if (fs.statSync(abs).isFile()) return abs;
  } catch {
    // Try the way `node name` would (extensions, a directory's index).
  }
  try {
    return require.resolve(abs);
  } catch {
    // `rcluster start app.js`, by PM2 habit.
    const verb = PM2_VERBS.has(name) ? ` (rcluster has no '${name}' command: rcluster [options] app.js${
      name === 'start' ? '' : '; signals reload, stop and report status, see --help'})` : '';
    throw usage(`cannot find the app '${name}' (${abs})${verb}`);
  }
}

// Output -----------------------------------------------------------------

const out = {
  quiet: false,
  write(line) {
    try {
      fs.writeSync(2, `${line}\n`);
    } catch {
      // stderr is gone: nothing to tell.
    }
  },
  event(kind, text, always = false) {
    if (out.quiet && !always) return;
    out.write(`${new Date().toISOString()} [rcluster] ${kind.padEnd(9)} ${text}`);
  },
};

function table(headers, rows) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (r) => `  ${r.map((c, i) => String(c).padEnd(widths[i])).join('  ')}`.trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

function fmtDuration(ms) {
  if (ms < 1000) return `${ms}ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor(s / 3600) % 24).padStart(2, '0')}h`;
}

function fmtBytes(n) {
  if (n == null || !Number.isFinite(n)) return '-';
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)}K`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)}M`;
  return `${(n / 1024 ** 3).toFixed(2)}G`;
}

/** RSS in bytes from /proc (Linux); undefined elsewhere. */
function rssOf(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

function exitText(code, signal) {
  return signal ? `signal ${signal}` : `code ${code}`;
}

// The primary --------------------------------------------------------------

function run({ values, app, appArgs }) {
  const cluster = require('../index');
  out.quiet = !!values.quiet;
  const n = values.workers !== undefined ? values.workers : os.availableParallelism();
  const restart = values.restart || 'always';
  const settings = {
    exec: app,
    args: appArgs,
    execArgv: [...(values['node-arg'] || []), '--require', REGISTER_CLI],
    restart,
  };
  for (const o of OPTIONS) {
    if (o.key && values[o.name] !== undefined) settings[o.key] = values[o.name];
  }
  const maxRestarts = settings.maxRestarts === undefined ? 16 : settings.maxRestarts;
  const minUptime = settings.minUptime === undefined ? 1000 : settings.minUptime;
  const shutdownTimeout = settings.shutdownTimeout === undefined ? 10000 : settings.shutdownTimeout;

  // Worker output: inherited fds, or files opened here and handed over as
  // the workers' stdout/stderr (they write to them directly).
  const open = (file) => {
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    return fs.openSync(file, 'a');
  };
  let stdioFor = () => ['ignore', 'inherit', 'inherit', 'ipc'];
  if (values['log-dir'] !== undefined) {
    const dir = path.resolve(values['log-dir']);
    stdioFor = (slot) => ['ignore', open(path.join(dir, `worker-${slot}.out.log`)),
      open(path.join(dir, `worker-${slot}.err.log`)), 'ipc'];
  } else if (values.output !== undefined || values.error !== undefined) {
    const o = values.output !== undefined ? open(values.output) : 'inherit';
    const e = values.error !== undefined ? open(values.error) : o;
    stdioFor = () => ['ignore', o, e, 'ipc'];
  }

  if (values.metrics !== undefined) {
    // Prometheus scrapes the primary; the numbers come from the Rust reactor.
    const { host, port } = values.metrics;
    const server = require('http').createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.statusCode = 404;
        res.end('not found: try /metrics\n');
        return;
      }
      res.setHeader('content-type', 'text/plain; version=0.0.4');
      res.end(cluster.metrics());
    });
    server.on('error', (err) => {
      out.event('error', `--metrics ${host}:${port}: ${err.message}`, true);
      process.exitCode = 2;
    });
    server.listen(port, host, () => {
      const a = server.address();
      out.event('metrics', `Prometheus metrics at http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`);
    });
    server.unref();
  }

  const env = Object.fromEntries(values.env || []);
  const slots = new Map(); // slot -> state of the slot
  const started = new Map(); // worker id -> ms
  const addresses = new Set();
  let startup = true;
  let stopping = false;
  let reloading = false;
  const t0 = Date.now();

  const slotOf = (worker) => (worker && worker.slot !== undefined ? worker.slot : worker && worker.id);
  const who = (worker) => (worker ? `worker ${worker.id} (pid ${worker.process.pid})` : 'worker');

  function slotState(s) {
    if (s.stopped) return s.stopped;
    const w = s.worker;
    if (!w || w.isDead()) return s.waiting ? 'restarting' : 'starting';
    if (w._retiring) return 'draining';
    if (s.ready) return 'ready';
    return w.state || 'starting';
  }

  function printStartup() {
    if (!startup) return;
    startup = false;
    const rows = [...slots.entries()].map(([slot, s]) =>
      [slot, s.worker ? s.worker.id : '-', s.worker && s.worker.process.pid ? s.worker.process.pid : '-', slotState(s)]);
    const file = path.relative(process.cwd(), app) || app;
    const what = values.name !== undefined ? `${values.name} (${file})` : file;
    const lines = [
      `${new Date().toISOString()} [rcluster] started   ${what} on ${n} worker${n === 1 ? '' : 's'}` +
        ` (policy ${POLICY_NAME()}, primary pid ${process.pid}, ${fmtDuration(Date.now() - t0)})`,
      table(['slot', 'worker', 'pid', 'state'], rows),
    ];
    if (addresses.size) lines.push(`  listening on ${[...addresses].join(', ')}`);
    lines.push('  SIGHUP: reload, SIGUSR2: status, SIGTERM/Ctrl-C: stop');
    if (!out.quiet) out.write(lines.join('\n'));
    notify('READY=1');
  }

  function POLICY_NAME() {
    return { 1: 'none', 2: 'rr', 3: 'reuseport', 4: 'least', 5: 'hash' }[cluster.schedulingPolicy] || String(cluster.schedulingPolicy);
  }

  function maybeStartupDone() {
    if (startup && [...slots.values()].every((s) => s.ready || s.stopped || s.failed)) printStartup();
  }

  // Status (SIGUSR2): what the primary knows, plus cluster.stats() (the
  // Rust reactor's snapshot: open connections, connections handed over, RSS,
  // event-loop delay as the heartbeat round trip) when the core has it.
  function status() {
    let stats = [];
    if (typeof cluster.stats === 'function') {
      try {
        const snap = cluster.stats();
        stats = Array.isArray(snap && snap.workers) ? snap.workers : [];
      } catch {
        stats = [];
      }
    }
    const rows = [];
    for (const [slot, s] of slots) {
      const w = s.worker && !s.worker.isDead() ? s.worker : null;
      const st = (w && stats.find((e) => e.id === w.id)) || {};
      const rss = st.rss != null ? st.rss : w ? rssOf(w.process.pid) : undefined;
      const delay = st.eventLoopDelayMs;
      rows.push([slot, w ? w.id : '-', w ? w.process.pid : '-', slotState(s),
        w ? fmtDuration(Date.now() - started.get(w.id)) : '-', s.restarts,
        st.open == null ? '-' : st.open, st.connections == null ? '-' : st.connections, fmtBytes(rss),
        delay == null ? '-' : `${Number(delay).toFixed(1)}ms`]);
    }
    out.write([
      `${new Date().toISOString()} [rcluster] status    primary pid ${process.pid}, up ${fmtDuration(Date.now() - t0)}, ` +
        `policy ${POLICY_NAME()}, rss ${fmtBytes(process.memoryUsage.rss())}${reloading ? ', reloading' : ''}${stopping ? ', stopping' : ''}`,
      table(['slot', 'worker', 'pid', 'state', 'uptime', 'restarts', 'conns', 'served', 'rss', 'loop delay'], rows),
    ].join('\n'));
  }

  // systemd (Type=notify): READY=1 once started, RELOADING=1/READY=1 around
  // a reload, STOPPING=1; nothing without NOTIFY_SOCKET.
  const notify = (state) => {
    if (typeof cluster.sdNotify !== 'function') return;
    try {
      cluster.sdNotify(state);
    } catch {
      // Not under systemd.
    }
  };

  function finish(code, message) {
    if (message) out.event(code === 0 ? 'exit' : 'error', message, true);
    process.exit(code);
  }

  // A slot is finished when nothing will start a worker in it again.
  function checkFinished() {
    if (stopping) return;
    const all = [...slots.values()];
    if (!all.every((s) => s.stopped)) return;
    const loops = all.filter((s) => s.crashloop);
    if (loops.length === all.length) {
      finish(1, `every worker slot stopped in a crash loop: the app exits within --min-uptime (${minUptime} ms) of starting` +
        ` (last exit: ${all[0].lastExit}); see its output above. Exiting with code 1.`);
    } else if (loops.length > 0) {
      finish(1, `no worker left (${loops.length} of ${all.length} slots stopped in a crash loop). Exiting with code 1.`);
    } else {
      const failed = all.filter((s) => s.lastExit !== 'code 0');
      finish(failed.length ? 1 : 0, `every worker exited (--restart ${restart}; last exits: ${all.map((s) => s.lastExit).join(', ')})` +
        `. Exiting with code ${failed.length ? 1 : 0}.`);
    }
  }

  cluster.on('fork', (worker) => {
    const slot = slotOf(worker);
    started.set(worker.id, Date.now());
    const s = slots.get(slot);
    if (s && !worker._retiring) {
      // A replacement (reload, recycle) becomes the slot's worker when ready.
      if (!s.worker || s.worker.isDead() || !s.reloadNew) s.worker = worker;
      s.waiting = false;
    }
  });
  cluster.on('listening', (worker, address) => {
    const host = address.address == null ? '*' : address.addressType === 6 ? `[${address.address}]` : address.address;
    const text = address.addressType === -1 ? address.address : `${host}:${address.port}`;
    if (!addresses.has(text)) {
      addresses.add(text);
      if (!startup) out.event('listening', `${text} (${who(worker)})`);
    }
  });
  cluster.on('ready', (worker) => {
    const s = slots.get(slotOf(worker));
    if (!s) return;
    s.worker = worker;
    s.ready = true;
    s.reloadNew = false;
    if (startup) maybeStartupDone();
    else if (!reloading) out.event('ready', `slot ${slotOf(worker)}: ${who(worker)} is ready`);
  });
  cluster.on('exit', (worker, code, signal) => {
    const slot = slotOf(worker);
    const s = slots.get(slot);
    const up = Date.now() - (started.get(worker.id) || Date.now());
    started.delete(worker.id);
    if (!s) return;
    if (stopping) return;
    const how = exitText(code, signal);
    if (!worker.exitedAfterDisconnect) {
      s.lastExit = how;
      out.event('exit', `slot ${slot}: ${who(worker)} exited with ${how} after ${fmtDuration(up)}`);
    }
    if (s.worker !== worker) return; // A replaced worker: the slot is served.
    s.ready = false;
    // Mirrors the supervisor's decision (src/supervisor.rs): does anything
    // restart this slot? A crash loop arrives as its own event.
    const ends = restart === 'never' || (restart === 'on-failure' && code === 0 && !signal);
    if (ends && !worker._retiring) {
      s.stopped = `exited (${how})`;
      if (startup) maybeStartupDone();
      checkFinished();
    } else {
      s.waiting = true;
    }
  });
  cluster.on('restart', (worker, info) => {
    const slot = slotOf(worker);
    const s = slots.get(slot);
    if (s) {
      s.restarts++;
      s.worker = worker;
      s.waiting = false;
    }
    out.event('restart', `slot ${slot}: started ${who(worker)}${s && s.lastExit ? ` after an exit with ${s.lastExit}` : ''}` +
      ` (restart ${s ? s.restarts : '?'})`);
  });
  cluster.on('backoff', (worker, info) => {
    out.event('backoff', `slot ${info.slot}: ${info.reason}; restarting in ${info.delay} ms` +
      ` (crash ${info.unstable} of at most ${maxRestarts})`);
  });
  cluster.on('crashloop', (worker, info) => {
    const s = slots.get(info.slot);
    if (s) {
      s.stopped = 'crash loop';
      s.crashloop = true;
    }
    out.event('crashloop', `slot ${info.slot}: stopped, ${info.reason}` +
      `${s && s.lastExit ? ` (last exit: ${s.lastExit})` : ''}`, true);
    if (startup) maybeStartupDone();
    checkFinished();
  });
  cluster.on('unready', (worker, info) => {
    const s = slots.get(info.slot);
    if (s && startup) s.failed = true;
    out.event('unready', `slot ${info.slot}: ${info.reason}; it is killed and replaced` +
      (settings.readiness === 'message' ? '' : " (an app that never listens needs --ready-timeout 0 or --readiness message)"), true);
    if (startup) maybeStartupDone();
  });
  cluster.on('unresponsive', (worker, info) => {
    out.event('unrespons', `slot ${info.slot}: ${info.reason}`, true);
  });
  cluster.on('recycle', (worker, info) => {
    const s = slots.get(info.slot);
    if (s) s.reloadNew = true;
    out.event('recycle', `slot ${info.slot}: ${info.reason}; starting a replacement`);
  });
  cluster.on('retire', (worker, info) => {
    const s = slots.get(info.slot);
    if (s) s.reloadNew = true;
    out.event('retire', `slot ${info.slot}: ${info.reason}; starting a replacement`);
  });
  cluster.on('reload', (worker, info) => {
    const s = slots.get(info.slot);
    if (info.phase === 'start') {
      if (s) s.reloadNew = true;
      out.event('reload', `slot ${info.slot}: starting worker ${info.new}${worker ? ` (pid ${worker.process.pid})` : ''} to replace worker ${info.old}`);
    } else if (info.phase === 'retire') {
      out.event('reload', `slot ${info.slot}: worker ${info.new} ready, draining worker ${info.old}`);
    } else if (info.phase === 'done') {
      out.event('reload', `slot ${info.slot}: worker ${info.old} drained and gone`);
    }
  });

  function reload() {
    if (stopping) return;
    if (reloading) {
      out.event('reload', 'a reload is already in progress; SIGHUP ignored');
      return;
    }
    reloading = true;
    const t = Date.now();
    out.event('reload', `started: ${[...slots.values()].filter((s) => !s.stopped).length} slot(s), one at a time`);
    notify('RELOADING=1');
    cluster.reload().then(() => {
      reloading = false;
      notify('READY=1');
      out.event('reload', `done in ${fmtDuration(Date.now() - t)}`);
    }, (err) => {
      reloading = false;
      notify('READY=1');
      out.event('reload', `failed: ${err.message}; the old workers keep serving`, true);
    });
  }

  function stop(signal) {
    if (stopping) {
      out.event('stop', `${signal} again: killing every worker now`, true);
      for (const w of Object.values(cluster.workers)) {
        try {
          process.kill(w.process.pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      process.exit(1);
    }
    stopping = true;
    notify('STOPPING=1');
    const t = Date.now();
    out.event('stop', `${signal}: draining ${Object.keys(cluster.workers).length} worker(s) (deadline ${fmtDuration(shutdownTimeout)})`, true);
    cluster.shutdown({ timeout: shutdownTimeout }).then(() => {
      finish(0, `stopped in ${fmtDuration(Date.now() - t)}`);
    });
  }

  // Stay alive while a slot waits for its restart (no worker process then
  // keeps the event loop busy); finish() decides when to exit.
  setInterval(() => {}, 2 ** 31 - 1);

  process.on('SIGHUP', reload);
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGUSR2', status);

  cluster.setupPrimary(settings);
  for (let i = 0; i < n; i++) {
    cluster.setupPrimary({ stdio: stdioFor(i + 1) });
    const worker = cluster.fork({ ...env, NODE_APP_INSTANCE: String(i) });
    slots.set(slotOf(worker), { worker, restarts: 0, ready: false, stopped: false, lastExit: undefined });
  }
}

function main(argv) {
  let parsed;
  try {
    parsed = parse(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`rcluster: ${err.message}\nRun 'rcluster --help' for the options.\n`);
    process.exitCode = 2;
    return;
  }
  if (parsed.values.help) {
    process.stdout.write(helpText());
    return;
  }
  if (parsed.values.version) {
    process.stdout.write(`rcluster ${require('../package.json').version} (node ${process.version})\n`);
    return;
  }
  for (const w of parsed.warnings || []) process.stderr.write(`rcluster: ${w}\n`);
  try {
    run(parsed);
  } catch (err) {
    process.stderr.write(`rcluster: ${err.message}\n`);
    process.exit(1);
  }
}

module.exports = { main, parse, helpText, OPTIONS, UsageError };
