'use strict';

// cluster.settings as workers get them, and the errors of bad settings.

const assert = require('node:assert');
const os = require('node:os');
const { both } = require('./compat');
const { run } = require('./helpers');

both('exec, args, execArgv, cwd, silent, stdio, uid/gid, windowsHide, inspectPort, serialization', { timeout: 45000 }, async (mod) => {
  const p = run('compat-settings.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 30000);
    const E = (name, code, message) => [name, code, message];
    const received = (s) => `Received type ${s}`;
    assert.deepStrictEqual(r.errors, [
      E('RangeError', 'ERR_SOCKET_BAD_PORT', 'Port should be >= 0 and < 65536. Received null.'),
      E('RangeError', 'ERR_SOCKET_BAD_PORT', `Port should be >= 0 and < 65536. ${received('number (70000)')}.`),
      E('RangeError', 'ERR_SOCKET_BAD_PORT', `Port should be >= 0 and < 65536. ${received("string ('x')")}.`),
      E('TypeError', 'ERR_INVALID_ARG_TYPE', `The "modulePath" argument must be of type string or an instance of Buffer or URL. ${received('number (42)')}`),
      E('TypeError', 'ERR_INVALID_ARG_TYPE', `The "args" argument must be an instance of Array. ${received("string ('abc')")}`),
      E('Error', 'ERR_CHILD_PROCESS_IPC_REQUIRED', "Forked processes must have an IPC channel, missing value 'ipc' in options.stdio"),
      E('Error', 'ERR_IPC_ONE_PIPE', 'Child process can have only one IPC pipe'),
      E('TypeError', 'ERR_INVALID_ARG_VALUE', "The argument 'stdio' is invalid. Received 'bogus'"),
      E('TypeError', 'ERR_INVALID_ARG_VALUE', "The argument 'stdio' is invalid. Received {}"),
      E('TypeError', 'ERR_INVALID_ARG_TYPE', `The "options.cwd" property must be of type string or an instance of Buffer or URL. ${received('number (42)')}`),
      ...(Number(process.versions.node.split('.')[0]) < 25 ? [
        E('TypeError', 'ERR_INVALID_ARG_TYPE', `The "options.uid" property must be int32. ${received("string ('x')")}`),
        E('TypeError', 'ERR_INVALID_ARG_TYPE', `The "options.gid" property must be int32. ${received('number (1.5)')}`),
      ] : [
        // Node 25 checks them with validateInt32: a number, then an integer.
        E('TypeError', 'ERR_INVALID_ARG_TYPE', `The "options.uid" property must be of type number. ${received("string ('x')")}`),
        E('RangeError', 'ERR_OUT_OF_RANGE', 'The value of "options.gid" is out of range. It must be an integer. Received 1.5'),
      ]),
      E('TypeError', 'ERR_INVALID_ARG_TYPE', `The "options.windowsHide" property must be of type boolean. ${received("string ('x')")}`),
      E('TypeError', 'ERR_INVALID_ARG_VALUE', "The property 'options.serialization' must be one of: undefined, 'json', 'advanced'. Received 'x'"),
      E('TypeError', null, 'cluster.settings.execArgv is not iterable'),
      E('TypeError', 'ERR_INVALID_ARG_VALUE', "The argument 'args[2]' must be a string without null bytes. Received 'b\\x00c'"),
      E('TypeError', 'ERR_INVALID_ARG_VALUE', "The property 'options.execArgv[1]' must be a string without null bytes. Received 'x\\x00'"),
      E('TypeError', 'ERR_INVALID_ARG_VALUE', "The property 'options.env['A']' must be a string without null bytes. Received 'a\\x00b'"),
    ]);
    assert.strictEqual(r.stringExecArgv, 'TypeError');
    assert.deepStrictEqual(r.workersAfterErrors, []);

    const w = r.workers;
    const plain = { argv: ['--role', 'worker'], execArgv: [], cwd: process.cwd(), exec: true };
    for (const [name, c] of Object.entries(w)) assert.deepStrictEqual(c.exit, [0, null], name);

    // exec, args (kept verbatim), execArgv, cwd, serialization 'advanced', windowsHide accepted.
    assert.deepStrictEqual(w.basic.report, {
      argv: ['--role', 'worker', 'x y', ''], execArgv: ['--no-warnings', '--stack-size=900'],
      cwd: os.tmpdir(), exec: true,
    });
    assert.strictEqual(w.basic.type, 'bigint');
    assert.deepStrictEqual(w.basic.streams, [null, null, null]);
    assert.deepStrictEqual(r.settings, { serialization: 'advanced', windowsHide: true, cwd: os.tmpdir() });

    // silent: the worker's stdio are piped to the primary; 'close' after the output.
    const s = w.silent;
    assert.deepStrictEqual(s.report, plain);
    // [readable, writable]: stdin only writable, stdout and stderr both ways
    // (they are sockets, as in Node).
    assert.deepStrictEqual(s.streams, [[false, true], [true, true], [true, true]]);
    assert.strictEqual(s.stdout, 'got:ping\n');
    assert.strictEqual(s.stderr, 'err-line\n');
    assert.deepStrictEqual(s.close, [0, null]);

    // stdio array (wins over silent): pipes for 0 and 1, stderr inherited.
    const st = w.stdio;
    assert.deepStrictEqual({ ...st.report, fds: undefined }, { ...plain, fds: undefined });
    assert.notStrictEqual(st.streams[0], null);
    assert.notStrictEqual(st.streams[1], null);
    assert.strictEqual(st.streams[2], null);
    // Node's 'pipe' slots are stream socketpairs (a pipe's 64 KiB buffer
    // makes a synchronous writer block or get EAGAIN four times as often).
    assert.deepStrictEqual(st.report.fds.slice(0, 2), ['socket', 'socket']);
    // stdio as a string: 'ignore' for 0-2, plus the channel.
    assert.deepStrictEqual(w['stdio-string'].report.fds, ['/dev/null', '/dev/null', '/dev/null']);
    assert.deepStrictEqual(w['stdio-string'].streams, [null, null, null]);

    // Node's channel variables given in env: overridden, then removed.
    assert.deepStrictEqual(w['channel-env'].report.env, [false, false]);
    // rcluster only: NODE_CHANNEL_FD given too (Node's worker dies of EBADF;
    // see DIFFERENCES). Its exit code is checked with the others above.
    if (mod === 'rcluster') assert.strictEqual(w['channel-fd'].report.env, false);
    // Arguments that are not strings: their strings in the worker, as given in spawnargs.
    assert.deepStrictEqual(w.coerced.report.argv, ['--role', 'worker', '1', 'true', 'null']);
    assert.deepStrictEqual(w.coerced.spawnargs, ['--role', 'worker', 1, true, null]);

    // uid/gid: as root, the worker runs as nobody with no supplementary groups.
    if (r.root) {
      assert.deepStrictEqual([w.uid.report.uid, w.uid.report.gid, w.uid.report.groups], [65534, 65534, [65534]]);
    } else {
      assert.deepStrictEqual([w.uid.report.uid, w.uid.report.gid], [process.getuid(), process.getgid()]);
    }

    // inspectPort: a number, a function (called once per fork), or debugPort + 1, + 2...
    const inspect = ['--inspect=127.0.0.1:0', '--inspect-port=0'];
    assert.deepStrictEqual(w['inspect-number'].report.execArgv, inspect);
    assert.deepStrictEqual(w['inspect-function'].report.execArgv, inspect);
    assert.strictEqual(r.inspectCalls, 1);
    const base = ['--inspect-port=0', '--inspect=127.0.0.1:0'];
    assert.deepStrictEqual(w['inspect-default-1'].report.execArgv, [...base, `--inspect-port=${r.debugPort + 1}`]);
    assert.deepStrictEqual(w['inspect-default-2'].report.execArgv, [...base, `--inspect-port=${r.debugPort + 2}`]);
  } finally {
    await p.kill();
  }
});

both("an extra 'pipe' stdio slot is a socket both ways", async (mod) => {
  const p = run('compat-stdio-extra.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 15000);
    assert.deepStrictEqual(r, { event: 'report', readable: true, writable: true, answer: 'got ping\n', isSocket: true, code: 0 });
  } finally {
    await p.kill();
  }
});
