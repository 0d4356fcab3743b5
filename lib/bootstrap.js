'use strict';

// Preloaded (`--require`) into every worker before its own code runs, the way
// Node's bootstrap sets up a cluster worker. It removes every trace of
// rcluster from what user code and the worker's children inherit: the
// environment variable, the `--require` of this file in process.execArgv, and
// the channel fd (close-on-exec).

const KEY = 'RCLUSTER_WORKER';
const GLOBAL = Symbol.for('rcluster.worker');

// The `uid`/`gid` settings. Node's spawn switches credentials between fork
// and exec (supplementary groups dropped, then setgid, then setuid);
// posix_spawn cannot, so the worker's node starts as the primary's user and
// switches here, before the channel is opened (PR_SET_PDEATHSIG does not
// survive a credential change) and before any user code runs.
function dropPrivileges(cfg) {
  if (cfg.uid === undefined && cfg.gid === undefined) return;
  try {
    if (typeof process.setgroups === 'function') {
      try {
        process.setgroups([]);
      } catch {
        // Like libuv: only root may, and failing is not an error.
      }
    }
    if (cfg.gid !== undefined) process.setgid(cfg.gid);
    if (cfg.uid !== undefined) process.setuid(cfg.uid);
  } catch (err) {
    // Node's spawn would have failed with EPERM; this worker cannot become
    // the asked-for user, so it must not run user code as the current one.
    process.stderr.write(`rcluster: cannot switch worker to uid ${cfg.uid} gid ${cfg.gid}: ${err.message}\n`);
    process.reallyExit(126);
  }
}

// The built-in module picks its flavour when first loaded: the worker one
// (internal/cluster/child) when NODE_UNIQUE_ID is set, as in a worker forked
// by Node's cluster, else the primary one, which loads child_process, dgram
// and the primary's handle classes (about 6 ms of CPU in a bare process,
// against 0.6 ms). A worker's built-in is the worker flavour in Node; the
// variable is set only for that synchronous require and removed again (a
// value the environment already had is left alone).
function builtinWorkerFlavour() {
  if (Object.prototype.hasOwnProperty.call(process.env, 'NODE_UNIQUE_ID')) return require('cluster');
  process.env.NODE_UNIQUE_ID = '0';
  try {
    return require('cluster');
  } finally {
    delete process.env.NODE_UNIQUE_ID;
  }
}

const raw = process.env[KEY];
// Only the worker's main thread owns the channel: Node 20's module.register()
// hooks thread (and any worker_threads) run --require preloads again, and may
// have copied the environment before the main thread removed the variable.
// The addon tells (loading `worker_threads` here would cost ~2 ms of every
// worker's startup).
function ownsChannel(cfg) {
  if (typeof cfg.addon === 'string') globalThis[Symbol.for('rcluster.addon')] = cfg.addon;
  return require('./native').isMainThread();
}
const cfg = raw !== undefined && globalThis[GLOBAL] === undefined ? JSON.parse(raw) : undefined;
if (cfg !== undefined && ownsChannel(cfg)) {
  delete process.env[KEY];
  // The primary put the bootstrap first in NODE_OPTIONS, where node reads
  // it (lib/primary.js).
  if (cfg.nodeOptions === null) delete process.env.NODE_OPTIONS;
  else if (typeof cfg.nodeOptions === 'string') process.env.NODE_OPTIONS = cfg.nodeOptions;
  // The worker id is set by the Rust spawner (restarts get new ids).
  if (process.env.RCLUSTER_WORKER_ID !== undefined) {
    cfg.id = Number(process.env.RCLUSTER_WORKER_ID);
    delete process.env.RCLUSTER_WORKER_ID;
  }
  const argv = process.execArgv;
  for (let i = 0; i < argv.length - 1; i++) {
    if ((argv[i] === '--require' || argv[i] === '-r') && argv[i + 1] === cfg.bootstrap) {
      argv.splice(i, 2);
      break;
    }
  }
  const cluster = require('./worker');
  globalThis[GLOBAL] = cluster;
  dropPrivileges(cfg);
  // Loaded before process.send exists, as everything rcluster loads here:
  // a hook on Module._load that reports modules over it (`node --watch`)
  // hears about the program's modules only (lib/lazy.js).
  const builtin = cfg.agent ? null : builtinWorkerFlavour();
  cluster._setupWorker(cfg);

  // Node's net and dgram modules consult the built-in cluster module to decide
  // whether to bind or to ask the primary; make it answer "worker" and route
  // to rcluster.
  // The agent serves no connections through the primary: its servers (if
  // any) bind in the agent itself, so the built-in module stays as it is.
  if (builtin !== null) {
    builtin.isWorker = true;
    builtin.isPrimary = false;
    builtin.isMaster = false;
    builtin.worker = cluster.worker;
    // Forwarded, so that a replaced `cluster._getServer` is the one used.
    builtin._getServer = function _getServer(obj, options, cb) {
      return cluster._getServer(obj, options, cb);
    };
  }
}
