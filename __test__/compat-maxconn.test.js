'use strict';

// server.maxConnections in round-robin workers, against node:cluster and
// rcluster: a worker at its limit hands the connection back and another
// worker takes it (Node 21+ counts a limit of 0 as a limit; Node 20 reads 0
// as no limit), unless its server has dropMaxConnection (Node 22.12+ and
// 23.1+), when the worker takes it and net drops it ('drop').
const assert = require('node:assert');
const net = require('net');
const { both } = require('./compat');
const { run } = require('./helpers');

const [major, minor] = process.versions.node.split('.').map(Number);
const ZERO_IS_A_LIMIT = major >= 21;
const HAS_DROP_MAX = major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);

/** Connects; resolves with the greeting worker's id, or null when closed without one. */
function open(port, held) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    held.push(s);
    let id = null;
    s.setEncoding('utf8');
    s.once('data', (d) => {
      id = Number(d);
      resolve(id);
    });
    s.on('error', (err) => (err.code === 'ECONNRESET' ? resolve(null) : reject(err)));
    s.once('close', () => resolve(id));
    s.setTimeout(10000, () => reject(new Error('neither greeted nor closed')));
  });
}

function tally(ids) {
  const by = {};
  for (const id of ids) if (id !== null) by[id] = (by[id] || 0) + 1;
  return by;
}

both('maxConnections: a worker at its limit hands connections to the others', async (mod) => {
  const p = run('compat-maxconn.js', [], {
    env: { MODULE: mod, WORKERS: JSON.stringify([{ max: 0 }, { max: 1 }, {}]) },
  });
  const held = [];
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    const ids = await Promise.all(Array.from({ length: 8 }, () => open(port, held)));
    assert.ok(ids.every((id) => id !== null), `every connection is served: ${JSON.stringify(ids)}`);
    const by = tally(ids);
    assert.ok((by[2] || 0) <= 1, `worker 2 (maxConnections 1) took ${by[2]}`);
    if (ZERO_IS_A_LIMIT) {
      assert.deepStrictEqual(by, { 2: 1, 3: 7 });
    }
    // Handed on, not dropped.
    await new Promise((r) => setTimeout(r, 100));
    assert.deepStrictEqual(p.lines.filter((m) => m.event === 'drop'), []);
  } finally {
    for (const s of held) s.destroy();
    await p.kill();
  }
});

both('maxConnections with dropMaxConnection: the worker at its limit drops the connection', {
  skip: HAS_DROP_MAX ? false : `Node ${process.versions.node} has no server.dropMaxConnection`,
}, async (mod) => {
  const p = run('compat-maxconn.js', [], {
    env: { MODULE: mod, WORKERS: JSON.stringify([{ max: 1, drop: true }, {}]) },
  });
  const held = [];
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(await open(port, held));
    const by = tally(ids);
    const closed = ids.filter((id) => id === null).length;
    assert.strictEqual(by[1], 1, `worker 1 serves one connection: ${JSON.stringify(ids)}`);
    assert.ok(closed >= 1, `worker 1 drops the ones over its limit: ${JSON.stringify(ids)}`);
    assert.strictEqual((by[2] || 0) + 1 + closed, 6);
    const drops = await p.next((m) => m.event === 'drop' && p.lines.filter((x) => x.event === 'drop').length === closed);
    assert.strictEqual(drops.worker, 1);
  } finally {
    for (const s of held) s.destroy();
    await p.kill();
  }
});
