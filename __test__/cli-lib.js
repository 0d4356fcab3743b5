'use strict';

// Helpers of the CLI and register-hook specs: run `bin/rcluster.js` as a
// user would (through helpers.run, so every pid a fixture prints is killed
// afterwards), wait for its stderr, and keep a small HTTP load running.

const path = require('path');
const { run, load, ROOT, FIXTURES } = require('./helpers');

const BIN = path.join(ROOT, 'bin', 'rcluster.js');

/** Starts `node bin/rcluster.js ...args` (a fixture name is resolved in fixtures/). */
function cli(args, opts = {}) {
  return run(path.relative(FIXTURES, BIN), args.map((a) => (/^cli-.*\.m?js$/.test(a) ? path.join(FIXTURES, a) : a)), opts);
}

/** Resolves once `re` matches the process' stderr; rejects after `ms`. */
async function stderrMatch(p, re, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const m = re.exec(p.stderr());
    if (m) return m;
    if (Date.now() > end) throw new Error(`stderr never matched ${re}:\n${p.stderr()}`);
    if (p.child.exitCode !== null || p.child.signalCode !== null) {
      // One last look: the output may have arrived with the exit.
      await new Promise((r) => setTimeout(r, 50));
      const last = re.exec(p.stderr());
      if (last) return last;
      throw new Error(`exited (${p.child.exitCode ?? p.child.signalCode}) before stderr matched ${re}:\n${p.stderr()}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** `node ...nodeArgs fixtures/<fixture>`: helpers.run with node arguments. */
function runNode(nodeArgs, fixture, args = [], opts = {}) {
  return run(fixture, args, { ...opts, nodeArgs });
}

module.exports = { cli, runNode, stderrMatch, load, BIN };
