'use strict';

// Worker methods and endings: disconnect(), kill()/destroy() from either
// side, crash, exit code, outside signal; isConnected(), isDead(),
// exitedAfterDisconnect, state.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('disconnect/kill/destroy from either side, crash, exit code and outside signal', async (mod) => {
  const p = run('compat-worker.js', [], { env: { MODULE: mod } });
  try {
    const { pid } = await p.next((m) => m.event === 'outside');
    process.kill(pid, 'SIGTERM');
    const r = await p.next((m) => m.event === 'report');
    const said = {};
    for (const l of p.lines) if (l.event === 'w') (said[l.DO] = said[l.DO] || []).push(l.what);

    const exits = {
      'primary-disconnect': [0, null], 'primary-kill': [null, 'SIGTERM'],
      'primary-kill-sigkill': [null, 'SIGKILL'], 'primary-destroy': [null, 'SIGINT'],
      'worker-disconnect': [0, null], 'worker-kill': [0, null], 'worker-destroy': [0, null],
      crash: [1, null], 'exit-code': [7, null], outside: [null, 'SIGTERM'],
    };
    // disconnect() twice in a row: Node's worker runs the second one once its
    // server has closed, after the first one closed the channel, and dies of
    // the unhandled ERR_IPC_DISCONNECTED (exit code 1, or 0 when the second
    // arrives too late to be read), and Node's primary may get EPIPE writing
    // the second; rcluster's worker leaves as after one (see DIFFERENCES).
    const twice = r['primary-disconnect-twice'].events.find((e) => e[0] === 'exit');
    exits['primary-disconnect-twice'] = mod === 'rcluster' || twice[1] === 0 ? [0, null] : [1, null];
    // Node's primary kill()/destroy() only signals: exitedAfterDisconnect stays false.
    const after = {
      'primary-disconnect': true, 'primary-disconnect-twice': true, 'worker-disconnect': true, 'worker-kill': true, 'worker-destroy': true,
    };
    for (const [name, exit] of Object.entries(exits)) {
      const c = r[name];
      assert.deepStrictEqual(c.before, [true, false], `${name}: connected and alive at fork`);
      assert.deepStrictEqual(c.events.slice(0, 2), [['online'], ['listening']], name);
      assert.deepStrictEqual(c.events.slice(2).sort(), [['disconnect'], ['exit', ...exit]], name);
      const flag = after[name] === true;
      const killed = /^primary-(kill|destroy)/.test(name);
      // After both events: not connected, dead, the flag, the state the last
      // event left ('dead' after 'exit', 'disconnected' after 'disconnect'),
      // process.killed. rcluster always ends with 'exit'.
      const last = c.events[c.events.length - 1][0];
      const state = last === 'exit' ? 'dead' : 'disconnected';
      if (mod === 'rcluster') assert.strictEqual(last, 'exit', name);
      assert.deepStrictEqual(c.after, [false, true, flag, state, killed], name);
      if (flag) {
        // Disconnect-initiated endings: disconnect strictly before exit.
        assert.deepStrictEqual(c.events.slice(2), [['disconnect'], ['exit', ...exit]], name);
        assert.deepStrictEqual(c.disconnectState, [false, false, true], name);
      }
    }
    // Primary disconnect(): returns the worker; flag set at once; channel still up.
    assert.strictEqual(r['primary-disconnect'].ret, true);
    assert.deepStrictEqual(r['primary-disconnect'].sync, [true, true]);
    // kill() returns nothing, leaves the flag alone.
    assert.strictEqual(r['primary-kill'].ret, 'undefined');
    assert.deepStrictEqual(r['primary-kill'].sync, [true, null]);

    // Inside the worker: servers close first, then the channel; the worker
    // exits with 0 once its loop drains (the timer still fires).
    assert.deepStrictEqual(said['primary-disconnect'], ['server-close', 'disconnect', 'timer', 'exit 0']);
    if (mod === 'rcluster') {
      assert.deepStrictEqual(said['primary-disconnect-twice'], ['server-close', 'disconnect', 'timer', 'exit 0']);
      assert.strictEqual(r['primary-disconnect-twice'].errors, undefined, 'no error from the second disconnect()');
    }
    assert.deepStrictEqual(said['worker-disconnect'],
      ['returned-worker true', 'server-close', 'disconnect', 'timer', 'exit 0']);
    // kill()/destroy() in the worker: disconnect, then exit at once.
    assert.deepStrictEqual(said['worker-kill'], ['disconnect', 'exit 0']);
    assert.deepStrictEqual(said['worker-destroy'], ['disconnect', 'exit 0']);
    assert.deepStrictEqual(said.crash, ['exit 1']);
    assert.deepStrictEqual(said['exit-code'], ['exit 7']);
  } finally {
    await p.kill();
  }
});

both("a worker's own disconnect()/destroy() waits for the primary's ack: the channel is up for the rest of the tick, then null", async (mod) => {
  const p = run('compat-worker-leave.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 15000);
    for (const DO of ['disconnect', 'destroy']) {
      const c = r[DO];
      assert.deepStrictEqual(c.messages, [{ sync: [true, true] }, { tick: [] }], DO);
      assert.strictEqual(c.atDisconnect, true, DO);
      assert.strictEqual(c.atExit, true, DO);
      assert.strictEqual(c.channelAtDisconnect, null, DO);
      assert.strictEqual(c.channelAtExit, null, DO);
      assert.deepStrictEqual(c.exit, [0, null], DO);
    }
    // After process.disconnect(), the worker's disconnect() cannot tell the
    // primary (Node's send helper gives up on a closed channel): the flag
    // stays false there.
    const c = r['process-then-worker'];
    assert.deepStrictEqual(c.messages, []);
    assert.strictEqual(c.atDisconnect, false);
    assert.strictEqual(c.atExit, false);
    assert.deepStrictEqual(c.exit, [0, null]);
    // The worker's process.disconnect() racing the primary's disconnect():
    // Node's worker runs the primary's disconnect after its own and gets
    // ERR_IPC_DISCONNECTED on process and worker (fatal without listeners);
    // rcluster's leaves as after one disconnect (see DIFFERENCES.md).
    const race = r['race-primary'];
    for (const code of race.errors || []) assert.strictEqual(code, 'EPIPE');
    assert.strictEqual(race.atExit, true);
    assert.deepStrictEqual(race.exit, [0, null]);
    const errors = p.lines.filter((m) => /^worker-(process-)?error$/.test(m.event));
    if (mod === 'rcluster') assert.deepStrictEqual(errors, []);
    else assert.ok(errors.every((e) => e.code === 'ERR_IPC_DISCONNECTED'), JSON.stringify(errors));
  } finally {
    await p.kill();
  }
});

both('workers: a dgram port given as a numeric string is shared; a replaced cluster._getServer is used', async (mod) => {
  const p = run('compat-worker-getserver.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 15000);
    assert.strictEqual(r.workers.length, 2);
    for (const w of r.workers) assert.deepStrictEqual(w, { udpPort: r.port, seen: ['udp4', 4] });
  } finally {
    await p.kill();
  }
});
