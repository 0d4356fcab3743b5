'use strict';

// IPv6, ipv6Only, host names and the unspecified address in workers.

const assert = require('node:assert');
const { both } = require('./compat');
const { run } = require('./helpers');

both('IPv6, ipv6Only, localhost and no host: addresses and service', async (mod) => {
  const p = run('compat-listen-ipv6.js', [], { env: { MODULE: mod } });
  try {
    const r = await p.next((m) => m.event === 'report', 20000);
    assert.strictEqual(r.error, undefined);
    const [a, b] = r.addresses;
    assert.deepStrictEqual(a, b, 'both workers share every key');
    assert.deepStrictEqual({ ...a.v6, port: 0 }, { address: '::1', family: 'IPv6', port: 0 });
    assert.deepStrictEqual({ ...a.v6only, port: 0 }, { address: '::', family: 'IPv6', port: 0 });
    assert.deepStrictEqual({ ...a.any, port: 0 }, { address: '::', family: 'IPv6', port: 0 });
    // 'localhost' is resolved in the worker; the primary binds the address.
    assert.ok(['127.0.0.1', '::1'].includes(a.localhost.address));
    const lhType = a.localhost.family === 'IPv6' ? 6 : 4;
    assert.match(r.served.v6, /^[12]:v6$/);
    assert.match(r.served.v6only, /^[12]:v6only$/);
    assert.deepStrictEqual(r.served.v6onlyV4, { error: 'ECONNREFUSED' }, 'ipv6Only honoured');
    assert.match(r.served.localhost, /^[12]:localhost$/);
    assert.match(r.served.anyV4, /^[12]:any$/, 'dual stack takes IPv4');
    assert.match(r.served.anyV6, /^[12]:any$/);
    const seen = r.listening.map((l) => `${l.id} ${l.info.addressType} ${l.info.address} ${l.info.port}`).sort();
    const want = [];
    for (const id of [1, 2]) {
      want.push(`${id} 6 ::1 ${a.v6.port}`, `${id} 6 :: ${a.v6only.port}`,
        `${id} ${lhType} ${a.localhost.address} ${a.localhost.port}`, `${id} 4 null ${a.any.port}`);
    }
    assert.deepStrictEqual(seen, want.sort());
  } finally {
    await p.kill();
  }
});
