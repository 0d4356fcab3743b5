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
  const file = installedAddon();
  if (file !== null) {
    try {
      const addon = require(file);
      globalThis[ADDON] = file;
      return addon;
    } catch {
      // binding.js tries it again, and explains what went wrong.
    }
  }
  let binding;
  try {
    binding = require('../binding.js');
  } catch (err) {
    throw addonsDisabled(err) || err;
  }
  // Module._cache, not require.cache: a CommonJS module that the ES module
  // loader runs (--experimental-default-type=module) has a require without it.
  const mod = require('module')._cache[require.resolve('../binding.js')];
  const addon = mod && mod.children.find((c) => c.filename.endsWith('.node'));
  if (addon) globalThis[ADDON] = addon.filename;
  return binding;
}

/**
 * The addon file, when this machine has only one that can be meant: the
 * `rcluster.<abi>.node` that a build from source (or a local build) puts at
 * the package's root, or else the one installed platform package
 * (`rcluster-<abi>`). Loading it directly spares the primary the 35 KB of
 * binding.js, napi-rs's loader for every platform (about 1.4 ms and 100 KB
 * of allocations before the first fork). Anything less clear-cut is
 * binding.js's to decide: an override (`NAPI_RS_NATIVE_LIBRARY_PATH`), the
 * version check (`NAPI_RS_ENFORCE_VERSION_CHECK`), both a glibc and a musl
 * build, or none.
 */
function installedAddon() {
  if (process.env.NAPI_RS_NATIVE_LIBRARY_PATH || process.env.NAPI_RS_ENFORCE_VERSION_CHECK) return null;
  const abis = process.platform === 'darwin'
    ? [`darwin-${process.arch}`]
    : [`linux-${process.arch}-gnu`, `linux-${process.arch}-musl`];
  const fs = require('fs');
  const path = require('path');
  const local = abis.map((abi) => path.join(__dirname, '..', `rcluster.${abi}.node`)).filter((f) => fs.existsSync(f));
  if (local.length > 0) return local.length === 1 ? local[0] : null;
  const packages = [];
  for (const abi of abis) {
    try {
      packages.push(require.resolve(`rcluster-${abi}`));
    } catch {
      // not installed
    }
  }
  return packages.length === 1 ? packages[0] : null;
}

/**
 * Native addons are disabled by `--no-addons`, and by the permission model
 * (`--permission`, Node 20's `--experimental-permission`) unless
 * `--allow-addons` is given; binding.js then only says that it found no
 * binding. A clear error instead, when that is the cause.
 */
function addonsDisabled(err) {
  for (let e = err, depth = 0; e && depth < 16; e = e.cause, depth++) {
    // binding.js chains copies of the errors it met, without their code.
    if (e.code === 'ERR_DLOPEN_DISABLED' || /loading addons is disabled/.test(e.message)) {
      const out = new Error(
        'rcluster cannot load its native addon: native addons are disabled in this process ' +
        '(--no-addons, or the permission model without --allow-addons). Under --permission, add ' +
        "--allow-addons, with --allow-child-process to fork workers; or use Node's built-in cluster module.");
      out.code = 'ERR_RCLUSTER_ADDONS_DISABLED';
      out.cause = err;
      return out;
    }
  }
  return null;
}

module.exports = load();
