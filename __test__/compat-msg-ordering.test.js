'use strict';

// Message order, run against node:cluster and rcluster alike.
const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('messages keep their order both ways, and a worker\'s last messages precede disconnect/exit', async (mod) => {
  const p = run('compat-msg-ordering.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 25000);
    assert.deepStrictEqual(r.many, { toPrimary: true, toWorker: true, counts: [2000, 2000] });
    const tail = Array.from({ length: 50 }, (_, i) => i);
    // process.disconnect(): every message first, then 'disconnect' and 'exit' 0
    // (rcluster always in that order; Node in whichever order libuv notices).
    assert.deepStrictEqual(r.disconnect.slice(0, 50), tail);
    assert.deepStrictEqual(r.disconnect.slice(50).sort(), ['disconnect', 'exit:0']);
    if (mod === 'rcluster') assert.deepStrictEqual(r.disconnect.slice(50), ['disconnect', 'exit:0']);
    // process.exit(): every message first; Node does not order 'disconnect'
    // and 'exit' between themselves.
    assert.deepStrictEqual(r.exit.slice(0, 50), tail);
    assert.deepStrictEqual(r.exit.slice(50).sort(), ['disconnect', 'exit:7']);
  } finally {
    await p.kill();
  }
});

for (const how of ['loop', 'sigkill']) {
  both(`a few messages sent before ${how === 'loop' ? 'an event loop that never comes back' : 'a death by SIGKILL'} all arrive`, async (mod) => {
    const p = run('compat-msg-stuck.js', [], { env: { MODULE: mod, HOW: how } });
    try {
      const r = await p.next((m) => m.event === 'report');
      assert.deepStrictEqual(r.got, [0, 1, 2, 3, 4].map((step) => ({ step })));
      assert.deepStrictEqual(r.exit, [null, 'SIGKILL']);
    } finally {
      await p.kill();
    }
  });
}

for (const warm of [false, true]) {
  both(`messages sent right after worker.disconnect()${warm ? ' (after another one)' : ''} reach the worker before its 'disconnect'`, async (mod) => {
    const env = { MODULE: mod };
    if (warm) env.WARM = '1';
    const p = run('compat-msg-after-disconnect.js', [], { env });
    try {
      const { seen } = await p.next((m) => m.event === 'seen');
      // The worker had begun to disconnect when they came: not connected.
      // Node's worker emits them when it read them with its disconnect,
      // which depends on timing (most runs on Node 20, fewer on Node 24);
      // rcluster's always does.
      const after = ['after-1:false', 'after-2:false'];
      const before = warm ? ['before:true'] : [];
      assert.deepStrictEqual(seen.slice(0, before.length), before);
      const got = seen.filter((e) => e.startsWith('after-'));
      assert.deepStrictEqual(got, mod === 'rcluster' ? after : after.slice(0, got.length));
      // 'disconnect' after them; the answer to the first fails (after
      // 'disconnect' when both came in one read, as in Node).
      const last = got.length ? seen.indexOf(got[got.length - 1]) : before.length - 1;
      assert.ok(seen.indexOf('disconnect') > last, seen.join());
      const reply = seen.indexOf('reply:ERR_IPC_CHANNEL_CLOSED');
      if (got.length) assert.ok(reply > seen.indexOf('after-1:false'), seen.join());
      else assert.strictEqual(reply, -1);
      assert.strictEqual(seen.length, before.length + got.length + (got.length ? 2 : 1), seen.join());
      const { exit } = await p.next((m) => m.event === 'exit');
      assert.deepStrictEqual(exit, [0, null]);
      // Node's writes race its worker's close: a message the worker did not
      // get may have failed with EPIPE (seen on Node 22). rcluster's never do.
      const errors = p.lines.filter((m) => m.event === 'error').map((m) => m.code);
      if (mod === 'rcluster') assert.deepStrictEqual(errors, []);
      else {
        assert.ok(errors.length <= after.length - got.length, errors.join());
        assert.ok(errors.every((code) => code === 'EPIPE'), errors.join());
      }
    } finally {
      await p.kill();
    }
  });
}
