'use strict';

// Where the primary loads the native addon from (lib/native.js): the one
// installed file directly, binding.js (napi-rs's loader) when the choice is
// not clear-cut. Each case is a copy of the package in a temporary
// node_modules, run in a fresh process that forks a worker and sends it one
// HTTP request, so the worker's load (from the path the primary found) is
// shown to work too.

const test = require('node:test');
const assert = require('node:assert');
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { abi } = require('../scripts/platform');

const ROOT = path.join(__dirname, '..');
const ABI = abi();
const BUILT = path.join(ROOT, `rcluster.${ABI}.node`);

// The primary reports what it loaded; its one worker answers one request.
const PROGRAM = `
'use strict';
const cluster = require('rcluster');
const http = require('http');
if (cluster.isPrimary) {
  const addon = globalThis[Symbol.for('rcluster.addon')];
  const viaBindingJs = Object.keys(require('module')._cache).some((f) => f.endsWith('binding.js'));
  const w = cluster.fork();
  w.on('listening', (address) => {
    http.get({ host: '127.0.0.1', port: address.port }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        console.log(JSON.stringify({ addon, viaBindingJs, body }));
        w.kill();
      });
    });
  });
} else {
  http.createServer((req, res) => res.end('pid ' + process.pid)).listen(0, '127.0.0.1');
}
`;

function layout({ rootAddon, platformPackage }) {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'rcluster-addon-')));
  const pkg = path.join(dir, 'node_modules', 'rcluster');
  fs.mkdirSync(pkg, { recursive: true });
  for (const f of ['index.js', 'binding.js', 'package.json']) fs.copyFileSync(path.join(ROOT, f), path.join(pkg, f));
  fs.cpSync(path.join(ROOT, 'lib'), path.join(pkg, 'lib'), { recursive: true });
  if (rootAddon === 'built') fs.copyFileSync(BUILT, path.join(pkg, `rcluster.${ABI}.node`));
  if (rootAddon === 'corrupt') fs.writeFileSync(path.join(pkg, `rcluster.${ABI}.node`), 'not an ELF file');
  if (platformPackage) {
    const p = path.join(dir, 'node_modules', `rcluster-${ABI}`);
    fs.mkdirSync(p);
    fs.writeFileSync(path.join(p, 'package.json'),
      JSON.stringify({ name: `rcluster-${ABI}`, version: '0.1.0', main: `rcluster.${ABI}.node` }));
    fs.copyFileSync(BUILT, path.join(p, `rcluster.${ABI}.node`));
  }
  fs.writeFileSync(path.join(dir, 'app.js'), PROGRAM);
  return dir;
}

function run(dir, env = {}) {
  try {
    const out = execFileSync(process.execPath, [path.join(dir, 'app.js')], {
      cwd: dir,
      encoding: 'utf8',
      timeout: 20000,
      env: { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: '', NAPI_RS_ENFORCE_VERSION_CHECK: '', ...env },
    });
    return JSON.parse(out.trim().split('\n').pop());
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const opts = { timeout: 30000, skip: ABI === null || !fs.existsSync(BUILT) ? 'no local build of the addon' : false };

test('the file at the package root is loaded directly, without binding.js', opts, () => {
  const dir = layout({ rootAddon: 'built' });
  const r = run(dir);
  assert.strictEqual(r.addon, path.join(dir, 'node_modules', 'rcluster', `rcluster.${ABI}.node`));
  assert.strictEqual(r.viaBindingJs, false);
  assert.match(r.body, /^pid \d+$/);
});

test('the one installed platform package is loaded directly, without binding.js', opts, () => {
  const dir = layout({ platformPackage: true });
  const r = run(dir);
  assert.strictEqual(r.addon, path.join(dir, 'node_modules', `rcluster-${ABI}`, `rcluster.${ABI}.node`));
  assert.strictEqual(r.viaBindingJs, false);
  assert.match(r.body, /^pid \d+$/);
});

test('a file that does not load: binding.js takes over and finds the platform package', opts, () => {
  const dir = layout({ rootAddon: 'corrupt', platformPackage: true });
  const r = run(dir);
  assert.strictEqual(r.viaBindingJs, true);
  assert.match(r.addon, new RegExp(`rcluster-${ABI}`));
  assert.match(r.body, /^pid \d+$/);
});

test('NAPI_RS_NATIVE_LIBRARY_PATH is binding.js\'s to honour', opts, () => {
  const dir = layout({ rootAddon: 'built' });
  const other = path.join(dir, 'elsewhere.node');
  fs.copyFileSync(BUILT, other);
  const r = run(dir, { NAPI_RS_NATIVE_LIBRARY_PATH: other });
  assert.strictEqual(r.viaBindingJs, true);
  assert.strictEqual(r.addon, other);
  assert.match(r.body, /^pid \d+$/);
});
