'use strict';

// What the channels bring, emitted in order after the native callback that
// read it, the way Node emits each message it reads from a process.nextTick
// of its own. One queue for the process and one tick to drain it, rather
// than a tick per message: the order and the outcome are Node's.
//
// A listener that throws ends the draining tick with that exception (an
// uncaught exception thrown at its own site, as in Node); what is still
// queued is drained on the next tick, so nothing is lost when an
// 'uncaughtException' listener keeps the process alive, and nothing queued
// after it is emitted before the exception is reported.

const SLOTS = 4;
const queue = [];
let head = 0;
let scheduled = false;

function drain() {
  scheduled = false;
  try {
    while (head < queue.length) {
      const fn = queue[head];
      const a = queue[head + 1];
      const b = queue[head + 2];
      const c = queue[head + 3];
      queue[head] = queue[head + 1] = queue[head + 2] = queue[head + 3] = undefined;
      head += SLOTS;
      fn(a, b, c);
    }
  } finally {
    if (head < queue.length) {
      scheduled = true;
      process.nextTick(drain);
    } else {
      queue.length = 0;
      head = 0;
    }
  }
}

/** Calls `fn(a, b, c)` after what was queued before it, from a tick. */
function later(fn, a, b, c) {
  queue.push(fn, a, b, c);
  if (!scheduled) {
    scheduled = true;
    process.nextTick(drain);
  }
}

/** Throws `err` as an uncaught exception, in its place in the queue. */
function rethrow(err) {
  throw err;
}

module.exports = { later, rethrow };
