'use strict';

// Bad input from the user: unserializable messages, handles that cannot be
// sent, invalid ports and policies, settings of the wrong type or value,
// fork() after shutdown. Each one throws (or rejects) with a code and a
// message that names what was wrong and what is allowed, and changes
// nothing: no worker is forked or lost and the channel stays up.

const test = require('node:test');
const assert = require('node:assert');
const { run } = require('../helpers');

test('bad input raises a clear error and changes nothing', { timeout: 30000 }, async (t) => {
  const p = run('bad-input.js');
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    const is = (entry, code, what, allowed) => {
      assert.ok(!entry.ok, `${what}: expected an error, got ${JSON.stringify(entry)}`);
      if (code) assert.strictEqual(entry.code, code, `${what}: ${JSON.stringify(entry)}`);
      if (allowed) assert.match(entry.message, allowed, what);
    };
    const TYPES = /must be one of type string, object, number, or boolean\. Received type/;
    // Messages and handles, from the primary and from the worker.
    is(r.send.circular, undefined, 'circular', /Converting circular structure to JSON/);
    is(r.send.bigint, 'ERR_INVALID_ARG_TYPE', 'bigint', TYPES);
    is(r.send.symbol, 'ERR_INVALID_ARG_TYPE', 'symbol', TYPES);
    is(r.send.undefined, 'ERR_MISSING_ARGS', 'undefined', /"message" argument must be specified/);
    is(r.send['handle: plain object'], 'ERR_INVALID_HANDLE_TYPE', 'handle object', /handle type cannot be sent/);
    is(r.send['handle: number'], 'ERR_INVALID_HANDLE_TYPE', 'handle number', /handle type cannot be sent/);
    // Like Node: a server that is not listening has no handle; the message goes alone.
    assert.deepStrictEqual(r.send['handle: closed server'], { ok: true, result: 'boolean' });
    assert.deepStrictEqual(r.echo, ['m', { echo: 'after bad sends' }], 'the channel is still up');
    is(r.worker['process.send(circular)'], undefined, 'worker circular', /circular/);
    is(r.worker['process.send(1n)'], 'ERR_INVALID_ARG_TYPE', 'worker bigint', TYPES);
    is(r.worker['process.send(m, {})'], 'ERR_INVALID_HANDLE_TYPE', 'worker handle', /cannot be sent/);
    // Ports and policies.
    for (const k of ['listen(65536)', 'listen(-1)', 'listen({ port: 1.5 })']) {
      is(r.worker[k], 'ERR_SOCKET_BAD_PORT', k, /should be >= 0 and < 65536\. Received/);
    }
    is(r.worker['listen({ schedulingPolicy })'], 'ERR_INVALID_ARG_VALUE', 'policy',
      /must be one of: 'none', 'rr', 'reuseport', 'least', 'hash', or 1 to 5\. Received 'bogus'/);
    assert.strictEqual(r.worker.connected, true);
    // Settings: the error names the setting, what it must be, and what it got.
    const names = { exec: 'modulePath', stdio: 'stdio', uid: 'options.uid', cwd: 'options.cwd', windowsHide: 'options.windowsHide', serialization: 'options.serialization', args: 'args' };
    for (const [key, entry] of Object.entries(r.settings)) {
      assert.ok(['ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE', 'ERR_OUT_OF_RANGE'].includes(entry.code), `${key}: ${JSON.stringify(entry)}`);
      assert.ok(entry.message.includes(names[key] || `settings.${key}`), `${key}: ${entry.message}`);
      assert.match(entry.message, /Received/, key);
      if (key !== 'stdio') assert.match(entry.message, /must be|must specify|should be/, key);
    }
    assert.strictEqual(Object.keys(r.settings).length, 15);
    for (const [call, entry] of Object.entries(r.calls)) {
      assert.ok(entry.code && /must|after cluster\.shutdown/.test(entry.message), `${call}: ${JSON.stringify(entry)}`);
    }
    // Nothing changed: same workers, channel up; a rejected shutdown() was not a shutdown.
    assert.strictEqual(r.workers.afterBadCalls, r.workers.before);
    assert.strictEqual(r.connected, true);
    assert.strictEqual(r.workers.forkAfterRejectedShutdown.split(',').length, 2);
    // After shutdown(), fork() throws and forks nothing.
    assert.strictEqual(r.workers.afterShutdown, '');
    assert.strictEqual(r.calls['fork() after shutdown'].code, 'ERR_RCLUSTER_SHUT_DOWN');
    assert.match(r.calls['fork() after shutdown'].message, /after cluster\.shutdown\(\)/);
    assert.strictEqual(r.calls['scale(3) after shutdown'].code, 'ERR_RCLUSTER_SHUT_DOWN');
    assert.strictEqual(r.workers.afterForkAfterShutdown, '');
    t.diagnostic(`${Object.keys(r.send).length + Object.keys(r.worker).length - 1 + Object.keys(r.settings).length + Object.keys(r.calls).length} bad inputs tried`);
  } finally {
    assert.deepStrictEqual(await p.kill(), []);
  }
});
