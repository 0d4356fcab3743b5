'use strict';

// rcluster/register: `node -r rcluster/register app.js` (or `--import
// rcluster/register` for ESM) makes `require('cluster')`,
// `require('node:cluster')`, `process.getBuiltinModule('cluster')` and
// `import cluster from 'node:cluster'` return rcluster everywhere in the
// process, so that libraries which use `cluster` themselves (prom-client's
// AggregatorRegistry, @socket.io/sticky, throng...) run on rcluster.
//
// Decisions:
// - rcluster's own files (index.js, lib/) keep Node's built-in module: the
//   worker bootstrap patches the built-in so that net/dgram route listen()
//   to the primary, and it must get the real one.
// - rcluster is loaded lazily, at the first `cluster` request. In a worker
//   started by rcluster, the worker bootstrap runs first (see bootstrapWorker).
// - CommonJS: a Module._load wrapper. ESM: module.registerHooks() (in-thread,
//   Node 22.15+/23.5+) when Node has it, module.register() otherwise (Node
//   20.6+). Both are installed from this file, so `-r` and `--import` are
//   the same thing.

const Module = require('module');
const path = require('path');
const url = require('url');
const { isMainThread } = require('worker_threads');

const INSTALLED = Symbol.for('rcluster.register');
const WORKER = Symbol.for('rcluster.worker');
const INDEX = path.join(__dirname, 'index.js');
const INDEX_URL = url.pathToFileURL(path.join(__dirname, 'index.mjs')).href;
const OWN = [path.join(__dirname, 'lib') + path.sep, INDEX];
const OWN_URL = url.pathToFileURL(__dirname).href + '/';
const IDS = new Set(['cluster', 'node:cluster']);

function isOwn(filename) {
  return typeof filename === 'string' &&
    (filename === INDEX || filename.startsWith(OWN[0]));
}

function isOwnUrl(parentURL) {
  if (typeof parentURL !== 'string' || !parentURL.startsWith(OWN_URL)) return false;
  try {
    return isOwn(url.fileURLToPath(parentURL)) || parentURL === INDEX_URL;
  } catch {
    return false;
  }
}

// In an rcluster worker (preloaded before the bootstrap that the primary
// names), run that bootstrap now: the worker side must exist before anything
// asks for `cluster`, and before Node 20 starts its module-hooks thread
// (which runs the --require preloads again, with a copy of the environment:
// it must not find RCLUSTER_WORKER there and open the channel a second time).
function bootstrapWorker() {
  const raw = process.env.RCLUSTER_WORKER;
  if (raw === undefined || globalThis[WORKER] !== undefined) return;
  let bootstrap = path.join(__dirname, 'lib', 'bootstrap.js');
  try {
    bootstrap = JSON.parse(raw).bootstrap || bootstrap;
  } catch {
    // Keep ours.
  }
  require(bootstrap);
}

let rcluster = null;
function load() {
  if (rcluster === null) rcluster = require(INDEX);
  return rcluster;
}

function install() {
  if (globalThis[INSTALLED]) return;
  Object.defineProperty(globalThis, INSTALLED, { value: true });
  if (isMainThread) bootstrapWorker();

  const originalLoad = Module._load;
  Module._load = function _load(request, parent, isMain) {
    if (IDS.has(request) && !(parent && isOwn(parent.filename))) return load();
    return originalLoad.apply(this, arguments);
  };

  if (typeof process.getBuiltinModule === 'function') {
    const original = process.getBuiltinModule;
    process.getBuiltinModule = function getBuiltinModule(id) {
      if (IDS.has(id)) return load();
      return original.apply(this, arguments);
    };
  }

  if (!isMainThread) {
    // A worker thread (the app's, or Node 20's hooks thread): the ESM hooks
    // registered by the main thread are process-wide already.
  } else if (typeof Module.registerHooks === 'function') {
    Module.registerHooks({
      resolve(specifier, context, nextResolve) {
        if (IDS.has(specifier) && !isOwnUrl(context.parentURL)) {
          return { url: INDEX_URL, format: 'module', shortCircuit: true };
        }
        return nextResolve(specifier, context);
      },
    });
  } else if (typeof Module.register === 'function') {
    Module.register(url.pathToFileURL(path.join(__dirname, 'lib', 'register-hooks.mjs')).href, {
      data: { target: INDEX_URL, own: OWN_URL },
    });
  }
}

install();

module.exports = { load };
