'use strict';

// worker.process: properties, methods and events of a forked ChildProcess.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('worker.process is shaped like a forked ChildProcess', async (mod) => {
  const p = run('compat-process.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report');
    assert.deepStrictEqual(r.shape, {
      pid: 'number', emitter: true, methods: ['function', 'function', 'function', 'function', 'function'],
      dispose: 'function', exitCode: null, signalCode: null, killed: false, connected: true, spawnfile: true,
      // [execPath, ...execArgv, exec, ...args], as fork() has it.
      spawnargs: [r.execPath, '--no-warnings', r.file, 'a1'],
      // stdin/stdout/stderr and stdio[] are null unless piped; stdio has the channel slot too.
      stdio: [true, true, true, true, true, true, true], stdioLength: 4,
    });
    // Unknown: names, null (only undefined means SIGTERM), objects (shown with %s), fractions, '0'.
    assert.deepStrictEqual(r.badSignals, ['SIGBOGUS', 'null', '{}', '2.5', '0'].map((s) =>
      ['TypeError', 'ERR_UNKNOWN_SIGNAL', `Unknown signal: ${s}`]));
    assert.strictEqual(r.pidMatches, true);
    assert.deepStrictEqual(r.dispose, [true, true]);
    // _channel, the deprecated alias of channel, on both ends (gone from
    // Node 25 on: DEP0129 is End-of-Life there).
    const legacy = Number(process.versions.node.split('.')[0]) < 25;
    assert.deepStrictEqual(r.legacyChannel, [legacy, legacy]);
    assert.deepStrictEqual(r.channelFd, [true, true]);
    // kill(0) succeeds and, as in Node, sets `killed`.
    assert.deepStrictEqual(r.kill0, [true, true]);
    assert.strictEqual(r.killTerm, true);
    assert.deepStrictEqual(r.after, { exitCode: null, signalCode: 'SIGTERM', killed: true, connected: false, kill: false });
    // send() after the channel closed: false, then 'error' on the process and the worker.
    assert.strictEqual(r.sendAfter, false);
    const names = r.events.map((e) => e[0]);
    assert.deepStrictEqual(r.events[0], ['spawn']);
    assert.deepStrictEqual(r.events[1][0], 'message');
    assert.deepStrictEqual(names.slice(2, 4).sort(), ['disconnect', 'exit']);
    assert.deepStrictEqual(r.events.find((e) => e[0] === 'exit'), ['exit', null, 'SIGTERM']);
    assert.deepStrictEqual(r.events.find((e) => e[0] === 'close'), ['close', null, 'SIGTERM']);
    assert.ok(names.indexOf('close') > names.indexOf('exit'));
    assert.deepStrictEqual(r.events.filter((e) => /error/.test(e[0])),
      [['worker-error', 'ERR_IPC_CHANNEL_CLOSED'], ['error', 'ERR_IPC_CHANNEL_CLOSED']]);
    assert.strictEqual(names.length, 7);
  } finally {
    await p.kill();
  }
});

both('a worker that cannot be spawned: error (exitCode -errno), close, disconnect, no exit', async (mod) => {
  const p = run('compat-process.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report');
    assert.strictEqual(r.badPid, true);
    assert.deepStrictEqual(r.bad, [
      ['error', 'ENOENT', true, true, -2, true],
      ['close', -2],
      ['disconnect', 'disconnected', false],
    ]);
  } finally {
    await p.kill();
  }
});

// Node's ChildProcess never emits 'close' after its parent called
// disconnect() (nodejs/node#19433, open since 2018; #65646): its count of
// things to close includes the channel, which only a close from the other
// side counts. rcluster emits it, as documented ("after a process has ended
// and the stdio streams of a child process have been closed").
both('worker.process.disconnect() from the primary: the worker exits, then close', async (mod) => {
  const p = run('compat-process-disconnect.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report');
    const expected = [
      ['connected', false, false],
      ['disconnect'],
      ['exit', 0, null],
    ];
    if (mod !== 'cluster') expected.push(['close', 0, null]);
    assert.deepStrictEqual(r.events, expected);
    assert.strictEqual(r.ead, false);
  } finally {
    await p.kill();
  }
});

// What holds the primary's loop (see DIFFERENCES.md: rcluster's are timers):
// something while workers live, nothing of the module's once they are gone.
both('the primary holds resources while its workers live, and none once they are gone', async (mod) => {
  const p = run('compat-resources.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report');
    assert.deepStrictEqual(r.before, []);
    assert.ok(r.during.length >= 4, r.during.join());
    if (mod !== 'cluster') assert.ok(r.during.every((x) => x === 'Timeout'), r.during.join());
    assert.deepStrictEqual(r.after, ['Timeout']);
  } finally {
    await p.kill();
  }
});
