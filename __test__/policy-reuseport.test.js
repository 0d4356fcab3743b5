'use strict';

// reuseport: one SO_REUSEPORT socket per worker slot, held by the primary.
// Connections the kernel queued on a dead worker's socket are served by its
// replacement in the same slot (or, when none comes within reusePortHold, by
// the other workers), not reset.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const { run, linuxOnly } = require('./helpers');
const { getFrom, command, tally } = require('./policy-lib');

test('reuseport: a restarted worker takes over its slot\'s socket and serves what queued on it', { timeout: 60000, skip: linuxOnly('SO_REUSEPORT balancing') }, async () => {
  // One worker, restarted by the supervisor after 500 ms: meanwhile the only
  // socket of the group belongs to the dead worker's slot.
  const p = run('policy-cluster.js', [], { env: { WORKERS: '1', POLICY: 'reuseport', RESTART: '500', HOLD: '30000' } });
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    assert.strictEqual((await getFrom(port)).body, '1');
    command(p, { cmd: 'die', id: 1 });
    await p.next((m) => m.event === 'exit' && m.id === 1);
    // Connections made now wait in the slot's queue instead of being refused.
    const waiting = Array.from({ length: 5 }, () => getFrom(port));
    const replaced = await p.next((m) => m.event === 'listening' && m.id !== 1);
    const bodies = (await Promise.all(waiting)).map((r) => r.body);
    assert.deepStrictEqual(bodies, Array(5).fill(String(replaced.id)));
    assert.strictEqual(replaced.port, port);
  } finally {
    await p.kill();
  }
});

test('reuseport: without a replacement, a dead worker\'s queued connections go to the others after reusePortHold', { timeout: 60000, skip: linuxOnly('SO_REUSEPORT balancing') }, async () => {
  const p = run('policy-cluster.js', [], { env: { WORKERS: '2', POLICY: 'reuseport', HOLD: '300' } });
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    command(p, { cmd: 'die', id: 1 });
    await p.next((m) => m.event === 'exit' && m.id === 1);
    // The kernel still spreads new connections over both slots for a while:
    // every one of them is answered, by worker 2.
    const bodies = [];
    for (let i = 0; i < 3; i++) {
      const rs = await Promise.all(Array.from({ length: 20 }, () => getFrom(port)));
      bodies.push(...rs.map((r) => r.body));
    }
    assert.deepStrictEqual(tally(bodies), { 2: 60 });
  } finally {
    await p.kill();
  }
});

test('reuseport: a worker disconnected by the primary hands what queued on its slot to the others at once', { timeout: 60000, skip: linuxOnly('SO_REUSEPORT balancing') }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcl-rp-'));
  const flag = path.join(dir, 'go');
  const p = run('policy-cluster.js', [], { env: { WORKERS: '2', POLICY: 'reuseport', HOLD: '30000' } });
  const sockets = [];
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    // Worker 1 is stuck: the connections the kernel puts on its slot wait.
    command(p, { cmd: 'block', id: 1, flag });
    await p.next((m) => m.event === 'blocking' && m.id === 1);
    const answers = [];
    for (let i = 0; i < 20; i++) {
      const s = net.connect(port, '127.0.0.1');
      sockets.push(s);
      let data = '';
      s.setEncoding('utf8');
      s.on('data', (d) => { data += d; });
      answers.push(new Promise((resolve, reject) => {
        s.on('end', () => resolve(data.slice(data.indexOf('\r\n\r\n') + 4)));
        s.on('error', reject);
      }));
      await new Promise((resolve) => s.once('connect', resolve));
      s.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    }
    // Every connection is established (queued on one slot or the other).
    command(p, { cmd: 'disconnect', id: 1 });
    const bodies = await Promise.all(answers);
    assert.strictEqual(p.lines.some((m) => m.event === 'unblocked'), false, 'answered while worker 1 was stuck');
    assert.deepStrictEqual(tally(bodies), { 2: 20 });
  } finally {
    for (const s of sockets) s.destroy();
    fs.writeFileSync(flag, '');
    await p.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
