'use strict';

// The `cluster` module as a worker sees it, and the worker end of listen
// routing. Node's net and dgram modules ask `require('cluster')` whether they
// run in a worker and, if so, call its `_getServer()` instead of binding;
// bootstrap.js points those hooks here, so every server (http, https,
// express, any library's) is routed to the primary's Rust reactor.

const EventEmitter = require('events');
const path = require('path');
const native = require('./native');
const Worker = require('./worker_class');
const ipc = require('./ipc');
const handles = require('./handles');
const F = require('./frames');

const cluster = new EventEmitter();
cluster.isWorker = true;
cluster.isMaster = false; // Deprecated alias of isPrimary.
cluster.isPrimary = false;
cluster.worker = null;
cluster.Worker = Worker;

let chan = null;
let config = null;
const listeners = new Map(); // listener id -> { handle, server, pipe }
const requests = new Map(); // request id -> callback(reply, fd)
const indexes = new Map(); // indexesKey -> { nextIndex, set }
let nextRequest = 1;

function sendFrame(kind, payload, id = 0) {
  if (chan === null) return;
  try {
    chan.send(kind, 0, id, payload);
  } catch {
    // The channel is gone; the disconnect event tells the rest.
  }
}

function u32(n) {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

cluster._setupWorker = function setupWorker(cfg) {
  config = cfg;
  chan = new native.WorkerChannel(cfg.fd, cfg.ppid, onFrames);
  ipc.setupChannel(process, {
    advanced: !!cfg.advanced,
    write: (data, flags, fd) => chan.send(F.MESSAGE, flags, 0, data, fd),
    close: () => chan.close(),
  });
  const worker = new Worker({ id: cfg.id, process, state: 'online' });
  cluster.worker = worker;
  process.once('disconnect', () => {
    worker.emit('disconnect');
    if (!worker.exitedAfterDisconnect) {
      // The primary went away or closed the channel: exit at once, as Node does.
      process.exit(0);
    }
  });
  sendFrame(F.ONLINE, undefined);
};

cluster._getServer = function getServer(obj, options, cb) {
  let address = options.address;
  if (options.port < 0 && typeof address === 'string') address = path.resolve(address);
  const indexesKey = [address, options.port, options.addressType, options.fd].join(':');
  let indexSet = indexes.get(indexesKey);
  if (indexSet === undefined) {
    indexSet = { nextIndex: 0, set: new Set() };
    indexes.set(indexesKey, indexSet);
  }
  const index = indexSet.nextIndex++;
  indexSet.set.add(index);

  // Datagram sockets are shared like Node's SharedHandle: the primary binds
  // once per key and passes the socket (dgram binds `exclusive` ones itself).
  const isUdp = options.addressType === 'udp4' || options.addressType === 'udp6';
  const request = {
    key: `${indexesKey}:${index}`,
    address: address === undefined ? null : address,
    port: options.port,
    addressType: options.addressType,
    fd: options.fd,
    flags: options.flags || 0,
    backlog: typeof options.backlog === 'number' ? options.backlog : undefined,
    policy: config.policy,
    // Custom server data (tls: ticket keys); the first worker's is shared.
    data: typeof obj._getServerData === 'function' ? obj._getServerData() : null,
  };
  const id = nextRequest++;
  requests.set(id, (reply, fd) => {
    if (typeof obj._setServerData === 'function' && reply.data != null) obj._setServerData(reply.data);
    // A unix path, or listen({ fd }) on a socket without an IP address.
    const pipe = options.addressType === -1 || options.port < 0 ||
      (options.fd >= 0 && !reply.sockname);
    const kind = isUdp ? options.addressType : (pipe ? 'pipe' : 'tcp');
    if (fd >= 0) shared(reply, fd, { obj, kind, indexesKey, index }, cb);
    else rr(reply, { obj, pipe, indexesKey, index }, cb);
  });
  sendFrame(F.LISTEN_REQUEST, Buffer.from(JSON.stringify(request)), id);

  obj.once('listening', () => {
    if (!indexes.has(indexesKey)) return;
    cluster.worker.state = 'listening';
    const a = obj.address();
    sendFrame(F.LISTENING, Buffer.from(JSON.stringify({
      addressType: options.addressType,
      address,
      port: (a && a.port) || options.port,
      fd: options.fd,
    })));
  });
};

function removeIndexesKey(indexesKey, index) {
  const indexSet = indexes.get(indexesKey);
  if (!indexSet) return;
  indexSet.set.delete(index);
  if (indexSet.set.size === 0) indexes.delete(indexesKey);
}

// Round robin: the primary accepts; this faux handle stands for its listener.
function rr(reply, { obj, pipe, indexesKey, index }, cb) {
  if (reply.errno) return cb(reply.errno, null);
  let key = reply.key;
  let keepAlive = null;

  function ref() {
    if (!keepAlive) keepAlive = setInterval(() => {}, 2 ** 31 - 1);
  }
  function unref() {
    if (keepAlive) clearInterval(keepAlive);
    keepAlive = null;
  }
  function close() {
    if (key === undefined) return;
    unref();
    sendFrame(F.CLOSE_LISTEN, u32(key));
    listeners.delete(key);
    removeIndexesKey(indexesKey, index);
    key = undefined;
  }
  const handle = { close, listen: () => 0, ref, unref };
  if (reply.sockname) {
    handle.getsockname = (out) => {
      if (key !== undefined) Object.assign(out, reply.sockname);
      return 0;
    };
  }
  handle.ref();
  listeners.set(key, { handle, server: obj, pipe });
  cb(0, handle);
}

// SCHED_NONE and dgram: the primary bound the socket and passed it; the
// worker accepts (or receives) on it itself.
function shared(reply, fd, { obj, kind, indexesKey, index }, cb) {
  if (reply.errno) {
    native.closeFd(fd);
    return cb(reply.errno, null);
  }
  const key = reply.key;
  const handle = kind === 'udp4' || kind === 'udp6' ?
    openUdp(obj, fd) :
    handles.open(fd, kind === 'pipe', true);
  if (handle === null) {
    // Not usable here: leave the listener so the primary can close it.
    sendFrame(F.CLOSE_LISTEN, u32(key));
    removeIndexesKey(indexesKey, index);
    return cb(-9 /* EBADF */, null);
  }
  const close = handle.close;
  handle.close = function closeShared(...args) {
    sendFrame(F.CLOSE_LISTEN, u32(key));
    listeners.delete(key);
    removeIndexesKey(indexesKey, index);
    return close.apply(handle, args);
  };
  listeners.set(key, { handle, server: obj, pipe: kind === 'pipe', shared: true });
  cb(0, handle);
}

// A UDP handle owning `fd`. Its constructor is not exported; dgram's socket
// holds one in its internal state (Node's kStateSymbol).
function openUdp(socket, fd) {
  const sym = Object.getOwnPropertySymbols(socket).find((s) => String(s) === 'Symbol(state symbol)');
  const state = sym === undefined ? undefined : socket[sym];
  if (!state || !state.handle) {
    native.closeFd(fd);
    return null;
  }
  const handle = new state.handle.constructor();
  const err = handle.open(fd);
  if (err) {
    handle.close();
    native.closeFd(fd);
    return null;
  }
  return handle;
}

function onConnections(conns) {
  // First decide and acknowledge, then hand over: the primary learns at once
  // that these connections are taken, before any user code runs.
  const accepted = [];
  const refused = [];
  const take = [];
  const extra = new Map();
  for (const f of conns) {
    const entry = listeners.get(f.listener);
    let ok = entry !== undefined && !entry.shared;
    if (ok) {
      const server = entry.server;
      const pending = extra.get(server) || 0;
      if (server.maxConnections && server._connections + pending >= server.maxConnections) {
        ok = false;
      } else {
        extra.set(server, pending + 1);
      }
    }
    if (ok) {
      accepted.push(f.id);
      take.push([entry, f.fd]);
    } else {
      refused.push(f.id);
      native.closeFd(f.fd);
    }
  }
  try {
    chan.ack(accepted, refused);
  } catch {
    // Channel gone: the primary re-dispatches what it did not hear about.
  }
  for (const [entry, fd] of take) {
    const h = handles.open(fd, entry.pipe, false);
    if (h === null) continue;
    if (typeof entry.handle.onconnection === 'function') {
      try {
        entry.handle.onconnection(0, h);
      } catch (err) {
        process.nextTick(() => { throw err; });
      }
    } else {
      h.close();
    }
  }
}

function onFrame(f) {
  switch (f.type) {
    case F.LISTEN_REPLY: {
      const cb = requests.get(f.id);
      requests.delete(f.id);
      if (cb) cb(JSON.parse(f.data.toString()), f.fd);
      else if (f.fd >= 0) native.closeFd(f.fd);
      break;
    }
    case F.MESSAGE:
      ipc.deliver(process, f.data, f.flags, f.fd);
      break;
    case F.DISCONNECT:
      workerDisconnect.call(cluster.worker, true);
      break;
    case F.EV_ERROR: {
      const err = new Error(f.message);
      err.code = 'ERR_RCLUSTER_CHANNEL';
      if (process.listenerCount('error') > 0) process.emit('error', err);
      else process.emitWarning(err.message, { code: err.code });
      break;
    }
    case F.EV_DISCONNECT:
      chan.close();
      ipc.markDisconnected(process);
      break;
    default:
      if (f.fd >= 0) native.closeFd(f.fd);
      break;
  }
}

function onFrames(frames) {
  let conns = null;
  for (let i = 0; i < frames.length; i++) {
    const f = frames[i];
    if (f.type === F.CONN) {
      (conns || (conns = [])).push(f);
      continue;
    }
    if (conns !== null) {
      onConnections(conns);
      conns = null;
    }
    try {
      onFrame(f);
    } catch (err) {
      process.nextTick(() => { throw err; });
    }
  }
  if (conns !== null) onConnections(conns);
}

function workerDisconnect(primaryInitiated) {
  this.exitedAfterDisconnect = true;
  let waiting = 1;
  const done = () => {
    if (--waiting !== 0) return;
    if (!primaryInitiated) sendFrame(F.EXITED_AFTER_DISCONNECT, undefined);
    if (process.connected) process.disconnect();
  };
  for (const { handle, server } of listeners.values()) {
    waiting++;
    if (server && typeof server.close === 'function') server.close(done);
    else handle.close(done);
  }
  listeners.clear();
  done();
}

Worker.prototype.disconnect = function disconnect() {
  if (this.state !== 'disconnecting' && this.state !== 'destroying') {
    this.state = 'disconnecting';
    workerDisconnect.call(this, false);
  }
  return this;
};

Worker.prototype.destroy = function destroy() {
  if (this.state === 'destroying') return;
  this.exitedAfterDisconnect = true;
  if (!this.isConnected()) {
    process.exit(0);
  } else {
    this.state = 'destroying';
    sendFrame(F.EXITED_AFTER_DISCONNECT, undefined);
    process.once('disconnect', () => process.exit(0));
    process.disconnect();
  }
};

module.exports = cluster;
