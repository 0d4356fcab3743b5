'use strict';

// The core path: connections accepted by the primary's Rust reactor and
// served by workers, without the primary's JavaScript.

const test = require('node:test');
const assert = require('node:assert');
const { run, get } = require('./helpers');

test('2 workers behind one port answer 1,000 requests each, new connection per request', { timeout: 120000 }, async () => {
  const p = run('http-cluster.js', [], { env: { WORKERS: '2' } });
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    const counts = {};
    let next = 0;
    const total = 2000;
    async function loop() {
      while (next < total) {
        next++;
        const r = await get(port);
        assert.strictEqual(r.status, 200);
        counts[r.body] = (counts[r.body] || 0) + 1;
      }
    }
    await Promise.all(Array.from({ length: 8 }, loop));
    assert.deepStrictEqual(Object.keys(counts).sort(), ['1', '2']);
    assert.strictEqual(counts['1'] + counts['2'], total);
    // Round robin: both workers carry a real share.
    assert.ok(counts['1'] > total * 0.25 && counts['2'] > total * 0.25, JSON.stringify(counts));
  } finally {
    await p.kill();
  }
});

test('workers keep being served while the primary JS thread is blocked', { timeout: 60000 }, async () => {
  const p = run('http-cluster.js', [], { env: { WORKERS: '2', BUSY_MS: '2000' } });
  try {
    const { port } = await p.next((m) => m.event === 'ready');
    await p.next((m) => m.event === 'busy-start');
    // Give the primary a moment to be inside its loop, then serve requests.
    await new Promise((r) => setTimeout(r, 200));
    const seen = new Set();
    for (let i = 0; i < 100; i++) {
      const r = await get(port);
      assert.strictEqual(r.status, 200);
      seen.add(r.body);
    }
    // All 100 were answered while the primary was still blocked.
    assert.strictEqual(p.lines.some((m) => m.event === 'busy-end'), false,
      'requests finished only after the primary unblocked');
    assert.deepStrictEqual([...seen].sort(), ['1', '2']);
    await p.next((m) => m.event === 'busy-end');
  } finally {
    await p.kill();
  }
});
