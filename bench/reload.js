'use strict';

// Reload under load: requests keep flowing (keep-alive and new connection per
// request) while every worker is replaced 3 times. Reports failed requests
// and latency during the run, for rcluster's reload and for the PM2-style
// "fork the new worker, then kill the old one" on Node's built-in cluster.
//
//   node bench/reload.js [--reloads 3] [--concurrency 16]

const { spawn } = require('child_process');
const http = require('http');
const path = require('path');
const readline = require('readline');

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const RELOADS = opt('reloads', 3);
const CONCURRENCY = opt('concurrency', 16);

function start(variant) {
  const child = spawn(process.execPath, [path.join(__dirname, 'lib', 'reload-server.js')], {
    env: { ...process.env, VARIANT: variant }, stdio: ['pipe', 'pipe', 'inherit'],
  });
  const waiters = [];
  const pids = new Set();
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    let m;
    try { m = JSON.parse(line); } catch { return; }
    for (const pid of m.pids || []) pids.add(pid);
    const w = waiters.shift();
    if (w) w(m);
  });
  const next = () => new Promise((resolve, reject) => {
    waiters.push(resolve);
    setTimeout(() => reject(new Error(`${variant}: no answer`)), 60000).unref();
  });
  return { child, next, pids };
}

function load(port, keepAlive) {
  const agent = new http.Agent({ keepAlive, maxSockets: CONCURRENCY });
  const lat = [];
  const errors = {};
  let running = true;
  async function loop() {
    while (running) {
      const t = process.hrtime.bigint();
      await new Promise((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, agent }, (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) lat.push(Number(process.hrtime.bigint() - t) / 1e6);
            else errors[`status ${res.statusCode}`] = (errors[`status ${res.statusCode}`] || 0) + 1;
            resolve();
          });
        });
        req.setTimeout(10000, () => req.destroy(new Error('timeout')));
        req.on('error', (e) => { errors[e.code || e.message] = (errors[e.code || e.message] || 0) + 1; resolve(); });
      });
    }
  }
  const loops = Array.from({ length: CONCURRENCY }, loop);
  return async () => {
    running = false;
    await Promise.all(loops);
    agent.destroy();
    lat.sort((a, b) => a - b);
    const q = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : NaN);
    return { ok: lat.length, errors, p50: q(0.5), p99: q(0.99), max: lat[lat.length - 1] };
  };
}

async function scenario(variant, keepAlive) {
  const s = start(variant);
  try {
    const { port } = await s.next();
    const stop = load(port, keepAlive);
    await new Promise((r) => setTimeout(r, 500));
    for (let i = 0; i < RELOADS; i++) {
      s.child.stdin.write('reload\n');
      await s.next();
      await new Promise((r) => setTimeout(r, 300));
    }
    return await stop();
  } finally {
    s.child.kill('SIGKILL');
    for (const pid of s.pids) { try { process.kill(pid, 'SIGKILL'); } catch {} }
  }
}

async function main() {
  const rows = [];
  for (const keepAlive of [true, false]) {
    for (const variant of ['rcluster', 'killfork']) {
      const r = await scenario(variant, keepAlive);
      const failed = Object.values(r.errors).reduce((a, b) => a + b, 0);
      rows.push({ variant, mode: keepAlive ? 'keep-alive' : 'new connection', ...r, failed });
      console.error(`${variant} ${keepAlive ? 'keep-alive' : 'new-conn'}: ${r.ok} ok, ${failed} failed ${JSON.stringify(r.errors)}`);
    }
  }
  console.log(`# reload under load: ${RELOADS} reloads of 2 workers, ${CONCURRENCY} concurrent clients\n`);
  console.log('| variant | mode | ok | failed | p50 ms | p99 ms | max ms |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    const name = r.variant === 'rcluster' ? 'rcluster `cluster.reload()`' : 'node:cluster, PM2-style fork + kill';
    console.log(`| ${name} | ${r.mode} | ${r.ok} | ${r.failed} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.max.toFixed(1)} |`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
