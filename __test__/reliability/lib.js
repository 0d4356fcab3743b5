'use strict';

// Shared by the reliability specs (and bench/chaos.js, bench/soak.js): the
// primary's resources read from /proc, zombie search, closed-loop load on
// new connections, and the dispatcher's counters through the fixture.

const fs = require('fs');
const http = require('http');
const net = require('net');

/** fds, threads and RSS (KiB) of process `pid`, read from /proc. */
function procStats(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number((/VmRSS:\s+(\d+)/.exec(status) || [0, 0])[1]);
  return {
    fds: fs.readdirSync(`/proc/${pid}/fd`).length,
    threads: fs.readdirSync(`/proc/${pid}/task`).length,
    rssKiB: rss,
  };
}

/** The pids of the zombie children of `ppid`. */
function zombies(ppid) {
  const out = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (rest[0] === 'Z' && Number(rest[1]) === ppid) out.push(Number(name));
  }
  return out;
}

/** One HTTP GET on its own connection; resolves true (200) or an error code. */
function httpOnce(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? true : `HTTP ${res.statusCode}`));
      res.on('error', (err) => resolve(err.code || err.message));
    });
    req.setTimeout(10000, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (err) => resolve(err.code || err.message));
  });
}

/** One raw TCP connection that reads until the server ends it; true or an error code. */
function netOnce(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = 0;
    s.on('data', (d) => { got += d.length; });
    s.on('end', () => resolve(got > 0 ? true : 'EMPTY'));
    s.on('error', (err) => resolve(err.code || err.message));
    s.setTimeout(10000, () => s.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
  });
}

/**
 * `concurrency` closed loops, each one request per new connection, until
 * `stop()` is true or `total` requests have started. Resolves
 * { ok, failed, errors: { code: count } }.
 */
async function load(port, { concurrency = 8, stop = () => false, total = Infinity, once = httpOnce } = {}) {
  let started = 0;
  const r = { ok: 0, failed: 0, errors: {} };
  async function loop() {
    while (!stop() && started < total) {
      started++;
      const res = await once(port);
      if (res === true) r.ok++;
      else {
        r.failed++;
        r.errors[res] = (r.errors[res] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop));
  return r;
}

/** Asks the fixture's primary for its counters (see fixtures/reliability.js). */
async function counters(p, pred = () => true, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const seen = p.lines.length;
    p.child.stdin.write('counters\n');
    const c = await p.next((m) => m.event === 'counters' && p.lines.indexOf(m) >= seen, ms);
    if (pred(c) || Date.now() > end) return c;
    await new Promise((r) => setTimeout(r, 50));
  }
}

module.exports = { procStats, zombies, httpOnce, netOnce, load, counters };
