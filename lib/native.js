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

// Where the addon was loaded from: the primary finds it after loading and
// puts it in each worker's configuration; a worker's bootstrap sets it here
// before anything requires this module, so that the worker loads that file
// directly instead of running binding.js's platform detection again.
const ADDON = Symbol.for('rcluster.addon');

function load() {
  const preset = globalThis[ADDON];
  if (typeof preset === 'string') {
    try {
      return require(preset);
    } catch {
      // Moved or unloadable: the usual detection below.
    }
  }
  const binding = require('../binding.js');
  const mod = require.cache[require.resolve('../binding.js')];
  const addon = mod && mod.children.find((c) => c.filename.endsWith('.node'));
  if (addon) setAddonPath(addon.filename);
  return binding;
}

function setAddonPath(file) {
  Object.defineProperty(globalThis, ADDON, { value: file, configurable: true, writable: true, enumerable: false });
}

module.exports = load();
