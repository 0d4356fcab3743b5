'use strict';

// server.getConnections() and server.close() for a server some of whose
// sockets were sent over a channel, as Node documents them ("works when
// sockets were sent to forks"). The sender's server is given one list per
// channel and server key (net.Server's `_setupWorker`), which asks the other
// side how many of those sockets are still open, and, when the server
// closes, waits until they all are closed; the receiving side counts the
// sockets it got with each key and answers. Questions and answers are
// internal messages named as Node's own (NODE_SOCKET_*), so either side may
// be a plain Node process.

const EventEmitter = require('events');
const errors = require('./errors');

const kSent = Symbol('rcluster.sentSocketLists');
const kReceived = Symbol('rcluster.receivedSocketLists');

/** The sender's view of the sockets it sent with one server key. */
class SentList extends EventEmitter {
  constructor(target, key) {
    super();
    this.key = key;
    this.target = target;
    // The server stops asking once the other side is gone.
    target.once('exit', () => this.emit('exit', this));
  }

  ask(cmd, answer, swallowErrors, callback) {
    const { target, key } = this;
    function gone() {
      target.removeListener('internalMessage', reply);
      callback(errors.childClosedBeforeReply());
    }
    function reply(msg) {
      if (msg === null || typeof msg !== 'object' || msg.cmd !== answer || msg.key !== key) return;
      target.removeListener('disconnect', gone);
      target.removeListener('internalMessage', reply);
      callback(null, msg);
    }
    if (!target.connected) return gone();
    target._send({ cmd, key }, undefined, swallowErrors);
    target.once('disconnect', gone);
    target.on('internalMessage', reply);
    return undefined;
  }

  getConnections(callback) {
    this.ask('NODE_SOCKET_GET_COUNT', 'NODE_SOCKET_COUNT', false,
      (err, msg) => (err ? callback(err) : callback(null, msg.count)));
  }

  close(callback) {
    this.ask('NODE_SOCKET_NOTIFY_CLOSE', 'NODE_SOCKET_ALL_CLOSED', true, callback);
  }
}

/** The receiver's count of the sockets it got with one server key. */
class ReceivedList extends EventEmitter {
  constructor(target, key) {
    super();
    this.key = key;
    this.target = target;
    this.connections = 0;
    target.on('internalMessage', (msg) => {
      if (msg === null || typeof msg !== 'object' || msg.key !== key) return;
      if (msg.cmd === 'NODE_SOCKET_GET_COUNT') {
        if (target.connected) target._send({ cmd: 'NODE_SOCKET_COUNT', key, count: this.connections });
      } else if (msg.cmd === 'NODE_SOCKET_NOTIFY_CLOSE') {
        if (this.connections === 0) this.allClosed();
        else this.once('empty', () => this.allClosed());
      }
    });
  }

  allClosed() {
    if (this.target.connected) this.target._send({ cmd: 'NODE_SOCKET_ALL_CLOSED', key: this.key }, undefined, true);
  }

  add(socket) {
    this.connections++;
    socket.once('close', () => {
      if (--this.connections === 0) this.emit('empty');
    });
  }
}

/** The key a socket sent from `socket.server` travels with (Node's), or undefined. */
function keyOf(socket) {
  const server = socket.server;
  return server && typeof server._connectionKey === 'string' ? server._connectionKey : undefined;
}

/** After `socket` was sent on `target`'s channel: its server now asks the other side. */
function sent(target, socket) {
  const key = keyOf(socket);
  if (key === undefined || typeof socket.server._setupWorker !== 'function') return;
  const lists = target[kSent] || (target[kSent] = new Map());
  if (lists.has(key)) return;
  const list = new SentList(target, key);
  lists.set(key, list);
  list.once('exit', () => lists.delete(key));
  socket.server._setupWorker(list);
}

/** `socket` arrived on `target`'s channel with `key`: count it until it closes. */
function received(target, key, socket) {
  if (typeof key !== 'string') return;
  const lists = target[kReceived] || (target[kReceived] = new Map());
  let list = lists.get(key);
  if (list === undefined) {
    list = new ReceivedList(target, key);
    lists.set(key, list);
  }
  list.add(socket);
}

module.exports = { keyOf, sent, received };
