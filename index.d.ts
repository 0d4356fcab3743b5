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

/** The `cluster` object rcluster exports: Node's `Cluster`, plus extensions. */
export interface RCluster extends Cluster {}

declare const cluster: RCluster;
export default cluster;
