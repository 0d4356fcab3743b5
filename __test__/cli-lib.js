'use strict';

// Helpers of the CLI and register-hook specs: run `bin/rcluster.js` as a
// user would (through helpers.run, so every pid a fixture prints is killed
// afterwards), wait for its stderr, and keep a small HTTP load running.

const http = require('http');
const path = require('path');
const { spawn } = require('child_process');
const readline = require('readline');
const { run, waitGone, ROOT, FIXTURES } = require('./helpers');

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

/** Keeps `concurrency` request loops running until stop(); counts failures. */
function load(port, { keepAlive = false, concurrency = 4 } = {}) {
  const agent = new http.Agent({ keepAlive, maxSockets: concurrency });
  const stats = { ok: 0, errors: [], pids: new Set() };
  let running = true;
  async function loop() {
    while (running) {
      await new Promise((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
          let body = '';
          res.on('data', (d) => { body += d; });
          res.on('end', () => {
            if (res.statusCode === 200) stats.ok++;
            else stats.errors.push(`status ${res.statusCode}`);
            stats.pids.add(body);
            resolve();
          });
        });
        req.setTimeout(10000, () => req.destroy(new Error('timeout')));
        req.on('error', (err) => { stats.errors.push(err.code || err.message); resolve(); });
      });
    }
  }
  const loops = Array.from({ length: concurrency }, loop);
  return {
    stats,
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
      return stats;
    },
  };
}

/**
 * `node ...nodeArgs fixtures/<fixture>` (helpers.run has no node arguments):
 * the same { child, lines, next, done, kill, stderr } shape.
 */
function runNode(nodeArgs, fixture, args = [], opts = {}) {
  const child = spawn(process.execPath, [...nodeArgs, path.join(FIXTURES, fixture), ...args], {
    cwd: ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = [];
  const waiters = [];
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    lines.push(msg);
    for (const w of [...waiters]) {
      if (w.pred(msg)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(msg);
      }
    }
  });
  const done = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  function next(pred, ms = 10000) {
    const found = lines.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      waiters.push(w);
      setTimeout(() => {
        const i = waiters.indexOf(w);
        if (i >= 0) {
          waiters.splice(i, 1);
          reject(new Error(`timed out waiting in ${fixture}; lines=${JSON.stringify(lines)} stderr=${stderr}`));
        }
      }, ms).unref();
    });
  }
  async function kill() {
    const pids = new Set();
    for (const m of lines) for (const pid of [].concat(m.pids || [], m.pid || [])) pids.add(pid);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await done;
    const left = await waitGone([...pids], 2000);
    for (const pid of left) {
      try { process.kill(pid, 'SIGKILL'); } catch {}
    }
    return left;
  }
  return { child, lines, next, done, kill, stderr: () => stderr };
}

module.exports = { cli, runNode, stderrMatch, load, BIN };
