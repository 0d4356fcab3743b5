'use strict';

// CPU accounting from /proc (Linux): the CPU time a process has used, and
// how idle the machine is.

const fs = require('node:fs');
const { spawnSync } = require('node:child_process');

let clkTck;
function ticksPerSecond() {
  if (clkTck === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 });
    const n = Number(String(r.stdout || '').trim());
    clkTck = Number.isFinite(n) && n > 0 ? n : 100;
  }
  return clkTck;
}

// CPU time of a process (all its threads), in seconds, or null when it is
// gone: the sum of its threads' time on a CPU from /proc/<pid>/task/*/schedstat
// (nanoseconds), else utime + stime from /proc/<pid>/stat (clock ticks, 10 ms:
// too coarse for a primary that uses a few ms in a run).
function processCpuSeconds(pid) {
  const ns = schedstatNs(pid);
  return ns !== null ? ns / 1e9 : statCpuSeconds(pid);
}

// The first field of each thread's schedstat is its time on a CPU in ns
// (exited threads are not counted: a server's threads live as long as it).
function schedstatNs(pid) {
  let tids;
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  let sum = 0;
  for (const tid of tids) {
    try {
      sum += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch (err) {
      if (err.code === 'ENOENT') continue; // that thread just exited
      return null;
    }
  }
  return Number.isFinite(sum) ? sum : null;
}

// Fields 14 and 15 of /proc/<pid>/stat, counted after the ")" that ends the
// command name (which may itself contain spaces).
function statCpuSeconds(pid) {
  let text;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

// { primary, workers, total } CPU seconds of a server ({ pid, workers }).
function serverCpu(server) {
  const primary = processCpuSeconds(server.pid) || 0;
  const workers = (server.workers || []).reduce((sum, pid) => sum + (processCpuSeconds(pid) || 0), 0);
  return { primary, workers, total: primary + workers };
}

function cpuDelta(before, after) {
  return {
    primary: after.primary - before.primary,
    workers: after.workers - before.workers,
    total: after.total - before.total,
  };
}

function readStat() {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  const idle = v[3] + (v[4] || 0);
  const total = v.slice(0, 8).reduce((s, n) => s + (n || 0), 0);
  return { idle, total, steal: v[7] || 0 };
}

// Share of all CPU time the hypervisor gave to other guests ("steal")
// between two readStat() samples: on a shared virtual machine, how much the
// neighbours took during a figure.
function stealShare(a, b) {
  const total = b.total - a.total;
  return total > 0 ? (b.steal - a.steal) / total : 0;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Idle fraction of all CPUs over `ms` milliseconds.
async function idleFraction(ms = 1000) {
  const a = readStat();
  await sleep(ms);
  const b = readStat();
  const total = b.total - a.total;
  return total > 0 ? (b.idle - a.idle) / total : 1;
}

// Wait until the machine is mostly idle: `needed` consecutive one-second
// samples with at least `threshold` idle, at most `maxSeconds`. Resolves
// with { idle (last sample), waited (s), ok }.
async function waitForIdle({ threshold = 0.9, maxSeconds = 30, needed = 2, log = () => {} } = {}) {
  const start = Date.now();
  let good = 0;
  let last = 1;
  try {
    readStat();
  } catch {
    return { idle: NaN, waited: 0, ok: true, unsupported: true };
  }
  while ((Date.now() - start) / 1000 < maxSeconds) {
    last = await idleFraction(1000);
    good = last >= threshold ? good + 1 : 0;
    if (good >= needed) return { idle: last, waited: (Date.now() - start) / 1000, ok: true };
    if (good === 0) log(`machine busy: ${(100 * (1 - last)).toFixed(0)}% CPU in use, waiting`);
  }
  return { idle: last, waited: (Date.now() - start) / 1000, ok: false };
}

module.exports = { ticksPerSecond, processCpuSeconds, serverCpu, cpuDelta, idleFraction, waitForIdle, readStat, stealShare };
