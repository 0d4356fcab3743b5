'use strict';

// examples/*: each example is started as a user would start it (its own
// process, clustered by rcluster, 2 workers, port 0) and gets real traffic
// from the framework's real client side.

const test = require('node:test');
const assert = require('node:assert');
const http = require('http');
const path = require('path');
const { execFileSync } = require('child_process');
const { run, get, ROOT } = require('./helpers');

const WORKERS = 2;

/** Starts examples/<name>/cluster.js (helpers.run() resolves fixtures relative to __test__/fixtures). */
function example(name, env = {}) {
  return run(path.join('..', '..', 'examples', name, 'cluster.js'), [], {
    env: { PORT: '0', WORKERS: String(WORKERS), NODE_CLUSTER_SCHED_POLICY: '', ...env },
  });
}

/** One HTTP request on a new connection; resolves { status, headers, body }. */
function request(port, method, pathname, { body, headers = {}, localAddress } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, method, path: pathname, agent: false, localAddress,
      headers: { connection: 'close', ...headers },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: text }));
    });
    req.setTimeout(10000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

function postJson(port, pathname, value) {
  return request(port, 'POST', pathname, {
    body: JSON.stringify(value),
    headers: { 'content-type': 'application/json' },
  });
}

/** GETs `/` `n` times, each on a new connection; returns the parsed bodies. */
async function getMany(port, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const r = await get(port, '/');
    assert.strictEqual(r.status, 200, r.body);
    out.push(JSON.parse(r.body));
  }
  return out;
}

function bounded(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const ALL_WORKERS = Array.from({ length: WORKERS }, (_, i) => i + 1);

test('examples/express: requests spread over both workers; JSON body, params, SIGTERM stops cleanly', { timeout: 60000 }, async () => {
  const p = example('express');
  try {
    const ready = await p.next((m) => m.event === 'ready');
    assert.strictEqual(ready.pids.length, WORKERS);
    assert.match(ready.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const bodies = await getMany(ready.port, 20);
    for (const b of bodies) {
      assert.strictEqual(b.hello, 'express');
      assert.ok(ready.pids.includes(b.pid), `pid ${b.pid} is not a worker of ${ready.pids}`);
    }
    assert.deepStrictEqual([...new Set(bodies.map((b) => b.worker))].sort(), ALL_WORKERS);

    const echo = await postJson(ready.port, '/echo', { n: 1, s: 'é' });
    assert.strictEqual(echo.status, 200);
    assert.deepStrictEqual(JSON.parse(echo.body).echo, { n: 1, s: 'é' });
    const user = await get(ready.port, '/users/42');
    assert.strictEqual(JSON.parse(user.body).user, '42');
    assert.strictEqual((await get(ready.port, '/nope')).status, 404);

    // SIGTERM: cluster.disconnect(), then the primary exits 0.
    p.child.kill('SIGTERM');
    assert.deepStrictEqual(await bounded(p.done, 20000, 'express example exit after SIGTERM'), { code: 0, signal: null });
  } finally {
    await p.kill();
  }
});

test('examples/fastify: requests spread over both workers; schema validation works in workers', { timeout: 60000 }, async () => {
  const p = example('fastify');
  try {
    const ready = await p.next((m) => m.event === 'ready');
    const bodies = await getMany(ready.port, 20);
    for (const b of bodies) assert.strictEqual(b.hello, 'fastify');
    assert.deepStrictEqual([...new Set(bodies.map((b) => b.worker))].sort(), ALL_WORKERS);

    const ok = await postJson(ready.port, '/echo', { n: 7 });
    assert.strictEqual(ok.status, 200, ok.body);
    assert.deepStrictEqual(JSON.parse(ok.body).echo, { n: 7 });
    const bad = await postJson(ready.port, '/echo', { n: 'seven' });
    assert.strictEqual(bad.status, 400, bad.body);

    // Keep-alive: several requests on one connection stay on one worker.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const seen = new Set();
      for (let i = 0; i < 5; i++) {
        const r = await get(ready.port, '/', { agent });
        assert.strictEqual(r.status, 200);
        seen.add(JSON.parse(r.body).worker);
      }
      assert.strictEqual(seen.size, 1);
    } finally {
      agent.destroy();
    }
  } finally {
    await p.kill();
  }
});

test('examples/koa: middleware, body streaming and 404 in both workers', { timeout: 60000 }, async () => {
  const p = example('koa');
  try {
    const ready = await p.next((m) => m.event === 'ready');
    const seen = new Set();
    for (let i = 0; i < 20; i++) {
      const r = await request(ready.port, 'GET', '/');
      assert.strictEqual(r.status, 200, r.body);
      const b = JSON.parse(r.body);
      assert.strictEqual(b.hello, 'koa');
      assert.strictEqual(r.headers['x-worker'], String(b.worker));
      seen.add(b.worker);
    }
    assert.deepStrictEqual([...seen].sort(), ALL_WORKERS);

    const big = 'x'.repeat(200000);
    const echo = await request(ready.port, 'POST', '/echo', { body: big, headers: { 'content-type': 'text/plain' } });
    assert.strictEqual(echo.status, 200);
    assert.strictEqual(JSON.parse(echo.body).echo, big);
    const missing = await request(ready.port, 'GET', '/missing');
    assert.strictEqual(missing.status, 404);
    assert.ok(missing.headers['x-worker']);
  } finally {
    await p.kill();
  }
});

test('examples/ws: several WebSocket connections exchange text and binary messages', { timeout: 60000 }, async () => {
  const WebSocket = require('ws');
  const p = example('ws');
  const sockets = [];
  try {
    const ready = await p.next((m) => m.event === 'ready');
    assert.match(ready.url, /^ws:\/\//);

    /** Opens one client; resolves { ws, hello, next() } once the server's hello arrived. */
    function open() {
      const ws = new WebSocket(ready.url);
      sockets.push(ws);
      const inbox = [];
      const waiting = [];
      ws.on('message', (data, isBinary) => {
        const msg = isBinary ? { binary: Buffer.from(data) } : JSON.parse(data.toString());
        const w = waiting.shift();
        if (w) w.resolve(msg);
        else inbox.push(msg);
      });
      const failAll = (err) => { for (const w of waiting.splice(0)) w.reject(err); };
      ws.on('error', failAll);
      ws.on('close', () => failAll(new Error('socket closed')));
      const next = () => (inbox.length ? Promise.resolve(inbox.shift())
        : bounded(new Promise((resolve, reject) => waiting.push({ resolve, reject })), 10000, 'ws message'));
      return next().then((hello) => ({ ws, hello, next }));
    }

    const clients = [];
    for (let i = 0; i < 6; i++) clients.push(await open()); // One at a time: round robin alternates.
    for (const c of clients) {
      assert.strictEqual(c.hello.type, 'hello');
      assert.ok(ready.pids.includes(c.hello.pid));
    }
    assert.deepStrictEqual([...new Set(clients.map((c) => c.hello.worker))].sort(), ALL_WORKERS);

    // Every client talks at once; each message comes back from its own worker, in order.
    await Promise.all(clients.map(async (c, i) => {
      for (let j = 0; j < 20; j++) {
        c.ws.send(`client ${i} message ${j}`);
        const echo = await c.next();
        assert.deepStrictEqual(echo, { type: 'echo', worker: c.hello.worker, data: `client ${i} message ${j}` });
      }
      const bytes = Buffer.from([0, 1, 2, 255, i]);
      c.ws.send(bytes);
      assert.deepStrictEqual((await c.next()).binary, bytes);
    }));

    for (const c of clients) {
      const closed = new Promise((resolve) => c.ws.once('close', resolve));
      c.ws.close(1000, 'done');
      assert.strictEqual(await bounded(closed, 10000, 'ws close'), 1000);
    }
  } finally {
    for (const ws of sockets) ws.terminate();
    await p.kill();
  }
});

/** Why the socket.io test cannot run, or null when rcluster has the 'hash' policy. */
function hashUnavailable() {
  try {
    const out = execFileSync(process.execPath, ['-p', "require('./').SCHED_HASH"], { cwd: ROOT, encoding: 'utf8' }).trim();
    return out === '5' ? null : `rcluster has no 'hash' scheduling policy yet (cluster.SCHED_HASH is ${out})`;
  } catch (err) {
    return `could not load rcluster: ${err.message}`;
  }
}

test('examples/socketio-sticky: polling then websocket upgrade, every request of a client on one worker', { timeout: 60000 }, async (t) => {
  const skip = hashUnavailable();
  if (skip) {
    t.skip(skip);
    return;
  }
  const { io } = require('socket.io-client');
  const p = example('socketio-sticky');
  const clients = [];
  try {
    const ready = await p.next((m) => m.event === 'ready');
    assert.strictEqual(ready.policy, 'hash');

    // Clients from different loopback addresses (127.0.0.1-6), so that the
    // hash spreads them: each one's handshake, polls, posts and upgrade are
    // separate HTTP requests that must all reach the worker holding its session.
    async function connect(localAddress) {
      // http.Agent passes localAddress to every connection it opens, for
      // engine.io-client's XHR polling and for its websocket alike.
      const agent = new http.Agent({ localAddress });
      const socket = io(ready.url, {
        transports: ['polling', 'websocket'], agent, reconnection: false, forceNew: true, timeout: 10000,
      });
      clients.push({ socket, agent });
      // The session opens on long-polling (the handshake), then upgrades.
      let opened = null;
      socket.io.once('open', () => { opened = socket.io.engine.transport.name; });
      const hello = await bounded(new Promise((resolve, reject) => {
        socket.once('hello', resolve);
        socket.once('connect_error', reject);
      }), 15000, `socket.io hello from ${localAddress}`);
      assert.strictEqual(opened, 'polling');
      const engine = socket.io.engine;
      if (engine.transport.name !== 'websocket') {
        await bounded(new Promise((resolve, reject) => {
          engine.once('upgrade', resolve);
          engine.once('upgradeError', reject);
        }), 15000, `websocket upgrade from ${localAddress}`);
      }
      assert.strictEqual(engine.transport.name, 'websocket');
      for (let i = 0; i < 5; i++) {
        const ack = await socket.timeout(10000).emitWithAck('echo', { from: localAddress, i });
        assert.deepStrictEqual(ack, { worker: hello.worker, transport: 'websocket', msg: { from: localAddress, i } });
      }
      return { localAddress, worker: hello.worker };
    }

    const addresses = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6'];
    const results = await Promise.all(addresses.map(connect));
    for (const r of results) assert.ok(ALL_WORKERS.includes(r.worker));

    // The same address lands on the same worker again (plain HTTP, new connections).
    for (const r of results) {
      for (let i = 0; i < 3; i++) {
        const res = await request(ready.port, 'GET', '/', { localAddress: r.localAddress });
        assert.strictEqual(JSON.parse(res.body).worker, r.worker, `requests from ${r.localAddress} changed worker`);
      }
    }
    t.diagnostic(`client address -> worker: ${results.map((r) => `${r.localAddress}->${r.worker}`).join(', ')}`);
  } finally {
    for (const c of clients) {
      c.socket.close();
      c.agent.destroy();
    }
    await p.kill();
  }
});

/** Why the prom-client example cannot run, or null when `rcluster/register` resolves. */
function registerUnavailable() {
  try {
    // From inside the package, the self-reference goes through "exports".
    require.resolve('rcluster/register');
    return null;
  } catch (err) {
    return `rcluster/register is not available (${err.code || err.message}): ` +
      'prom-client\'s AggregatorRegistry needs require(\'cluster\') to be rcluster';
  }
}

test('examples/prom-client: the primary serves the workers\' metrics, aggregated, on its own port', { timeout: 60000 }, async (t) => {
  const skip = registerUnavailable();
  if (skip) {
    t.skip(skip);
    return;
  }
  const p = example('prom-client');
  try {
    const ready = await p.next((m) => m.event === 'ready');
    assert.notStrictEqual(ready.metricsPort, ready.port);
    const N = 12;
    const bodies = await getMany(ready.port, N);
    const perWorker = {};
    for (const b of bodies) perWorker[b.worker] = (perWorker[b.worker] || 0) + 1;
    assert.deepStrictEqual(Object.keys(perWorker).map(Number).sort(), ALL_WORKERS);

    const res = await get(ready.metricsPort, '/metrics');
    assert.strictEqual(res.status, 200, res.body);
    const value = (re) => {
      const m = res.body.match(re);
      assert.ok(m, `${re} not in:\n${res.body}`);
      return Number(m[1]);
    };
    // The aggregator summed the workers' counters, and kept the per-worker labels apart.
    assert.strictEqual(value(/^example_http_requests_all_total (\d+)$/m), N);
    for (const [worker, n] of Object.entries(perWorker)) {
      assert.strictEqual(value(new RegExp(`^example_http_requests_total\\{worker="${worker}"\\} (\\d+)$`, 'm')), n);
    }
    // Default metrics came from both workers too.
    assert.match(res.body, /^process_cpu_user_seconds_total \S+$/m);
    assert.strictEqual((await get(ready.metricsPort, '/other')).status, 404);
  } finally {
    await p.kill();
  }
});
