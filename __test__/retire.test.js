'use strict';

// A worker that throws under load retires gracefully: no request fails.

const test = require('node:test');
const assert = require('node:assert');
const http = require('http');
const { run } = require('./helpers');

test('a worker that throws under load retires and is replaced; no request fails', { timeout: 60000 }, async () => {
  const p = run('retire.js');
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    const errors = [];
    const served = new Set();
    let ok = 0;
    let running = true;
    const loop = async () => {
      while (running) {
        await new Promise((resolve) => {
          http.get({ host: '127.0.0.1', port, agent }, (res) => {
            let b = '';
            res.on('data', (d) => { b += d; });
            res.on('end', () => { if (res.statusCode === 200) { ok++; served.add(b); } else errors.push(res.statusCode); resolve(); });
          }).on('error', (e) => { errors.push(e.code || e.message); resolve(); });
        });
      }
    };
    const loops = Array.from({ length: 8 }, loop);
    await new Promise((r) => setTimeout(r, 300));
    p.child.stdin.write('boom\n');
    const retire = await p.next((m) => m.event === 'retire');
    assert.strictEqual(retire.id, 1);
    assert.match(retire.info.reason, /kaboom/);
    await p.next((m) => m.event === 'exit' && m.id === 1);
    await new Promise((r) => setTimeout(r, 300));
    running = false;
    await Promise.all(loops);
    agent.destroy();
    assert.deepStrictEqual(errors, [], `after ${ok} good responses`);
    assert.ok(served.has('3'), 'the replacement serves');
    assert.ok(p.lines.some((m) => m.event === 'fork' && m.id === 3));
  } finally {
    await p.kill();
  }
});
