'use strict';

// The messaging half of a forked child's `process` object (and of the
// primary's `worker.process`): `send()`, `connected`, `disconnect()`,
// `channel`, and the queueing of messages that arrive before anyone listens.
// It is written against Node's documented behaviour of child_process IPC.

const { FLAG_HANDLE, FLAG_BATCH, FLAG_ADVANCED } = require('./frames');
const { later } = require('./inbox');
const lazy = require('./lazy');

// Loaded on first use (lib/lazy.js): a worker's start does not wait for the
// modules it needs only once it sends or receives a message.
const serialize = lazy.once(() => require('./serialize'));
const handles = lazy.once(() => require('./handles'));
const errors = lazy.once(() => require('./errors'));
const os = lazy.once(() => require('os'));
const util = lazy.once(() => require('util'));
const native = lazy.once(() => require('./native'));
const Batcher = lazy.once(() => require('./batch').Batcher);
const socketLists = lazy.once(() => require('./socket_lists'));

const HAS_LEGACY_CHANNEL = Number(process.versions.node.split('.')[0]) < 25;

/**
 * Throws as Node's `send()` does for a message it cannot send (before any
 * encoding). Here rather than in lib/serialize.js: a JSON message is sent and
 * received without that module.
 */
function validate(message) {
  if (message === undefined) throw errors().missingArgs('message');
  const t = typeof message;
  if (t !== 'string' && t !== 'object' && t !== 'number' && t !== 'boolean') {
    throw errors().invalidArgType('message', ['string', 'object', 'number', 'boolean'], message);
  }
}

const kPending = Symbol('rcluster.pendingMessages');
const kKeepAlive = Symbol('rcluster.keepAlive');
const kFlush = Symbol('rcluster.flush');
// The code of the first failed write (EPIPE...), while the channel is still
// connected: Node's later writes fail the same way until 'disconnect'.
const kBroken = Symbol('rcluster.brokenWrite');
const HIGH_WATER = 65536 * 2;
const TIMEOUT_MAX = 2 ** 31 - 1;
const INTERNAL_PREFIX = 'NODE_';

/** Node's rule: `{cmd: 'NODE_<something>'}` is internal (the bare prefix is not). */
function isInternal(message) {
  return message !== null && typeof message === 'object' && typeof message.cmd === 'string' &&
    message.cmd.length > INTERNAL_PREFIX.length && message.cmd.startsWith(INTERNAL_PREFIX);
}

/** A failed write, shaped like Node's ErrnoException (`write EPIPE`). */
function writeError(err) {
  const m = /^([A-Z_]+):/.exec(err && err.message);
  let code = m ? m[1] : 'EPIPE';
  // A seqpacket channel whose other end closed with frames it had not read
  // fails the write with ECONNRESET; Node's stream channel says EPIPE.
  if (code === 'ECONNRESET') code = 'EPIPE';
  if (code === 'ERR_IPC_CHANNEL_CLOSED') return errors().channelClosed();
  const errno = os().constants.errno[code];
  const ex = new Error(`write ${code}`);
  ex.errno = errno === undefined ? -5 /* EIO */ : -errno;
  ex.code = code;
  ex.syscall = 'write';
  return ex;
}

/** Reports a write's outcome to one message's callback, or as 'error'. */
function settle(target, callback, swallow, err) {
  if (err === null) {
    if (typeof callback === 'function') process.nextTick(callback, null);
    return;
  }
  let ex = writeError(err);
  if (ex.syscall === 'write') {
    if (target[kBroken] === undefined) target[kBroken] = ex.code;
  } else if (ex.code === 'ERR_IPC_CHANNEL_CLOSED' && target[kBroken] !== undefined && target.connected) {
    // The native side closed the channel at the first failed write; Node's
    // channel is still there and fails each write the same way.
    ex = writeError(new Error(`${target[kBroken]}: write failed before`));
  }
  if (swallow) return;
  if (typeof callback === 'function') process.nextTick(callback, ex);
  else process.nextTick(() => target.emit('error', ex));
}

/**
 * A message sent while rcluster loads one of its own modules: a hook on
 * Module._load reporting that module (`node --watch` does, see lib/lazy.js).
 * It is not sent, as Node's internals report nothing; it succeeds.
 */
function dropped(callback) {
  if (typeof callback === 'function') process.nextTick(callback, null);
  return true;
}

/**
 * Adds IPC methods to `target` (an EventEmitter).
 * `io` = { write(data, flags, fd) -> queuedBytes, close(then), advanced, onMessage(message)?, fd()?, counted? }
 * (`counted`: a forked child's end, referenced while `target` has 'message'
 * or 'disconnect' listeners, as Node's; otherwise always referenced)
 * (`close` calls `then` from a later tick, once the channel is closed)
 * (`data` is a Buffer, or the JSON text of messages as a string)
 * (`onMessage` sees each message sent without a handle, once it is written or
 * batched.)
 *
 * JSON messages without a handle are coalesced per synchronous stretch
 * (lib/batch.js) into `FLAG_BATCH` frames; a handle, `disconnect()` and every
 * other frame the caller sends after calling `target[kFlush]()` go after
 * them. Each message's callback and errors are reported as for a write of
 * its own.
 */
function setupChannel(target, io) {
  target.connected = true;
  let queued = 0; // what the native side had queued after the last write
  let batcher = null; // made at the first send
  function batch() {
    if (batcher !== null) return batcher;
    const B = Batcher();
    batcher = new B((texts, settles) => {
      let err = null;
      try {
        queued = io.write(texts.join('\n'), FLAG_BATCH, undefined);
      } catch (e) {
        err = e;
      }
      for (const [callback, swallow] of settles) settle(target, callback, swallow, err);
    });
    return batcher;
  }
  const flush = () => {
    if (batcher !== null) batcher.flush();
  };
  target[kFlush] = flush;
  target[kPending] = [];
  let keepAlive = null;
  let refed = true;
  // channel.ref()/unref() called: from then on they decide, not listeners.
  let explicit = false;

  function ref() {
    if (!keepAlive && target.connected) keepAlive = setInterval(() => {}, TIMEOUT_MAX);
  }
  function unref() {
    if (keepAlive) clearInterval(keepAlive);
    keepAlive = null;
  }
  target[kKeepAlive] = { ref, unref };
  if (io.counted) {
    // As Node's forked child: the channel keeps the process alive while it
    // has 'message' or 'disconnect' listeners (a cluster worker's own
    // included), so one that removes them all can end.
    const counts = (name) => name === 'message' || name === 'disconnect';
    let refs = target.listenerCount('message') + target.listenerCount('disconnect');
    refed = refs > 0;
    if (refed) ref();
    target.on('newListener', (name) => {
      if (counts(name) && ++refs === 1 && !explicit) {
        refed = true;
        ref();
      }
    });
    target.on('removeListener', (name) => {
      if (counts(name) && --refs === 0 && !explicit) {
        refed = false;
        unref();
      }
    });
  } else {
    ref();
  }

  target.channel = {
    ref() { explicit = true; refed = true; ref(); },
    unref() { explicit = true; refed = false; unref(); },
    // The channel socket's fd while open, as Node's `channel.fd` (a
    // SOCK_SEQPACKET socket here, a stream socket in Node).
    get fd() { return typeof io.fd === 'function' ? io.fd() : undefined; },
  };
  // The deprecated alias, as Node has it on both ends of a fork() channel
  // until Node 24 (DEP0129 is End-of-Life from Node 25).
  if (HAS_LEGACY_CHANNEL) {
    const { deprecate } = util();
    const DEP0129 = '_channel is deprecated. Use ChildProcess.channel instead.';
    Object.defineProperty(target, '_channel', {
      get: deprecate(() => target.channel, DEP0129, 'DEP0129'),
      set: deprecate((value) => { target.channel = value; }, DEP0129, 'DEP0129'),
      configurable: true,
      enumerable: false,
    });
  }

  target.on('newListener', (event) => {
    if (event !== 'message') return;
    process.nextTick(() => {
      const pending = target[kPending];
      if (pending.length === 0 || target.listenerCount('message') === 0) return;
      target[kPending] = [];
      for (const [message, handle] of pending) target.emit('message', message, handle);
    });
  });

  target.send = function send(message, handle, options, callback) {
    if (typeof handle === 'function') {
      callback = handle;
      handle = undefined;
      options = undefined;
    } else if (typeof options === 'function') {
      callback = options;
      options = undefined;
    } else if (options !== undefined &&
               (options === null || typeof options !== 'object' || Array.isArray(options))) {
      throw errors().invalidArgType('options', ['object'], options);
    }
    options = { swallowErrors: false, ...options };
    if (this.connected) return this._send(message, handle, options, callback);
    const ex = errors().channelClosed();
    if (typeof callback === 'function') process.nextTick(callback, ex);
    else process.nextTick(() => this.emit('error', ex));
    return false;
  };

  // The unchecked form Node has too (legacy `options` boolean = swallowErrors).
  target._send = function _send(message, handle, options, callback) {
    if (lazy.loading()) return dropped(callback);
    validate(message);
    if (typeof options === 'boolean') options = { swallowErrors: options };
    else if (options === undefined || options === null) options = {};
    const b = batch();
    if (!handle && !io.advanced && b.accepts()) {
      b.join(JSON.stringify(message), [callback, !!options.swallowErrors]);
      if (io.onMessage) io.onMessage(message);
      return queued + b.waiting < HIGH_WATER;
    }
    b.direct();
    let fd;
    let info = null;
    if (handle) {
      info = handles().describeForSend(handle); // throws ERR_INVALID_HANDLE_TYPE
      if (info.fd >= 0) {
        fd = info.fd;
        message = { cmd: 'NODE_HANDLE', type: info.type, ...info.extra, msg: message };
        // A socket of a server: the receiver counts it for the server's
        // getConnections() and close() (lib/socket_lists.js).
        if (info.type === 'net.Socket') message.key = socketLists().keyOf(handle);
      } else {
        info = null; // Nothing to pass (a socket without a handle): the message alone.
      }
    }
    // A JSON message without a handle goes as the string itself (the native
    // side copies it out); anything else as an encoded Buffer.
    let data = info === null && !io.advanced ? JSON.stringify(message) : undefined;
    let flags = 0;
    if (typeof data !== 'string') [data, flags] = serialize().encode(message, io.advanced);
    try {
      queued = io.write(data, flags | (info ? FLAG_HANDLE : 0), fd);
    } catch (err) {
      settle(this, callback, !!options.swallowErrors, err);
      return true; // Node: the (unchanged) write queue is below the high-water mark.
    }
    if (info && info.type === 'net.Socket') {
      socketLists().sent(this, handle);
      if (!options.keepOpen) handles().detachSent(handle);
    }
    if (!info && io.onMessage) io.onMessage(message);
    settle(this, callback, false, null);
    return queued < HIGH_WATER;
  };

  target.disconnect = function disconnect() {
    if (!this.connected) {
      this.emit('error', errors().disconnected());
      return;
    }
    flush();
    this.connected = false;
    unref();
    // 'disconnect' from a later tick, once the channel is closed (the
    // worker's may wait for the end of the primary's disconnect, lib/worker.js).
    io.close(() => markDisconnected(target));
  };

  target._refed = () => refed;
}

/** The channel is gone (either side): emit 'disconnect' once. */
function markDisconnected(target) {
  if (target._rclusterDisconnected) return;
  target._rclusterDisconnected = true;
  target.connected = false;
  // As Node's: `subprocess.channel` / `process.channel` is null once gone.
  target.channel = null;
  if (target[kKeepAlive]) target[kKeepAlive].unref();
  target.emit('disconnect');
}

/** Emits a message, or queues it while nobody listens (as Node does). */
function dispatch(target, message, handle) {
  if (isInternal(message)) {
    target.emit('internalMessage', message, handle);
    return;
  }
  if (target.listenerCount('message') === 0) {
    target[kPending].push([message, handle]);
    return;
  }
  target.emit('message', message, handle);
}

/**
 * Delivers a received frame's message, and its handle if one came with it.
 * The frame is decoded now and each of its messages is queued (lib/inbox.js),
 * to be emitted after the native callback, in order, as Node emits each one
 * from a tick: a listener that throws is an uncaught exception and loses none
 * of the messages after it. A frame that cannot be decoded throws. Callers
 * queue their other events the same way (lib/worker.js onFrames,
 * lib/primary.js onEvents), so the order across them holds.
 */
function deliver(target, data, flags, fd) {
  if (flags & FLAG_BATCH) {
    const text = typeof data === 'string' ? data : data.toString('utf8');
    for (const part of text.split('\n')) later(dispatch, target, JSON.parse(part), undefined);
    return;
  }
  let message;
  try {
    message = flags & FLAG_ADVANCED ? serialize().decode(data, flags) :
      JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch (err) {
    if (fd >= 0) native().closeFd(fd);
    throw err;
  }
  if (flags & FLAG_HANDLE && message !== null && typeof message === 'object' &&
      message.cmd === 'NODE_HANDLE') {
    const inner = message.msg;
    handles().fromReceived(message, fd, (handle) => {
      if (handle === undefined) return; // Unusable fd: Node drops such a message too.
      if (message.type === 'net.Socket' && message.key !== undefined) socketLists().received(target, message.key, handle);
      later(dispatch, target, inner, handle);
    });
    return;
  }
  if (fd >= 0) native().closeFd(fd);
  later(dispatch, target, message, undefined);
}

/**
 * A write of rcluster's own on `target`'s channel failed (`err`): an errno
 * (EPIPE: the other side closed its end) is reported as Node reports a
 * failed internal message, an 'error' event, and later writes fail the same
 * way. A channel the native side already knows closed is not an error:
 * Node's would already be disconnected.
 */
function failedWrite(target, err) {
  if (writeError(err).syscall === 'write') settle(target, undefined, false, err);
}

module.exports = { setupChannel, markDisconnected, deliver, isInternal, failedWrite, validate, kKeepAlive, kFlush };
