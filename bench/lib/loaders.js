'use strict';

// Load generators, best first: wrk, autocannon, the built-in one (load.js).
// Each run opens a new connection per request (or, with keepAlive, reuses
// them: wrk and autocannon only) and returns
// { tool, seconds, requests, ok, non2xx, errors, rps[, latencyMs] } with rps
// counting 2xx answers.

const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { run: runCmd } = require('./procs');
const pin = require('./pin');

// A load generator runs on the load CPUs when the bench is pinned (--pin).
const run = (cmd, args, opts) => runCmd(...pin.wrap('load', cmd, args), opts);

const SLACK_MS = 20000; // time a load run may take beyond its duration

function hasWrk() {
  const r = spawnSync('wrk', ['--version'], { stdio: 'ignore', timeout: 5000 });
  return !r.error;
}

function autocannonBin() {
  const roots = [path.resolve(__dirname, '..', '..'), process.cwd()];
  try {
    const pkgFile = require.resolve('autocannon/package.json', { paths: roots });
    const pkg = require(pkgFile);
    const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin.autocannon;
    return path.join(path.dirname(pkgFile), bin);
  } catch {
    return null;
  }
}

function fail(tool, r) {
  const why = r.timedOut ? 'timed out' : `exited with ${r.signal || r.code}`;
  return new Error(`${tool} ${why}: ${(r.stderr || r.stdout).replace(/\s+/g, ' ').trim().slice(0, 300)}`);
}

// "  50%  1.23ms" -> milliseconds
function wrkTime(value, unit) {
  const scale = { us: 1e-3, ms: 1, s: 1000, m: 60000 }[unit];
  return Number(value) * (scale === undefined ? NaN : scale);
}

// keepAlive: reuse connections (wrk's default) instead of one per request.
// latency: ask wrk for its percentiles (--latency); adds { latencyMs: {p50,
// p75, p90, p99} } to the result.
async function wrk({ port, connections, duration, keepAlive = false, latency = false }) {
  const url = `http://127.0.0.1:${port}/`;
  duration = Math.max(1, Math.round(duration)); // wrk takes whole seconds only
  const args = ['-t1', `-c${connections}`, `-d${duration}s`];
  if (!keepAlive) args.push('-H', 'Connection: close');
  if (latency) args.push('--latency');
  args.push(url);
  const r = await run('wrk', args, { timeoutMs: duration * 1000 + SLACK_MS });
  if (r.code !== 0) throw fail('wrk', r);
  // "  12345 requests in 5.00s, 1.23MB read"
  const total = /(\d+) requests in ([\d.]+)(m?s)/.exec(r.stdout);
  if (!total) throw fail('wrk', { ...r, stderr: `unexpected output: ${r.stdout}` });
  const requests = Number(total[1]);
  const seconds = Number(total[2]) / (total[3] === 'ms' ? 1000 : 1);
  const non2xx = Number((/Non-2xx or 3xx responses: (\d+)/.exec(r.stdout) || [0, 0])[1]);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(r.stdout);
  // `requests` counts completed responses only; socket errors are reported
  // beside the rate, they do not change it.
  const errors = sock ? sock.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0;
  const ok = requests - non2xx;
  const result = { tool: 'wrk', seconds, requests, ok, non2xx, errors, rps: ok / seconds };
  if (latency) {
    result.latencyMs = {};
    for (const m of r.stdout.matchAll(/^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$/gm)) {
      result.latencyMs[`p${m[1]}`] = wrkTime(m[2], m[3]);
    }
  }
  return result;
}

async function autocannon({ port, connections, duration, keepAlive = false }, bin) {
  const url = `http://127.0.0.1:${port}/`;
  // `-H Connection=close`: the server closes after each answer and
  // autocannon reconnects. (`-D 1` answered nothing in autocannon 8.)
  const r = await run(
    process.execPath,
    [bin, '-c', String(connections), '-d', String(duration), ...(keepAlive ? [] : ['-H', 'Connection=close']), '-j', url],
    { timeoutMs: duration * 1000 + SLACK_MS }
  );
  if (r.code !== 0) throw fail('autocannon', r);
  const res = JSON.parse(r.stdout);
  const ok = res['2xx'];
  return {
    tool: 'autocannon',
    seconds: res.duration,
    ok,
    non2xx: res.non2xx,
    errors: res.errors + res.timeouts,
    rps: ok / res.duration,
    requests: ok + res.non2xx,
    latencyMs: { p50: res.latency.p50, p75: res.latency.p75, p90: res.latency.p90, p99: res.latency.p99 },
  };
}

async function builtin({ port, connections, duration, keepAlive = false }) {
  if (keepAlive) throw new Error('the built-in load generator only opens a new connection per request; install wrk');
  const script = path.join(__dirname, 'load.js');
  const args = [script, '--port', String(port), '--connections', String(connections), '--duration', String(duration)];
  const r = await run(process.execPath, args, { timeoutMs: duration * 1000 + SLACK_MS });
  if (r.code !== 0) throw fail('node load.js', r);
  const res = JSON.parse(r.stdout);
  return { ...res, requests: res.ok + res.non2xx };
}

// name: 'wrk' | 'autocannon' | 'node' | undefined (best available).
function pick(name) {
  const bin = autocannonBin();
  const available = { wrk: hasWrk(), autocannon: Boolean(bin), node: true };
  const impls = { wrk, autocannon: (o) => autocannon(o, bin), node: builtin };
  const chosen = name || ['wrk', 'autocannon', 'node'].find((n) => available[n]);
  if (!impls[chosen]) throw new Error(`unknown load generator "${chosen}" (wrk, autocannon, node)`);
  if (!available[chosen]) throw new Error(`load generator "${chosen}" is not installed`);
  const impl = impls[chosen];
  return { name: chosen, run: impl };
}

module.exports = { pick, hasWrk };
