'use strict';

// Rolling reload under real load: every worker replaced three times while
// clients keep sending requests, keep-alive and new-connection-per-request.
// Every request must get a 200: no connection error, no reset.

const test = require('node:test');
const assert = require('node:assert');
const { run, load } = require('./helpers');

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
