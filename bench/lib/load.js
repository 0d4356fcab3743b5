'use strict';

// Built-in load generator, used when neither wrk nor autocannon is at hand.
// Every request opens a new TCP connection (`Connection: close`), like
// `wrk -H 'Connection: close'`: it measures accept + dispatch + one request.
//
//   node bench/lib/load.js --port P [--host 127.0.0.1] [--connections 32] [--duration 5]
//
// prints {"tool":"node","seconds":..,"ok":..,"non2xx":..,"errors":..,"rps":..}

const net = require('node:net');

const REQUEST_TIMEOUT_MS = 5000;

function oneRequest(host, port, payload) {
  return new Promise((resolve) => {
    let head = '';
    let settled = false;
    const socket = net.connect({ host, port });
    const finish = (result) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(result);
    };
    socket.setNoDelay(true);
    socket.setTimeout(REQUEST_TIMEOUT_MS, () => finish('error'));
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (chunk) => {
      if (head.length < 12) head += chunk.toString('latin1');
    });
    socket.on('error', () => {
      // A reset after a complete status line still counts as answered.
      finish(/^HTTP\/1\.[01] 2\d\d/.test(head) ? 'ok' : 'error');
    });
    socket.on('close', () => {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      if (!m) finish('error');
      else finish(m[1][0] === '2' ? 'ok' : 'non2xx');
    });
  });
}

async function run({ host = '127.0.0.1', port, connections = 32, duration = 5 }) {
  const payload = `GET / HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: close\r\n\r\n`;
  const counts = { ok: 0, non2xx: 0, error: 0 };
  const start = process.hrtime.bigint();
  const deadline = Date.now() + duration * 1000;
  async function loop() {
    while (Date.now() < deadline) {
      counts[await oneRequest(host, port, payload)]++;
    }
  }
  await Promise.all(Array.from({ length: connections }, loop));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return {
    tool: 'node',
    seconds,
    ok: counts.ok,
    non2xx: counts.non2xx,
    errors: counts.error,
    rps: counts.ok / seconds,
  };
}

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    const value = argv[i + 1];
    opts[key] = key === 'host' ? value : Number(value);
  }
  return opts;
}

if (require.main === module) {
  const opts = parseArgs(process.argv.slice(2));
  if (!opts.port) {
    console.error('usage: node bench/lib/load.js --port P [--host H] [--connections N] [--duration S]');
    process.exit(2);
  }
  // Never outlive the run by much, whatever happens to the sockets.
  setTimeout(() => {
    console.error('load: did not finish in time');
    process.exit(3);
  }, (opts.duration || 5) * 1000 + REQUEST_TIMEOUT_MS + 5000).unref();
  run(opts).then((result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  });
}

module.exports = { run };
