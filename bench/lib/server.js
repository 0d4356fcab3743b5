'use strict';

// One benchmark subject: a hello-world HTTP server on 127.0.0.1, port 0.
//
//   node bench/lib/server.js <single|cluster|rcluster> [workers]
//
// Prints JSON lines on stdout: {"worker":<pid>} for each worker as it is
// forked, then, once every worker listens,
//   {"port":12345,"pid":<primary pid>,"workers":[<worker pids>]}
// Exits on SIGTERM/SIGINT, when stdin closes (the bench went away), or after
// BENCH_SERVER_MAX_SECONDS (default 600) as a last resort.

const http = require('node:http');
const path = require('node:path');

const kind = process.argv[2];
const workers = Number(process.argv[3] || 2);
const MAX_SECONDS = Number(process.env.BENCH_SERVER_MAX_SECONDS || 600);

function createServer() {
  return http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '11' });
    res.end('hello world');
  });
}

function report(info) {
  process.stdout.write(`${JSON.stringify(info)}\n`);
}

function die(message, code = 3) {
  process.stderr.write(`server(${kind}): ${message}\n`);
  process.exit(code);
}

// Stop conditions shared by the single server and the primary.
function onStop(stop) {
  let stopping = false;
  const once = (why) => {
    if (stopping) return;
    stopping = true;
    stop(why);
  };
  process.on('SIGTERM', () => once('SIGTERM'));
  process.on('SIGINT', () => once('SIGINT'));
  process.stdin.on('end', () => once('stdin closed'));
  process.stdin.on('error', () => once('stdin error'));
  process.stdin.resume();
  setTimeout(() => once(`max lifetime of ${MAX_SECONDS}s reached`), MAX_SECONDS * 1000).unref();
  return () => stopping;
}

function single() {
  const server = createServer();
  server.on('error', (err) => die(err.message));
  server.listen(0, '127.0.0.1', () => {
    report({ port: server.address().port, pid: process.pid, workers: [] });
  });
  onStop(() => process.exit(0));
}

function loadCluster() {
  if (kind === 'cluster') return require('node:cluster');
  // rcluster: the package this bench lives in, same API as node:cluster.
  const root = path.resolve(__dirname, '..', '..');
  try {
    return require(root);
  } catch (err) {
    die(`cannot load rcluster from ${root}: ${err.message.split('\n')[0]}`);
  }
}

function primary(cluster) {
  cluster.schedulingPolicy = cluster.SCHED_RR;
  const pids = [];
  const listening = new Set();
  let reported = false;

  const isStopping = onStop(() => {
    // Ask every worker to go, then leave; whatever is left the bench kills by pid.
    for (const worker of Object.values(cluster.workers || {})) {
      try {
        worker.process.kill('SIGTERM');
      } catch {
        // already gone
      }
    }
    setTimeout(() => process.exit(0), 1000).unref();
  });

  cluster.on('listening', (worker, address) => {
    listening.add(worker.id);
    if (!reported && listening.size === workers) {
      reported = true;
      report({ port: address.port, pid: process.pid, workers: pids });
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    if (!isStopping()) die(`worker ${worker.process.pid} exited (${signal || code}) during the run`, 4);
  });
  for (let i = 0; i < workers; i++) {
    const pid = cluster.fork().process.pid;
    pids.push(pid);
    report({ worker: pid }); // so the bench can kill it even if startup hangs
  }
}

function worker() {
  const server = createServer();
  server.on('error', (err) => {
    process.stderr.write(`worker ${process.pid}: ${err.message}\n`);
    process.exit(5);
  });
  server.listen(0, '127.0.0.1');
}

if (kind === 'single') {
  single();
} else if (kind === 'cluster' || kind === 'rcluster') {
  if (!Number.isInteger(workers) || workers < 1) die(`bad worker count ${process.argv[3]}`);
  const cluster = loadCluster();
  if (cluster.isPrimary ?? cluster.isMaster) primary(cluster);
  else worker();
} else {
  die('usage: node bench/lib/server.js <single|cluster|rcluster> [workers]', 2);
}
