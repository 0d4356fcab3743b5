'use strict';

// Requiring rcluster on an unsupported platform fails with an error that
// names the platform and says what is supported.

const test = require('node:test');
const assert = require('node:assert');
const { execFileSync } = require('child_process');
const path = require('path');

test('unsupported platform: a clear error naming it', () => {
  const script = `
    Object.defineProperty(process, 'platform', { value: 'win32' });
    try { require(${JSON.stringify(path.join(__dirname, '..'))}); console.log('loaded'); }
    catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }
  `;
  const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }));
  assert.strictEqual(out.code, 'ERR_RCLUSTER_UNSUPPORTED_PLATFORM');
  assert.match(out.message, /win32/);
  assert.match(out.message, /Linux/);
});
