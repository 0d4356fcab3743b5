'use strict';

// Preloaded (`--require`) into every worker before its own code runs, the way
// Node's bootstrap sets up a cluster worker. It removes every trace of
// rcluster from what user code and the worker's children inherit: the
// environment variable, the `--require` of this file in process.execArgv, and
// the channel fd (close-on-exec).

const KEY = 'RCLUSTER_WORKER';
const GLOBAL = Symbol.for('rcluster.worker');

const raw = process.env[KEY];
if (raw !== undefined && globalThis[GLOBAL] === undefined) {
  delete process.env[KEY];
  const cfg = JSON.parse(raw);
  const argv = process.execArgv;
  for (let i = 0; i < argv.length - 1; i++) {
    if ((argv[i] === '--require' || argv[i] === '-r') && argv[i + 1] === cfg.bootstrap) {
      argv.splice(i, 2);
      break;
    }
  }
  const cluster = require('./worker');
  globalThis[GLOBAL] = cluster;
  cluster._setupWorker(cfg);

  // Node's net and dgram modules consult the built-in cluster module to decide
  // whether to bind or to ask the primary; make it answer "worker" and route
  // to rcluster.
  const builtin = require('cluster');
  builtin.isWorker = true;
  builtin.isPrimary = false;
  builtin.isMaster = false;
  builtin.worker = cluster.worker;
  builtin._getServer = cluster._getServer;
}
