'use strict';

// Errors shaped like Node's internal ones (same `code`, same class, same
// message wording), so programs that test `err.code` cannot tell the difference.

const util = require('./lazy').once(() => require('util'));

function make(Base, code, message) {
  const err = new Base(message);
  Object.defineProperty(err, 'code', {
    value: code, enumerable: true, writable: true, configurable: true,
  });
  // Node's internal errors print as `TypeError [CODE]: message`.
  Object.defineProperty(err, 'name', {
    value: `${Base.name} [${code}]`, enumerable: false, writable: true, configurable: true,
  });
  err.stack; // eslint-disable-line no-unused-expressions
  delete err.name;
  // ...and stringify the same way (Node gives each such error its own toString).
  Object.defineProperty(err, 'toString', {
    value() { return `${this.name} [${code}]: ${this.message}`; },
    enumerable: false, writable: true, configurable: true,
  });
  return err;
}

function describe(value) {
  if (value == null) return ` Received ${value}`;
  if (typeof value === 'function') return ` Received function ${value.name}`;
  if (typeof value === 'object') {
    if (value.constructor && value.constructor.name) {
      return ` Received an instance of ${value.constructor.name}`;
    }
    return ` Received ${util().inspect(value, { depth: -1 })}`;
  }
  let shown = util().inspect(value, { colors: false });
  if (shown.length > 28) shown = `${shown.slice(0, 25)}...`;
  return ` Received type ${typeof value} (${shown})`;
}

// Node's wording: "of type a", "one of type a or b", "one of type a, b, or c".
function typeList(types) {
  if (types.length === 1) return `of type ${types[0]}`;
  if (types.length === 2) return `one of type ${types[0]} or ${types[1]}`;
  return `one of type ${types.slice(0, -1).join(', ')}, or ${types[types.length - 1]}`;
}

module.exports = {
  missingArgs: (name) =>
    make(TypeError, 'ERR_MISSING_ARGS', `The "${name}" argument must be specified`),
  invalidArgType: (name, types, value) =>
    make(TypeError, 'ERR_INVALID_ARG_TYPE',
      `The "${name}" argument must be ${typeList(types)}.${describe(value)}`),
  // Node's wording: 'property' for a dotted name, the value inspected and cut at 128 characters.
  invalidArgValue: (name, value, reason = 'is invalid') => {
    let shown = util().inspect(value);
    if (shown.length > 128) shown = `${shown.slice(0, 128)}...`;
    return make(TypeError, 'ERR_INVALID_ARG_VALUE',
      `The ${name.includes('.') ? 'property' : 'argument'} '${name}' ${reason}. Received ${shown}`);
  },
  channelClosed: () => make(Error, 'ERR_IPC_CHANNEL_CLOSED', 'Channel closed'),
  disconnected: () => make(Error, 'ERR_IPC_DISCONNECTED', 'IPC channel is already disconnected'),
  childClosedBeforeReply: () => make(Error, 'ERR_CHILD_CLOSED_BEFORE_REPLY', 'Child closed before reply received'),
  invalidHandleType: () =>
    make(TypeError, 'ERR_INVALID_HANDLE_TYPE', 'This handle type cannot be sent'),
  // Node formats the value with %s (an object is inspected).
  unknownSignal: (sig) => make(TypeError, 'ERR_UNKNOWN_SIGNAL', util().format('Unknown signal: %s', sig)),
  make,
  describe,
};
