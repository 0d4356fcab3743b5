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

const preset = require('./addon-path');

function load() {
  if (preset.value !== undefined) {
    try {
      return require(preset.value);
    } catch {
      // Moved or unloadable: the usual detection below.
    }
  }
  const binding = require('../binding.js');
  const mod = require.cache[require.resolve('../binding.js')];
  const addon = mod && mod.children.find((c) => c.filename.endsWith('.node'));
  if (addon) preset.value = addon.filename;
  return binding;
}

module.exports = load();
