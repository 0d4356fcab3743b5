'use strict';

// The rr offload (src/reactor/offload.rs): under a high rate of new
// connections the kernel queues them on the listener's shared socket (the
// second of its SO_REUSEPORT group), which every worker listens on, and the
// primary does no work per connection; few connections stay exact (one by
// one from the primary). The rate that
// starts it is lowered here (RCLUSTER_RR_OFFLOAD_BURST) so that a slow machine
// reaches it too. Real workers, real sockets, real HTTP.

const test = require('node:test');
const assert = require('node:assert');
const http = require('http');
const net = require('net');
const { run, get, linuxOnly } = require('./helpers');

const skip = linuxOnly('the offload is a Linux SO_REUSEPORT group');
const LOW = { RCLUSTER_RR_OFFLOAD_BURST: '16' };

let seq = 0;
async function stats(p) {
  const s = ++seq;
  p.child.stdin.write(`${JSON.stringify({ cmd: 'stats', seq: s })}\n`);
  return (await p.next((m) => m.event === 'stats' && m.seq === s)).stats;
}

function command(p, c) {
  p.child.stdin.write(`${JSON.stringify(c)}\n`);
}

/**
 * `concurrency` loops of GETs, each on a new connection, until stop().
 * Every answer is kept as { worker, start, end } (ms since the epoch).
 */
function load(port, concurrency = 16) {
  const done = [];
  const errors = [];
  let running = true;
  const one = () => new Promise((resolve) => {
    const start = Date.now();
    const req = http.get({ host: '127.0.0.1', port, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        done.push({ worker: body, start, end: Date.now() });
        resolve();
      });
    });
    req.setTimeout(10000, () => req.destroy(new Error('timeout')));
    req.on('error', (err) => {
      errors.push(err.code || err.message);
      resolve();
    });
  });
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) await one();
  });
  return {
    done,
    errors,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

function tally(done) {
  const out = {};
  for (const d of done) out[d.worker] = (out[d.worker] || 0) + 1;
  return out;
}

/**
 * Polls the stats until the listener hands connections through the kernel
 * (`kernel` true) or through the primary again (`kernel` false).
 */
async function untilKernel(p, kernel = true, ms = 8000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const s = await stats(p);
    if (s.listeners.length && s.listeners[0].kernel === kernel) return s;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(kernel ? 'the listener never handed connections through the kernel' :
    'the listener never went back to handing connections out itself');
}

test('a burst of new connections goes straight to the workers; every request is served, by both', { timeout: 30000, skip }, async () => {
  const p = run('rr-offload.js', [], { env: LOW });
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    const l = load(port);
    await untilKernel(p);
    await new Promise((r) => setTimeout(r, 500));
    await l.stop();
    const s = await stats(p);
    const t = tally(l.done);
    assert.deepStrictEqual(l.errors, []);
    assert.ok(l.done.length > 100, `served ${l.done.length}`);
    for (const id of ['1', '2']) {
      assert.ok((t[id] || 0) > l.done.length * 0.25, `both workers serve: ${JSON.stringify(t)}`);
    }
    // The primary accepted only what came while it measured the rate.
    assert.ok(s.listeners[0].accepted < l.done.length, `accepted ${s.listeners[0].accepted} of ${l.done.length}`);
    assert.strictEqual(s.listeners[0].policy, 'rr');
  } finally {
    await p.kill();
  }
});

test('when the burst is over the listener is exact again: the primary accepts what comes next', { timeout: 30000, skip }, async () => {
  const p = run('rr-offload.js', [], { env: LOW });
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    const l = load(port);
    await untilKernel(p);
    await l.stop();
    // The rate is checked once a second; nothing came, so it is exact.
    const s = await untilKernel(p, false);
    // A few connections, far below the (lowered) burst's rate.
    const before = s.listeners[0].accepted;
    const served = [];
    for (let i = 0; i < 10; i++) {
      served.push((await get(port)).body);
      await new Promise((r) => setTimeout(r, 30));
    }
    const after = (await stats(p)).listeners[0];
    assert.strictEqual(after.kernel, false);
    assert.strictEqual(after.accepted - before, 10, 'every new connection went through the primary');
    // One by one, in turn.
    for (let i = 1; i < served.length; i++) assert.notStrictEqual(served[i], served[i - 1], `in turn: ${served}`);
  } finally {
    await p.kill();
  }
});

test('few keep-alive connections stay exact: the primary hands them out one by one, evenly', { timeout: 30000, skip }, async () => {
  const p = run('rr-offload.js', [], {});
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
    const get = () => new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, agent }, (res) => {
        res.resume();
        res.on('end', resolve);
      }).on('error', reject);
    });
    await Promise.all(Array.from({ length: 32 }, get));
    agent.destroy();
    const s = await stats(p);
    assert.strictEqual(s.listeners[0].kernel, false);
    assert.strictEqual(s.listeners[0].accepted, 32);
    const byWorker = s.workers.map((w) => w.connections).sort();
    assert.deepStrictEqual(byWorker, [16, 16]);
  } finally {
    await p.kill();
  }
});

test('a stuck worker while spreading: the other one takes every new connection, nothing waits for it', { timeout: 30000, skip }, async () => {
  const p = run('rr-offload.js', [], { env: LOW });
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    const l = load(port);
    await untilKernel(p);
    command(p, { cmd: 'block', id: 1, ms: 4000 });
    await p.next((m) => m.event === 'blocking' && m.id === 1);
    const blocked = Date.now();
    await new Promise((r) => setTimeout(r, 200));
    // Requests from here on. The ones worker 1 accepted itself just before
    // it got stuck wait for it, as with SCHED_NONE, and on a crowded
    // machine that can be every connection of the load above; a new one
    // must not wait.
    const probe = load(port, 8);
    await new Promise((r) => setTimeout(r, 1300));
    const during = probe.done.filter((d) => d.end < blocked + 1500);
    await probe.stop();
    await l.stop();
    assert.deepStrictEqual(l.errors, []);
    assert.deepStrictEqual(probe.errors, []);
    assert.ok(during.length > 50, `served while worker 1 was stuck: ${during.length}`);
    assert.deepStrictEqual(Object.keys(tally(during)), ['2'], 'only worker 2 answered meanwhile');
    // Every request started after the worker got stuck (and after the
    // primary saw it) was answered long before the worker came back.
    const slow = probe.done.filter((d) => d.start < blocked + 1000 && d.end > blocked + 3000);
    assert.deepStrictEqual(slow, [], 'no request waited for the stuck worker');
  } finally {
    await p.kill();
  }
});

test('a worker that disconnects while spreading: nothing is reset, the others and a new worker serve', { timeout: 30000, skip }, async () => {
  const p = run('rr-offload.js', [], { env: LOW });
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    const l = load(port);
    await untilKernel(p);
    command(p, { cmd: 'disconnect', id: 1 });
    await p.next((m) => m.event === 'exit' && m.id === 1);
    const gone = Date.now();
    command(p, { cmd: 'fork' });
    await p.next((m) => m.event === 'listening' && m.id === 3);
    await new Promise((r) => setTimeout(r, 500));
    await l.stop();
    assert.deepStrictEqual(l.errors, [], 'nothing was reset');
    const after = l.done.filter((d) => d.start > gone + 50);
    assert.ok(!after.some((d) => d.worker === '1'), 'worker 1 serves nothing once gone');
    assert.ok(after.some((d) => d.worker === '3'), `the new worker takes a share: ${JSON.stringify(tally(after))}`);
    const s = await stats(p);
    assert.strictEqual(s.listeners[0].queued, 0);
  } finally {
    await p.kill();
  }
});

// Node 26's server.close() also closes the connections that have not sent a
// request yet; a worker hands those of which it read nothing back to the
// primary, which gives them to another worker (lib/worker.js). Before Node 26
// the closing server still serves them. Either way the client gets its
// answer. Exact dispatch (rrOffload: false) makes it deterministic: the
// connection is the closing worker's when its server closes.
test('a connection that has sent nothing when its worker\'s server closes still gets its answer', { timeout: 30000 }, async () => {
  const p = run('rr-offload.js', [], { env: { OFFLOAD: '0', REPORT_CONN: '1' } });
  const socket = new net.Socket();
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    socket.connect(port, '127.0.0.1');
    const { id } = await p.next((m) => m.event && m.event.conn === 1);
    const other = id === 1 ? 2 : 1;
    command(p, { cmd: 'close', id });
    await p.next((m) => m.event && m.event.closing && m.id === id);
    const handsBack = Number(process.versions.node.split('.')[0]) >= 26;
    // Handed back, the connection reaches the other worker's server first.
    if (handsBack) await p.next((m) => m.event && m.event.conn === 1 && m.id === other);
    let answer = '';
    socket.on('data', (d) => { answer += d; });
    const ended = new Promise((resolve, reject) => {
      socket.on('end', resolve);
      socket.on('error', reject);
    });
    socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await ended;
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.strictEqual(answer.split('\r\n\r\n')[1], String(handsBack ? other : id));
  } finally {
    socket.destroy();
    await p.kill();
  }
});

test('a worker whose server has maxConnections keeps the listener exact: what it refuses goes to the other', { timeout: 30000, skip }, async () => {
  const p = run('rr-offload.js', [], { env: { ...LOW, MAX1: '1' } });
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    const l = load(port);
    const kernel = [];
    for (let i = 0; i < 15; i++) {
      await new Promise((r) => setTimeout(r, 100));
      kernel.push((await stats(p)).listeners[0].kernel);
    }
    await l.stop();
    const t = tally(l.done);
    // Had it spread, worker 1 would take connections over its limit from
    // the shared socket and net would drop them (as with SCHED_NONE).
    assert.deepStrictEqual(l.errors, []);
    assert.ok(kernel.every((k) => k === false), `never through the kernel: ${kernel}`);
    assert.ok(l.done.length > 50, `served ${l.done.length}`);
    assert.ok((t['2'] || 0) > (t['1'] || 0), `worker 2 takes what worker 1 refuses: ${JSON.stringify(t)}`);
  } finally {
    await p.kill();
  }
});

test('rrOffload: false keeps every connection on the primary', { timeout: 30000, skip }, async () => {
  const p = run('rr-offload.js', [], { env: { ...LOW, OFFLOAD: '0' } });
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    const l = load(port);
    let kernel = false;
    const end = Date.now() + 1000;
    while (Date.now() < end) {
      kernel = kernel || (await stats(p)).listeners[0].kernel;
      await new Promise((r) => setTimeout(r, 20));
    }
    await l.stop();
    const s = await stats(p);
    assert.deepStrictEqual(l.errors, []);
    assert.strictEqual(kernel, false);
    assert.strictEqual(s.listeners[0].accepted, l.done.length);
  } finally {
    await p.kill();
  }
});
