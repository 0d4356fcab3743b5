// ESM entry: `import cluster from 'rcluster'` and the named imports that
// `node:cluster` offers. The CommonJS module is the single instance.
import cluster from './index.js';

export default cluster;
export const {
  isPrimary, isMaster, isWorker, worker, workers, Worker,
  SCHED_NONE, SCHED_RR, SCHED_REUSEPORT, SCHED_LEAST, SCHED_HASH,
  fork, setupPrimary, setupMaster, disconnect,
} = cluster;
export const { schedulingPolicy, settings } = cluster;
