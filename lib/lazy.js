'use strict';

// Modules that rcluster loads on first use (a worker's start does not wait
// for what it needs only once it sends, receives or throws), each required
// once per process, and invisible to the program as Node's own internals
// are.
//
// Every `require()` call, even of a cached module, runs Module._load, and
// whatever is hooked there. `node --watch` makes it report each module to
// the parent with `process.send({ 'watch:require': [...] })` (and tools like
// smart-restart patch Module._load to do the same). In a worker, that send
// is rcluster's, so a `require()` on the send path called send again, and
// again: "Maximum call stack size exceeded" before the first message. Here
// a module is required once, and a message sent while rcluster loads one of
// its modules is not sent: it would tell the primary about rcluster's own
// files, which a program on Node's cluster never hears about.

let depth = 0;

/** A function that returns `load()`'s value, calling it the first time only. */
function once(load) {
  let value;
  let done = false;
  return function get() {
    if (!done) {
      depth++;
      try {
        value = load();
        done = true;
      } finally {
        depth--;
      }
    }
    return value;
  };
}

/** Whether rcluster is loading a module of its own right now. */
function loading() {
  return depth > 0;
}

module.exports = { once, loading };
