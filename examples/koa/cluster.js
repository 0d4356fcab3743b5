// examples/koa: a Koa app on every worker, clustered by rcluster — `node examples/koa/cluster.js` (env PORT, default 0 = any free port; HOST, default 127.0.0.1; WORKERS, default 2).
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
    console.log(JSON.stringify({ event: 'ready', example: 'koa', url, port: address.port, pid: process.pid, pids }));
  });
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.id} (pid ${worker.process.pid}) exited: ${signal || code}`);
  });
  const stop = () => cluster.disconnect(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  // Plain Koa; nothing in the app knows it is clustered.
  const Koa = require('koa');
  const app = new Koa();
  const worker = cluster.worker.id;

  // Middleware runs as usual: this one stamps every response with the worker.
  app.use(async (ctx, next) => {
    await next();
    ctx.set('x-worker', String(worker));
  });
  app.use(async (ctx) => {
    if (ctx.method === 'GET' && ctx.path === '/') {
      ctx.body = { hello: 'koa', worker, pid: process.pid };
    } else if (ctx.method === 'POST' && ctx.path === '/echo') {
      let raw = '';
      for await (const chunk of ctx.req) raw += chunk;
      ctx.body = { worker, echo: raw };
    } else {
      ctx.status = 404;
      ctx.body = { error: 'not found', worker };
    }
  });

  app.listen(PORT, HOST);
}
