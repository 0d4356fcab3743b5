'use strict';

// Runs every benchmark in bench/ one after the other (never in parallel: they
// would measure each other). Arguments are passed on to each benchmark.
//
//   npm run bench                 # all, default settings
//   npm run bench -- --duration 2 # all, shorter runs

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const BENCH_TIMEOUT_MS = 30 * 60 * 1000; // each benchmark also bounds itself

const benches = fs
  .readdirSync(__dirname)
  .filter((f) => f.endsWith('.js') && f !== 'run.js')
  .sort();

let failed = 0;
for (const file of benches) {
  console.log(`\n==> bench/${file}\n`);
  const r = spawnSync(process.execPath, [path.join(__dirname, file), ...process.argv.slice(2)], {
    stdio: 'inherit',
    timeout: BENCH_TIMEOUT_MS,
    killSignal: 'SIGTERM',
  });
  if (r.error || r.status !== 0) {
    failed++;
    console.log(`\n${file} failed (${r.error ? r.error.message : r.signal || `exit code ${r.status}`})`);
  }
}
process.exitCode = failed ? 1 : 0;
