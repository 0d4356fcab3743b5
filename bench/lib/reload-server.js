'use strict';

// A 2-worker HTTP server that reloads every worker when it reads "reload" on
// stdin, and prints {"event":"reloaded"} when done. VARIANT:
//   rcluster  - rcluster's cluster.reload(): new worker ready, old one taken out
//               of dispatch, then drained
//   killfork  - node:cluster, PM2-style: fork the new worker, wait for
//               'listening', then SIGINT the old one (it is still in the
//               round-robin set when signalled)
const variant = process.env.VARIANT;
const cluster = require(variant === 'rcluster' ? '../..' : 'cluster');
const http = require('http');

if (cluster.isPrimary) {
  if (variant === 'rcluster') cluster.setupPrimary({ restart: 'always', drainTimeout: 5000 });
  const n = 2;
  for (let i = 0; i < n; i++) cluster.fork();
  let listening = 0;
  cluster.on('listening', function first(w, address) {
    if (++listening === n) {
      cluster.removeListener('listening', first);
      console.log(JSON.stringify({ event: 'ready', port: address.port,
        pids: Object.values(cluster.workers).map((x) => x.process.pid) }));
    }
  });
  async function killfork() {
    for (const old of Object.values(cluster.workers)) {
      const fresh = cluster.fork();
      await new Promise((resolve) => fresh.once('listening', resolve));
      old.process.kill('SIGINT');
      await new Promise((resolve) => old.once('exit', resolve));
    }
  }
  process.stdin.on('data', async (d) => {
    if (!d.toString().includes('reload')) return;
    if (variant === 'rcluster') await cluster.reload();
    else await killfork();
    console.log(JSON.stringify({ event: 'reloaded',
      pids: Object.values(cluster.workers).map((x) => x.process.pid) }));
  });
} else {
  http.createServer((req, res) => res.end('ok')).listen(0, '127.0.0.1');
}
