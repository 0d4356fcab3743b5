'use strict';

// Which prebuilt binary fits this machine, named the way napi-rs names them:
// `<platform>-<arch>[-<libc>]`, e.g. `linux-x64-gnu`, `darwin-arm64`.
// Shared by scripts/install.js and anything else that needs the name.

const fs = require('node:fs');

const BINARY_NAME = 'rcluster';

// Keep in step with `napi.targets` in package.json.
const supported = [
  'linux-x64-gnu',
  'linux-x64-musl',
  'linux-arm64-gnu',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
];

// Rust target triple of each entry of `supported`.
const triples = {
  'linux-x64-gnu': 'x86_64-unknown-linux-gnu',
  'linux-x64-musl': 'x86_64-unknown-linux-musl',
  'linux-arm64-gnu': 'aarch64-unknown-linux-gnu',
  'linux-arm64-musl': 'aarch64-unknown-linux-musl',
  'darwin-x64': 'x86_64-apple-darwin',
  'darwin-arm64': 'aarch64-apple-darwin',
};

let muslCache;

// Same rule as the loader napi-rs generates: a glibc process reports the
// glibc version it runs on; a musl process has no such field. When the report
// is unavailable, look at what /usr/bin/ldd is.
function isMusl() {
  if (process.platform !== 'linux') return false;
  if (muslCache !== undefined) return muslCache;
  let musl = null;
  try {
    let report = process.report && process.report.getReport();
    if (typeof report === 'string') report = JSON.parse(report);
    if (report && report.header) musl = !report.header.glibcVersionRuntime;
  } catch {
    // fall through to ldd
  }
  if (musl === null) {
    try {
      musl = fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl');
    } catch {
      musl = false;
    }
  }
  muslCache = musl;
  return musl;
}

// The ABI name for this process (or for the given platform/arch), or null
// when rcluster has no binary for it (Windows, 32-bit, ...).
function abi(platform = process.platform, arch = process.arch) {
  let name;
  if (platform === 'linux') name = `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`;
  else name = `${platform}-${arch}`;
  return supported.includes(name) ? name : null;
}

// `rcluster.linux-x64-gnu.node`
function binaryFile(name) {
  return `${BINARY_NAME}.${name}.node`;
}

// `rcluster-linux-x64-gnu`, the optional package that ships the binary.
function packageName(name) {
  return `${BINARY_NAME}-${name}`;
}

module.exports = { abi, supported, triples, isMusl, binaryFile, packageName, BINARY_NAME };
