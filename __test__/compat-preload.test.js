'use strict';

// Preloads in workers (an APM agent's `-r`, in NODE_OPTIONS or in the
// primary's execArgv) run in a worker that is already set up, as in Node.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('a preload in NODE_OPTIONS or execArgv sees the worker set up; both are as given', async (mod) => {
  const p = run('compat-preload.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report');
    const seen = (tag, id) => [{ tag, isWorker: true, isPrimary: false, id, send: 'function', connected: true }];
    assert.deepStrictEqual(r.reports, {
      1: { preloads: seen('env', 1), nodeOptions: `--require "${r.hook}"`, execArgv: ['--require', r.hook] },
      2: { preloads: seen('argv', 2), nodeOptions: null, execArgv: ['--require', r.hook] },
    });
  } finally {
    await p.kill();
  }
});
