'use strict';

// Shared by the policy specs: HTTP GETs from a chosen local address, and
// commands to the policy-cluster fixture.

const http = require('http');

/** GET on a new connection from `localAddress`; resolves { status, body }. */
function getFrom(port, { path = '/', localAddress } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, localAddress, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(20000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
  });
}

/** Opens a connection to /hold; resolves { worker, req } once headers came. */
function hold(port) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/hold', agent: false }, (res) => {
      resolve({ worker: res.headers['x-worker'], req, res });
    });
    req.on('error', reject);
  });
}

function command(p, obj) {
  p.child.stdin.write(`${JSON.stringify(obj)}\n`);
}

/** Counts of response bodies (worker ids). */
function tally(bodies) {
  const out = {};
  for (const b of bodies) out[b] = (out[b] || 0) + 1;
  return out;
}

module.exports = { getFrom, hold, command, tally };
