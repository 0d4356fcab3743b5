'use strict';

// Inspector ports for workers, as Node's cluster assigns them: when the
// primary runs with --inspect (or NODE_OPTIONS does), each worker gets
// `--inspect-port=` the primary's debug port plus 1, 2, 3... or the
// `inspectPort` setting (a number, or a function returning one).

const errors = require('./errors');

const INSPECT_ARG = /--inspect(?:-brk|-port|-wait)?(?:=|\s|$)/;
const MIN_PORT = 1024;
const MAX_PORT = 65535;
let offset = 1;

function usingInspector(execArgv) {
  return execArgv.some((a) => INSPECT_ARG.test(a)) ||
    INSPECT_ARG.test(process.env.NODE_OPTIONS || '');
}

function badPort(port) {
  let shown;
  if (port == null) shown = String(port);
  else if (typeof port === 'function') shown = `function ${port.name}`;
  else if (typeof port === 'object') {
    shown = port.constructor && port.constructor.name ?
      `an instance of ${port.constructor.name}` : require('util').inspect(port, { depth: -1 });
  } else {
    let s = require('util').inspect(port, { colors: false });
    if (s.length > 28) s = `${s.slice(0, 25)}...`;
    shown = `type ${typeof port} (${s})`;
  }
  return errors.make(RangeError, 'ERR_SOCKET_BAD_PORT',
    `Port should be >= 0 and < 65536. Received ${shown}.`);
}

// Node's validatePort (zero allowed); the value itself is used as given.
function validatePort(port) {
  if ((typeof port !== 'number' && typeof port !== 'string') ||
      (typeof port === 'string' && port.trim().length === 0) ||
      +port !== (+port >>> 0) || port > 0xFFFF) {
    throw badPort(port);
  }
  return port;
}

function nextPort(inspectPort) {
  if (typeof inspectPort === 'function') {
    inspectPort = inspectPort();
  } else if (inspectPort == null) {
    inspectPort = process.debugPort + offset;
    if (inspectPort > MAX_PORT) inspectPort = inspectPort - MAX_PORT + MIN_PORT - 1;
    offset++;
  }
  return validatePort(inspectPort);
}

/** The execArgv of the next worker. */
function inspectArgv(settings) {
  const list = settings.execArgv == null ? [] : settings.execArgv;
  // As Node's fork() fails on one that is not an array (setupPrimary() takes it).
  if (typeof list === 'string') {
    throw errors.make(TypeError, 'ERR_INVALID_ARG_TYPE',
      `The "cluster.settings.execArgv" property must be an instance of Array.${errors.describe(list)}`);
  }
  if (typeof list[Symbol.iterator] !== 'function') {
    throw new TypeError('cluster.settings.execArgv is not iterable');
  }
  const execArgv = [...list];
  if (settings.inspectPort === null) throw badPort(null);
  if (usingInspector(execArgv)) execArgv.push(`--inspect-port=${nextPort(settings.inspectPort)}`);
  return execArgv;
}

module.exports = { inspectArgv };
