'use strict';

// Compatibility specs run twice: against Node's built-in `cluster` and
// against rcluster. A spec that the built-in fails is wrong, not rcluster.
//
//   const { both } = require('./compat');
//   both('worker.kill() ends with SIGTERM', async (mod, t) => { ... run(fixture, [], { env: { MODULE: mod } }) ... });
//
// Fixtures pick the module with:
//   const cluster = require(require('./../compat').load());   (or the inline form below)
//   const cluster = require(process.env.MODULE === 'cluster' ? 'cluster' : require('path').join(__dirname, '..', '..'));

const test = require('node:test');
const path = require('path');

const MODULES = ['cluster', 'rcluster'];

/** Defines one test per module; `fn(mod, t)` gets 'cluster' or 'rcluster'. */
function both(name, opts, fn) {
  if (typeof opts === 'function') {
    fn = opts;
    opts = {};
  }
  for (const mod of MODULES) {
    test(`[${mod}] ${name}`, { timeout: 30000, ...opts }, (t) => fn(mod, t));
  }
}

/** For fixtures: the module specifier that MODULE names. */
function load() {
  return process.env.MODULE === 'cluster' ? 'cluster' : path.join(__dirname, '..');
}

module.exports = { both, load, MODULES };
