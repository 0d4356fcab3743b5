'use strict';

// Child processes of a benchmark: every pid goes into one registry and is
// killed by pid at the end (SIGTERM, a grace period, then SIGKILL), also when
// the bench fails or is interrupted.

const { spawn } = require('node:child_process');
const pin = require('./pin');

const pids = new Set();

function track(pid) {
  if (pid) pids.add(pid);
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

function signal(pid, sig) {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Kill the given pids (default: every tracked pid). Worker pids were reported
// by a server a few seconds earlier, so reuse of one of them is not a concern
// at this time scale.
async function killAll(list = [...pids], graceMs = 2000) {
  const targets = list.filter(alive);
  for (const pid of targets) signal(pid, 'SIGTERM');
  const until = Date.now() + graceMs;
  while (Date.now() < until && targets.some(alive)) await sleep(50);
  for (const pid of targets) if (alive(pid)) signal(pid, 'SIGKILL');
  for (const pid of list) pids.delete(pid);
}

function killAllSync() {
  for (const pid of pids) signal(pid, 'SIGKILL');
  pids.clear();
}

// Run a command to completion with a time limit; resolves with
// { code, signal, stdout, stderr, timedOut }.
function run(cmd, args, { timeoutMs, env, trackWorkers = false } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ? { ...process.env, ...env } : undefined });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.on('error', reject);
    track(child.pid);
    const children = [];
    child.stdout.on('data', (d) => {
      stdout += d;
      // A program that forks reports {"worker":<pid>} lines: track them too.
      if (trackWorkers) {
        for (const m of String(d).matchAll(/\{"worker":(\d+)\}/g)) {
          track(Number(m[1]));
          children.push(Number(m[1]));
        }
      }
    });
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      signal(child.pid, 'SIGKILL');
    }, timeoutMs);
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      pids.delete(child.pid);
      killAll(children, 500).then(() => resolve({ code, signal: sig, stdout, stderr, timedOut }));
    });
  });
}

// Start bench/lib/server.js for one variant and wait for its port.
// Resolves with { port, pid, workers, startup, request(cmd) }; rejects with a
// clear message when the server exits or stays silent past startTimeoutMs.
// A policy the server reports as unsupported rejects with err.unavailable set.
// `request({cmd})` sends a command on the server's stdin and resolves with its
// answer (see server.js).
function startServer(serverScript, kind, workers, { startTimeoutMs = 20000, policy, port, env } = {}) {
  return new Promise((resolve, reject) => {
    const args = [serverScript, kind, String(workers)];
    if (policy || port) args.push(policy || 'rr', String(port || 0));
    // stdin is a pipe that we never close: the server stops when it sees EOF,
    // that is, when this process is gone.
    // Pinned (--pin): the server and its workers (they inherit it) run on
    // the servers' CPUs.
    const child = spawn(...pin.wrap('servers', process.execPath, args), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: env ? { ...process.env, ...env } : process.env,
    });
    track(child.pid);
    let out = '';
    let err = '';
    let done = false;
    let nextId = 1;
    const waiting = new Map();
    const workerPids = [];
    const fail = (message, extra) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      killAll([child.pid, ...workerPids], 500).then(() => reject(Object.assign(new Error(message), extra)));
    };
    const timer = setTimeout(() => {
      fail(
        `${kind}: no "listening" report within ${startTimeoutMs / 1000}s` +
          (err.trim() ? `; stderr: ${err.trim()}` : '')
      );
    }, startTimeoutMs);
    const request = (cmd, timeoutMs = 5000) =>
      new Promise((res, rej) => {
        const id = nextId++;
        const t = setTimeout(() => {
          waiting.delete(id);
          rej(new Error(`${kind}: no answer to ${cmd.cmd} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiting.set(id, (msg) => {
          clearTimeout(t);
          res(msg);
        });
        child.stdin.write(`${JSON.stringify({ ...cmd, id })}\n`);
      });
    child.stdin.on('error', () => {});
    child.on('error', (e) => fail(`${kind}: cannot start: ${e.message}`));
    child.stderr.on('data', (d) => {
      err += d;
      if (done && !/^\s*$/.test(String(d))) process.stderr.write(d);
    });
    child.stdout.on('data', (d) => {
      out += d;
      let nl;
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          if (!done) fail(`${kind}: unexpected output from the server: ${line.slice(0, 200)}`);
          continue;
        }
        if (msg.reply !== undefined) {
          const cb = waiting.get(msg.reply);
          waiting.delete(msg.reply);
          if (cb) cb(msg);
        } else if (done) {
          continue;
        } else if (msg.unavailable) {
          fail(`${kind}: ${msg.unavailable}`, { unavailable: true });
        } else if (msg.worker) {
          track(msg.worker);
          workerPids.push(msg.worker);
        } else if (msg.port) {
          done = true;
          clearTimeout(timer);
          for (const pid of msg.workers) track(pid);
          resolve({ ...msg, kind, request });
        }
      }
    });
    child.on('exit', (code, sig) => {
      pids.delete(child.pid);
      for (const cb of waiting.values()) cb({ error: 'server exited' });
      waiting.clear();
      fail(`${kind}: server exited (${sig || `code ${code}`}) before listening` + (err.trim() ? `: ${err.trim()}` : ''));
    });
  });
}

async function stopServer(info) {
  await killAll([info.pid, ...info.workers]);
}

module.exports = { track, killAll, killAllSync, run, startServer, stopServer, alive };
