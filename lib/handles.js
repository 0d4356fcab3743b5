'use strict';

// libuv stream handles made from raw fds received over the channel.
//
// Node's net module turns an fd into a handle with `new TCP(type)` or
// `new Pipe(type)` followed by `handle.open(fd)` (lib/net.js createHandle).
// Those constructors are not exported, so we take them from a socket that
// created one: a socket that starts to connect owns a fresh handle at once.

const net = require('net');
const native = require('./native');

const SOCKET = 0; // TCPConstants.SOCKET === PipeConstants.SOCKET
const SERVER = 1; // TCPConstants.SERVER === PipeConstants.SERVER

let TCP = null;
let Pipe = null;

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

/**
 * A handle owning `fd` (a connected socket, or a listening one when `server`).
 * Returns `null` and closes the fd when libuv refuses it.
 */
function open(fd, pipe, server) {
  const C = constructorFor(pipe);
  const h = new C(server ? SERVER : SOCKET);
  const err = h.open(fd);
  if (err) {
    h.close();
    native.closeFd(fd);
    return null;
  }
  return h;
}

/** Re-creates a handle sent with `send(message, handle)`. */
function fromReceived(type, fd) {
  if (fd < 0) return undefined;
  switch (type) {
    case 'net.Socket':
      return new net.Socket({ fd, readable: true, writable: true });
    case 'net.Server': {
      const server = net.createServer();
      const h = open(fd, false, true) || open(fd, true, true);
      if (!h) return undefined;
      server._handle = h;
      server.listen(h);
      return server;
    }
    default: {
      // 'net.Native' and anything else that is a stream fd.
      return open(fd, false, false) || undefined;
    }
  }
}

module.exports = { open, fromReceived, constructorFor };
