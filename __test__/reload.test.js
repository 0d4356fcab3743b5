'use strict';

// Rolling reload under real load: every worker replaced three times while
// clients keep sending requests, keep-alive and new-connection-per-request.
// Every request must get a 200: no connection error, no reset.

const test = require('node:test');
const assert = require('node:assert');
const http = require('http');
const { run } = require('./helpers');

function load(port, { keepAlive, concurrency }) {
  const agent = new http.Agent({ keepAlive, maxSockets: concurrency });
  const stats = { ok: 0, errors: [], pids: new Set() };
  let running = true;
  async function loop() {
    while (running) {
      await new Promise((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
          let body = '';
          res.on('data', (d) => { body += d; });
          res.on('end', () => {
            if (res.statusCode === 200) stats.ok++;
            else stats.errors.push(`status ${res.statusCode}`);
            stats.pids.add(body);
            resolve();
          });
        });
        req.setTimeout(10000, () => req.destroy(new Error('timeout')));
        req.on('error', (err) => { stats.errors.push(err.code || err.message); resolve(); });
      });
    }
  }
  const loops = Array.from({ length: concurrency }, loop);
  return {
    stats,
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
      return stats;
    },
  };
}

for (const keepAlive of [true, false]) {
  test(`reload x3 under load drops nothing (${keepAlive ? 'keep-alive' : 'new connection per request'})`, { timeout: 90000 }, async () => {
    const p = run('supervise.js', ['reload'], { env: { WORKERS: '2' } });
    try {
      const { port } = await p.next((m) => m.event === 'serving');
      const l = load(port, { keepAlive, concurrency: 8 });
      await new Promise((r) => setTimeout(r, 300));
      for (let i = 1; i <= 3; i++) {
        p.child.stdin.write('reload\n');
        await p.next((m) => (m.event === 'reloaded' || m.event === 'reload-failed') &&
          p.lines.filter((x) => x.event === 'reloaded' || x.event === 'reload-failed').length === i, 30000);
        await new Promise((r) => setTimeout(r, 200));
      }
      const stats = await l.stop();
      assert.deepStrictEqual(p.lines.filter((m) => m.event === 'reload-failed'), []);
      assert.deepStrictEqual(stats.errors, [], `errors after ${stats.ok} good responses`);
      assert.ok(stats.ok > 100, `only ${stats.ok} requests`);
      // 2 original workers + 3 reloads x 2 slots, every one of them served.
      const forks = p.lines.filter((m) => m.event === 'fork').length;
      assert.strictEqual(forks, 8);
      assert.ok(stats.pids.size >= 6, `served by ${stats.pids.size} distinct workers`);
    } finally {
      await p.kill();
    }
  });
}
