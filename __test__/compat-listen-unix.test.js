'use strict';

// Unix-domain socket paths in workers, including a relative path too long
// for sockaddr_un once made absolute.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('unix socket paths: long relative path, address(), service, cleanup', async (mod) => {
  const p = run('compat-listen-unix.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    assert.ok(r.longAbs.length > 107, 'the absolute path does not fit sockaddr_un');
    // address() is the path as given to listen().
    for (const a of r.addresses) assert.deepStrictEqual(a, { long: 'w.sock', short: r.short });
    assert.deepStrictEqual([...new Set(r.servedLong)].sort(), ['1:long', '2:long']);
    assert.deepStrictEqual([...new Set(r.servedShort)].sort(), ['1:short', '2:short']);
    assert.deepStrictEqual(r.filesWhileOpen, [true, true]);
    // A path too long even relative: EINVAL (Node 24, libuv 1.52). Node 20
    // and 22 (libuv 1.46, 1.51) bind a truncated path instead; rcluster
    // always says EINVAL (see DIFFERENCES-listen.md).
    const einval = { code: 'EINVAL', errno: -22, syscall: 'bind' };
    if (mod === 'rcluster' || Number(process.versions.node.split('.')[0]) >= 24) {
      assert.deepStrictEqual(r.tooLong, einval);
    } else {
      assert.strictEqual(r.tooLong, 'listening');
    }
    // The primary removes the socket files when the last worker closes.
    assert.deepStrictEqual(r.filesAfterClose, [false, false]);
    // 'listening' in the primary: addressType -1, port -1, the absolute path.
    const seen = r.listening.map((l) => JSON.stringify([l.id, l.info])).sort();
    const want = [];
    for (const id of [1, 2]) {
      want.push(JSON.stringify([id, { addressType: -1, address: r.longAbs, port: -1 }]));
      want.push(JSON.stringify([id, { addressType: -1, address: r.short, port: -1 }]));
    }
    assert.deepStrictEqual(seen, want.sort());
  } finally {
    await p.kill();
  }
});

both('unix socket paths: readableAll / writableAll set the socket file for every user', async (mod) => {
  const p = run('compat-listen-unix-mode.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    // libuv 1.51+ (Node 24, 22.23) sets exactly the asked-for bits; older
    // libuv (Node 20) adds them to what the umask (077) gave.
    const [major, minor] = process.versions.uv.split('.').map(Number);
    const exact = major > 1 || (major === 1 && minor >= 51);
    assert.deepStrictEqual(r.modes, exact
      ? { plain: '700', readable: '444', writable: '222', both: '666' }
      : { plain: '700', readable: '744', writable: '722', both: '766' });
    assert.deepStrictEqual(r.served, { plain: 'plain', readable: 'readable', writable: 'writable', both: 'both' });
  } finally {
    await p.kill();
  }
});
