'use strict';

// The dispatch policies with real workers: every policy spreads new
// connections over the workers, `hash` keeps a client address on one worker
// (and moves only a removed worker's clients, and holds a burst of one
// client's connections larger than the window), `least` prefers the idle
// worker, and a worker with a stuck event loop holds at most its window of
// connections while the others serve the rest.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { run, linuxOnly } = require('./helpers');
const { getFrom, hold, command, tally } = require('./policy-lib');

async function many(port, total, concurrency = 8, opts = {}) {
  const bodies = [];
  let next = 0;
  async function loop() {
    while (next < total) {
      next++;
      const r = await getFrom(port, opts);
      assert.strictEqual(r.status, 200);
      bodies.push(r.body);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop));
  return bodies;
}

for (const policy of ['rr', 'least', 'hash', 'reuseport']) {
  test(`${policy}: new connections are spread over the workers`, { timeout: 60000, skip: policy === 'reuseport' && linuxOnly('SO_REUSEPORT balancing') }, async () => {
    const p = run('policy-cluster.js', [], { env: { WORKERS: '2', POLICY: policy } });
    try {
      const { port } = await p.next((m) => m.event === 'ready');
      let bodies;
      if (policy === 'hash') {
        // Sticky by address: spread comes from many client addresses.
        bodies = [];
        for (let h = 2; h < 42; h++) bodies.push((await getFrom(port, { localAddress: `127.0.0.${h}` })).body);
      } else {
        bodies = await many(port, 200);
      }
      const counts = tally(bodies);
      assert.deepStrictEqual(Object.keys(counts).sort(), ['1', '2'], JSON.stringify(counts));
      // A real share each (the kernel balances reuseport by connection hash).
      const total = bodies.length;
      assert.ok(counts['1'] >= total * 0.1 && counts['2'] >= total * 0.1, JSON.stringify(counts));
    } finally {
      await p.kill();
    }
  });
}

test('per listener: listen({ schedulingPolicy: \'hash\' }) in an rr cluster is sticky', { timeout: 60000 }, async () => {
  const p = run('policy-cluster.js', [], { env: { WORKERS: '3', POLICY: 'hash', POLICY_VIA: 'listen' } });
  try {
    const { port, policy } = await p.next((m) => m.event === 'ready');
    assert.strictEqual(policy, 2);
    for (let h = 2; h < 8; h++) {
      const seen = new Set();
      for (let i = 0; i < 4; i++) seen.add((await getFrom(port, { localAddress: `127.0.0.${h}` })).body);
      assert.strictEqual(seen.size, 1, `127.0.0.${h} was served by ${[...seen]}`);
    }
  } finally {
    await p.kill();
  }
});

test('hash: a client address stays on its worker; a removed worker moves only its own clients', { timeout: 60000 }, async () => {
  const p = run('policy-cluster.js', [], { env: { WORKERS: '3', POLICY: 'hash' } });
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    const owner = {};
    for (let round = 0; round < 3; round++) {
      for (let h = 2; h < 32; h++) {
        const addr = `127.0.0.${h}`;
        const { body } = await getFrom(port, { localAddress: addr });
        if (round === 0) owner[addr] = body;
        else assert.strictEqual(body, owner[addr], `${addr} moved from worker ${owner[addr]} to ${body}`);
      }
    }
    assert.deepStrictEqual([...new Set(Object.values(owner))].sort(), ['1', '2', '3'], 'every worker has clients');
    // Worker 3 goes away: clients of 1 and 2 stay where they were.
    command(p, { cmd: 'die', id: 3 });
    await p.next((m) => m.event === 'exit' && m.id === 3);
    for (let h = 2; h < 32; h++) {
      const addr = `127.0.0.${h}`;
      const { body } = await getFrom(port, { localAddress: addr });
      if (owner[addr] === '3') assert.notStrictEqual(body, '3');
      else assert.strictEqual(body, owner[addr], `${addr} of worker ${owner[addr]} moved to ${body}`);
    }
  } finally {
    await p.kill();
  }
});

test('hash: a burst of one client\'s connections larger than the window stays on its worker', { timeout: 60000 }, async () => {
  // 40 connections at once from one address (the window is 16): the
  // dispatcher waits for the client's worker to acknowledge rather than
  // sending the rest elsewhere (before, 14 to 17 of the 40 went to the
  // other worker). A little
  // slack for a loaded machine, where a worker that acks later than the
  // patience (20 ms) loses a connection or two to its next choice.
  const p = run('policy-cluster.js', [], { env: { WORKERS: '2', POLICY: 'hash' } });
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    // A few of the client's connections one at a time first: a fresh
    // worker's first ones (code that runs for the first time) can be
    // acknowledged after the patience on a loaded machine (32/8 in a suite
    // run beside four busy loops, 33/7 in 1 of 25 runs; 0 of 25 after these).
    for (let i = 0; i < 8; i++) await getFrom(port, { localAddress: '127.0.0.9' });
    const bodies = await Promise.all(Array.from({ length: 40 }, () => getFrom(port, { localAddress: '127.0.0.9' })));
    const counts = Object.values(tally(bodies.map((b) => b.body))).sort((a, b) => b - a);
    assert.ok(counts[0] >= 36, `one client's 40 connections were split ${counts.join('/')}`);
  } finally {
    await p.kill();
  }
});

test('least: new connections go to the worker with fewer open connections', { timeout: 60000 }, async () => {
  // Worker 1 alone serves a second port: connections held open there make it
  // the busy worker; the policy's port is served by both.
  const p = run('policy-cluster.js', [], { env: { WORKERS: '2', POLICY: 'least', SIDE: '1' } });
  const held = [];
  try {
    const { port, side } = await p.next((m) => m.event === 'ready');
    for (let i = 0; i < 6; i++) {
      const h = await hold(side);
      assert.strictEqual(h.worker, '1');
      held.push(h);
    }
    // One at a time, 30 short requests: all served by the idle worker 2.
    const bodies = [];
    for (let i = 0; i < 30; i++) bodies.push((await getFrom(port)).body);
    assert.deepStrictEqual(tally(bodies), { 2: 30 });
    // Worker 1's connections close: its count comes down (reported without a
    // message per connection) and it gets connections again.
    for (const h of held.splice(0)) h.req.destroy();
    let back = false;
    for (let i = 0; i < 400 && !back; i++) back = (await getFrom(port)).body === '1';
    assert.ok(back, 'worker 1 serves again once idle');
  } finally {
    for (const h of held) h.req.destroy();
    await p.kill();
  }
});

for (const policy of ['rr', 'least', 'hash']) {
  test(`${policy}: a worker with a stuck event loop gets at most its window; the other serves the rest`, { timeout: 90000 }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rcl-stuck-'));
    const flag = path.join(dir, 'go');
    const p = run('policy-cluster.js', [], { env: { WORKERS: '2', POLICY: policy } });
    try {
      const { port } = await p.next((m) => m.event === 'ready');
      // Under hash every request below comes from 127.0.0.1: block the worker
      // it is sticky to, so its window fills and the rest must overflow.
      const stuck = policy === 'hash' ? (await getFrom(port)).body : '1';
      const free = stuck === '1' ? '2' : '1';
      command(p, { cmd: 'block', id: Number(stuck), flag });
      await p.next((m) => m.event === 'blocking' && String(m.id) === stuck);
      // More concurrent clients than the window (16): when every connection
      // the stuck worker holds has a client waiting on it, the other clients
      // still get answers.
      const servedWhileStuck = [];
      const pending = [];
      let stop = false;
      async function loop() {
        while (!stop) {
          const r = await getFrom(port);
          if (!stop) servedWhileStuck.push(r.body);
          if (servedWhileStuck.length >= 100) stop = true;
        }
      }
      for (let i = 0; i < 24; i++) pending.push(loop());
      // Wait (bounded) for 100 answers from the free worker, then unblock.
      const end = Date.now() + 60000;
      while (servedWhileStuck.length < 100 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      const unblockedEarly = p.lines.some((m) => m.event === 'unblocked');
      stop = true;
      fs.writeFileSync(flag, '');
      await Promise.all(pending); // the stuck worker's clients are answered once it runs again
      assert.strictEqual(unblockedEarly, false);
      assert.ok(servedWhileStuck.length >= 100, `only ${servedWhileStuck.length} answered while a worker was stuck`);
      assert.deepStrictEqual(tally(servedWhileStuck.slice(0, 100)), { [free]: 100 });
    } finally {
      fs.writeFileSync(flag, '');
      await p.kill();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
