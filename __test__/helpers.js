'use strict';

// Test helpers: run a fixture as a real process, read its JSON lines, and
// make sure every process a test started is gone afterwards (by pid).

const { spawn } = require('child_process');
const http = require('http');
const path = require('path');
const readline = require('readline');

const ROOT = path.join(__dirname, '..');
const FIXTURES = path.join(__dirname, 'fixtures');

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits until every pid is gone (up to `ms`); returns the ones still alive. */
async function waitGone(pids, ms = 3000) {
  const end = Date.now() + ms;
  let left = pids.filter(alive);
  while (left.length && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
    left = left.filter((pid) => alive(pid) && !isZombie(pid));
  }
  return left;
}

function isZombie(pid) {
  try {
    if (process.platform !== 'linux') {
      const r = require('child_process').spawnSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' });
      return r.stdout.trim().startsWith('Z');
    }
    const stat = require('fs').readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z';
  } catch {
    return false;
  }
}

/**
 * A test's `skip` option for what only Linux has (/proc, seqpacket sockets,
 * balanced SO_REUSEPORT, privileged ports): false on Linux, the reason elsewhere.
 */
function linuxOnly(what) {
  return process.platform === 'linux' ? false : `Linux only: ${what}`;
}

/**
 * Starts `node fixture args...`. Returns { child, lines, next(pred, ms), done, kill }.
 * Every stdout line that parses as JSON is collected in `lines`.
 */
function run(fixture, args = [], opts = {}) {
  const child = spawn(opts.node || process.execPath, [...(opts.nodeArgs || []), path.join(FIXTURES, fixture), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
    uid: opts.uid,
    gid: opts.gid,
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
  // A fixture that ends (crashed, say) with a line still awaited fails the
  // wait at once, with its stderr, rather than when the wait times out.
  child.on('close', (code, signal) => {
    for (const w of waiters.splice(0)) {
      w.reject(new Error(`${fixture} ended (code ${code}, signal ${signal}) before the line awaited; ` +
        `lines=${JSON.stringify(lines)} stderr=${stderr}`));
    }
  });
  const pids = new Set();
  function next(pred, ms = 10000) {
    const found = lines.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve, reject };
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
    for (const m of lines) {
      for (const pid of [].concat(m.pids || [], m.pid || [])) pids.add(pid);
    }
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

/** One HTTP GET on a new connection; resolves { status, body }. */
function get(port, pathname = '/', { agent = false, host = '127.0.0.1' } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: pathname, agent, headers: agent ? {} : { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(10000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
  });
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

module.exports = {
  linuxOnly, run, get, load, alive, waitGone, ROOT, FIXTURES };
