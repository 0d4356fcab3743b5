'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { run, get } = require('./helpers');

test('weighted round robin: weights 5,1,1 give exactly a,a,b,a,c,a,a; weights change at run time', { timeout: 30000 }, async () => {
  const p = run('weighted.js');
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    const seq = [];
    for (let i = 0; i < 14; i++) seq.push((await get(port)).body);
    assert.deepStrictEqual(seq, ['1', '1', '2', '1', '3', '1', '1', '1', '1', '2', '1', '3', '1', '1']);
    p.child.stdin.write('1 1\n');
    await p.next((m) => m.event === 'weighted');
    const after = [];
    for (let i = 0; i < 6; i++) after.push((await get(port)).body);
    assert.deepStrictEqual(after.slice().sort(), ['1', '1', '2', '2', '3', '3']);
  } finally {
    await p.kill();
  }
});
