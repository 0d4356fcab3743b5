// Types of rcluster: the same surface as Node's `cluster` module.
//
// rcluster is a drop-in replacement, so its types are Node's own (from
// @types/node): a program typed against `node:cluster` compiles unchanged
// against `rcluster`. Extensions that rcluster adds beside that surface are
// declared on `RCluster`.

/// <reference types="node" />

import type { Cluster } from 'node:cluster';

export { Worker } from 'node:cluster';
export type { Address, Cluster, ClusterSettings } from 'node:cluster';

/**
 * A dispatch policy: Node's `SCHED_NONE` (1) and `SCHED_RR` (2), rcluster's
 * `SCHED_REUSEPORT` (3), `SCHED_LEAST` (4), `SCHED_HASH` (5), or their names.
 */
export type SchedulingPolicy = 1 | 2 | 3 | 4 | 5 | 'none' | 'rr' | 'reuseport' | 'least' | 'hash';

/** rcluster's settings beside Node's (`setupPrimary(settings)`). */
export interface RClusterDispatchSettings {
  /** The dispatch policy, set before the first fork (frozen then, like `cluster.schedulingPolicy`). */
  schedulingPolicy?: SchedulingPolicy;
  /** `reuseport`: ms a dead worker's slot socket waits for its replacement (default 5000). */
  reusePortHold?: number;
  /**
   * `rr` over TCP on Linux: under a high rate of new connections (5,000 a
   * second or more) the kernel queues them on a socket every worker listens
   * on, the first free worker takes each, and the primary does no work per
   * connection (default true).
   * `false` keeps every connection going through the primary, one by one.
   */
  rrOffload?: boolean;
}

/**
 * Supervision settings (rcluster extensions; off unless `restart` is set).
 * Times are in milliseconds. Set primary-wide with `setupPrimary()`, or per
 * fork with `cluster.fork(env, settings)`.
 */
export interface SupervisionSettings {
  /** Which exits restart the worker's slot (default 'never', Node's behaviour). `true` = 'always'. */
  restart?: 'never' | 'always' | 'on-failure' | boolean;
  /** Exit codes that mean "stopped on purpose": never restarted. */
  stopExitCodes?: number[];
  /** Delay before restarting a worker that ran at least `minUptime` (default 0). */
  restartDelay?: number;
  /** First back-off delay after an unstable exit (default 100), multiplied by `backoffFactor` (2) each time, up to `backoffMax` (15000). */
  backoffInitial?: number;
  backoffMax?: number;
  backoffFactor?: number;
  /** A worker that dies sooner than this was unstable (default 1000). */
  minUptime?: number;
  /** Consecutive unstable exits after which the slot stops with a 'crashloop' event (default 16). */
  maxRestarts?: number;
  /** A new worker is ready when it listens (default) or when it calls `cluster.worker.ready()` / `process.send('ready')`. */
  readiness?: 'listening' | 'message';
  /** 'unready' event and a failed start past this (default 30000; 0: no limit). */
  readyTimeout?: number;
  /** Time a retiring worker (reload, recycle, scale down, shutdown) gets to finish by itself before SIGTERM (default 10000). */
  drainTimeout?: number;
  /** Time between SIGTERM and SIGKILL (default 5000). */
  killTimeout?: number;
  /** Heartbeats answered by each worker's event loop (default 0: off); a worker silent for `heartbeatTimeout` (5000) is killed and replaced. */
  heartbeatInterval?: number;
  heartbeatTimeout?: number;
  /** Replace a worker after this many connections (default 0: never), moved by +/- `recycleJitter` (0.1) at random. */
  recycleConnections?: number;
  recycleJitter?: number;
  /** Replace a worker whose RSS exceeds this many bytes (default 0: never). */
  maxMemory?: number;
  /** SIGHUP reloads, SIGTERM/SIGINT shut down gracefully and exit (default false). */
  signals?: boolean;
  /** Deadline of the SIGTERM/SIGINT shutdown (default 10000). */
  shutdownTimeout?: number;
  /** Log an uncaught exception in a worker, then retire it gracefully (no request lost). */
  retireOnUncaughtException?: boolean;
  /** Weight for weighted round robin (per fork: `fork(env, { weight })`, default 1). */
  weight?: number;
}

/** What a supervisor event carries besides the worker. */
export interface SupervisorInfo {
  slot: number;
  reason?: string;
  delay?: number;
  unstable?: number;
  phase?: 'start' | 'retire' | 'done';
  old?: number;
  new?: number;
}

declare module 'cluster' {
  interface ClusterSettings extends RClusterDispatchSettings, SupervisionSettings {}
  interface Worker {
    /** rcluster: the supervision slot this worker serves (kept across restarts). */
    readonly slot?: number;
    /** rcluster, in a worker: signal readiness (`readiness: 'message'`). */
    ready?(): void;
    /** rcluster, in a worker: leave gracefully; the primary starts a replacement at once. */
    retire?(reason?: string): void;
    /** rcluster, in a worker: a message to another worker (or 'agent'), routed by the primary's reactor. */
    sendTo?(target: number | 'agent', message: any, callback?: (error: Error | null, delivered: number) => void): boolean;
    /** rcluster, in a worker: a message to every other worker. */
    broadcast?(message: any, callback?: (error: Error | null, delivered: number) => void): boolean;
    /** rcluster, in the primary: this worker's weight for weighted round robin (default 1). */
    setWeight?(weight: number): this;
  }

}

declare module 'net' {
  interface ListenOptions {
    /** rcluster, in a worker: this listener's dispatch policy (the first worker to listen on a key decides). */
    schedulingPolicy?: SchedulingPolicy;
  }
}

/** `cluster.stats()`. */
export interface ClusterStats {
  workers: Array<{
    id: number; slot: number; pid: number; state: string; connected: boolean; ready: boolean;
    retiring: boolean; uptimeMs: number; restarts: number; connections: number;
    unacknowledged: number; open: number; messages: number; rss: number | null;
    eventLoopDelayMs: number | null; weight: number; agent: boolean;
  }>;
  listeners: Array<{
    key: string; policy: 'rr' | 'none' | 'reuseport' | 'least' | 'hash'; address: string | null;
    port: number | null; workers: number[]; accepted: number; queued: number;
    /** `rr`: connections go from the kernel straight to the workers now (the offload under a high connection rate). */
    kernel: boolean;
  }>;
}

/** The `cluster` object rcluster exports: Node's `Cluster`, plus extensions. */
export interface RCluster extends Cluster {
  /** One `SO_REUSEPORT` socket per worker slot, held by the primary; workers accept. */
  readonly SCHED_REUSEPORT: 3;
  /** The worker with the fewest open connections gets the next one. */
  readonly SCHED_LEAST: 4;
  /** A hash of the client's address picks the worker (sticky). */
  readonly SCHED_HASH: 5;
  /** `fork(env, settings)`: per-fork supervision settings. */
  fork(env?: any, settings?: SupervisionSettings): import('node:cluster').Worker;
  /** Rolling reload of every slot; rejects (keeping the old workers) if a new worker is not ready. */
  reload(options?: { concurrency?: number }): Promise<void>;
  /** Stops accepting, drains every worker, SIGKILLs what is left at `timeout` (default 10000 ms). */
  shutdown(options?: { timeout?: number }): Promise<void>;
  /** A snapshot of workers and listeners, taken by the Rust reactor. */
  stats(): ClusterStats;
  /** `stats()` in Prometheus' text exposition format. */
  metrics(): string;
  /** Sends a state line (`READY=1`, `RELOADING=1`, `STOPPING=1`...) to systemd; false without NOTIFY_SOCKET. */
  sdNotify(state: string): boolean;
  /** The agent process (`forkAgent()`), or null. */
  agent: import('node:cluster').Worker | null;
  /** In the agent process: true. */
  readonly isAgent?: boolean;
  /** Starts the agent: a supervised process that serves no connections; resolves once it is ready. */
  forkAgent(options?: SupervisionSettings & { exec?: string; args?: string[]; env?: NodeJS.ProcessEnv; readiness?: 'message' }): Promise<import('node:cluster').Worker>;
  /** Forks or drains workers to reach `n`; returns the workers kept or added. */
  scale(n: number, env?: any): import('node:cluster').Worker[];
  on(event: 'restart' | 'backoff' | 'crashloop' | 'unready' | 'unresponsive' | 'recycle' | 'reload' | 'ready' | 'retire',
    listener: (worker: import('node:cluster').Worker | null, info: SupervisorInfo) => void): this;
  on(event: string, listener: (...args: any[]) => void): this;
}

declare const cluster: RCluster;
export default cluster;
