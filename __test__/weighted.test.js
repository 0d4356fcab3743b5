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

test('weighted round robin: the weights hold through a burst of connections larger than the window', { timeout: 30000 }, async () => {
  // Weights 7:1 over 40 connections opened at once (the window is 16): 35/5
  // when the heavy worker's acknowledgements come within the patience
  // (20 ms); before the dispatcher waited for them, the burst spread about
  // evenly once the heavy worker's window was full. A little slack for a
  // loaded machine, where an ack may come late and a turn go to the other.
  const p = run('weighted.js', [], { env: { WEIGHTS: '7,1' } });
  try {
    const { port } = await p.next((m) => m.event === 'serving');
    // Two whole turns of the weights (8 each) one at a time first: a fresh
    // worker's first connections (code that runs for the first time) can
    // be acknowledged after the patience on a loaded machine (27 of 40 in a
    // CI run), which is the patience working, not the weights failing.
    for (let i = 0; i < 16; i++) await get(port);
    const ids = (await Promise.all(Array.from({ length: 40 }, () => get(port)))).map((r) => r.body);
    const heavy = ids.filter((id) => id === '1').length;
    assert.strictEqual(ids.filter((id) => id === '2').length, 40 - heavy, `answers: ${ids.join(',')}`);
    assert.ok(heavy >= 31, `the weight-7 worker answered ${heavy} of 40 (35 expected)`);
  } finally {
    await p.kill();
  }
});
