'use strict';

// Message serialization ('json' and 'advanced'), run against node:cluster and
// rcluster alike. What arrives is compared in a described, JSON-safe form.
const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

const O = (props) => ({ ctor: 'Object', props });
const A = (items) => ({ ctor: 'Array', length: items.length, items });
const TAIL = [
  ['top-string', 'plain'],
  ['raw', 'top-level string'],
  ['raw', 42],
  ['raw', true],
  ['raw', null],
  ['raw', A([1, 'a'])],
];

const JSON_EXPECTED = [
  ['str', 'héllo \u2028 \ud83d\ude00'],
  ['num', 1.5],
  ['negz', 0],
  ['bool', false],
  ['nul', null],
  ['map', O([])],
  ['set', O([])],
  ['u8', O([['0', 1], ['1', 2], ['2', 3]])],
  ['f64', O([['0', 1.5], ['1', -2]])],
  ['buf', O([['type', 'Buffer'], ['data', A([104, 105])]])],
  ['date', '1970-01-02T00:00:00.000Z'],
  ['err', O([['code', 'E_X']])],
  ['regexp', O([])],
  ['nested', O([['a', A([1, null, 'x', O([['b', true]])])], ['nan', null], ['inf', null]])],
  ['arr', A([1, null, 3])],
  ['ab', O([])],
  ...TAIL,
];

const ADVANCED_EXPECTED = [
  ['str', 'héllo \u2028 \ud83d\ude00'],
  ['num', 1.5],
  ['negz', { num: '-0' }],
  ['bool', false],
  ['nul', null],
  ['map', { ctor: 'Map', entries: [[1, 'a'], ['k', O([['x', 1]])]] }],
  ['set', { ctor: 'Set', values: [1, 'two'] }],
  ['u8', { ctor: 'Uint8Array', bytes: [1, 2, 3] }],
  ['f64', { ctor: 'Float64Array', bytes: [...Buffer.from(new Float64Array([1.5, -2]).buffer)] }],
  ['buf', { ctor: 'Buffer', bytes: [104, 105] }],
  ['date', { ctor: 'Date', time: 86400000, props: [] }],
  ['err', { ctor: 'RangeError', name: 'RangeError', message: 'boom', stack: true, props: [] }],
  ['regexp', { ctor: 'RegExp', re: '/ab+c/gi', props: [] }],
  ['nested', O([['a', A([1, null, 'x', O([['b', true]])])], ['u', { undef: true }],
    ['nan', { num: 'NaN' }], ['inf', { num: 'Infinity' }]])],
  ['arr', A([1, { undef: true }, 3])],
  ['ab', { ctor: 'ArrayBuffer', bytes: [9, 8], props: [] }],
  ['bigint', { bigint: '12345678901234567890' }],
  ['circ', O([['name', 'c'], ['self', '[self]']])],
  ['sparse', { ctor: 'Array', length: 3, items: [1, { hole: true }, 3] }],
  ...TAIL,
];

both("serialization 'json' and 'advanced': types arrive as Node delivers them, 10 MiB intact", async (mod) => {
  const p = run('compat-msg-serialization.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 25000);
    const big = { length: 10 * 1024 * 1024, sha: r.expectedBig };
    for (const [name, expected] of [['json', JSON_EXPECTED], ['advanced', ADVANCED_EXPECTED]]) {
      assert.deepStrictEqual(r[name].toPrimary.got, expected, `${name}: worker -> primary`);
      assert.deepStrictEqual(r[name].toWorker.got, expected, `${name}: primary -> worker`);
      assert.deepStrictEqual(r[name].toPrimary.big, big, `${name}: 10 MiB worker -> primary`);
      assert.deepStrictEqual(r[name].toWorker.big, big, `${name}: 10 MiB primary -> worker`);
    }
  } finally {
    await p.kill();
  }
});
