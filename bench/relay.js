'use strict';

// Worker-to-worker messages: rcluster's reactor routing (sendTo) against the
// hand-written relay through the primary's 'message' handler, same load.
//   node bench/relay.js [--n 100000] [--rounds 3]

const { execFileSync } = require('child_process');
const path = require('path');

const args = process.argv.slice(2);
const opt = (k, d) => (args.includes(`--${k}`) ? Number(args[args.indexOf(`--${k}`) + 1]) : d);
const N = opt('n', 100000);
const ROUNDS = opt('rounds', 3);

function once(mode, kind) {
  const out = execFileSync(process.execPath, [path.join(__dirname, 'lib', 'relay-server.js')], {
    env: { ...process.env, MODE: mode, KIND: kind, N: String(kind === '4k' ? N / 5 : N) },
    encoding: 'utf8', timeout: 120000,
  });
  return JSON.parse(out.trim().split('\n').pop()).perSecond;
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log('| payload | hand-written relay in the primary, msg/s | rcluster sendTo, msg/s | ratio |');
console.log('| --- | ---: | ---: | ---: |');
for (const kind of ['small', '4k']) {
  const r = { primary: [], reactor: [] };
  for (let i = 0; i < ROUNDS; i++) {
    for (const mode of i % 2 ? ['reactor', 'primary'] : ['primary', 'reactor']) r[mode].push(once(mode, kind));
  }
  const p = median(r.primary);
  const x = median(r.reactor);
  console.log(`| ${kind === '4k' ? '4 KiB' : '{i: n}'} | ${p} | ${x} | ${(x / p).toFixed(2)} |`);
}
