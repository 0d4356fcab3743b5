'use strict';

// ESM imports work, a worker's entry may be ESM, and a TypeScript program
// typed against node:cluster compiles against rcluster's index.d.ts.

const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
const fs = require('fs');
const { execFileSync } = require('child_process');
const { run, get } = require('./helpers');

const ROOT = path.join(__dirname, '..');

test('tsc --noEmit: a node:cluster program compiles against rcluster types', { timeout: 60000 }, (t) => {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!fs.existsSync(tsc)) return t.skip('typescript is not installed');
  execFileSync(process.execPath, [tsc, '-p', path.join(__dirname, 'types', 'tsconfig.json')],
    { encoding: 'utf8', stdio: 'pipe' });
});

test('ESM: default and named imports, ESM worker entry, served through the primary', { timeout: 30000 }, async () => {
  const p = run('esm-cluster.mjs');
  try {
    const ready = await p.next((m) => m.event === 'ready');
    assert.deepStrictEqual(ready.named, { isPrimary: true, sameWorker: true, fork: 'function', SCHED_RR: 2 });
    const r = await get(ready.port);
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.body, 'esm worker');
  } finally {
    await p.kill();
  }
});
