'use strict';

// Worker 1 sends messages to worker 2: through rcluster's reactor
// (cluster.worker.sendTo) or through the usual hand-written relay in the
// primary's 'message' handler (the only way with node:cluster).
//   MODE=reactor|primary  N=messages  KIND=small|4k
const cluster = require('../..');

const N = Number(process.env.N || 100000);
const payload = process.env.KIND === '4k' ? { s: 'x'.repeat(4096) } : null;

if (cluster.isPrimary) {
  cluster.fork();
  cluster.fork();
  cluster.on('message', (w, m) => {
    if (m && m.to) {
      cluster.workers[m.to].send(m.m); // the hand-written relay
      return;
    }
    if (m && m.result) {
      console.log(JSON.stringify(m.result));
      for (const x of Object.values(cluster.workers)) x.kill();
    }
  });
  let online = 0;
  cluster.on('online', () => {
    if (++online === 2) cluster.workers[1].send('go');
  });
} else if (cluster.worker.id === 2) {
  let n = 0;
  let t0 = 0;
  const got = () => {
    if (n === 0) t0 = process.hrtime.bigint();
    if (++n === N) {
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      process.send({ result: { mode: process.env.MODE, kind: process.env.KIND || 'small', perSecond: Math.round(N / s) } });
    }
  };
  cluster.worker.on('workerMessage', got);
  process.on('message', (m) => { if (m !== 'go') got(); });
} else {
  process.on('message', (m) => {
    if (m !== 'go') return;
    let i = 0;
    const reactor = process.env.MODE === 'reactor';
    const pump = () => {
      while (i < N) {
        const m = payload ? { i, ...payload } : { i };
        i++;
        const ok = reactor ? cluster.worker.sendTo(2, m) : process.send({ to: 2, m });
        if (!ok || i % 1000 === 0) return setImmediate(pump);
      }
    };
    pump();
  });
}
