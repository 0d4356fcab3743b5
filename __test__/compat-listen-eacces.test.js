'use strict';

// EACCES: a privileged port as a non-root primary (the test, as root, runs
// the cluster as nobody). Skipped where that cannot be arranged.

const assert = require('node:assert');
const { spawnSync } = require('child_process');
const fs = require('fs');
const { both } = require('./compat');
const { run } = require('./helpers');

function skipReason() {
  if (process.platform !== 'linux') return 'Linux only: macOS has no privileged ports';
  if (process.getuid() !== 0) return 'needs root to run the cluster as nobody';
  if (Number(fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8')) <= 1) {
    return 'every port is unprivileged on this machine';
  }
  const r = spawnSync(process.execPath, ['-e', "require(process.argv[1])", require.resolve('..')],
    { uid: 65534, gid: 65534 });
  if (r.status !== 0) return 'nobody cannot run node or load rcluster here';
  return null;
}

both('EACCES on a privileged port reaches the worker server as in Node, and it recovers', async (mod, t) => {
  const reason = skipReason();
  if (reason) return t.skip(reason);
  const p = run('compat-listen-eacces.js', [], { env: { MODULE: mod }, uid: 65534, gid: 65534 });
  try {
    const r = await p.next((m) => m.event === 'report');
    assert.deepStrictEqual(
      { code: r.code, errno: r.errno, syscall: r.syscall, port: r.port, message: r.message, recovered: r.recovered },
      { code: 'EACCES', errno: -13, syscall: 'bind', port: 1, message: 'bind EACCES 127.0.0.1:1', recovered: true });
  } finally {
    await p.kill();
  }
});
