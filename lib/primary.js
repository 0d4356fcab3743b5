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
const ipc = require('./ipc');
const errors = require('./errors');
const { inspectArgv } = require('./inspect');

const SCHED_NONE = 1;
const SCHED_RR = 2;
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

let ids = 0;
let initialized = false;
let core = null;
const processes = new Map(); // id -> { worker, proc }

let schedulingPolicy = process.env.NODE_CLUSTER_SCHED_POLICY;
if (schedulingPolicy === 'rr') schedulingPolicy = SCHED_RR;
else if (schedulingPolicy === 'none') schedulingPolicy = SCHED_NONE;
else schedulingPolicy = SCHED_RR;
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
  // V8 profiles: one log file per process, as Node arranges.
  if (settings.execArgv.some((s) => s.startsWith('--prof')) &&
      !settings.execArgv.some((s) => s.startsWith('--logfile='))) {
    settings.execArgv = [...settings.execArgv, '--logfile=v8-%p.log'];
  }
  cluster.settings = settings;
  if (initialized === true) {
    process.nextTick(() => cluster.emit('setup', settings));
    return;
  }
  initialized = true;
  schedulingPolicy = cluster.schedulingPolicy; // Frozen from here on.
  if (schedulingPolicy !== SCHED_NONE && schedulingPolicy !== SCHED_RR) {
    throw new Error(`Bad cluster.schedulingPolicy: ${schedulingPolicy}`);
  }
  process.nextTick(() => cluster.emit('setup', settings));
};

cluster.setupMaster = cluster.setupPrimary;

function getCore() {
  if (core === null) core = new native.Primary(onEvents);
  return core;
}

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
  return errors.make(TypeError, 'ERR_INVALID_ARG_VALUE',
    `The argument 'stdio' is invalid. Received ${util.inspect(value)}`);
}

function validatedPath(value, name) {
  if (value instanceof URL) return url.fileURLToPath(value);
  if (typeof value !== 'string' && !Buffer.isBuffer(value)) {
    throw argTypeError(name, 'of type string or an instance of Buffer or URL', value);
  }
  const str = String(value);
  if (str.includes('\u0000')) {
    throw errors.make(TypeError, 'ERR_INVALID_ARG_VALUE',
      `The argument '${name}' must be a string, Uint8Array, or URL without null bytes. Received ${util.inspect(str)}`);
  }
  return str;
}

function isInt32(v) {
  return v === (v | 0);
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

function envList(obj) {
  const out = [];
  for (const key of Object.keys(obj)) {
    const v = obj[key];
    if (v === undefined) continue;
    out.push(`${key}=${v}`);
  }
  return out;
}

function createWorkerProcess(id, env) {
  const settings = cluster.settings;
  const execArgv = inspectArgv(settings);
  // fork(modulePath, args, options)
  const exec = validatedPath(settings.exec, 'modulePath');
  let args = settings.args;
  if (args == null) args = [];
  else if (!Array.isArray(args)) {
    throw errors.make(TypeError, 'ERR_INVALID_ARG_TYPE',
      `The "args" argument must be an instance of Array.${received(args)}`);
  }
  const stdio = stdioFor(settings);
  // spawn(file, args, options)
  const cwd = settings.cwd == null ? undefined : validatedPath(settings.cwd, 'options.cwd');
  for (const key of ['uid', 'gid']) {
    if (settings[key] != null && !isInt32(settings[key])) {
      throw argTypeError(`options.${key}`, 'int32', settings[key]);
    }
  }
  if (settings.windowsHide != null && typeof settings.windowsHide !== 'boolean') {
    throw argTypeError('options.windowsHide', 'of type boolean', settings.windowsHide);
  }
  const serialization = settings.serialization;
  if (![undefined, 'json', 'advanced'].includes(serialization)) {
    throw errors.make(TypeError, 'ERR_INVALID_ARG_VALUE',
      "The property 'options.serialization' must be one of: undefined, 'json', 'advanced'." +
      ` Received ${util.inspect(serialization)}`);
  }

  const channelFd = stdio.indexOf(-4);
  const advanced = serialization === 'advanced';
  const workerEnv = { ...process.env, ...env };
  workerEnv[ENV_KEY] = JSON.stringify({
    id,
    fd: channelFd,
    ppid: process.pid,
    advanced,
    policy: schedulingPolicy === SCHED_NONE ? 'none' : 'rr',
    bootstrap: BOOTSTRAP,
    // Node's spawn changes credentials between fork and exec; posix_spawn
    // cannot, so the bootstrap drops them before any user code runs.
    uid: settings.uid == null ? undefined : settings.uid,
    gid: settings.gid == null ? undefined : settings.gid,
  });
  const userArgs = [...execArgv, exec, ...args];
  const argv = [process.execPath, ...execArgv, '--require', BOOTSTRAP, exec, ...args];
  const req = {
    file: process.execPath,
    args: argv,
    env: envList(workerEnv),
    cwd,
    stdio,
  };
  let result;
  let spawnError = null;
  try {
    result = getCore().spawn(id, req);
  } catch (err) {
    spawnError = err;
    result = { pid: undefined, pipes: [] };
  }
  // spawnargs as Node's fork() has them: the bootstrap preload is ours, not
  // the user's (see DIFFERENCES).
  const proc = new WorkerProcess(getCore(), id, {
    file: process.execPath,
    args: [process.execPath, ...userArgs],
    pipes: result.pipes,
    advanced,
  });
  proc.pid = result.pid;
  return { proc, spawnError };
}

function removeWorker(worker) {
  delete cluster.workers[worker.id];
  if (Object.keys(cluster.workers).length === 0) intercom.emit('disconnect');
}

cluster.fork = function fork(env) {
  cluster.setupPrimary();
  const id = ++ids;
  const { proc, spawnError } = createWorkerProcess(id, env);
  const worker = new Worker({ id, process: proc });

  worker.on('message', function onMessage(message, handle) {
    cluster.emit('message', this, message, handle);
  });

  proc.once('exit', (exitCode, signalCode) => {
    if (!worker.isConnected()) removeWorker(worker);
    worker.exitedAfterDisconnect = !!worker.exitedAfterDisconnect;
    worker.state = 'dead';
    worker.emit('exit', exitCode, signalCode);
    cluster.emit('exit', worker, exitCode, signalCode);
  });

  proc.once('disconnect', () => {
    if (worker.isDead()) removeWorker(worker);
    worker.exitedAfterDisconnect = !!worker.exitedAfterDisconnect;
    worker.state = 'disconnected';
    worker.emit('disconnect');
    cluster.emit('disconnect', worker);
  });

  // Keeps the primary alive while the worker's process lives (a ChildProcess
  // handle does that in Node).
  let alive = setInterval(() => {}, TIMEOUT_MAX);
  proc._onRefChange = () => {
    if (proc._refed) alive.ref(); else alive.unref();
  };
  proc.once('exit', () => clearInterval(alive));

  processes.set(id, { worker, proc });
  process.nextTick(() => cluster.emit('fork', worker));
  cluster.workers[worker.id] = worker;

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
      clearInterval(alive);
      proc._spawnFailed(errno, err);
      ipc.markDisconnected(proc);
    });
  } else {
    process.nextTick(() => proc.emit('spawn'));
  }
  return worker;
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
  if (core !== null && this.isConnected()) core.disconnect(this.id);
  removeWorker(this);
  return this;
};

Worker.prototype.destroy = function destroy(signo) {
  const signal = signo || 'SIGTERM';
  this.process.kill(signal);
};

function emitWorkerError(worker, message) {
  const err = new Error(message);
  err.code = 'ERR_RCLUSTER_CHANNEL';
  if (worker && worker.listenerCount('error') > 0) worker.emit('error', err);
  else process.emitWarning(err.message, { code: err.code });
}

function onEvent(ev) {
  const entry = processes.get(ev.worker);
  if (entry === undefined) {
    if (ev.kind === 'error') emitWorkerError(null, ev.message);
    if (ev.fd !== undefined && ev.fd !== null) native.closeFd(ev.fd);
    return;
  }
  const { worker, proc } = entry;
  switch (ev.kind) {
    case 'online':
      worker.state = 'online';
      worker.emit('online');
      cluster.emit('online', worker);
      break;
    case 'message':
      ipc.deliver(proc, ev.data, ev.flags, ev.fd === undefined ? -1 : ev.fd);
      break;
    case 'listening': {
      const m = JSON.parse(ev.data.toString());
      const info = { addressType: m.addressType, address: m.address, port: m.port, fd: m.fd };
      worker.state = 'listening';
      worker.emit('listening', info);
      cluster.emit('listening', worker, info);
      break;
    }
    case 'exitedAfterDisconnect':
      worker.exitedAfterDisconnect = true;
      break;
    case 'control':
      break;
    case 'disconnect':
      ipc.markDisconnected(proc);
      break;
    case 'exit':
      processes.delete(ev.worker);
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

function onEvents(events) {
  // One batch per reactor iteration. A throwing listener must not lose the
  // rest of the batch: rethrow it afterwards, as an uncaught exception.
  for (let i = 0; i < events.length; i++) {
    try {
      onEvent(events[i]);
    } catch (err) {
      process.nextTick(() => { throw err; });
    }
  }
}

module.exports = cluster;
