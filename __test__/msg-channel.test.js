'use strict';

// A worker's messages travel on a channel of their own, read by the primary's
// JavaScript, while connections and control go through the reactor. Node's
// order still holds across the two: messages sent before worker.disconnect()
// arrive before the worker's 'disconnect', and what a worker wrote before it
// died arrives before the primary's 'disconnect' and 'exit'.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { run } = require('./helpers');

async function scenario(name) {
  const report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-msg-')), 'report.json');
  const p = run('msg-channel.js', [name], { env: { REPORT: report } });
  try {
    return await p.next((m) => m.event === 'exit', 20000);
  } finally {
    await p.kill();
    fs.rmSync(path.dirname(report), { recursive: true, force: true });
  }
}

test('messages sent before worker.disconnect() all reach the worker before its disconnect', { timeout: 30000 }, async () => {
  const exit = await scenario('disconnect');
  assert.strictEqual(exit.code, 0);
  assert.deepStrictEqual(exit.seen, { got: 2000, ordered: true });
});

test("a killed worker's last messages arrive before 'disconnect' and 'exit'", { timeout: 30000 }, async () => {
  const exit = await scenario('killed');
  assert.strictEqual(exit.signal, 'SIGKILL');
  assert.strictEqual(exit.got, 2000);
  assert.ok(exit.ordered);
  assert.deepStrictEqual(exit.events, ['online', 'disconnect:2000', 'exit:2000']);
});

test('lone messages of every size around the 4 KiB stack copy, multi-byte characters across its edge, arrive unchanged both ways', { timeout: 30000 }, async () => {
  const exit = await scenario('echo');
  assert.ok(exit.sent > 100);
  assert.strictEqual(exit.same, exit.sent);
});

test('a worker killed with messages it never read: disconnect and exit, no error', { timeout: 30000 }, async () => {
  const exit = await scenario('reset');
  assert.deepStrictEqual(exit.events, ['disconnect', 'exit:SIGKILL']);
  assert.deepStrictEqual(exit.warnings, []);
});
