'use strict';

// Child processes of a benchmark: every pid goes into one registry and is
// killed by pid at the end (SIGTERM, a grace period, then SIGKILL), also when
// the bench fails or is interrupted.

const { spawn } = require('node:child_process');

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
function run(cmd, args, { timeoutMs, env } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.on('error', reject);
    track(child.pid);
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      signal(child.pid, 'SIGKILL');
    }, timeoutMs);
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      pids.delete(child.pid);
      resolve({ code, signal: sig, stdout, stderr, timedOut });
    });
  });
}

// Start bench/lib/server.js for one variant and wait for its port.
// Resolves with { port, pid, workers }; rejects with a clear message when the
// server exits or stays silent past startTimeoutMs.
function startServer(serverScript, kind, workers, { startTimeoutMs = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    // stdin is a pipe that we never close: the server stops when it sees EOF,
    // that is, when this process is gone.
    const child = spawn(process.execPath, [serverScript, kind, String(workers)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    track(child.pid);
    let out = '';
    let err = '';
    let done = false;
    const workerPids = [];
    const fail = (message) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      killAll([child.pid, ...workerPids], 500).then(() => reject(new Error(message)));
    };
    const timer = setTimeout(() => {
      fail(
        `${kind}: no "listening" report within ${startTimeoutMs / 1000}s` +
          (err.trim() ? `; stderr: ${err.trim()}` : '')
      );
    }, startTimeoutMs);
    child.on('error', (e) => fail(`${kind}: cannot start: ${e.message}`));
    child.stderr.on('data', (d) => {
      err += d;
      if (done) process.stderr.write(d);
    });
    child.stdout.on('data', (d) => {
      out += d;
      let nl;
      while (!done && (nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          fail(`${kind}: unexpected output from the server: ${line.slice(0, 200)}`);
          return;
        }
        if (msg.worker) {
          track(msg.worker);
          workerPids.push(msg.worker);
        } else if (msg.port) {
          done = true;
          clearTimeout(timer);
          for (const pid of msg.workers) track(pid);
          resolve(msg);
        }
      }
    });
    child.on('exit', (code, sig) => {
      pids.delete(child.pid);
      fail(`${kind}: server exited (${sig || `code ${code}`}) before listening` + (err.trim() ? `: ${err.trim()}` : ''));
    });
  });
}

async function stopServer(info) {
  await killAll([info.pid, ...info.workers]);
}

module.exports = { track, killAll, killAllSync, run, startServer, stopServer, alive };
