'use strict';

// Worker-to-worker messages (sendTo, broadcast) routed by the Rust reactor,
// and the agent process.

const test = require('node:test');
const assert = require('node:assert');
const { run } = require('./helpers');

async function scenario(env) {
  const p = run('relay.js', [], { env });
  try {
    const agent = await p.next((m) => m.event === 'agent');
    assert.strictEqual(agent.workers, 0, 'the agent starts before the workers');
    await new Promise((r) => setTimeout(r, 600));
    p.child.stdin.write('go\n');
    const sender = await p.next((m) => m.event === 'report' && m.from === 2);
    assert.strictEqual(sender.broadcastDelivered, 2, 'broadcast reaches the 2 other workers');
    assert.strictEqual(sender.unknown, 'ERR_RCLUSTER_NO_WORKER');
    assert.match(sender.unknownMessage, /worker 99/);
    p.child.stdin.write('agent\n');
    await new Promise((r) => setTimeout(r, 400));
    p.child.stdin.write('report\n');
    const r3 = await p.next((m) => m.event === 'report' && m.from === 3);
    assert.strictEqual(r3.seqInOrder, true, `order per sender (${r3.seqCount})`);
    assert.deepStrictEqual(r3.broadcastFrom, [2]);
    assert.deepStrictEqual(r3.agent, ['hello from 3']);
    assert.strictEqual(r3.primaryMessages, 0, "relayed messages never reach the primary's JS");
    return { p, agent, r3 };
  } catch (err) {
    await p.kill();
    throw err;
  }
}

test('sendTo and broadcast: ordered, routed without the primary JS, errors for unknown targets (json)', { timeout: 30000 }, async () => {
  const { p, r3 } = await scenario({});
  try {
    assert.strictEqual(r3.value, 'text:200000');
  } finally {
    await p.kill();
  }
});

test("serialization 'advanced' over sendTo; the agent is restarted and reachable again", { timeout: 30000 }, async () => {
  const { p, agent, r3 } = await scenario({ ADVANCED: '1' });
  try {
    assert.strictEqual(r3.value, `map:${2n ** 70n}`);
    process.kill(agent.pid, 'SIGKILL');
    const again = await p.next((m) => m.event === 'agent-restarted');
    assert.notStrictEqual(again.pid, agent.pid);
    await new Promise((r) => setTimeout(r, 300));
    p.child.stdin.write('agent\n');
    await new Promise((r) => setTimeout(r, 400));
    p.child.stdin.write('report\n');
    const last = await p.next((m) => m.event === 'report' && m.from === 4 && m.agent && m.agent.length === 2);
    assert.deepStrictEqual(last.agent, ['hello from 4', 'hello from 4']);
  } finally {
    await p.kill();
  }
});
