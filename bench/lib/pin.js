'use strict';

// `--pin`: the servers on some CPUs and the load generator on the others,
// with `taskset` (util-linux). On a 2-core machine three busy processes (two
// workers and wrk) share two CPUs, and how the kernel places them moves a
// keep-alive or reuseport figure by 10-20% from one run to the next, for
// both modules alike. Pinned, each server gets the same CPUs and the load
// generator never competes with it, so what is left is the servers' own
// difference. Off by default: the default run measures what a user gets.

const fs = require('node:fs');
const { spawnSync } = require('node:child_process');

let current = null; // { servers: '0', load: '1' } once configured

// "0-2,5" -> [0, 1, 2, 5]
function parseList(text) {
  const cpus = [];
  for (const part of String(text).trim().split(',')) {
    if (part === '') continue;
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new Error(`bad CPU list "${text}" (expected e.g. 0-2,5)`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new Error(`bad CPU range "${part}" in "${text}"`);
    for (let c = a; c <= b; c++) cpus.push(c);
  }
  if (cpus.length === 0) throw new Error(`empty CPU list "${text}"`);
  return [...new Set(cpus)].sort((x, y) => x - y);
}

// The CPUs this process may run on (its cpuset), from /proc/self/status.
function allowedCpus() {
  const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  if (!m) throw new Error('no Cpus_allowed_list in /proc/self/status');
  return parseList(m[1]);
}

/**
 * The split for `spec`: `true` (plain `--pin`) puts the load generator on
 * the last allowed CPU and the servers on the others; "SERVERS:LOAD" (e.g.
 * "0:1" or "0-2:3") names both lists. Throws with a clear message when the
 * lists overlap, name a CPU this process may not use, or leave one empty.
 */
function split(spec, allowed = allowedCpus()) {
  let servers;
  let load;
  if (spec === true) {
    if (allowed.length < 2) throw new Error(`--pin needs 2 CPUs at least; this process may use ${allowed.join(',')}`);
    servers = allowed.slice(0, -1);
    load = allowed.slice(-1);
  } else {
    const parts = String(spec).split(':');
    if (parts.length !== 2) throw new Error(`bad --pin value "${spec}" (expected SERVERS:LOAD, e.g. 0:1)`);
    servers = parseList(parts[0]);
    load = parseList(parts[1]);
    const outside = [...servers, ...load].filter((c) => !allowed.includes(c));
    if (outside.length) throw new Error(`--pin: CPU ${outside.join(',')} is not available here (allowed: ${allowed.join(',')})`);
    const both = servers.filter((c) => load.includes(c));
    if (both.length) throw new Error(`--pin: CPU ${both.join(',')} is in both lists`);
  }
  return { servers: servers.join(','), load: load.join(',') };
}

/** Whether `taskset` runs here (util-linux; Linux only). */
function hasTaskset() {
  const r = spawnSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore', timeout: 5000 });
  return !r.error && r.status === 0;
}

/** Turns pinning on for every later `wrap` (or off, with `null`). */
function configure(spec) {
  if (spec === null || spec === undefined || spec === false) {
    current = null;
    return null;
  }
  if (process.platform !== 'linux') throw new Error(`--pin needs Linux (taskset); this is ${process.platform}`);
  const s = split(spec);
  if (!hasTaskset()) throw new Error('--pin needs taskset (Debian: apt-get install util-linux)');
  current = s;
  return s;
}

/**
 * [cmd, args] to spawn for `role` ('servers' or 'load'): unchanged when
 * pinning is off, else run through `taskset -c <cpus>`, which execs the
 * command (the pid stays the command's own, so killing by pid still works).
 */
function wrap(role, cmd, args) {
  if (!current) return [cmd, args];
  return ['taskset', ['-c', current[role], cmd, ...args]];
}

/** A line for the report, or '' when not pinned. */
function describe() {
  if (!current) return '';
  return `servers pinned to CPU ${current.servers}, the load generator to CPU ${current.load} (\`--pin\`, taskset)`;
}

module.exports = { parseList, allowedCpus, split, hasTaskset, configure, wrap, describe };
