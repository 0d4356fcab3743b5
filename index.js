'use strict';

// rcluster: require('rcluster') where a program said require('cluster').
// In a worker started by rcluster, the bootstrap (lib/bootstrap.js) has
// already set up the worker side; everywhere else this is the primary.

const worker = globalThis[Symbol.for('rcluster.worker')];

module.exports = worker !== undefined ? worker : require('./lib/primary');
