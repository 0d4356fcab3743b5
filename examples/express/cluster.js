// examples/express: an Express app on every worker, clustered by rcluster — `node examples/express/cluster.js` (env PORT, default 0 = any free port; HOST, default 127.0.0.1; WORKERS, default 2).
'use strict';

const cluster = require('rcluster'); // was: require('cluster')

const PORT = Number(process.env.PORT || 0);
const HOST = process.env.HOST || '127.0.0.1';
const WORKERS = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  // Fork the workers; once all of them listen, print one JSON line with the URL.
  const pids = [];
  for (let i = 0; i < WORKERS; i++) pids.push(cluster.fork().process.pid);
  let listening = 0;
  cluster.on('listening', (worker, address) => {
    if (++listening !== WORKERS) return;
    const url = `http://${HOST}:${address.port}/`;
    console.log(JSON.stringify({ event: 'ready', example: 'express', url, port: address.port, pid: process.pid, pids }));
  });
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.id} (pid ${worker.process.pid}) exited: ${signal || code}`);
  });
  const stop = () => cluster.disconnect(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  // Plain Express; nothing in the app knows it is clustered.
  const express = require('express');
  const app = express();
  const worker = cluster.worker.id;

  app.get('/', (req, res) => {
    res.json({ hello: 'express', worker, pid: process.pid });
  });
  app.post('/echo', express.json(), (req, res) => {
    res.json({ worker, echo: req.body });
  });
  app.get('/users/:id', (req, res) => {
    res.json({ worker, user: req.params.id });
  });

  app.listen(PORT, HOST);
}
