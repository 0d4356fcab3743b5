// examples/socketio-sticky: socket.io (HTTP long-polling, then the websocket upgrade) on every worker, kept working by rcluster's sticky `hash` dispatch — `node examples/socketio-sticky/cluster.js` (env PORT, default 0 = any free port; HOST, default 127.0.0.1; WORKERS, default 2).
'use strict';

// Why sticky: a socket.io client starts with HTTP long-polling. Its handshake,
// its polls, its posts and finally the websocket upgrade are separate HTTP
// requests, often on separate TCP connections, and all of them must reach the
// worker that holds the session (otherwise: 400 "Session ID unknown").
// `schedulingPolicy = 'hash'` has the primary pick the worker from a hash of
// the client's IP address, so every connection from one client lands on the
// same worker. (Behind a proxy every client has the proxy's address: then let
// the proxy do the stickiness, or use the websocket transport only.)
// To broadcast across workers, add an adapter (@socket.io/cluster-adapter,
// redis, ...); this example keeps each client's session on its worker.

const cluster = require('rcluster'); // was: require('cluster')

const PORT = Number(process.env.PORT || 0);
const HOST = process.env.HOST || '127.0.0.1';
const WORKERS = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  cluster.schedulingPolicy = 'hash'; // Before the first fork(); or NODE_CLUSTER_SCHED_POLICY=hash.
  // Fork the workers; once all of them listen, print one JSON line with the URL.
  const pids = [];
  for (let i = 0; i < WORKERS; i++) pids.push(cluster.fork().process.pid);
  let listening = 0;
  cluster.on('listening', (worker, address) => {
    if (++listening !== WORKERS) return;
    const url = `http://${HOST}:${address.port}/`;
    console.log(JSON.stringify({
      event: 'ready', example: 'socketio-sticky', url, port: address.port, pid: process.pid, pids,
      policy: cluster.schedulingPolicy === cluster.SCHED_HASH ? 'hash' : cluster.schedulingPolicy,
    }));
  });
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.id} (pid ${worker.process.pid}) exited: ${signal || code}`);
  });
  const stop = () => cluster.disconnect(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  const http = require('http');
  const { Server } = require('socket.io');
  const worker = cluster.worker.id;

  const server = http.createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ hello: 'socket.io', worker, pid: process.pid }));
  });
  const io = new Server(server); // Transports: polling first, then websocket.

  io.on('connection', (socket) => {
    socket.emit('hello', { worker, pid: process.pid, transport: socket.conn.transport.name });
    socket.on('echo', (msg, ack) => {
      ack({ worker, transport: socket.conn.transport.name, msg });
    });
  });

  server.listen(PORT, HOST);
}
