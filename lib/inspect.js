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

function nextPort(inspectPort) {
  if (typeof inspectPort === 'function') return inspectPort();
  if (inspectPort == null) {
    let port = process.debugPort + offset;
    if (port > MAX_PORT) port = port - MAX_PORT + MIN_PORT - 1;
    offset++;
    return port;
  }
  return inspectPort;
}

/** The execArgv of the next worker. */
function inspectArgv(settings) {
  const execArgv = [...(settings.execArgv || [])];
  if (settings.inspectPort === null) {
    const err = errors.make(RangeError, 'ERR_SOCKET_BAD_PORT',
      'Port should be >= 0 and < 65536. Received type object (null).');
    throw err;
  }
  if (usingInspector(execArgv)) execArgv.push(`--inspect-port=${nextPort(settings.inspectPort)}`);
  return execArgv;
}

module.exports = { inspectArgv };
