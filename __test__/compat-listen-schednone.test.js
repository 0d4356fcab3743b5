'use strict';

// SCHED_NONE: the listening handle is passed to the workers, which accept
// themselves.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('SCHED_NONE: workers get the listening handle and accept themselves', async (mod) => {
  const p = run('compat-listen-schednone.js', [], { env: { MODULE: mod, NODE_CLUSTER_SCHED_POLICY: 'none' } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    assert.strictEqual(r.policy, r.SCHED_NONE);
    const [a, b] = r.reports;
    assert.deepStrictEqual(a.tcp, b.tcp, 'one socket, one port');
    assert.deepStrictEqual({ ...a.tcp, port: 0 }, { address: '127.0.0.1', family: 'IPv4', port: 0 });
    assert.strictEqual(a.pipe, r.sock);
    // A real listening handle with an fd, in each worker.
    for (const w of r.reports) assert.deepStrictEqual(w.handle, { ctor: 'TCP', fd: true, pipeCtor: 'Pipe', pipeFd: true });
    for (const s of r.served) assert.match(s, /^[12]$/);
    assert.match(r.servedPipe, /^[12]:pipe$/);
    assert.strictEqual(r.bindAfterClose, true, 'the primary let go of the port');
    assert.strictEqual(r.fileAfterClose, false, 'and removed the socket file');
    const seen = r.listening.map((l) => JSON.stringify([l.id, l.info])).sort();
    const want = [];
    for (const id of [1, 2]) {
      want.push(JSON.stringify([id, { addressType: 4, address: '127.0.0.1', port: a.tcp.port }]));
      want.push(JSON.stringify([id, { addressType: -1, address: r.sock, port: -1 }]));
    }
    assert.deepStrictEqual(seen, want.sort());
  } finally {
    await p.kill();
  }
});
