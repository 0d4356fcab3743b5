'use strict';

// `npm start`: a hello-world HTTP server on every core, clustered by rcluster.
// The primary's Rust reactor accepts each connection and hands it to the next
// worker; the primary's JavaScript never touches it.

const cluster = require('../..'); // in your app: require('rcluster')
const http = require('http');
const os = require('os');

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || '127.0.0.1';

if (cluster.isPrimary) {
  const n = Number(process.env.WORKERS || os.availableParallelism());
  let listening = 0;
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on('listening', (worker, address) => {
    if (++listening === n) {
      console.log(`rcluster: ${n} workers serving http://${HOST}:${address.port}/ (primary pid ${process.pid})`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.id} (pid ${worker.process.pid}) exited: ${signal || code}`);
  });
  const stop = () => cluster.disconnect(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  http.createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(`hello from worker ${cluster.worker.id} (pid ${process.pid})\n`);
  }).listen(PORT, HOST);
}
