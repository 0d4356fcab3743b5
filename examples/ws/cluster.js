// examples/ws: a `ws` WebSocket echo server on every worker, clustered by rcluster — `node examples/ws/cluster.js` (env PORT, default 0 = any free port; HOST, default 127.0.0.1; WORKERS, default 2).
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
    const url = `ws://${HOST}:${address.port}/`;
    console.log(JSON.stringify({ event: 'ready', example: 'ws', url, port: address.port, pid: process.pid, pids }));
  });
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.id} (pid ${worker.process.pid}) exited: ${signal || code}`);
  });
  const stop = () => cluster.disconnect(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  // A plain `ws` server. Each WebSocket is one TCP connection, so it stays on
  // the worker that the primary handed it to: no sticky sessions needed.
  const { WebSocketServer } = require('ws');
  const worker = cluster.worker.id;
  const wss = new WebSocketServer({ port: PORT, host: HOST });

  wss.on('connection', (ws) => {
    ws.send(JSON.stringify({ type: 'hello', worker, pid: process.pid }));
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        ws.send(data, { binary: true }); // Binary frames come back as they are.
      } else {
        ws.send(JSON.stringify({ type: 'echo', worker, data: data.toString() }));
      }
    });
  });
}
