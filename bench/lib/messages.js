'use strict';

// Worker messages: one primary and one worker, one test, one process tree.
//
//   node bench/lib/messages.js <cluster|rcluster> <test> <seconds> [warmup]
//
// tests:
//   p2w-small, p2w-4k  primary -> worker, {i: n} or {i: n, s: <4096 chars>}
//   w2p-small, w2p-4k  worker -> primary, same payloads
//   pingpong           primary sends {p: n}, the worker sends it back, the
//                      primary sends the next one when the answer arrives
//
// One-way tests keep at most WINDOW messages in flight: the receiver
// acknowledges every BATCH messages (1 message back for 100 forward), so
// neither side queues without bound; the rate is messages received per
// second of the measured phase. A warm-up phase of the same kind runs first.
//
// Prints {"worker":<pid>} once the worker is forked, then one JSON line:
//   {"test":..,"kind":..,"count":..,"seconds":..,"rate":..[,"rttUs":{median,p99,mean}]}
// The bench starts it under `taskset -c 0` when it can, so that both
// processes share one CPU and the figure measures the channel, not scheduling.

const path = require('node:path');

const BATCH = 100;
const WINDOW = 2000;
const BIG = 'x'.repeat(4096);

function load(kind) {
  if (kind === 'cluster') return require('node:cluster');
  if (kind === 'rcluster') return require(process.env.RCLUSTER_BENCH_MODULE || path.resolve(__dirname, '..', '..'));
  throw new Error(`unknown kind ${kind}`);
}

const payload = (big, i) => (big ? { i, s: BIG } : { i });

// The sending side of a one-way phase: sends until `seconds` are up, then
// {ctl:'end'}. `ack(n)` is called with the receiver's count.
function sender(send, big, seconds) {
  let sent = 0;
  let acked = 0;
  let ended = false;
  const deadline = Date.now() + seconds * 1000;
  const pump = () => {
    if (ended) return;
    if (Date.now() >= deadline) {
      ended = true;
      send({ ctl: 'end', sent });
      return;
    }
    while (sent - acked < WINDOW) {
      for (let k = 0; k < BATCH; k++) send(payload(big, sent++));
    }
  };
  return {
    pump,
    ack(n) {
      acked = n;
      pump();
    },
  };
}

// The receiving side: counts data messages, acknowledges every BATCH.
function receiver(send) {
  let count = 0;
  return {
    data() {
      if (++count % BATCH === 0) send({ ctl: 'ack', n: count });
    },
    take() {
      const c = count;
      count = 0;
      return c;
    },
  };
}

function runWorker() {
  const send = (m) => process.send(m);
  const rx = receiver(send);
  let tx = null;
  process.on('message', (m) => {
    if (m.i !== undefined) rx.data();
    else if (m.p !== undefined) send(m);
    else if (m.ctl === 'end') send({ ctl: 'done', count: rx.take() });
    else if (m.ctl === 'go') {
      tx = sender(send, m.big, m.seconds);
      tx.pump();
    } else if (m.ctl === 'ack' && tx) tx.ack(m.n);
  });
}

function runPrimary(cluster, kind, test, seconds, warmup) {
  const hardLimit = setTimeout(() => {
    process.stderr.write(`messages: ${test} did not finish in time\n`);
    for (const w of Object.values(cluster.workers || {})) w.process.kill('SIGKILL');
    process.exit(3);
  }, (seconds + warmup) * 1000 + 15000);
  const w = cluster.fork();
  process.stdout.write(`${JSON.stringify({ worker: w.process.pid })}\n`);
  const send = (m) => w.send(m);
  let onMessage = () => {};
  w.on('message', (m) => onMessage(m));
  w.on('exit', (code, sig) => {
    if (!finished) {
      process.stderr.write(`messages: worker exited (${sig || code})\n`);
      process.exit(4);
    }
  });
  let finished = false;
  const big = test.endsWith('-4k');

  // One phase of a test; resolves with { count, seconds, rtts }.
  const phase = (secs) =>
    new Promise((resolve) => {
      const t0 = process.hrtime.bigint();
      const elapsed = () => Number(process.hrtime.bigint() - t0) / 1e9;
      if (test.startsWith('p2w')) {
        const tx = sender(send, big, secs);
        onMessage = (m) => {
          if (m.ctl === 'ack') tx.ack(m.n);
          else if (m.ctl === 'done') resolve({ count: m.count, seconds: elapsed() });
        };
        tx.pump();
      } else if (test.startsWith('w2p')) {
        const rx = receiver(send);
        onMessage = (m) => {
          if (m.i !== undefined) rx.data();
          else if (m.ctl === 'end') {
            const s = elapsed();
            resolve({ count: rx.take(), seconds: s });
          }
        };
        send({ ctl: 'go', big, seconds: secs });
      } else if (test === 'pingpong') {
        const deadline = Date.now() + secs * 1000;
        const rtts = [];
        let n = 0;
        let sentAt = 0n;
        const ping = () => {
          sentAt = process.hrtime.bigint();
          send({ p: n++ });
        };
        onMessage = (m) => {
          if (m.p === undefined) return;
          rtts.push(Number(process.hrtime.bigint() - sentAt) / 1e3);
          if (Date.now() < deadline) ping();
          else resolve({ count: rtts.length, seconds: elapsed(), rtts });
        };
        ping();
      } else {
        throw new Error(`unknown test ${test}`);
      }
    });

  w.on('online', async () => {
    if (warmup > 0) await phase(warmup);
    const r = await phase(seconds);
    const out = { test, kind, count: r.count, seconds: r.seconds, rate: r.count / r.seconds };
    if (r.rtts) {
      const s = r.rtts.sort((a, b) => a - b);
      out.rttUs = {
        median: s[s.length >> 1],
        p99: s[Math.min(s.length - 1, Math.floor(s.length * 0.99))],
        mean: s.reduce((a, b) => a + b, 0) / s.length,
      };
    }
    finished = true;
    clearTimeout(hardLimit);
    process.stdout.write(`${JSON.stringify(out)}\n`);
    w.process.kill('SIGKILL');
    setTimeout(() => process.exit(0), 50);
  });
}

const [kind, test, secondsArg, warmupArg] = process.argv.slice(2);
const cluster = load(kind);
if (cluster.isPrimary ?? cluster.isMaster) {
  runPrimary(cluster, kind, test, Number(secondsArg || 1), Number(warmupArg || 0));
} else {
  runWorker();
}
