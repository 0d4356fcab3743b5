'use strict';

// Loads the native addon, after making sure this platform is one rcluster
// supports, with an error that says so otherwise.

const SUPPORTED = ['linux', 'darwin'];

if (!SUPPORTED.includes(process.platform)) {
  const err = new Error(
    `rcluster does not support ${process.platform}-${process.arch}. ` +
    'Supported platforms: Linux (x64, arm64; glibc and musl) and macOS (x64, arm64). ' +
    "Use Node's built-in `cluster` module on this platform.");
  err.code = 'ERR_RCLUSTER_UNSUPPORTED_PLATFORM';
  throw err;
}

module.exports = require('../binding.js');
