'use strict';

// libuv handles made from raw fds received over the channel, and the
// conversions of `send(message, handle)` (the counterpart of Node's
// handleConversion in lib/internal/child_process.js).
//
// Node's net module turns an fd into a handle with `new TCP(type)` or
// `new Pipe(type)` followed by `handle.open(fd)` (lib/net.js createHandle).
// Those constructors are not exported: a listening socket's handle is made
// by `net._createServerHandle` (as Node's cluster makes one from an fd), and
// for a connected socket the constructor is taken from one of those, or else
// from a socket that starts to connect (it owns a fresh handle at once).

const net = require('net');
// dgram loads on first use: most workers never pass a UDP socket, and every
// module loaded here is paid for in each worker's startup.
const lazy = require('./lazy');
const dgram = lazy.once(() => require('dgram'));
const errors = lazy.once(() => require('./errors'));
const native = require('./native');

const SOCKET = 0; // TCPConstants.SOCKET === PipeConstants.SOCKET
const SERVER = 1; // TCPConstants.SERVER === PipeConstants.SERVER

let TCP = null;
let Pipe = null;
let UDP = null;

function capture(pipe) {
  const s = new net.Socket();
  s.on('error', () => {});
  s.connect(pipe ? { path: '\0rcluster-handle-probe' } : { port: 9, host: '127.0.0.1' });
  const C = s._handle.constructor;
  s.destroy();
  return C;
}

function constructorFor(pipe) {
  if (pipe) return Pipe || (Pipe = capture(true));
  return TCP || (TCP = capture(false));
}

function dgramState(socket) {
  const sym = Object.getOwnPropertySymbols(socket).find((s) => String(s) === 'Symbol(state symbol)');
  return sym === undefined ? undefined : socket[sym];
}

function udpConstructor() {
  if (UDP === null) {
    const s = dgram().createSocket('udp4');
    UDP = dgramState(s).handle.constructor;
    s.close();
  }
  return UDP;
}

/** A raw libuv handle, recognised without creating one (no side effects). */
function rawKind(handle) {
  if (handle === null || typeof handle !== 'object' || typeof handle.fd !== 'number') return null;
  const name = handle.constructor && handle.constructor.name;
  if ((name === 'TCP' || name === 'Pipe') && typeof handle.readStart === 'function') return name;
  if (name === 'UDP' && typeof handle.recvStart === 'function') return name;
  return null;
}

/**
 * What `send(message, handle)` passes: `{ type, fd, extra, raw, socket }`.
 * `fd` is -1 when the object holds no open handle (Node then sends the
 * message alone). Throws ERR_INVALID_HANDLE_TYPE like Node.
 */
function describeForSend(handle) {
  const fdOf = (h) => (h && typeof h.fd === 'number' ? h.fd : -1);
  const pipeOf = (h) => !!h && h.constructor && h.constructor.name === 'Pipe';
  if (handle instanceof net.Socket) {
    const h = handle._handle;
    return { type: 'net.Socket', fd: fdOf(h), extra: pipeOf(h) ? { pipe: true } : {}, raw: h };
  }
  if (handle instanceof net.Server) {
    const h = handle._handle;
    return { type: 'net.Server', fd: fdOf(h), extra: pipeOf(h) ? { pipe: true } : {}, raw: h };
  }
  const kind = rawKind(handle);
  if (kind === 'TCP' || kind === 'Pipe') {
    return { type: 'net.Native', fd: handle.fd, extra: kind === 'Pipe' ? { pipe: true } : {}, raw: handle };
  }
  if (handle instanceof dgram().Socket) {
    const state = dgramState(handle);
    const h = state && state.handle;
    return { type: 'dgram.Socket', fd: fdOf(h), extra: { dgramType: handle.type }, raw: h };
  }
  if (kind === 'UDP') return { type: 'dgram.Native', fd: handle.fd, extra: {}, raw: handle };
  throw errors().invalidHandleType();
}

/**
 * After a successful send of a net.Socket without keepOpen: like Node, the
 * socket object lets go of its handle (it is not destroyed and emits no
 * 'close'); our copy of the fd is closed at once (the channel holds its own).
 */
function detachSent(socket) {
  const h = socket._handle;
  if (!h) return;
  if (socket.server) socket.server._connections--;
  h.onread = () => {};
  socket._handle = null;
  socket.setTimeout(0);
  if (socket._httpMessage && typeof socket._httpMessage.detachSocket === 'function') {
    socket._httpMessage.detachSocket(socket);
  }
  h.close();
}

/**
 * A handle owning `fd` (a connected socket, or a listening one when `server`).
 * Returns `null` and closes the fd when libuv refuses it.
 */
function open(fd, pipe, server) {
  if (server && typeof net._createServerHandle === 'function') return openServer(fd);
  const C = constructorFor(pipe);
  const h = new C(server ? SERVER : SOCKET);
  const err = h.open(fd);
  if (err) {
    // The handle never owned the fd: close it once, ourselves.
    h.close();
    native.closeFd(fd);
    return null;
  }
  return h;
}

/**
 * A listening socket's handle, made the way Node's cluster makes one from an
 * fd (`net._createServerHandle`, which tells TCP from Pipe by the fd): no
 * probe socket is needed, and the first one costs a worker's start less.
 */
function openServer(fd) {
  const h = net._createServerHandle(undefined, undefined, undefined, fd);
  if (typeof h === 'number') {
    native.closeFd(fd);
    return null;
  }
  const name = h.constructor && h.constructor.name;
  if (name === 'TCP' && TCP === null) TCP = h.constructor;
  else if (name === 'Pipe' && Pipe === null) Pipe = h.constructor;
  return h;
}

/**
 * Re-creates a handle sent with `send(message, handle)`; calls `emit(handle)`
 * when it is ready (a server once it listens, as Node does), or
 * `emit(undefined)` when the fd was unusable (it is closed then).
 */
function fromReceived(wrapper, fd, emit) {
  if (fd < 0) return emit(undefined);
  const pipe = !!wrapper.pipe;
  switch (wrapper.type) {
    case 'net.Socket': {
      const h = open(fd, pipe, false);
      if (h === null) return emit(undefined);
      return emit(new net.Socket({ handle: h, readable: true, writable: true }));
    }
    case 'net.Server': {
      const h = open(fd, pipe, true);
      if (h === null) return emit(undefined);
      const server = new net.Server();
      // A TCP handle listens here ("exclusive"), never through the primary.
      server.listen(h, () => emit(server));
      return undefined;
    }
    case 'dgram.Socket':
    case 'dgram.Native': {
      const C = udpConstructor();
      const h = new C();
      const err = h.open(fd);
      if (err) {
        h.close();
        native.closeFd(fd);
        return emit(undefined);
      }
      if (wrapper.type === 'dgram.Native') return emit(h);
      const socket = dgram().createSocket(wrapper.dgramType === 'udp6' ? 'udp6' : 'udp4');
      socket.bind(h, () => emit(socket));
      return undefined;
    }
    default: {
      // 'net.Native' and anything else that is a stream fd.
      return emit(open(fd, pipe, false) || undefined);
    }
  }
}

module.exports = { open, fromReceived, constructorFor, describeForSend, detachSent };
