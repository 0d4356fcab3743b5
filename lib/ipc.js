'use strict';

// The messaging half of a forked child's `process` object (and of the
// primary's `worker.process`): `send()`, `connected`, `disconnect()`,
// `channel`, and the queueing of messages that arrive before anyone listens.
// It is written against Node's documented behaviour of child_process IPC.

const net = require('net');
const dgram = require('dgram');
const serialize = require('./serialize');
const errors = require('./errors');
const { FLAG_HANDLE } = require('./frames');

const kPending = Symbol('rcluster.pendingMessages');
const kKeepAlive = Symbol('rcluster.keepAlive');
const HIGH_WATER = 65536 * 2;
const TIMEOUT_MAX = 2 ** 31 - 1;

/** The fd behind a handle that `send()` accepts, and its type name. */
function handleInfo(handle) {
  if (handle instanceof net.Socket || handle instanceof net.Server) {
    const h = handle._handle;
    const fd = h && typeof h.fd === 'number' ? h.fd : -1;
    return { type: handle instanceof net.Server ? 'net.Server' : 'net.Socket', fd };
  }
  if (handle instanceof dgram.Socket) {
    const h = handle[Object.getOwnPropertySymbols(handle).find((s) => String(s) === 'Symbol(state symbol)')];
    const fd = h && h.handle && typeof h.handle.fd === 'number' ? h.handle.fd : -1;
    return { type: 'dgram.Socket', fd };
  }
  if (handle && typeof handle === 'object' && typeof handle.fd === 'number' &&
      typeof handle.close === 'function') {
    return { type: 'net.Native', fd: handle.fd };
  }
  throw errors.invalidHandleType();
}

/**
 * Adds IPC methods to `target` (an EventEmitter).
 * `io` = { write(buf, flags, fd) -> queuedBytes, close(), advanced }
 */
function setupChannel(target, io) {
  target.connected = true;
  target[kPending] = [];
  let keepAlive = null;
  let refed = true;

  function ref() {
    if (!keepAlive && target.connected) keepAlive = setInterval(() => {}, TIMEOUT_MAX);
  }
  function unref() {
    if (keepAlive) clearInterval(keepAlive);
    keepAlive = null;
  }
  target[kKeepAlive] = { ref, unref };
  ref();

  target.channel = {
    ref() { refed = true; ref(); },
    unref() { refed = false; unref(); },
    get fd() { return undefined; },
  };

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
    } else if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw errors.invalidArgType('options', ['object'], options);
    }
    options = { swallowErrors: false, ...options };
    if (!this.connected) {
      const ex = errors.channelClosed();
      if (typeof callback === 'function') process.nextTick(callback, ex);
      else process.nextTick(() => this.emit('error', ex));
      return false;
    }
    serialize.validate(message);
    let fd;
    let info = null;
    if (handle) {
      info = handleInfo(handle);
      fd = info.fd;
      message = { cmd: 'NODE_HANDLE', type: info.type, msg: message };
    }
    const [data, flags] = serialize.encode(message, io.advanced);
    let queued;
    try {
      queued = io.write(data, flags | (handle ? FLAG_HANDLE : 0), fd);
    } catch (err) {
      if (!options.swallowErrors) {
        const ex = errors.make(Error, 'EPIPE', `write EPIPE: ${err.message}`);
        ex.errno = -32;
        ex.syscall = 'write';
        if (typeof callback === 'function') process.nextTick(callback, ex);
        else process.nextTick(() => this.emit('error', ex));
      }
      return false;
    }
    if (handle && !options.keepOpen && info.type === 'net.Socket') {
      // Like Node: a sent socket is closed on this side unless keepOpen.
      handle.destroy();
    }
    if (typeof callback === 'function') process.nextTick(callback, null);
    return queued < HIGH_WATER;
  };

  target.disconnect = function disconnect() {
    if (!this.connected) {
      this.emit('error', errors.disconnected());
      return;
    }
    this.connected = false;
    unref();
    io.close();
    process.nextTick(() => markDisconnected(target));
  };

  target._refed = () => refed;
}

/** The channel is gone (either side): emit 'disconnect' once. */
function markDisconnected(target) {
  if (target._rclusterDisconnected) return;
  target._rclusterDisconnected = true;
  target.connected = false;
  if (target[kKeepAlive]) target[kKeepAlive].unref();
  target.emit('disconnect');
}

/** Delivers a received message, queueing it while nobody listens (as Node does). */
function deliver(target, data, flags, fd) {
  let message = serialize.decode(data, flags);
  let handle;
  if (flags & FLAG_HANDLE && message && message.cmd === 'NODE_HANDLE') {
    handle = require('./handles').fromReceived(message.type, fd);
    message = message.msg;
  } else if (fd >= 0) {
    require('./native').closeFd(fd);
  }
  if (message !== null && typeof message === 'object' && typeof message.cmd === 'string' &&
      message.cmd.startsWith('NODE_')) {
    target.emit('internalMessage', message, handle);
    return;
  }
  if (target.listenerCount('message') === 0) {
    target[kPending].push([message, handle]);
    return;
  }
  target.emit('message', message, handle);
}

module.exports = { setupChannel, markDisconnected, deliver, kKeepAlive };
