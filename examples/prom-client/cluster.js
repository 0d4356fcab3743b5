// examples/prom-client: workers record Prometheus metrics with prom-client, the primary serves them aggregated (AggregatorRegistry) on its own port — `node examples/prom-client/cluster.js` (env PORT, default 0 = any free port; METRICS_PORT, default 0; HOST, default 127.0.0.1; WORKERS, default 2).
'use strict';

// prom-client's AggregatorRegistry talks to the workers through
// `require('cluster')` itself. rcluster/register makes `require('cluster')`
// return rcluster in this process and in its workers, so prom-client runs on
// rcluster unchanged. Load it before prom-client asks for `cluster`: first
// line of the program (as here) or `node -r rcluster/register app.js`.
require('rcluster/register');

const cluster = require('rcluster'); // The same object as require('cluster') now.
const http = require('http');
const client = require('prom-client');

const PORT = Number(process.env.PORT || 0);
const METRICS_PORT = Number(process.env.METRICS_PORT || 0);
const HOST = process.env.HOST || '127.0.0.1';
const WORKERS = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  // The primary keeps no metrics of its own: on every scrape, the registry
  // asks each worker for its metrics and sums them (per label set).
  const aggregator = new client.AggregatorRegistry();
  const metrics = http.createServer(async (req, res) => {
    if (req.url !== '/metrics') {
      res.statusCode = 404;
      res.end();
      return;
    }
    try {
      const body = await aggregator.clusterMetrics();
      res.setHeader('content-type', aggregator.contentType);
      res.end(body);
    } catch (err) {
      res.statusCode = 500;
      res.end(String(err && err.message));
    }
  });

  // Fork the workers; once all of them listen and /metrics is up, print one JSON line.
  const pids = [];
  for (let i = 0; i < WORKERS; i++) pids.push(cluster.fork().process.pid);
  let listening = 0;
  cluster.on('listening', (worker, address) => {
    if (++listening !== WORKERS) return;
    // The primary's own server: an ordinary listener, not shared with the workers.
    metrics.listen(METRICS_PORT, HOST, () => {
      const metricsPort = metrics.address().port;
      console.log(JSON.stringify({
        event: 'ready', example: 'prom-client', url: `http://${HOST}:${address.port}/`, port: address.port,
        metricsUrl: `http://${HOST}:${metricsPort}/metrics`, metricsPort, pid: process.pid, pids,
      }));
    });
  });
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.id} (pid ${worker.process.pid}) exited: ${signal || code}`);
  });
  const stop = () => cluster.disconnect(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  // Each worker records into its own default registry; AggregatorRegistry in
  // the worker answers the primary's requests for it.
  new client.AggregatorRegistry(); // Installs the worker side (once per process).
  client.collectDefaultMetrics(); // process_*, nodejs_*: summed or averaged across workers.
  const requests = new client.Counter({
    name: 'example_http_requests_total',
    help: 'HTTP requests served, by worker',
    labelNames: ['worker'],
  });
  const all = new client.Counter({
    name: 'example_http_requests_all_total',
    help: 'HTTP requests served by all workers (summed by the aggregator)',
  });
  const worker = String(cluster.worker.id);

  http.createServer((req, res) => {
    requests.inc({ worker });
    all.inc();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ hello: 'prom-client', worker: cluster.worker.id, pid: process.pid }));
  }).listen(PORT, HOST);
}
