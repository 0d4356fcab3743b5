'use strict';

// systemd socket activation: the primary serves the listening socket it
// inherited (fd 3) for the matching address and port.

const test = require('node:test');
const assert = require('node:assert');
const net = require('net');
const path = require('path');
const { spawn } = require('child_process');
const readline = require('readline');
const { get, waitGone } = require('./helpers');

test('socket activation: LISTEN_FDS sockets are used for matching listen() calls', { timeout: 30000 }, async () => {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  const fixture = path.join(__dirname, 'fixtures', 'socket-activation.js');
  // LISTEN_PID must be the service's own pid: let a shell exec node.
  const child = spawn('/bin/sh', ['-c', `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec "${process.execPath}" "${fixture}"`], {
    env: { ...process.env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'inherit', server._handle],
  });
  let pids = [];
  try {
    const ready = await new Promise((resolve, reject) => {
      readline.createInterface({ input: child.stdout }).on('line', (l) => {
        try {
          const m = JSON.parse(l);
          if (m.event === 'serving') resolve(m);
        } catch { /* not ours */ }
      });
      child.on('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    pids = ready.pids;
    // The parent keeps its copy open, so a new bind of this port would fail
    // with EADDRINUSE: serving proves the inherited socket is used.
    server.close();
    assert.strictEqual(ready.port, port);
    assert.deepStrictEqual(ready.env, { pid: true, fds: '1' });
    assert.deepStrictEqual(ready.left, [], 'LISTEN_* variables are removed');
    assert.strictEqual(ready.notified, false, 'no NOTIFY_SOCKET: nothing sent');
    const seen = new Set();
    for (let i = 0; i < 6; i++) {
      const r = await get(port);
      assert.strictEqual(r.status, 200);
      seen.add(r.body);
    }
    assert.deepStrictEqual([...seen].sort(), ['worker 1 false', 'worker 2 false']);
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', r)));
    for (const pid of await waitGone(pids, 2000)) { try { process.kill(pid, 'SIGKILL'); } catch {} }
    server.close();
  }
});
