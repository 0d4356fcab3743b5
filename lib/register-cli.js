'use strict';

// Preloaded (`--require`) into the workers of the `rcluster` command:
// rcluster/register (require('cluster') and import 'node:cluster' are
// rcluster), and one CLI-only decision: a worker does not die of SIGINT.
// Ctrl-C in a terminal signals the whole foreground process group; the
// primary answers it with a graceful stop (drain, SIGTERM, SIGKILL at
// --shutdown-timeout), which a worker killed outright by the same SIGINT
// would cut short. The app's own SIGINT listeners still run.
//
// Like the worker bootstrap, this preload removes itself from
// process.execArgv, so that the app's own children (child_process.fork)
// do not inherit it.

require('../register');

process.on('SIGINT', function rclusterCliIgnoresSigint() {});

const argv = process.execArgv;
for (let i = 0; i < argv.length - 1; i++) {
  if ((argv[i] === '--require' || argv[i] === '-r') && argv[i + 1] === __filename) {
    argv.splice(i, 2);
    break;
  }
}
