'use strict';

// One benchmark subject: a hello-world HTTP server on 127.0.0.1.
//
//   node bench/lib/server.js <single|cluster|rcluster> [workers] [policy] [port]
//
// policy: rr (default), none or reuseport (rcluster only; also selected with
// NODE_CLUSTER_SCHED_POLICY). port: 0 (default) or a fixed port.
//
// Prints JSON lines on stdout: {"worker":<pid>} for each worker as it is
// forked, then, once every worker listens,
//   {"port":12345,"pid":<primary pid>,"workers":[<worker pids>],
//    "startup":{"allListeningMs":..,"forkToListeningMs":[..],"rssKiB":..}}
// or {"unavailable":"<why>"} when the requested policy is not supported.
//
// Reads JSON commands on stdin, one a line, and answers each on stdout with
// {"reply":<id>,...}:
//   {"id":1,"cmd":"counts"} -> {"reply":1,"counts":{"<worker pid>":<requests>},
//                               "conns":{"<worker pid>":<connections>}}
//   {"id":2,"cmd":"rss"}    -> {"reply":2,"rssKiB":<primary VmRSS>}
// Each worker only adds one to an integer per request (and per connection); the counts travel over
// the cluster channel when asked, between load runs, so they cost nothing
// during a run.
//
// Exits on SIGTERM/SIGINT, when stdin closes (the bench went away), or after
// BENCH_SERVER_MAX_SECONDS (default 600) as a last resort.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const kind = process.argv[2];
const workers = Number(process.argv[3] || 2);
const policy = process.argv[4] || 'rr';
const fixedPort = Number(process.argv[5] || 0);
const MAX_SECONDS = Number(process.env.BENCH_SERVER_MAX_SECONDS || 600);
const weights = kind === 'rcluster' && process.env.BENCH_WEIGHTS ? process.env.BENCH_WEIGHTS.split(',').map(Number) : [];

let requests = 0;
let connections = 0;

function createServer() {
  const server = http.createServer((req, res) => {
    requests++;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '11' });
    res.end('hello world');
  });
  server.on('connection', () => connections++);
  return server;
}

function report(info) {
  process.stdout.write(`${JSON.stringify(info)}\n`);
}

function die(message, code = 3) {
  process.stderr.write(`server(${kind}): ${message}\n`);
  process.exit(code);
}

function rssKiB() {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return Math.round(process.memoryUsage.rss() / 1024);
  }
}

// Stop conditions shared by the single server and the primary, and the
// command loop on stdin. `handle(cmd, reply)` answers one command.
function onStop(stop, handle) {
  let stopping = false;
  const once = (why) => {
    if (stopping) return;
    stopping = true;
    stop(why);
  };
  process.on('SIGTERM', () => once('SIGTERM'));
  process.on('SIGINT', () => once('SIGINT'));
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      let cmd;
      try {
        cmd = JSON.parse(line);
      } catch {
        continue;
      }
      handle(cmd, (answer) => report({ reply: cmd.id, ...answer }));
    }
  });
  process.stdin.on('end', () => once('stdin closed'));
  process.stdin.on('error', () => once('stdin error'));
  setTimeout(() => once(`max lifetime of ${MAX_SECONDS}s reached`), MAX_SECONDS * 1000).unref();
  return () => stopping;
}

function single() {
  const server = createServer();
  server.on('error', (err) => die(err.message));
  onStop(
    () => process.exit(0),
    (cmd, reply) => {
      if (cmd.cmd === 'counts') reply({ counts: { [process.pid]: requests }, conns: { [process.pid]: connections } });
      else if (cmd.cmd === 'rss') reply({ rssKiB: rssKiB() });
      else reply({ error: `unknown command ${cmd.cmd}` });
    }
  );
  server.listen(fixedPort, '127.0.0.1', () => {
    report({ port: server.address().port, pid: process.pid, workers: [], startup: { rssKiB: rssKiB() } });
  });
}

function loadCluster() {
  if (kind === 'cluster') return require('node:cluster');
  // rcluster: the package this bench lives in (or RCLUSTER_BENCH_MODULE, to
  // measure another build), same API as node:cluster.
  const root = process.env.RCLUSTER_BENCH_MODULE || path.resolve(__dirname, '..', '..');
  try {
    return require(root);
  } catch (err) {
    die(`cannot load rcluster from ${root}: ${err.message.split('\n')[0]}`);
  }
}

function setPolicy(cluster) {
  if (policy === 'rr') cluster.schedulingPolicy = cluster.SCHED_RR;
  else if (policy === 'none') cluster.schedulingPolicy = cluster.SCHED_NONE;
  else if (policy === 'reuseport') {
    // NODE_CLUSTER_SCHED_POLICY=reuseport is set by the bench. An
    // implementation that does not know it falls back to rr or none: then
    // ask for it explicitly, and let fork() reject it if it must.
    const p = cluster.schedulingPolicy;
    if (p === cluster.SCHED_RR || p === cluster.SCHED_NONE) {
      cluster.schedulingPolicy = cluster.SCHED_REUSEPORT !== undefined ? cluster.SCHED_REUSEPORT : 'reuseport';
    }
  } else die(`unknown policy ${policy}`, 2);
}

function primary(cluster) {
  setPolicy(cluster);
  const pids = [];
  const forkedAt = new Map(); // worker id -> hrtime at fork()
  const listenMs = [];
  const listening = new Set();
  const pending = new Map(); // command id -> { counts, left, reply }
  let reported = false;
  let firstFork = 0n;

  const isStopping = onStop(
    () => {
      // Ask every worker to go, then leave; whatever is left the bench kills by pid.
      for (const worker of Object.values(cluster.workers || {})) {
        try {
          worker.process.kill('SIGTERM');
        } catch {
          // already gone
        }
      }
      if (!Object.keys(cluster.workers || {}).length) process.exit(0);
      setTimeout(() => process.exit(0), 1000).unref(); // 'exit' below is quicker
    },
    (cmd, reply) => {
      if (cmd.cmd === 'rss') return reply({ rssKiB: rssKiB() });
      if (cmd.cmd !== 'counts') return reply({ error: `unknown command ${cmd.cmd}` });
      const all = Object.values(cluster.workers || {});
      const state = { counts: {}, conns: {}, left: all.length, reply };
      pending.set(cmd.id, state);
      if (!all.length) reply({ counts: {}, conns: {} });
      for (const w of all) w.send({ benchCounts: cmd.id });
      setTimeout(() => {
        if (pending.delete(cmd.id)) reply({ counts: state.counts, conns: state.conns, partial: true });
      }, 3000).unref();
    }
  );

  cluster.on('message', (worker, msg) => {
    if (!msg || msg.benchCountsReply === undefined) return;
    const state = pending.get(msg.benchCountsReply);
    if (!state) return;
    state.counts[msg.pid] = msg.requests;
    state.conns[msg.pid] = msg.connections;
    if (--state.left === 0) {
      pending.delete(msg.benchCountsReply);
      state.reply({ counts: state.counts, conns: state.conns });
    }
  });
  cluster.on('listening', (worker, address) => {
    if (listening.has(worker.id)) return;
    listening.add(worker.id);
    const now = process.hrtime.bigint();
    listenMs.push(Number(now - forkedAt.get(worker.id)) / 1e6);
    if (!reported && listening.size === workers) {
      reported = true;
      report({
        port: address.port,
        pid: process.pid,
        workers: pids,
        startup: {
          allListeningMs: Number(now - firstFork) / 1e6,
          forkToListeningMs: listenMs,
          rssKiB: rssKiB(),
        },
      });
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    if (isStopping() && !Object.keys(cluster.workers || {}).length) process.exit(0);
    // SIGTERM/SIGKILL from outside: the bench is stopping everything at once.
    if (!isStopping() && signal !== 'SIGTERM' && signal !== 'SIGKILL') {
      die(`worker ${worker.process.pid} exited (${signal || code}) during the run`, 4);
    }
  });
  for (let i = 0; i < workers; i++) {
    const t = process.hrtime.bigint();
    if (i === 0) firstFork = t;
    let w;
    try {
      // BENCH_WEIGHTS=15,1: rcluster's weighted rr, to show what an uneven
      // split does (figure 2's reference row).
      w = weights.length > 0 ? cluster.fork(undefined, { weight: weights[i % weights.length] }) : cluster.fork();
    } catch (err) {
      if (policy === 'reuseport') {
        report({ unavailable: `rcluster rejected the reuseport policy: ${String(err.message).split('\n')[0]}` });
        process.exit(0);
      }
      throw err;
    }
    forkedAt.set(w.id, t);
    pids.push(w.process.pid);
    report({ worker: w.process.pid }); // so the bench can kill it even if startup hangs
  }
}

function worker() {
  const server = createServer();
  server.on('error', (err) => {
    process.stderr.write(`worker ${process.pid}: ${err.message}\n`);
    process.exit(5);
  });
  process.on('message', (msg) => {
    if (msg && msg.benchCounts !== undefined) {
      process.send({ benchCountsReply: msg.benchCounts, pid: process.pid, requests, connections });
    }
  });
  server.listen(fixedPort, '127.0.0.1');
}

if (kind === 'single') {
  single();
} else if (kind === 'cluster' || kind === 'rcluster') {
  if (!Number.isInteger(workers) || workers < 1) die(`bad worker count ${process.argv[3]}`);
  const cluster = loadCluster();
  if (cluster.isPrimary ?? cluster.isMaster) primary(cluster);
  else worker();
} else {
  die('usage: node bench/lib/server.js <single|cluster|rcluster> [workers] [rr|none|reuseport] [port]', 2);
}
