// A program written against node:cluster's types, importing rcluster instead.
import cluster, { Worker, type Address, type ClusterSettings } from 'rcluster';
import * as http from 'node:http';

const settings: ClusterSettings = { exec: 'worker.js', args: ['--x'], silent: true, serialization: 'advanced' };

if (cluster.isPrimary) {
  cluster.setupPrimary(settings);
  const w: Worker = cluster.fork({ FOO: 'bar' });
  w.on('online', () => w.send({ hello: 1 }, (err: Error | null) => void err));
  w.on('exit', (code: number, signal: string) => console.log(code, signal));
  cluster.on('listening', (worker: Worker, address: Address) => console.log(worker.id, address.port));
  cluster.on('message', (worker: Worker, message: unknown) => console.log(worker.id, message));
  const p: number | undefined = cluster.schedulingPolicy;
  console.log(p === cluster.SCHED_RR, Object.keys(cluster.workers ?? {}).length, w.isDead(), w.isConnected());
  cluster.disconnect(() => undefined);
  w.kill('SIGTERM');
  w.process.kill();
} else {
  cluster.worker?.on('message', (m: unknown) => process.send?.(m));
  http.createServer((_req, res) => res.end('ok')).listen(0);
}

// rcluster's extensions are typed too.
async function extensions(): Promise<void> {
  cluster.setupPrimary({ restart: 'on-failure', maxRestarts: 5, readiness: 'message', signals: true });
  cluster.fork({}, { restart: 'always' });
  cluster.on('crashloop', (worker, info) => console.log(worker?.id, info.slot, info.reason));
  await cluster.reload({ concurrency: 1 });
  cluster.scale(2);
  await cluster.shutdown({ timeout: 5000 });
}
void extensions;

async function beyond(): Promise<void> {
  const agent = await cluster.forkAgent({ exec: 'agent.js' });
  agent.send('hi');
  const w = cluster.fork({}, { weight: 5 });
  w.setWeight?.(2);
  cluster.worker?.sendTo?.('agent', { job: 1 }, (err, n) => console.log(err, n));
  cluster.worker?.broadcast?.('all');
  cluster.worker?.retire?.('bye');
}
void beyond;
