'use strict';

// The `cluster` module as the primary sees it. The Rust reactor spawns and
// watches workers, binds listeners and dispatches connections; this file
// only turns its events into Node's events, with Node's order and state.

const EventEmitter = require('events');
const os = require('os');
const path = require('path');
const native = require('./native');
const Worker = require('./worker_class');
const { WorkerProcess } = require('./child');
const url = require('url');
const util = require('util');
const { later, rethrow } = require('./inbox');
const ipc = require('./ipc');
const errors = require('./errors');
const { inspectArgv } = require('./inspect');
const F = require('./frames');
const lazy = require('./lazy');

const SCHED_NONE = 1;
const SCHED_RR = 2;
// rcluster's dispatch policies, numbered after Node's two (see README).
const SCHED_REUSEPORT = 3;
const SCHED_LEAST = 4;
const SCHED_HASH = 5;
const POLICY_NAMES = new Map([
  [SCHED_NONE, 'none'], [SCHED_RR, 'rr'], [SCHED_REUSEPORT, 'reuseport'],
  [SCHED_LEAST, 'least'], [SCHED_HASH, 'hash'],
]);
const POLICY_NUMBERS = new Map([...POLICY_NAMES].map(([n, name]) => [name, n]));
const TIMEOUT_MAX = 2 ** 31 - 1;
const BOOTSTRAP = path.join(__dirname, 'bootstrap.js');
const ENV_KEY = 'RCLUSTER_WORKER';

const cluster = new EventEmitter();
const intercom = new EventEmitter();

cluster.isWorker = false;
cluster.isMaster = true; // Deprecated alias of isPrimary.
cluster.isPrimary = true;
cluster.Worker = Worker;
cluster.workers = {};
cluster.settings = {};
cluster.SCHED_NONE = SCHED_NONE;
cluster.SCHED_RR = SCHED_RR;
cluster.SCHED_REUSEPORT = SCHED_REUSEPORT;
cluster.SCHED_LEAST = SCHED_LEAST;
cluster.SCHED_HASH = SCHED_HASH;

let initialized = false;
let core = null;
const processes = new Map(); // id -> { worker, proc }

/** A policy number (1..5) or name ('rr', 'none', 'reuseport', 'least', 'hash') -> number. */
function policyNumber(value) {
  if (POLICY_NAMES.has(value)) return value;
  if (typeof value === 'string' && POLICY_NUMBERS.has(value)) return POLICY_NUMBERS.get(value);
  return undefined;
}

// Like Node: NODE_CLUSTER_SCHED_POLICY names the policy, anything else is rr.
let schedulingPolicy = process.env.NODE_CLUSTER_SCHED_POLICY;
schedulingPolicy = (typeof schedulingPolicy === 'string' && POLICY_NUMBERS.get(schedulingPolicy)) || SCHED_RR;
cluster.schedulingPolicy = schedulingPolicy;

cluster.setupPrimary = function setupPrimary(options) {
  const settings = {
    args: process.argv.slice(2),
    exec: process.argv[1],
    execArgv: process.execArgv,
    silent: false,
    ...cluster.settings,
    ...options,
  };
  // V8 profiles: one log file per process, as Node arranges. Called the way
  // Node's primordials call them, so that an odd execArgv (a string, a
  // number) is only refused by fork(), as in Node.
  if (anyStartsWith(settings.execArgv, '--prof') && !anyStartsWith(settings.execArgv, '--logfile=')) {
    settings.execArgv = [...settings.execArgv, '--logfile=v8-%p.log'];
  }
  cluster.settings = settings;
  if (initialized === true) {
    process.nextTick(() => cluster.emit('setup', settings));
    return;
  }
  initialized = true;
  if (settings.signals) installSignals();
  // rcluster setting: `setupPrimary({ schedulingPolicy })` (a number or a
  // name), for programs (ESM) that cannot assign before the first fork.
  if (settings.schedulingPolicy !== undefined) cluster.schedulingPolicy = settings.schedulingPolicy;
  schedulingPolicy = policyNumber(cluster.schedulingPolicy); // Frozen from here on.
  if (schedulingPolicy === undefined) {
    // Node's is an internal assertion (same code; its message goes on to
    // blame Node.js itself).
    throw errors.make(Error, 'ERR_INTERNAL_ASSERTION', `Bad cluster.schedulingPolicy: ${cluster.schedulingPolicy}`);
  }
  cluster.schedulingPolicy = schedulingPolicy;
  process.nextTick(() => cluster.emit('setup', settings));
};

cluster.setupMaster = cluster.setupPrimary;

function getCore() {
  if (core === null) {
    core = new native.Primary(onEvents);
    // The reactor took over the sockets of systemd socket activation (if
    // LISTEN_PID named this process): the variables must not reach workers.
    if (process.env.LISTEN_PID === String(process.pid)) {
      delete process.env.LISTEN_PID;
      delete process.env.LISTEN_FDS;
      delete process.env.LISTEN_FDNAMES;
    }
  }
  return core;
}

/**
 * Sends a state line to systemd (`READY=1`, `RELOADING=1`, `STOPPING=1`,
 * `STATUS=...`) when run as a `Type=notify` service (rcluster extension).
 * Returns false when NOTIFY_SOCKET is not set.
 */
cluster.sdNotify = function sdNotify(state) {
  if (typeof state !== 'string' || state === '') {
    throw errors.invalidArgType('state', ['string'], state);
  }
  return getCore().sdNotify(state);
};

// Node's cluster forks with child_process.fork(); the checks below are the
// ones fork() and spawn() make, in the same order, with the same errors, so a
// bad setting fails the same way (synchronously, from cluster.fork()).

function received(value) {
  if (value == null) return ` Received ${value}`;
  if (typeof value === 'function') return ` Received function ${value.name}`;
  if (typeof value === 'object') {
    if (value.constructor && value.constructor.name) {
      return ` Received an instance of ${value.constructor.name}`;
    }
    return ` Received ${util.inspect(value, { depth: -1 })}`;
  }
  let shown = util.inspect(value, { colors: false });
  if (shown.length > 28) shown = `${shown.slice(0, 25)}...`;
  return ` Received type ${typeof value} (${shown})`;
}

function argTypeError(name, expected, value) {
  const what = name.includes('.') ? 'property' : 'argument';
  return errors.make(TypeError, 'ERR_INVALID_ARG_TYPE',
    `The "${name}" ${what} must be ${expected}.${received(value)}`);
}

function badStdio(value) {
  return errors.invalidArgValue('stdio', value);
}

function validatedPath(value, name) {
  if (value instanceof URL) return url.fileURLToPath(value);
  if (typeof value !== 'string' && !Buffer.isBuffer(value)) {
    throw argTypeError(name, 'of type string or an instance of Buffer or URL', value);
  }
  const str = String(value);
  if (str.includes('\u0000')) {
    throw errors.invalidArgValue(name, str, 'must be a string, Uint8Array, or URL without null bytes');
  }
  return str;
}

function anyStartsWith(list, prefix) {
  return Array.prototype.some.call(list, (s) => String.prototype.startsWith.call(s, prefix));
}

// Node's spawn refuses a string argument with a NUL byte in it...
function nullCheck(value, name) {
  if (typeof value === 'string' && value.includes('\u0000')) {
    throw errors.invalidArgValue(name, value, 'must be a string without null bytes');
  }
}

// ...and passes any other value as its string (a Symbol throws, as there).
function argStrings(list, name, offset = 0) {
  list.forEach((v, i) => nullCheck(v, `${name}[${i + offset}]`));
  return list.map((v) => `${v}`);
}

function isInt32(v) {
  return v === (v | 0);
}

const NODE_MAJOR = Number(process.versions.node.split('.')[0]);

/**
 * spawn()'s check of `uid` / `gid`: one int32 test until Node 24; from Node
 * 25 on, a number, then an integer, then in the int32 range, each with its
 * own error.
 */
function checkId(name, v) {
  if (NODE_MAJOR < 25) {
    if (!isInt32(v)) throw argTypeError(name, 'int32', v);
    return;
  }
  if (typeof v !== 'number') throw argTypeError(name, 'of type number', v);
  if (!Number.isInteger(v)) throw outOfRange(name, 'an integer', v);
  if (!isInt32(v)) throw outOfRange(name, '>= -2147483648 && <= 2147483647', v);
}

/** Node's ERR_OUT_OF_RANGE, which groups the digits of integers beyond 2^32. */
function outOfRange(name, range, v) {
  const shown = Number.isInteger(v) && Math.abs(v) > 2 ** 32 ? groupDigits(String(v)) : util.inspect(v);
  return errors.make(RangeError, 'ERR_OUT_OF_RANGE',
    `The value of "${name}" is out of range. It must be ${range}. Received ${shown}`);
}

/** '-12345678' -> '-12_345_678'. */
function groupDigits(text) {
  const sign = text.startsWith('-') ? '-' : '';
  let digits = text.slice(sign.length);
  const groups = [];
  while (digits.length > 3) {
    groups.unshift(digits.slice(-3));
    digits = digits.slice(0, -3);
  }
  groups.unshift(digits);
  return sign + groups.join('_');
}

/** child_process' stdio list -> the spawner's codes (see binding.d.ts). */
function stdioFor(settings) {
  let stdio = settings.stdio;
  if (typeof stdio === 'string') {
    if (!['ignore', 'overlapped', 'pipe', 'inherit'].includes(stdio)) throw badStdio(stdio);
    stdio = [stdio, stdio, stdio, 'ipc'];
  } else if (!Array.isArray(stdio)) {
    const mode = settings.silent ? 'pipe' : 'inherit';
    stdio = [mode, mode, mode, 'ipc'];
  } else if (!stdio.includes('ipc')) {
    throw errors.make(Error, 'ERR_CHILD_PROCESS_IPC_REQUIRED',
      'Forked processes must have an IPC channel, missing value \'ipc\' in options.stdio');
  }
  stdio = [...stdio];
  while (stdio.length < 3) stdio.push(undefined);
  let ipc = false;
  return stdio.map((s, i) => {
    if (s == null) s = i < 3 ? 'pipe' : 'ignore';
    if (s === 'ignore') return -2;
    if (s === 'pipe' || s === 'overlapped' || (typeof s === 'number' && s < 0)) return -3;
    if (s === 'ipc') {
      if (ipc) throw errors.make(Error, 'ERR_IPC_ONE_PIPE', 'Child process can have only one IPC pipe');
      ipc = true;
      return -4;
    }
    if (s === 'inherit') return -1; // The primary's own fd number i.
    if (typeof s === 'number') return s;
    if (typeof s.fd === 'number') return s.fd;
    const h = s._handle || s.handle;
    if (h && typeof h.fd === 'number' && h.fd >= 0) return h.fd;
    throw badStdio(s);
  });
}

/** The `rrOffload` setting (rr may let the kernel hand connections to workers under load; default true). */
function rrOffload(settings) {
  const v = settings.rrOffload;
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw argTypeError('settings.rrOffload', 'of type boolean', v);
  return v;
}

// libuv 1.51 (Node 24; Node 22.23 has it too) sets a unix socket's mode to
// exactly the bits readableAll/writableAll ask for (fchmod); older libuv
// (Node 20) adds them to the mode the umask gave. The primary binds, so its
// libuv decides.
const PIPE_MODE_EXACT = (() => {
  const [major, minor] = String(process.versions.uv || '0.0').split('.').map(Number);
  return major > 1 || (major === 1 && minor >= 51);
})();

/** The `reusePortHold` setting (ms a dead worker's reuseport socket waits for its replacement). */
function reusePortHold(settings) {
  const v = settings.reusePortHold;
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) {
    throw errors.make(RangeError, 'ERR_OUT_OF_RANGE',
      `The value of "settings.reusePortHold" is out of range. It must be a finite number >= 0. Received ${util.inspect(v)}`);
  }
  return Math.floor(v);
}

function envList(obj) {
  const out = [];
  for (const key of Object.keys(obj)) {
    const v = obj[key];
    if (v === undefined) continue;
    out.push(`${key}=${v}`);
  }
  return out;
}

// Supervision settings (rcluster extensions to cluster.settings; off unless
// `restart` is set). Names follow PM2 where PM2 has one.
const SUPERVISION_KEYS = {
  restart: 'restart', stopExitCodes: 'stopExitCodes', restartDelay: 'restartDelay',
  backoffInitial: 'backoffInitial', backoffMax: 'backoffMax', backoffFactor: 'backoffFactor',
  minUptime: 'minUptime', maxRestarts: 'maxRestarts', readiness: 'readiness',
  readyTimeout: 'readyTimeout', drainTimeout: 'drainTimeout', killTimeout: 'killTimeout',
  heartbeatInterval: 'heartbeatInterval', heartbeatTimeout: 'heartbeatTimeout',
  recycleConnections: 'maxConnections', recycleJitter: 'recycleJitter', maxMemory: 'maxMemory',
};
const RESTART_MODES = ['never', 'always', 'on-failure'];

function supervisionFor(settings, overrides) {
  const merged = { ...settings, ...overrides };
  const out = {};
  for (const [key, rustKey] of Object.entries(SUPERVISION_KEYS)) {
    const v = merged[key];
    if (v === undefined) continue;
    if (key === 'restart') {
      if (v === true) out.restart = 'always';
      else if (v === false) out.restart = 'never';
      else if (RESTART_MODES.includes(v)) out.restart = v;
      else {
        throw errors.invalidArgValue('settings.restart', v,
          `must be one of: ${RESTART_MODES.map((m) => `'${m}'`).join(', ')}, true, false`);
      }
    } else if (key === 'readiness') {
      if (v !== 'listening' && v !== 'message') {
        throw errors.invalidArgValue('settings.readiness', v, "must be one of: 'listening', 'message'");
      }
      out.readiness = v;
    } else if (key === 'stopExitCodes') {
      if (!Array.isArray(v) || !v.every(Number.isInteger)) {
        throw errors.make(TypeError, 'ERR_INVALID_ARG_TYPE',
          `The "settings.stopExitCodes" property must be an array of integers. Received ${util.inspect(v)}`);
      }
      out.stopExitCodes = v;
    } else {
      if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) {
        throw errors.make(RangeError, 'ERR_OUT_OF_RANGE',
          `The value of "settings.${key}" is out of range. It must be a finite number >= 0. Received ${util.inspect(v)}`);
      }
      out[rustKey] = key === 'backoffFactor' || key === 'recycleJitter' ? v : Math.floor(v);
    }
  }
  return JSON.stringify(out);
}

const slots = new Map(); // slot -> { spawnargs, advanced }

/**
 * Under the permission model (`--permission`) without
 * `--allow-child-process`, Node's fork() throws ERR_ACCESS_DENIED from the
 * spawn, after its other checks. rcluster's spawner is native code, which
 * the model does not see: it refuses here, with Node's own error (Node's
 * spawn throws it before it starts anything).
 */
function refuseWithoutChildPermission() {
  const permission = process.permission;
  if (!permission || typeof permission.has !== 'function' || permission.has('child')) return;
  const child = require('child_process').spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  // Not reached: the spawn above threw. Should a Node ever let it through,
  // stop it and still refuse.
  child.kill('SIGKILL');
  throw errors.make(Error, 'ERR_ACCESS_DENIED', 'Access to this API has been restricted');
}

/**
 * Whether a worker's node reads NODE_OPTIONS. Node ignores the variable in a
 * setuid or setgid process, and where the kernel marked the exec secure
 * (AT_SECURE) unless only CAP_NET_BIND_SERVICE was gained; a worker runs the
 * primary's binary with the primary's credentials, so the primary's own case
 * tells (AT_SECURE is read by the addon, with getauxval).
 */
const honoursNodeOptions = lazy.once(() => {
  // Electron reads NODE_OPTIONS only where a fuse allows it (not in packaged
  // apps); Bun has its own preloads. Both keep the command line.
  if (process.versions.electron !== undefined || process.versions.bun !== undefined) return false;
  if (typeof process.getuid === 'function' &&
      (process.getuid() !== process.geteuid() || process.getgid() !== process.getegid())) {
    return false;
  }
  return !native.secureExec();
});

/** A value in NODE_OPTIONS: double-quoted, `\\` and `"` escaped (Node's parser). */
function nodeOptionQuote(value) {
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

function createWorkerProcess(id, env, overrides, agent = false) {
  // The agent (forkAgent) may run its own script with its own arguments.
  const settings = agent ? { ...cluster.settings, ...overrides } : cluster.settings;
  const execArgv = inspectArgv(settings);
  // fork(modulePath, args, options)
  const exec = validatedPath(settings.exec, 'modulePath');
  let args = settings.args;
  if (args == null) args = [];
  else if (!Array.isArray(args)) {
    throw errors.make(TypeError, 'ERR_INVALID_ARG_TYPE',
      `The "args" argument must be an instance of Array.${received(args)}`);
  }
  // fork() checks execArgv, then spawn() the whole command line.
  const execArgvText = argStrings(execArgv, 'options.execArgv');
  const argsText = argStrings(args, 'args', execArgv.length + 1);
  const stdio = stdioFor(settings);
  // The message channel goes on the fd after the last stdio slot.
  const stdioLength = stdio.length;
  stdio.push(-5);
  // spawn(file, args, options)
  const cwd = settings.cwd == null ? undefined : validatedPath(settings.cwd, 'options.cwd');
  for (const key of ['uid', 'gid']) {
    if (settings[key] != null) checkId(`options.${key}`, settings[key]);
  }
  if (settings.windowsHide != null && typeof settings.windowsHide !== 'boolean') {
    throw argTypeError('options.windowsHide', 'of type boolean', settings.windowsHide);
  }
  const workerEnv = { ...process.env, ...env };
  for (const key of Object.keys(workerEnv)) {
    if (workerEnv[key] === undefined) continue;
    nullCheck(key, `options.env['${key}']`);
    nullCheck(workerEnv[key], `options.env['${key}']`);
  }
  // Node's fork() sets these to its own channel (and its cluster's worker id)
  // over any value given, and the worker's Node reads and removes them. This
  // worker has no such channel: a value passed in `env` (or inherited) must
  // neither make its Node open a channel on a stray fd nor reach its code.
  for (const key of ['NODE_CHANNEL_FD', 'NODE_CHANNEL_SERIALIZATION_MODE', 'NODE_UNIQUE_ID']) delete workerEnv[key];
  const serialization = settings.serialization;
  if (![undefined, 'json', 'advanced'].includes(serialization)) {
    throw errors.invalidArgValue('options.serialization', serialization,
      "must be one of: undefined, 'json', 'advanced'");
  }

  const channelFd = stdio.indexOf(-4);
  const advanced = serialization === 'advanced';
  // Node's worker has its channel and its cluster worker before any preload
  // runs, so a preload (an APM agent's `-r`) sees `cluster.isWorker` and
  // `process.send`. NODE_OPTIONS' preloads run before the command line's:
  // the bootstrap goes first there, and gives the variable its value back.
  // Where node would ignore NODE_OPTIONS, it goes first on the command line.
  let nodeOptions;
  const preload = [];
  if (honoursNodeOptions()) {
    nodeOptions = workerEnv.NODE_OPTIONS === undefined ? null : String(workerEnv.NODE_OPTIONS);
    workerEnv.NODE_OPTIONS = `--require ${nodeOptionQuote(BOOTSTRAP)}${nodeOptions ? ` ${nodeOptions}` : ''}`;
  } else {
    preload.push('--require', BOOTSTRAP);
  }
  workerEnv[ENV_KEY] = JSON.stringify({
    id,
    fd: channelFd,
    messages: stdioLength,
    ppid: process.pid,
    advanced,
    policy: POLICY_NAMES.get(schedulingPolicy),
    reusePortHold: reusePortHold(settings),
    rrOffload: rrOffload(settings),
    // readableAll/writableAll as this Node's libuv does them (PIPE_MODE_EXACT).
    pipeModeExact: PIPE_MODE_EXACT,
    bootstrap: BOOTSTRAP,
    nodeOptions,
    addon: globalThis[Symbol.for('rcluster.addon')],
    retireOnUncaughtException: !!({ ...settings, ...overrides }).retireOnUncaughtException,
    agent,
    // The agent is ready once its script ran, unless it says so itself.
    autoReady: agent && ({ ...settings, ...overrides }).readiness !== 'message',
    // Node's spawn changes credentials between fork and exec; posix_spawn
    // cannot, so the bootstrap drops them before any user code runs.
    uid: settings.uid == null ? undefined : settings.uid,
    gid: settings.gid == null ? undefined : settings.gid,
    // The primary binds for its workers, in native code that the permission
    // model does not see: without the network permission (Node 25+'s
    // --allow-net) their listen() fails, as the primary's own bind would.
    netDenied: NODE_MAJOR >= 25 && process.permission !== undefined && !process.permission.has('net'),
  });
  const userArgs = [...execArgv, exec, ...args];
  const argv = [process.execPath, ...preload, ...execArgvText, exec, ...argsText];
  const req = {
    file: process.execPath,
    args: argv,
    env: envList(workerEnv),
    cwd,
    stdio,
  };
  refuseWithoutChildPermission();
  let result;
  let spawnError = null;
  const supervise = agent ?
    JSON.stringify({ restart: 'always', ...JSON.parse(supervisionFor(settings, overrides)), readiness: 'message' }) :
    supervisionFor(settings, overrides);
  try {
    result = getCore().spawn(id, req, id, supervise, agent);
  } catch (err) {
    spawnError = err;
    result = { pid: undefined, pipes: [], messages: -1 };
  }
  // spawnargs as Node's fork() has them: the bootstrap preload is ours, not
  // the user's (see DIFFERENCES).
  const proc = new WorkerProcess(getCore(), id, {
    file: process.execPath,
    args: [process.execPath, ...userArgs],
    pipes: result.pipes.slice(0, stdioLength),
    advanced,
  });
  proc.pid = result.pid;
  openMessages(proc, id, result.messages);
  slots.set(id, { spawnargs: [process.execPath, ...userArgs], advanced, agent, stdioLength });
  return { proc, spawnError };
}

function removeWorker(worker) {
  delete cluster.workers[worker.id];
  if (Object.keys(cluster.workers).length === 0) intercom.emit('disconnect');
}

// Set by cluster.shutdown(): a shut-down cluster starts no worker again (a
// worker forked while the supervisor drains would be stopped at once, or
// outlive the shutdown that was asked for).
let shutDown = false;

cluster.fork = function fork(env, options) {
  if (shutDown) {
    throw errors.make(Error, 'ERR_RCLUSTER_SHUT_DOWN',
      'cluster.fork() was called after cluster.shutdown(): a shut-down cluster starts no new worker. ' +
      'Fork before shutting down, or start a new primary process.');
  }
  cluster.setupPrimary();
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw errors.make(TypeError, 'ERR_INVALID_ARG_TYPE',
      `The "options" argument must be of type object.${received(options)}`);
  }
  const id = getCore().allocateId();
  const { proc, spawnError } = createWorkerProcess(id, env, options);
  const worker = attach(id, id, proc);
  if (options && options.weight !== undefined) worker.setWeight(options.weight);
  if (spawnError) {
    // Node's ChildProcess reports a failed spawn asynchronously: exitCode is
    // the negative errno, 'error' (no 'exit'), 'close', then the channel's
    // 'disconnect', which removes the worker.
    const code = (/^([A-Z]+):/.exec(spawnError.message) || [])[1] || 'EIO';
    const errno = -(os.constants.errno[code] || 5);
    const err = Object.assign(new Error(`spawn ${process.execPath} ${code}`),
      { errno, code, syscall: `spawn ${process.execPath}`, path: process.execPath,
        spawnargs: proc.spawnargs.slice(1) });
    process.nextTick(() => {
      processes.delete(id);
      proc._keepAlive.close();
      proc._spawnFailed(errno, err);
      ipc.markDisconnected(proc);
    });
  } else {
    process.nextTick(() => proc.emit('spawn'));
  }
  return worker;
};

/** Wires a Worker around `proc` (a fork, or a worker the supervisor started). */
function attach(id, slot, proc, agent = false) {
  const worker = new Worker({ id, process: proc });
  // rcluster extension: the supervision slot this worker serves (a restarted
  // worker has a new id and the same slot).
  Object.defineProperty(worker, 'slot', { value: slot, enumerable: false, writable: true });
  // The agent is not a worker: it is not in cluster.workers and its events
  // are emitted on its own Worker object only (cluster.agent).
  Object.defineProperty(worker, '_agent', { value: agent, enumerable: false });
  const emit = agent ? () => {} : (...args) => cluster.emit(...args);

  worker.on('message', function onMessage(message, handle) {
    emit('message', this, message, handle);
  });

  proc.once('exit', (exitCode, signalCode) => {
    if (!agent && !worker.isConnected()) removeWorker(worker);
    worker.exitedAfterDisconnect = !!worker.exitedAfterDisconnect;
    worker.state = 'dead';
    worker.emit('exit', exitCode, signalCode);
    emit('exit', worker, exitCode, signalCode);
  });

  proc.once('disconnect', () => {
    if (!agent && worker.isDead()) removeWorker(worker);
    worker.exitedAfterDisconnect = !!worker.exitedAfterDisconnect;
    worker.state = 'disconnected';
    worker.emit('disconnect');
    emit('disconnect', worker);
  });

  // Keeps the primary alive while the worker's process lives (a ChildProcess
  // handle does that in Node).
  const alive = setInterval(() => {}, TIMEOUT_MAX);
  proc._keepAlive = { close: () => clearInterval(alive) };
  proc._onRefChange = () => {
    if (proc._refed) alive.ref(); else alive.unref();
  };
  proc.once('exit', () => clearInterval(alive));

  processes.set(id, { worker, proc, messages: 0 });
  if (agent) {
    cluster.agent = worker;
  } else {
    process.nextTick(() => cluster.emit('fork', worker));
    cluster.workers[worker.id] = worker;
  }
  return worker;
}

cluster.agent = null;

/**
 * Starts the agent (rcluster extension, egg-cluster's idea): one extra
 * supervised process that serves no connections, for scheduled jobs or one
 * shared connection to an outside service. Workers reach it with
 * `cluster.worker.sendTo('agent', message)`; it is restarted like a worker.
 * Resolves with its Worker (also `cluster.agent`) once it is ready: after its
 * script ran, or when it calls `cluster.worker.ready()` with
 * `readiness: 'message'`. Fork the workers after that.
 */
cluster.forkAgent = function forkAgent(options = {}) {
  if (options === null || typeof options !== 'object') {
    return Promise.reject(errors.make(TypeError, 'ERR_INVALID_ARG_TYPE',
      `The "options" argument must be of type object.${received(options)}`));
  }
  if (cluster.agent !== null && !cluster.agent.isDead()) {
    return Promise.reject(Object.assign(new Error('the agent is already running'),
      { code: 'ERR_RCLUSTER_AGENT_RUNNING' }));
  }
  cluster.setupPrimary();
  const id = getCore().allocateId();
  let created;
  try {
    created = createWorkerProcess(id, options.env, options, true);
  } catch (err) {
    return Promise.reject(err);
  }
  const { proc, spawnError } = created;
  const worker = attach(id, id, proc, true);
  if (spawnError) {
    processes.delete(id);
    proc._keepAlive.close();
    return Promise.reject(spawnError);
  }
  process.nextTick(() => proc.emit('spawn'));
  return new Promise((resolve, reject) => {
    const onReady = (w) => {
      if (w !== worker) return;
      cluster.removeListener('ready', onReady);
      resolve(worker);
    };
    cluster.on('ready', onReady);
    worker.once('exit', (code, signal) => {
      if (cluster.listeners('ready').includes(onReady)) {
        cluster.removeListener('ready', onReady);
        reject(Object.assign(new Error(`the agent exited before it was ready (${signal || code})`),
          { code: 'ERR_RCLUSTER_AGENT_EXITED' }));
      }
    });
  });
};

/** A worker that the Rust supervisor spawned (restart, reload, recycle). */
function adopt(ev) {
  const info = slots.get(ev.slot) || { spawnargs: [process.execPath], advanced: false };
  const proc = new WorkerProcess(getCore(), ev.worker, {
    file: process.execPath,
    args: info.spawnargs,
    pipes: (ev.pipes || []).slice(0, info.stdioLength),
    advanced: info.advanced,
  });
  proc.pid = ev.pid;
  openMessages(proc, ev.worker, ev.fd);
  const worker = attach(ev.worker, ev.slot, proc, !!info.agent);
  process.nextTick(() => proc.emit('spawn'));
  return worker;
}

const pending = { reload: [], shutdown: [] };
// Workers that just exited, so that supervisor events about them (backoff,
// crashloop) still carry the Worker.
const recent = new Map();
function remember(worker) {
  recent.set(worker.id, worker);
  if (recent.size > 64) recent.delete(recent.keys().next().value);
}

// Keeps the primary's event loop alive until the returned release() is
// called: while a reload() or shutdown() is under way (their promises settle
// on the reactor's events, which hold the loop only while a worker lives; a
// reload of a cluster whose workers are all gone, or never were, must still
// settle), and while a slot waits out its restart delay.
let holds = 0;
let holdTimer = null;
function holdLoop() {
  if (holds++ === 0) holdTimer = setInterval(() => {}, TIMEOUT_MAX);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--holds === 0) {
      clearInterval(holdTimer);
      holdTimer = null;
    }
  };
}

/**
 * Rolling reload (rcluster extension): every slot gets a new worker; the old
 * one stops receiving connections only once the new one is ready, then
 * drains. Resolves when every slot is done; rejects, keeping the old worker,
 * if a new worker fails to become ready.
 */
cluster.reload = function reload(options = {}) {
  const concurrency = options.concurrency === undefined ? 1 : options.concurrency;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    return Promise.reject(errors.make(RangeError, 'ERR_OUT_OF_RANGE',
      `The value of "options.concurrency" is out of range. It must be an integer >= 1. Received ${util.inspect(concurrency)}`));
  }
  return new Promise((resolve, reject) => {
    const release = holdLoop();
    pending.reload.push({
      resolve: () => { release(); resolve(); },
      reject: (err) => { release(); reject(err); },
    });
    getCore().reload(concurrency);
  });
};

/**
 * Graceful stop of the whole cluster (rcluster extension): no new
 * connections, every worker drains, SIGTERM then SIGKILL at `timeout` ms.
 */
cluster.shutdown = function shutdown(options = {}) {
  const timeout = options.timeout === undefined ? 10000 : options.timeout;
  if (typeof timeout !== 'number' || !(timeout >= 0)) {
    return Promise.reject(errors.make(RangeError, 'ERR_OUT_OF_RANGE',
      `The value of "options.timeout" is out of range. It must be >= 0. Received ${util.inspect(timeout)}`));
  }
  // Final: from here on fork() (and scale() up) throw ERR_RCLUSTER_SHUT_DOWN.
  shutDown = true;
  if (Object.keys(cluster.workers).length === 0) return Promise.resolve();
  return new Promise((resolve) => {
    const release = holdLoop();
    pending.shutdown.push(() => { release(); resolve(); });
    getCore().shutdown(Math.min(timeout, 2 ** 31 - 1));
  });
};

/**
 * Sets the number of workers (rcluster extension): forks new ones, or
 * drains the newest ones beyond `n`. Returns the workers kept or added.
 */
cluster.scale = function scale(n, env) {
  if (!Number.isInteger(n) || n < 0) {
    throw errors.make(RangeError, 'ERR_OUT_OF_RANGE',
      `The value of "n" is out of range. It must be an integer >= 0. Received ${util.inspect(n)}`);
  }
  const live = Object.values(cluster.workers).filter((w) => !w.isDead() && !w._retiring);
  for (let i = live.length; i < n; i++) cluster.fork(env);
  const extra = live.sort((a, b) => b.id - a.id).slice(0, Math.max(0, live.length - n));
  for (const w of extra) {
    w._retiring = true;
    getCore().retire(w.id);
  }
  return Object.values(cluster.workers).filter((w) => !w._retiring);
};

let signalsInstalled = false;

// `signals: true` (rcluster extension, on in the CLI): SIGHUP reloads,
// SIGTERM/SIGINT drain every worker and exit.
function installSignals() {
  if (signalsInstalled) return;
  signalsInstalled = true;
  process.on('SIGHUP', () => {
    cluster.reload().catch((err) => process.emitWarning(err.message, { code: err.code }));
  });
  const stop = () => {
    const timeout = cluster.settings.shutdownTimeout === undefined ? 10000 : cluster.settings.shutdownTimeout;
    cluster.shutdown({ timeout }).then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/**
 * A snapshot of the cluster (rcluster extension), taken by the Rust reactor:
 * per worker its state, pid, uptime, slot restarts, connections handed to it,
 * unacknowledged and open connections, messages, RSS and event-loop delay
 * (heartbeat round trip); per listener its policy, address, workers,
 * connections accepted and queued.
 */
cluster.stats = function stats() {
  const raw = core === null ? null : core.stats();
  const snap = raw ? JSON.parse(raw) : { workers: [], listeners: [] };
  for (const w of snap.workers) {
    const entry = processes.get(w.id);
    w.state = entry ? entry.worker.state : 'dead';
    // Messages on the message channel are counted here, not by the reactor.
    if (entry) w.messages = (w.messages || 0) + entry.messages;
  }
  return snap;
};

/** `cluster.stats()` in Prometheus' text exposition format (rcluster extension). */
cluster.metrics = function metrics() {
  const { workers, listeners } = cluster.stats();
  const lines = [];
  const metric = (name, help, type, rows) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of rows) {
      if (value === null || value === undefined) continue;
      const l = Object.entries(labels).map(([k, v]) => `${k}="${String(v).replace(/["\\\n]/g, '_')}"`).join(',');
      lines.push(`${name}{${l}} ${value}`);
    }
  };
  const wl = (w) => ({ worker: w.id, slot: w.slot, pid: w.pid });
  metric('rcluster_workers', 'Live workers.', 'gauge', [[{}, workers.filter((w) => !w.agent).length]]);
  metric('rcluster_worker_up', 'Worker connected to the primary (1) or not (0).', 'gauge',
    workers.map((w) => [wl(w), w.connected ? 1 : 0]));
  metric('rcluster_worker_uptime_seconds', 'Worker uptime.', 'gauge', workers.map((w) => [wl(w), w.uptimeMs / 1000]));
  metric('rcluster_slot_restarts_total', 'Workers started into the slot after its first.', 'counter',
    workers.map((w) => [wl(w), w.restarts]));
  metric('rcluster_worker_connections_total', 'Connections handed to the worker.', 'counter',
    workers.map((w) => [wl(w), w.connections]));
  metric('rcluster_worker_open_connections', 'Open connections the worker last reported.', 'gauge',
    workers.map((w) => [wl(w), w.open]));
  metric('rcluster_worker_messages_total', 'Messages the worker sent to the primary.', 'counter',
    workers.map((w) => [wl(w), w.messages]));
  metric('rcluster_worker_rss_bytes', 'Worker resident set size.', 'gauge', workers.map((w) => [wl(w), w.rss]));
  metric('rcluster_worker_event_loop_delay_seconds', 'Heartbeat round trip through the worker event loop.', 'gauge',
    workers.map((w) => [wl(w), w.eventLoopDelayMs === null ? null : w.eventLoopDelayMs / 1000]));
  const ll = (l) => ({ listener: l.key, policy: l.policy });
  metric('rcluster_listener_accepted_total', 'Connections accepted by the primary.', 'counter',
    listeners.map((l) => [ll(l), l.accepted]));
  metric('rcluster_listener_queued', 'Connections waiting for or not yet acknowledged by a worker.', 'gauge',
    listeners.map((l) => [ll(l), l.queued]));
  return `${lines.join('\n')}\n`;
};

const SUPERVISOR_EVENTS = new Set([
  'restart', 'backoff', 'crashloop', 'unready', 'unresponsive', 'recycle', 'reload', 'ready', 'retire', 'error',
]);

// While a slot waits out its restart delay no worker process exists to keep
// the primary alive (a ChildProcess would in Node): hold the loop open.
const scheduled = new Map(); // slot -> release() of its holdLoop()
function restartPending(slot, on) {
  if (on && !scheduled.has(slot)) scheduled.set(slot, holdLoop());
  if (!on && scheduled.has(slot)) {
    scheduled.get(slot)();
    scheduled.delete(slot);
  }
}

function onSupervisor(ev) {
  const kind = ev.kind.slice(4);
  const info = ev.info ? JSON.parse(ev.info) : {};
  info.slot = ev.slot;
  if (kind === 'scheduled') {
    restartPending(ev.slot, true);
    return;
  }
  if (kind === 'crashloop') restartPending(ev.slot, false);
  if (kind === 'reloadDone') {
    const waiters = pending.reload.splice(0);
    for (const w of waiters) {
      if (info.ok) w.resolve();
      else w.reject(Object.assign(new Error(`reload failed: ${info.reason}`), { code: 'ERR_RCLUSTER_RELOAD' }));
    }
    return;
  }
  if (kind === 'shutdownDone') {
    for (const r of pending.shutdown.splice(0)) r();
    return;
  }
  if (!SUPERVISOR_EVENTS.has(kind)) return;
  const entry = processes.get(ev.worker);
  const worker = entry ? entry.worker : (recent.get(ev.worker) || null);
  if (kind === 'error') {
    emitWorkerError(worker, info.reason || 'supervisor error');
    return;
  }
  cluster.emit(kind, worker, info);
}

// Test and diagnostic hook (not a public API; a public cluster.stats() may
// come later): the Rust dispatcher's connection accounting, read on its
// thread. { accepted, acknowledged, redispatched, closed, held }; once
// nothing is held, accepted === acknowledged + closed. null before the first
// fork and after the reactor stopped.
cluster._rclusterCounters = function _rclusterCounters() {
  return core === null ? null : core.counters();
};

cluster.disconnect = function disconnect(cb) {
  const workers = Object.values(cluster.workers);
  if (workers.length === 0) {
    process.nextTick(() => intercom.emit('disconnect'));
  } else {
    for (const worker of workers) {
      if (worker.isConnected()) worker.disconnect();
    }
  }
  if (typeof cb === 'function') intercom.once('disconnect', cb);
};

Worker.prototype.disconnect = function disconnect() {
  this.exitedAfterDisconnect = true;
  if (core !== null) core.onPurpose(this.id);
  if (core !== null && this.isConnected()) {
    // Messages batched by send() go first (see lib/ipc.js).
    if (typeof this.process[ipc.kFlush] === 'function') this.process[ipc.kFlush]();
    // Told on the message channel, after the messages sent before it; the
    // reactor stops dispatching to it at once.
    const msg = this.process._msg;
    let told = false;
    if (msg) {
      try {
        msg.send(F.DISCONNECT, 0, F.DISCONNECT_THEN_END);
        told = true;
      } catch (err) {
        // Gone: the reactor tells it instead. As in Node, a write that
        // fails (the worker closed its end) is the worker's 'error'.
        ipc.failedWrite(this.process, err);
      }
    }
    core.disconnect(this.id, !told);
    if (told) queueMicrotask(() => endDisconnect(this.process));
  }
  removeWorker(this);
  return this;
};

// Node's worker reads the messages sent right after its disconnect in the
// same chunk and emits them before its channel closes. Here the disconnect
// frame can come alone in a read, so it says that an end frame follows, sent
// at the end of this synchronous stretch, after those messages: the worker
// closes its channel once it has read it.

function endDisconnect(proc) {
  if (typeof proc[ipc.kFlush] === 'function') proc[ipc.kFlush]();
  const msg = proc._msg;
  if (!msg) return;
  try {
    msg.send(F.DISCONNECT, 0, F.DISCONNECT_END);
  } catch {
    // The worker closed its end: its disconnect is on its way.
  }
}

/**
 * Weighted round robin (rcluster extension): this worker's share of new
 * connections relative to the others (default 1), settable at any time.
 * Smooth weighted round robin, as nginx does it.
 */
Worker.prototype.setWeight = function setWeight(weight) {
  if (!Number.isInteger(weight) || weight < 1 || weight > 0xffff) {
    throw errors.make(RangeError, 'ERR_OUT_OF_RANGE',
      `The value of "weight" is out of range. It must be an integer >= 1 and <= 65535. Received ${util.inspect(weight)}`);
  }
  this._weight = weight;
  if (core !== null) core.setWeight(this.id, weight);
  return this;
};

Worker.prototype.destroy = function destroy(signo) {
  const signal = signo || 'SIGTERM';
  if (core !== null) core.onPurpose(this.id);
  this.process.kill(signal);
};

function emitOnline(worker) {
  worker.state = 'online';
  worker.emit('online');
  if (!worker._agent) cluster.emit('online', worker);
}

function emitListening(worker, data) {
  const m = JSON.parse(data.toString());
  const info = { addressType: m.addressType, address: m.address, port: m.port, fd: m.fd };
  worker.state = 'listening';
  worker.emit('listening', info);
  if (!worker._agent) cluster.emit('listening', worker, info);
}

function emitWorkerError(worker, message) {
  const err = new Error(message);
  err.code = 'ERR_RCLUSTER_CHANNEL';
  if (worker && worker.listenerCount('error') > 0) worker.emit('error', err);
  else process.emitWarning(err.message, { code: err.code });
}

function onEvent(ev) {
  if (ev.kind === 'spawned') {
    restartPending(ev.slot, false);
    const worker = adopt(ev);
    if (ev.message === 'restart') {
      process.nextTick(() => cluster.emit('restart', worker, { slot: ev.slot, reason: 'restart' }));
    }
    return;
  }
  if (ev.kind.startsWith('sup:')) {
    onSupervisor(ev);
    return;
  }
  const entry = processes.get(ev.worker);
  if (entry === undefined) {
    if (ev.kind === 'error') emitWorkerError(null, ev.message);
    if (ev.fd !== undefined && ev.fd !== null) native.closeFd(ev.fd);
    return;
  }
  const { worker, proc } = entry;
  // A worker with a message channel says these on it, in order with its
  // messages; the reactor's copies (from the control channel) are ignored.
  if (proc._split && FROM_MESSAGES.has(ev.kind)) return;
  switch (ev.kind) {
    case 'online':
      emitOnline(worker);
      break;
    case 'message':
      ipc.deliver(proc, ev.text !== undefined ? ev.text : ev.data, ev.flags, ev.fd === undefined ? -1 : ev.fd);
      break;
    case 'listening':
      emitListening(worker, ev.data);
      break;
    case 'exitedAfterDisconnect':
      worker.exitedAfterDisconnect = true;
      break;
    case 'disconnect':
      ipc.markDisconnected(proc);
      break;
    case 'exit':
      closeMessages(proc);
      processes.delete(ev.worker);
      remember(worker);
      core.forget(ev.worker);
      if (!proc._rclusterDisconnected) ipc.markDisconnected(proc);
      proc._exited(ev.code === undefined ? null : ev.code,
        ev.signal === undefined ? null : ev.signal);
      break;
    case 'error':
      emitWorkerError(worker, ev.message);
      break;
    default:
      break;
  }
}

// Events a worker with a message channel sends on it (see lib/worker.js):
// the reactor's (from the control channel) are copies, or the end of the
// control channel, which is not the end of the worker's IPC. (A message on
// the control channel, which rcluster's worker never sends, is delivered.)
const FROM_MESSAGES = new Set(['online', 'listening', 'exitedAfterDisconnect', 'disconnect']);

/**
 * Opens the primary's end of worker `id`'s message channel (`fd`, from the
 * spawner): read on this thread by a poll handle on Node's loop, so a
 * message reaches JavaScript without crossing the reactor thread.
 */
function openMessages(proc, id, fd) {
  if (typeof fd !== 'number' || fd < 0) return;
  let msg;
  try {
    msg = new native.WorkerChannel(fd, 0, (frames) => onMessageFrames(id, frames), 'primary');
  } catch (err) {
    native.closeFd(fd);
    process.emitWarning(`rcluster: worker ${id}: cannot open its message channel: ${err.message}`,
      { code: 'ERR_RCLUSTER_CHANNEL' });
    return;
  }
  proc._msg = msg;
  proc._msgFd = fd;
  proc._sendText = msg.textSender();
  proc._split = true;
}

function closeMessages(proc) {
  if (!proc._msg) return;
  const msg = proc._msg;
  proc._msg = null;
  msg.close();
}

// As in the worker (lib/worker.js onFrames): messages are decoded and queued
// here, every other frame is queued as it comes (lib/inbox.js).
function onMessageFrames(id, flat) {
  const entry = processes.get(id);
  for (let i = 0; i < flat.length; i += F.SLOTS) {
    const text = entry === undefined ? undefined : F.jsonTextAt(flat, i);
    try {
      if (text !== undefined) {
        deliverMessage(entry, text, flat[i + 1] | 0, -1);
        continue;
      }
      const f = F.frameAt(flat, i);
      if (entry === undefined) {
        if (f.fd >= 0) native.closeFd(f.fd);
        continue;
      }
      if (f.type === F.MESSAGE) deliverMessage(entry, f.text !== undefined ? f.text : f.data, f.flags, f.fd);
      else later(onMessageFrame, entry, id, f);
    } catch (err) {
      later(rethrow, err);
    }
  }
}

/** Counts a message frame's messages (for stats) and queues them. */
function deliverMessage(entry, data, flags, fd) {
  entry.messages += flags & F.FLAG_BATCH ? countLines(data) : 1;
  ipc.deliver(entry.proc, data, flags, fd);
}

function onMessageFrame(entry, id, f) {
  const { worker, proc } = entry;
  switch (f.type) {
    case F.ONLINE:
      emitOnline(worker);
      break;
    case F.LISTENING:
      emitListening(worker, f.data);
      break;
    case F.EXITED_AFTER_DISCONNECT:
      worker.exitedAfterDisconnect = true;
      // A worker leaving by its own disconnect()/destroy() waits for this
      // ack before it disconnects, as Node's does (the id is its token).
      if (f.id > 0 && proc._msg) {
        try {
          proc._msg.send(F.EXITED_AFTER_DISCONNECT, 0, f.id);
        } catch {
          // Gone: its channel's close disconnects it anyway.
        }
      }
      break;
    case F.CLOSE_LISTEN:
      // The copy of a server's close (see closeListen in lib/worker.js):
      // what follows is seen once the reactor has handled the close.
      if (f.id > 0 && core !== null) core.awaitSync(id, f.id);
      break;
    case F.EV_ERROR:
      emitWorkerError(worker, `worker ${id}: ${f.message}`);
      break;
    case F.EV_DISCONNECT:
      closeMessages(proc);
      ipc.markDisconnected(proc);
      break;
    default:
      // Nothing else may come on this channel: a broken or hostile worker.
      if (f.fd >= 0) native.closeFd(f.fd);
      emitWorkerError(worker, `worker ${id}: frame kind ${f.type} is not allowed on the message channel; channel closed`);
      closeMessages(proc);
      ipc.markDisconnected(proc);
      break;
  }
}

function countLines(data) {
  let n = 1;
  if (typeof data === 'string') {
    for (let i = data.indexOf('\n'); i !== -1; i = data.indexOf('\n', i + 1)) n++;
  } else {
    for (let i = data.indexOf(10); i !== -1; i = data.indexOf(10, i + 1)) n++;
  }
  return n;
}

/**
 * Queues what worker `id` wrote on its message channel before it died or
 * disconnected: a worker closes that channel before its control channel,
 * once its queue is written (a large last message), so all of it is waiting.
 */
function drainMessages(id) {
  const entry = processes.get(id);
  if (entry !== undefined && entry.proc._msg) onMessageFrames(id, entry.proc._msg.drain());
}

function onEvents(events) {
  // One batch per reactor iteration, queued in order (lib/inbox.js; a
  // message is decoded at once, see ipc.deliver): a throwing listener is an
  // uncaught exception and loses none of the events after it.
  for (let i = 0; i < events.length; i++) {
    const ev = events[i];
    try {
      if (ev.kind === 'message') {
        onEvent(ev);
        continue;
      }
      // What the worker wrote before it died or disconnected is delivered
      // before 'exit' / 'disconnect'.
      if (ev.kind === 'exit' || ev.kind === 'disconnect') drainMessages(ev.worker);
      later(onEvent, ev);
    } catch (err) {
      later(rethrow, err);
    }
  }
}

module.exports = cluster;
