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
const { later, rethrow } = require('./inbox');
const ipc = require('./ipc');
const F = require('./frames');
const lazy = require('./lazy');

// Loaded on first use: every module loaded here is paid for in each worker's
// start, before the program's own code runs, and a worker needs these only
// once it sends a message, passes or takes a handle, or throws one of
// rcluster's errors (lib/lazy.js: each is required once).
const handles = lazy.once(() => require('./handles'));
const serialize = lazy.once(() => require('./serialize'));
const errors = lazy.once(() => require('./errors'));
const Batcher = lazy.once(() => require('./batch').Batcher);

const [NODE_MAJOR, NODE_MINOR] = process.versions.node.split('.').map(Number);

const cluster = new EventEmitter();
cluster.isWorker = true;
cluster.isMaster = false; // Deprecated alias of isPrimary.
cluster.isPrimary = false;
cluster.worker = null;
cluster.Worker = Worker;

// Two channels to the primary: `chan` to its Rust reactor (connections,
// listen requests, acks, control, relays), and `msgs` to its JavaScript
// (process.send() and the events that must stay in order with messages:
// online, listening, exitedAfterDisconnect, disconnect). The primary's main
// thread reads `msgs` itself, so a message crosses no thread there.
let chan = null;
let msgs = null;
let config = null;
const listeners = new Map(); // listener id -> { handle, server, pipe }
const requests = new Map(); // request id -> callback(reply, fd)
const indexes = new Map(); // indexesKey -> { nextIndex, set }
// indexesKey -> the index of this worker's server that holds the primary's
// listener for that address (not for port 0, whose listens are each their own).
const joined = new Map();
let nextRequest = 1;

/** Writes the messages batched so far (see lib/ipc.js), to keep order. */
function flushMessages() {
  if (typeof process[ipc.kFlush] === 'function') process[ipc.kFlush]();
  flushRelays();
}

/** The channel a frame of `kind` travels on (see `chan` and `msgs`). */
function channelFor(kind) {
  if (msgs !== null && (kind === F.ONLINE || kind === F.LISTENING || kind === F.EXITED_AFTER_DISCONNECT)) {
    return msgs;
  }
  return chan;
}

/** Sends a frame; false when the channel is gone (its disconnect event tells the rest). */
function sendFrame(kind, payload, id = 0) {
  if (chan === null) return false;
  flushMessages();
  try {
    channelFor(kind).send(kind, 0, id, payload);
    // The supervisor (on the reactor) learns readiness from it too.
    if (kind === F.LISTENING && msgs !== null) chan.send(kind, 0, id, payload);
    return true;
  } catch {
    return false;
  }
}

// A worker that leaves by its own disconnect() or destroy() tells the
// primary (which sets `worker.exitedAfterDisconnect`) and, as in Node,
// disconnects only once the primary has acknowledged: the flag is set there
// before the channel closes, and the channel stays usable for the rest of
// the tick. The token is the frame id; the ack comes back on the message
// channel. Without one (or a channel), `then` runs at once.
const leaveAcks = new Map(); // token -> then
let leaveSeq = 0;
function tellLeaving(then) {
  // After process.disconnect() there is nothing to tell it on: as in Node,
  // whose send helper gives up on a closed channel, the primary's flag stays
  // false and `then` never runs (the channel is closing already).
  if (!process.connected) return;
  if (msgs === null) {
    sendFrame(F.EXITED_AFTER_DISCONNECT, undefined);
    then();
    return;
  }
  const seq = ++leaveSeq;
  leaveAcks.set(seq, then);
  if (!sendFrame(F.EXITED_AFTER_DISCONNECT, undefined, seq)) {
    leaveAcks.delete(seq);
    then();
  }
}

function disconnectNow() {
  if (process.connected) process.disconnect();
}

// Closing a server goes to the reactor and, with the same token as frame
// id, on the message channel too: the primary's JS waits at that copy until
// the reactor has read the first, so the messages sent after the close are
// seen after its effect (socket file gone, port closed), as on Node's one
// channel.
let closeSeq = 0;
function closeListen(key) {
  const payload = u32(key);
  const seq = ++closeSeq;
  sendFrame(F.CLOSE_LISTEN, payload, seq);
  if (msgs === null) return;
  try {
    msgs.send(F.CLOSE_LISTEN, 0, seq, payload);
  } catch {
    // The channel is gone; the disconnect event tells the rest.
  }
}

// The primary's disconnect frame says whether an end frame follows (lib/
// primary.js): what the primary sent between the two is read and emitted
// before the channel closes, as Node's worker emits the messages it read
// with its disconnect.
let endPending = false;
let closeAtEnd = null; // done() of a close waiting for the end frame
let endWait = null;
const END_WAIT_MS = 1000;

function closeNow() {
  if (endWait !== null) clearTimeout(endWait);
  endWait = null;
  endPending = false;
  closeAtEnd = null;
  if (msgs !== null) msgs.close();
  chan.close();
}

/**
 * Closes both channels (the primary sees the worker disconnect); `done`
 * (process.disconnect()'s 'disconnect') is called from a later tick, the
 * one Node's worker emits it from: after what was read with the disconnect.
 */
function closeChannels(done) {
  if (typeof done !== 'function') {
    closeNow();
    return;
  }
  process.nextTick(() => {
    if (!endPending) {
      closeNow();
      done();
      return;
    }
    // The end frame was not in the same read: wait for it, keeping the
    // loop alive (the primary sends it at the end of its current stretch;
    // a primary stuck longer than that is not waited for).
    closeAtEnd = done;
    endWait = setTimeout(endDisconnect, END_WAIT_MS);
  });
}

/**
 * The primary's end frame came (or the wait for it ended). It is read after
 * the messages it follows, which are emitted by now: 'disconnect' comes
 * next, before what their listeners deferred to later ticks, as in Node.
 */
function endDisconnect() {
  endPending = false;
  const done = closeAtEnd;
  if (done === null) return;
  closeNow();
  done();
}

function u32(n) {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

cluster._setupWorker = function setupWorker(cfg) {
  config = cfg;
  chan = new native.WorkerChannel(cfg.fd, cfg.ppid, onFrames);
  if (typeof cfg.messages === 'number' && cfg.messages >= 0) {
    msgs = new native.WorkerChannel(cfg.messages, cfg.ppid, onFrames, 'messages');
  }
  const out = msgs || chan;
  const sendText = out.textSender();
  const channelFd = msgs ? cfg.messages : cfg.fd;
  ipc.setupChannel(process, {
    advanced: !!cfg.advanced,
    counted: true,
    fd: () => channelFd,
    write: (data, flags, fd) => (typeof data === 'string'
      ? sendText(flags, data) : out.send(F.MESSAGE, flags, 0, data, fd)),
    // PM2's readiness signal, process.send('ready'), is also ours: called
    // after each message without a handle is written or batched (a batched
    // one is flushed by the control frame first).
    onMessage: (message) => {
      if (message === 'ready') sendControl({ op: 'ready' });
    },
    close: closeChannels,
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
  if (cfg.retireOnUncaughtException) retireOnUncaughtException();
  // rcluster extension: true in the agent process (cluster.forkAgent()).
  cluster.isAgent = !!cfg.agent;
  if (cfg.agent && cfg.autoReady) setImmediate(() => sendControl({ op: 'ready' }));
  sendFrame(F.ONLINE, undefined);
};

// Supervision (rcluster extensions) ---------------------------------------

function sendControl(obj) {
  sendFrame(F.CONTROL, Buffer.from(JSON.stringify(obj)));
}

// Connections this worker took itself from the shared socket of an offloaded
// rr listener: the primary never saw them. The count rides on every pong
// (the stats heartbeat, each second by default), for stats, metrics and the
// CLI's status, and answers the primary's `count` (once a second while the
// listener spreads), from which it measures the rate. Nothing is sent per
// connection or on a timer of the worker's own.
let directConnections = 0;

function countDirect() {
  directConnections++;
}

/** Stops accepting on an offloaded rr listener's shared socket (the server stays). */
function unlisten(entry) {
  if (!entry) return;
  entry.unlistened = true; // also when the shared socket is not open yet
  if (entry.inner) {
    entry.inner.close();
    entry.inner = null;
  }
}

function onControl(msg) {
  if (msg.op === 'ping') sendControl({ op: 'pong', seq: msg.seq, direct: directConnections });
  else if (msg.op === 'count') sendControl({ op: 'direct', n: directConnections });
  // The primary takes no more connections for us on that listener.
  else if (msg.op === 'unlisten') unlisten(listeners.get(msg.key));
  else if (msg.op === 'drain') drain();
  else if (msg.op === 'relayed') relayed(msg);
}

// Worker-to-worker messages (rcluster extension), routed by the primary's
// Rust reactor: the primary's JavaScript never sees them. Same serialization
// as process.send(); ordered per sender.

const AGENT = 0xffffffff;
const relayCallbacks = new Map();
let relaySeq = 0;

function relayFrame(target, seq, flags, data) {
  const head = Buffer.allocUnsafe(8);
  head.writeUInt32LE(target >>> 0, 0);
  head.writeUInt32LE(seq, 4);
  chan.send(F.RELAY, flags, 0, Buffer.concat([head, data]));
}

// As with process.send() (lib/batch.js): the JSON sendTo() calls without a
// callback that follow the first one of a stretch to the same target share
// one frame (FLAG_BATCH), which the reactor forwards whole.
let relayBatcher = null;
function relays() {
  if (relayBatcher !== null) return relayBatcher;
  const B = Batcher();
  relayBatcher = new B((texts, extras, target) => {
    try {
      relayFrame(target, 0, F.FLAG_BATCH, Buffer.from(texts.join('\n'), 'utf8'));
    } catch {
      const ex = errors().channelClosed();
      process.nextTick(() => cluster.worker.emit('error', ex));
    }
  });
  return relayBatcher;
}

function flushRelays() {
  if (relayBatcher !== null) relayBatcher.flush();
}

function relayTarget(target) {
  if (target === 'agent') return AGENT;
  if (Number.isInteger(target) && target > 0 && target < AGENT) return target;
  throw errors().invalidArgValue('target', target, "must be a worker id (a positive integer) or 'agent'");
}

function relay(target, message, callback) {
  if (callback !== undefined && typeof callback !== 'function') {
    throw errors().invalidArgType('callback', ['function'], callback);
  }
  ipc.validate(message);
  const batcher = relays();
  if (!callback && !config.advanced && chan !== null && batcher.accepts(target)) {
    batcher.join(JSON.stringify(message), undefined, target);
    return true;
  }
  batcher.direct();
  const [data, flags] = serialize().encode(message, !!config.advanced);
  // Sequence 0: no callback, the reactor answers only on failure.
  let seq = 0;
  if (callback) {
    relaySeq = (relaySeq % 0xfffffffe) + 1;
    seq = relaySeq;
    relayCallbacks.set(seq, callback);
  }
  try {
    flushMessages();
    relayFrame(target, seq, flags, data);
  } catch (err) {
    relayCallbacks.delete(seq);
    const ex = errors().channelClosed();
    if (callback) process.nextTick(callback, ex);
    else process.nextTick(() => cluster.worker.emit('error', ex));
    return false;
  }
  return true;
}

function relayed(msg) {
  const cb = msg.seq === 0 ? undefined : relayCallbacks.get(msg.seq);
  relayCallbacks.delete(msg.seq);
  const err = msg.error ? Object.assign(new Error(msg.error), { code: 'ERR_RCLUSTER_NO_WORKER' }) : null;
  if (cb) cb(err, msg.delivered);
  else if (err) {
    if (cluster.worker.listenerCount('error') > 0) cluster.worker.emit('error', err);
    else process.emitWarning(err.message, { code: err.code });
  }
}

function onRelay(f) {
  const from = f.data.readUInt32LE(0);
  const sender = from === AGENT ? 'agent' : from;
  if (f.flags & F.FLAG_BATCH) {
    for (const text of f.data.toString('utf8', 8).split('\n')) {
      cluster.worker.emit('workerMessage', JSON.parse(text), sender);
    }
    return;
  }
  const message = serialize().decode(f.data.subarray(8), f.flags);
  cluster.worker.emit('workerMessage', message, sender);
}

/** Sends `message` to worker `target` (an id, or 'agent'); `callback(err, delivered)`. */
Worker.prototype.sendTo = function sendTo(target, message, callback) {
  return relay(relayTarget(target), message, callback);
};

/** Sends `message` to every other worker; `callback(err, delivered)`. */
Worker.prototype.broadcast = function broadcast(message, callback) {
  return relay(0, message, callback);
};

/** The worker is ready to serve (readiness: 'message'). */
Worker.prototype.ready = function ready() {
  sendControl({ op: 'ready' });
};

/**
 * Graceful self-retire (rcluster extension): the primary stops sending this
 * worker connections, starts its replacement at once, and this worker
 * finishes its open connections and leaves (or is killed at the deadline).
 */
Worker.prototype.retire = function retire(reason) {
  sendControl({ op: 'retire', reason: reason === undefined ? '' : String(reason) });
};

/** `retireOnUncaughtException: true`: log the error, then retire gracefully. */
function retireOnUncaughtException() {
  process.on('uncaughtException', (err, origin) => {
    process.stderr.write(`rcluster: worker ${cluster.worker.id} (pid ${process.pid}) ${origin || 'uncaughtException'}: ${
      err && err.stack ? err.stack : String(err)}\n`);
    cluster.worker.retire(err && err.message ? err.message : String(err));
  });
}

/** The sockets of an HTTP server's connection list: `all` of them, or the `idle` ones. */
function httpConnections(server, which = 'all') {
  const sym = Object.getOwnPropertySymbols(server)
    .find((s) => s.description === 'http.server.connections');
  const list = sym && server[sym];
  if (!list || typeof list[which] !== 'function') return [];
  return list[which]().map((c) => c.socket).filter(Boolean);
}

let draining = false;

// Retire gracefully: the primary has already stopped dispatching to this
// worker. Every HTTP response from now on says `Connection: close` (so
// keep-alive clients move to another worker after their current request),
// idle connections stay until their next request or the deadline, and the
// worker leaves once its servers have no connection left. The primary's
// deadline (drainTimeout, then SIGTERM, then SIGKILL) bounds all of it.
function drain() {
  if (draining) return;
  draining = true;
  if (cluster.worker) cluster.worker.exitedAfterDisconnect = true;
  sendFrame(F.EXITED_AFTER_DISCONNECT, undefined);
  const servers = new Set();
  for (const { server } of listeners.values()) if (server) servers.add(server);
  for (const server of servers) {
    if (typeof server.closeIdleConnections !== 'function') continue;
    server.prependListener('request', (req, res) => { res.shouldKeepAlive = false; });
    for (const socket of httpConnections(server)) {
      const res = socket._httpMessage;
      if (res && !res.headersSent) res.shouldKeepAlive = false;
    }
  }
  for (const { handle } of [...listeners.values()]) handle.close();
  const check = setInterval(() => {
    let open = 0;
    for (const server of servers) open += server._connections || 0;
    if (open > 0) return;
    clearInterval(check);
    for (const server of servers) {
      try { server.close(); } catch { /* not listening any more */ }
    }
    if (process.connected) process.disconnect();
  }, 20);
}

cluster._getServer = function getServer(obj, options, cb) {
  if (config.netDenied) return netDenied(options, cb);
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

  // The primary's listener for this address: one per key, as Node 22+ keys
  // its handles (the index only tells port-0 listens apart). A server of
  // this worker that already holds that listener makes a second one, which
  // binds anew (EADDRINUSE for TCP; a UDP socket with reuseAddr binds).
  let key = indexesKey;
  if (options.port === 0) {
    key = `${indexesKey}:${index}`;
  } else if (joined.has(indexesKey)) {
    key = `${indexesKey}:again:${index}`;
  } else {
    joined.set(indexesKey, index);
  }

  // Datagram sockets are shared like Node's SharedHandle: the primary binds
  // once per key and passes the socket (dgram binds `exclusive` ones itself).
  const isUdp = options.addressType === 'udp4' || options.addressType === 'udp6';
  const request = {
    key,
    address: address === undefined ? null : address,
    // dgram passes a port given as a numeric string through, as it came.
    port: typeof options.port === 'string' && /^\d+$/.test(options.port) ? Number(options.port) : options.port,
    addressType: options.addressType,
    fd: options.fd,
    flags: options.flags || 0,
    backlog: typeof options.backlog === 'number' ? options.backlog : undefined,
    policy: listenPolicy(obj) || config.policy,
    reusePortHold: config.reusePortHold,
    rrOffload: config.rrOffload,
    // Custom server data (tls: ticket keys); the first worker's is shared.
    data: typeof obj._getServerData === 'function' ? obj._getServerData() : null,
    // Unix paths: the socket file's permissions for every user.
    readableAll: options.readableAll === true,
    writableAll: options.writableAll === true,
    pipeModeExact: config.pipeModeExact === true,
  };
  const id = nextRequest++;
  requests.set(id, (reply, fd) => {
    if (typeof obj._setServerData === 'function' && reply.data != null) obj._setServerData(reply.data);
    // A unix path, or listen({ fd }) on a socket without an IP address.
    const pipe = options.addressType === -1 || options.port < 0 ||
      (options.fd >= 0 && !reply.sockname);
    const kind = isUdp ? options.addressType : (pipe ? 'pipe' : 'tcp');
    if (fd >= 0 && reply.policy !== 'rr') shared(reply, fd, { obj, kind, indexesKey, index }, cb);
    else rr(reply, fd, { obj, pipe, indexesKey, index }, cb);
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

/**
 * Without the network permission (see lib/primary.js): a server's listen()
 * throws Node's ERR_ACCESS_DENIED, from where a process's own bind would; a
 * datagram socket's bind gets EACCES (its 'error' event).
 */
function netDenied(options, cb) {
  if (options.addressType === 'udp4' || options.addressType === 'udp6') {
    process.nextTick(cb, -(require('os').constants.errno.EACCES), null);
    return;
  }
  const err = new Error('Access to this API has been restricted. Use --allow-net to manage permissions.');
  err.code = 'ERR_ACCESS_DENIED';
  err.permission = 'Net';
  err.resource = '';
  throw err;
}

/** A server of ours left its listener (closed, or refused): see `joined`. */
function unjoin(indexesKey, index) {
  if (joined.get(indexesKey) === index) joined.delete(indexesKey);
}

function removeIndexesKey(indexesKey, index) {
  unjoin(indexesKey, index);
  const indexSet = indexes.get(indexesKey);
  if (!indexSet) return;
  indexSet.set.delete(index);
  if (indexSet.set.size === 0) indexes.delete(indexesKey);
}

// Round robin: the primary accepts; this faux handle stands for its listener
// (a plain object, as in Node). With the offload (src/reactor/offload.rs) the
// primary also passes the listener's shared socket (`fd`), which every worker
// listens on: under a high connection rate the kernel queues connections on
// it, and a libuv handle underneath accepts them into the same server.
function rr(reply, fd, { obj, pipe, indexesKey, index }, cb) {
  if (reply.errno) {
    if (fd >= 0) native.closeFd(fd);
    unjoin(indexesKey, index);
    return cb(reply.errno, null);
  }
  let key = reply.key;
  let keepAlive = null;
  const entry = { handle: null, server: obj, pipe, least: reply.policy === 'least', inner: null, unlistened: false };

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
    unlisten(entry);
    closeListen(key);
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
  // The shared socket is opened after 'listening' (the first libuv handle
  // made from an fd costs about a millisecond; startup should not wait for
  // it). Until then connections queued on it go to the other workers.
  if (fd >= 0) {
    setImmediate(() => {
      if (key === undefined || entry.unlistened) {
        native.closeFd(fd);
        return;
      }
      if (refusesAtMax(obj)) {
        exact(entry, key);
        native.closeFd(fd);
        return;
      }
      const inner = handles().open(fd, false, true);
      if (inner === null) return;
      // Only the faux handle keeps the loop alive (ref/unref act on it).
      inner.unref();
      inner.onconnection = (err, client) => {
        // An accept error (EMFILE...) is not the server's in rr, as in
        // Node, where the primary accepts: the connection waits for
        // another worker.
        if (err || !client) return;
        countDirect();
        // A limit set after listen(): from now on only the primary hands
        // this worker connections (this one net drops, as with SCHED_NONE).
        if (atMaxConnections(obj, 0)) exact(entry, key);
        if (typeof handle.onconnection === 'function') handle.onconnection(0, client);
        else client.close();
      };
      // The listener's queue length (both sockets of the group have the same).
      inner.listen(reply.backlog > 0 ? reply.backlog : 511);
      entry.inner = inner;
    });
  }
  entry.handle = handle;
  listeners.set(key, entry);
  if (entry.least) startLoadReports();
  if (HANDS_BACK) installHandBack(obj);
  cb(0, handle);
}

// From Node 26 on, an HTTP server's close() (through closeIdleConnections())
// also closes the connections that have not sent a request yet. Node's own
// round robin hands a worker one connection at a time; a worker that takes
// them from an offloaded listener's shared socket may hold a few that it
// accepted in the same turn of its loop, their requests not read yet: closed
// there, their clients would see a reset. Before Node closes them, the ones
// of which nothing was read go back to the primary's reactor, which hands
// them to another worker of the listener (or closes them when there is none).
const HANDS_BACK = NODE_MAJOR >= 26;
const kHandsBack = Symbol('rcluster.handsBack');
// The handles of the connections the primary handed this worker (the others
// of an rr listener came from its shared socket): the primary's books differ.
const fromPrimary = new WeakSet();

function installHandBack(server) {
  if (server === null || typeof server !== 'object' || typeof server.closeIdleConnections !== 'function') return;
  let proto = Object.getPrototypeOf(server);
  while (proto !== null && !Object.prototype.hasOwnProperty.call(proto, 'closeIdleConnections')) {
    proto = Object.getPrototypeOf(proto);
  }
  if (proto === null || proto.closeIdleConnections[kHandsBack]) return;
  const closeIdle = proto.closeIdleConnections;
  function closeIdleConnections(...args) {
    handBackUnread(this);
    return closeIdle.apply(this, args);
  }
  closeIdleConnections[kHandsBack] = true;
  Object.defineProperty(closeIdleConnections, 'length', { value: closeIdle.length });
  proto.closeIdleConnections = closeIdleConnections;
}

/** Hands back `server`'s idle connections of which nothing was read (see above). */
function handBackUnread(server) {
  if (chan === null) return;
  let lid;
  for (const [key, entry] of listeners) {
    if (entry.server === server && !entry.shared && entry.handle !== null) {
      lid = key;
      break;
    }
  }
  if (lid === undefined) return;
  for (const socket of httpConnections(server, 'idle')) {
    const handle = socket._handle;
    // A plain TCP socket (not TLS: its handle has no fd) with no request
    // and no byte read: the request is still in the kernel, whole.
    if (socket._httpMessage || socket.bytesRead !== 0 || !handle || typeof handle.fd !== 'number' || handle.fd < 0) {
      continue;
    }
    try {
      // The channel sends its own copy of the fd: Node closing this one
      // afterwards does not end the connection.
      chan.send(F.HAND_BACK, 0, fromPrimary.has(handle) ? 1 : 0, u32(lid), handle.fd);
    } catch {
      return; // The channel is gone: Node closes them, as it would anyway.
    }
  }
}

// SCHED_NONE and dgram: the primary bound the socket and passed it; the
// worker accepts (or receives) on it itself.
function shared(reply, fd, { obj, kind, indexesKey, index }, cb) {
  if (reply.errno) {
    native.closeFd(fd);
    unjoin(indexesKey, index);
    return cb(reply.errno, null);
  }
  const key = reply.key;
  const handle = kind === 'udp4' || kind === 'udp6' ?
    openUdp(obj, fd) :
    handles().open(fd, kind === 'pipe', true);
  if (handle === null) {
    // Not usable here: leave the listener so the primary can close it.
    closeListen(key);
    removeIndexesKey(indexesKey, index);
    return cb(-9 /* EBADF */, null);
  }
  const close = handle.close;
  handle.close = function closeShared(...args) {
    closeListen(key);
    listeners.delete(key);
    removeIndexesKey(indexesKey, index);
    return close.apply(handle, args);
  };
  // reuseport: the worker accepts on its slot's socket, and may also be
  // handed connections the primary drained from a slot socket that closed.
  const conns = reply.policy === 'reuseport';
  listeners.set(key, { handle, server: obj, pipe: kind === 'pipe', shared: true, conns });
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

// Dispatch policies ------------------------------------------------------
//
// `least`: the primary picks the worker with the fewest open connections.
// It learns the counts without a message per connection: every ack carries
// this worker's count (`loadReport`), and while a `least` listener exists a
// 100 ms timer sends the count alone when it changed since the last report
// (connections that closed between acks), so a burst of closes costs one
// frame, and an idle worker none.
//
// The count is the sum of `server._connections` (Node's own count of a
// server's open connections) over the servers the primary dispatches to.

let loadTimer = null;
let lastLoad = -1;

function openConnections() {
  let n = 0;
  const seen = new Set();
  for (const e of listeners.values()) {
    if (e.shared || seen.has(e.server)) continue;
    seen.add(e.server);
    n += e.server._connections || 0;
  }
  return n;
}

function hasLeast() {
  for (const e of listeners.values()) if (e.least) return true;
  return false;
}

/** The count to put on an ack that hands over `taking` more connections. */
function loadReport(taking) {
  if (loadTimer === null) return undefined;
  lastLoad = openConnections() + taking;
  return lastLoad;
}

function startLoadReports() {
  if (loadTimer !== null) return;
  loadTimer = setInterval(() => {
    if (!hasLeast()) {
      clearInterval(loadTimer);
      loadTimer = null;
      return;
    }
    const n = openConnections();
    if (n === lastLoad || chan === null) return;
    lastLoad = n;
    try {
      chan.ack([], [], n);
    } catch {
      // Channel gone.
    }
  }, 100);
  loadTimer.unref();
}

// Per-listener policy: `server.listen({ port, schedulingPolicy: 'hash' })`.
// Node's net module does not pass listen options on to cluster._getServer
// (only `readableAll`/`writableAll` for pipes), so in a worker the option is
// picked up here and remembered on the server. Names or SCHED_* numbers.
const POLICY_NAMES = ['none', 'rr', 'reuseport', 'least', 'hash'];
const kPolicy = Symbol('rcluster.schedulingPolicy');

function policyName(value) {
  if (typeof value === 'number' && value >= 1 && value <= 5 && Number.isInteger(value)) {
    return POLICY_NAMES[value - 1];
  }
  if (POLICY_NAMES.includes(value)) return value;
  throw errors().invalidArgValue('options.schedulingPolicy', value,
    `must be one of: ${POLICY_NAMES.map((n) => `'${n}'`).join(', ')}, or 1 to 5`);
}

function listenPolicy(server) {
  return server !== null && typeof server === 'object' ? server[kPolicy] : undefined;
}

(function installListenOption() {
  const net = require('net');
  const listen = net.Server.prototype.listen;
  if (listen[kPolicy]) return;
  function rclusterListen(...args) {
    const o = args[0];
    if (o !== null && typeof o === 'object' && o.schedulingPolicy !== undefined) {
      this[kPolicy] = policyName(o.schedulingPolicy);
    }
    return listen.apply(this, args);
  }
  Object.defineProperty(rclusterListen, 'name', { value: 'listen' });
  Object.defineProperty(rclusterListen, 'length', { value: listen.length });
  rclusterListen[kPolicy] = true;
  net.Server.prototype.listen = rclusterListen;
}());

// How the running Node's cluster worker decides to refuse a round-robin
// connection at `server.maxConnections` (so that the primary offers it to
// another worker): Node 21+ counts 0 as a limit (before, 0 meant none), and
// Node 22.12+/23.1+ keeps a connection when `server.dropMaxConnection` is
// set, for net to drop it (the 'drop' event).
const ZERO_IS_A_LIMIT = NODE_MAJOR >= 21;
const HAS_DROP_MAX = NODE_MAJOR > 23 || (NODE_MAJOR === 23 && NODE_MINOR >= 1) ||
  (NODE_MAJOR === 22 && NODE_MINOR >= 12);

/** Whether `server` hands a connection back at its `maxConnections` (if it has one). */
function refusesAtMax(server) {
  const max = server.maxConnections;
  if (ZERO_IS_A_LIMIT ? max == null : !max) return false;
  return !(HAS_DROP_MAX && server.dropMaxConnection);
}

/** Whether `server` refuses one more connection, `pending` already taken in this batch. */
function atMaxConnections(server, pending) {
  return refusesAtMax(server) && server._connections + pending >= server.maxConnections;
}

/**
 * An offloaded rr listener whose server refuses connections at its limit
 * takes none from the shared socket: a connection it cannot take must go to
 * another worker, which only the primary's exact dispatch does (the
 * listener stays exact while this worker is on it).
 */
function exact(entry, key) {
  if (entry.unlistened) return;
  unlisten(entry);
  sendControl({ op: 'exact', key });
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
    let ok = entry !== undefined && (!entry.shared || entry.conns);
    if (ok) {
      const server = entry.server;
      const pending = extra.get(server) || 0;
      if (atMaxConnections(server, pending)) {
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
    chan.ack(accepted, refused, loadReport(accepted.length));
  } catch {
    // Channel gone: the primary re-dispatches what it did not hear about.
  }
  for (const [entry, fd] of take) {
    const h = handles().open(fd, entry.pipe, false);
    if (h === null) continue;
    if (HANDS_BACK) fromPrimary.add(h);
    if (typeof entry.handle.onconnection === 'function') {
      try {
        entry.handle.onconnection(0, h);
      } catch (err) {
        later(rethrow, err);
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
    case F.DISCONNECT:
      if (f.id === F.DISCONNECT_END) {
        endDisconnect();
        break;
      }
      if (f.id === F.DISCONNECT_THEN_END && !primaryDisconnected) endPending = true;
      // Once, whichever channel it came on.
      if (!primaryDisconnected) {
        primaryDisconnected = true;
        workerDisconnect.call(cluster.worker, true);
      }
      break;
    case F.EV_ERROR: {
      const err = new Error(f.message);
      err.code = 'ERR_RCLUSTER_CHANNEL';
      if (process.listenerCount('error') > 0) process.emit('error', err);
      else process.emitWarning(err.message, { code: err.code });
      break;
    }
    case F.CONTROL:
      onControl(JSON.parse(f.data.toString()));
      break;
    case F.EXITED_AFTER_DISCONNECT: {
      // The primary's ack of tellLeaving().
      const then = leaveAcks.get(f.id);
      leaveAcks.delete(f.id);
      if (then) then();
      break;
    }
    case F.RELAY:
      onRelay(f);
      break;
    case F.EV_DISCONNECT:
      closeChannels();
      ipc.markDisconnected(process);
      break;
    default:
      if (f.fd >= 0) native.closeFd(f.fd);
      break;
  }
}

// Everything a batch brings is handled in order after this native callback
// (lib/inbox.js), as Node emits what its channel reads from ticks: messages
// are decoded and queued here (ipc.deliver), every other frame, and each run
// of connections, is queued as it comes.
function onFrames(flat) {
  let conns = null;
  for (let i = 0; i < flat.length; i += F.SLOTS) {
    try {
      const text = F.jsonTextAt(flat, i);
      if (text !== undefined && conns === null) {
        ipc.deliver(process, text, flat[i + 1] | 0, -1);
        continue;
      }
      const f = F.frameAt(flat, i);
      if (f.type === F.CONN) {
        (conns || (conns = [])).push(f);
        continue;
      }
      if (conns !== null) {
        later(onConnections, conns);
        conns = null;
      }
      if (f.type === F.MESSAGE) ipc.deliver(process, f.text !== undefined ? f.text : f.data, f.flags, f.fd);
      else later(onFrame, f);
    } catch (err) {
      later(rethrow, err);
    }
  }
  if (conns !== null) later(onConnections, conns);
}

let primaryDisconnected = false;

function workerDisconnect(primaryInitiated) {
  this.exitedAfterDisconnect = true;
  let waiting = 1;
  const done = () => {
    if (--waiting !== 0) return;
    if (primaryInitiated) disconnectNow();
    else tellLeaving(disconnectNow);
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
    tellLeaving(disconnectNow);
    process.once('disconnect', () => process.exit(0));
  }
};

module.exports = cluster;
