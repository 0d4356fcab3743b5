'use strict';

// send() results and errors, run against node:cluster and rcluster alike.
const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

const OK = { calls: [{ sync: false, args: [null] }], ret: true };
const nodeError = (cls, code, message) =>
  ({ cls, code, message, string: `${cls} [${code}]: ${message}`, name: cls });
const MSG_TYPES = 'The "message" argument must be one of type string, object, number, or boolean.';
const invalidOptions = (received) => nodeError('TypeError', 'ERR_INVALID_ARG_TYPE',
  `The "options" argument must be of type object. Received ${received}`);
const badHandle = nodeError('TypeError', 'ERR_INVALID_HANDLE_TYPE', 'This handle type cannot be sent');
const closed = nodeError('Error', 'ERR_IPC_CHANNEL_CLOSED', 'Channel closed');
const disconnected = nodeError('Error', 'ERR_IPC_DISCONNECTED', 'IPC channel is already disconnected');
const cloneError = (what) => ({ cls: 'Error', message: `${what} could not be cloned.`, string: `Error: ${what} could not be cloned.`, name: 'Error' });

function common() {
  return {
    string: OK,
    'no-callback': { calls: [], ret: true },
    null: OK,
    number: OK,
    'handle-undefined': OK,
    'handle-null': OK,
    'options-object': OK,
    'options-undefined': OK,
    undefined: { calls: [], threw: nodeError('TypeError', 'ERR_MISSING_ARGS', 'The "message" argument must be specified') },
    symbol: { calls: [], threw: nodeError('TypeError', 'ERR_INVALID_ARG_TYPE', `${MSG_TYPES} Received type symbol (Symbol(s))`) },
    bigint: { calls: [], threw: nodeError('TypeError', 'ERR_INVALID_ARG_TYPE', `${MSG_TYPES} Received type bigint (1n)`) },
    function: { calls: [], threw: nodeError('TypeError', 'ERR_INVALID_ARG_TYPE', `${MSG_TYPES} Received function foo`) },
    'function-anonymous': { calls: [], threw: nodeError('TypeError', 'ERR_INVALID_ARG_TYPE', `${MSG_TYPES} Received function `) },
    'options-number': { calls: [], threw: invalidOptions('type number (5)') },
    'options-string': { calls: [], threw: invalidOptions("type string ('abc')") },
    'options-null': { calls: [], threw: invalidOptions('null') },
    'options-array': { calls: [], threw: invalidOptions('an instance of Array') },
    'options-boolean': { calls: [], threw: invalidOptions('type boolean (true)') },
    'handle-object': { calls: [], threw: badHandle },
    'handle-number': { calls: [], threw: badHandle },
    'handle-string': { calls: [], threw: badHandle },
    // A socket without a handle: Node sends the message alone.
    'handle-unopened-socket': OK,
  };
}

const EXPECTED = {
  json: {
    ...common(),
    'function-nested': OK,
    'symbol-nested': OK,
    'weakmap-nested': OK,
    'bigint-nested': { calls: [], threw: { cls: 'TypeError', message: 'Do not know how to serialize a BigInt', string: 'TypeError: Do not know how to serialize a BigInt', name: 'TypeError' } },
  },
  advanced: {
    ...common(),
    circular: OK,
    'bigint-nested': OK,
    'function-nested': { calls: [], threw: cloneError('f() {}') },
    'symbol-nested': { calls: [], threw: cloneError('Symbol(s)') },
    'weakmap-nested': { calls: [], threw: cloneError('#<WeakMap>') },
  },
};

function byName(results) {
  const out = {};
  for (const { name, ...rest } of results) out[name] = rest;
  return out;
}

function closedExpect(errorsSoFar) {
  return {
    results: [
      { name: 'closed-callback', calls: [{ sync: false, args: [closed] }], ret: false },
      { name: 'closed-no-callback', calls: [], ret: false, errorEventsSync: errorsSoFar },
      // disconnect() on a closed channel emits 'error' synchronously.
      { name: 'disconnect-again', calls: [], errorEventsSync: errorsSoFar + 1 },
    ],
  };
}

both('send(): return value, callbacks, serialization errors, options and handle validation, closed channel', async (mod) => {
  const p = run('compat-msg-errors.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 25000);
    const workerLines = p.lines.filter((m) => m.event === 'worker-closed');
    for (const ser of ['json', 'advanced']) {
      for (const side of ['primary', 'worker']) {
        const got = byName(r[ser][side]);
        const { circular } = got;
        delete got.circular;
        delete got['legacy-boolean-_send'];
        const expected = { ...EXPECTED[ser] };
        if (ser === 'json') {
          // V8's wording; the class and the beginning are what matter.
          assert.strictEqual(circular.threw.cls, 'TypeError');
          assert.match(circular.threw.message, /^Converting circular structure to JSON/);
          assert.deepStrictEqual(circular.calls, []);
        } else {
          assert.deepStrictEqual(circular, expected.circular);
          delete expected.circular;
        }
        assert.deepStrictEqual(got, expected, `${ser} ${side}`);
      }
      // Sends after the channel closed: ERR_IPC_CHANNEL_CLOSED to the
      // callback or as 'error' (both asynchronously), and false.
      const c = r[ser].primaryClosed;
      assert.deepStrictEqual(c.results, closedExpect(0).results);
      assert.deepStrictEqual(c.errors, [disconnected, closed]);
      const d = r[ser].primaryDead;
      assert.deepStrictEqual(d.results, closedExpect(0).results);
      assert.deepStrictEqual(d.errors, [disconnected, closed]);
    }
    // In the worker after process.disconnect(), the same.
    assert.strictEqual(workerLines.length, 2);
    for (const w of workerLines) {
      assert.deepStrictEqual(w.results, closedExpect(0).results);
      assert.deepStrictEqual(w.errors, [disconnected, closed]);
    }
    // The unchecked _send(message, handle, swallowErrors) form of the worker's process.
    for (const ser of ['json', 'advanced']) {
      assert.deepStrictEqual(byName(r[ser].worker)['legacy-boolean-_send'], { calls: [], ret: true });
    }
  } finally {
    await p.kill();
  }
});

for (const [name, expected] of [
  ['killed', ['callback EPIPE', 'error EPIPE write', 'disconnect']],
  ['unread', ['callback EPIPE', 'error EPIPE write', 'disconnect']],
  // worker.disconnect()'s own write fails first.
  ['left', ['error EPIPE write', 'callback EPIPE', 'error EPIPE write', 'disconnect']],
]) {
  both(`writes to a worker whose channel end is gone (${name}) fail with EPIPE until 'disconnect'`, async (mod) => {
    const p = run('compat-msg-epipe.js', [], { env: { MODULE: mod, CASE: name } });
    try {
      const r = await p.next((m) => m.event === 'report');
      assert.deepStrictEqual(r.events, expected);
    } finally {
      await p.kill();
    }
  });
}
