'use strict';

// `worker.process` in the primary: a ChildProcess-shaped object for a worker
// that the Rust supervisor spawned. It has the properties, methods and events
// programs use from a forked ChildProcess; the README lists what differs.

const EventEmitter = require('events');
const net = require('net');
const { constants: { signals } } = require('os');
const errors = require('./errors');
const ipc = require('./ipc');
const F = require('./frames');

const signalNames = Object.create(null);
for (const [name, num] of Object.entries(signals)) {
  if (!(num in signalNames)) signalNames[num] = name;
}

// As ChildProcess.prototype.kill() converts its argument: undefined is
// SIGTERM, a number must name a signal (0 is kill()'s own case), a name is
// looked up in upper case ('sigterm' works); anything else, null included,
// is ERR_UNKNOWN_SIGNAL.
function signalNumber(sig) {
  if (sig === undefined) return signals.SIGTERM;
  if (typeof sig === 'number') {
    if (sig === 0 || sig in signalNames) return sig;
    throw errors.unknownSignal(sig);
  }
  if (typeof sig === 'string') {
    const name = sig.toUpperCase();
    if (Object.prototype.hasOwnProperty.call(signals, name)) return signals[name];
  }
  throw errors.unknownSignal(sig);
}

function signalName(num) {
  return num == null ? null : (signalNames[num] || null);
}

class WorkerProcess extends EventEmitter {
  constructor(native, id, { file, args, pipes, advanced }) {
    super();
    this._native = native;
    this._id = id;
    this.pid = undefined;
    this.exitCode = null;
    this.signalCode = null;
    this.killed = false;
    this.spawnfile = file;
    this.spawnargs = args;
    this.stdin = null;
    this.stdout = null;
    this.stderr = null;
    this.stdio = [];
    this._refed = true;
    for (let i = 0; i < (pipes || []).length; i++) {
      const fd = pipes[i];
      let stream = null;
      if (fd >= 0) {
        // Stream socketpairs, as Node's: stdin is not readable here, the
        // others are readable and writable (stdout and stderr uselessly so).
        stream = new net.Socket({ fd, readable: i !== 0, writable: true });
        if (i !== 0) stream.setEncoding && stream.on('end', () => {});
      }
      this.stdio.push(stream);
    }
    this.stdin = this.stdio[0] || null;
    this.stdout = this.stdio[1] || null;
    this.stderr = this.stdio[2] || null;
    // The message channel (`_msg`, opened by the primary, `_split` from
    // then on); without one, messages go through the reactor.
    this._msg = null;
    this._sendText = null; // _msg.textSender()
    this._split = false;
    this._msgFd = undefined; // _msg's fd, for channel.fd
    ipc.setupChannel(this, {
      advanced,
      fd: () => (this._msg === null ? undefined : this._msgFd),
      write: (data, flags, fd) => {
        if (!this._split) {
          return native.send(id, typeof data === 'string' ? Buffer.from(data, 'utf8') : data, flags, fd);
        }
        if (this._msg === null) throw errors.channelClosed();
        if (typeof data === 'string') return this._sendText(flags, data);
        return this._msg.send(F.MESSAGE, flags, 0, data, fd);
      },
      close: (then) => {
        if (this._msg !== null) {
          const msg = this._msg;
          this._msg = null;
          msg.close();
        }
        native.closeChannel(id);
        process.nextTick(then);
      },
    });
  }

  kill(sig) {
    const num = sig === 0 ? 0 : signalNumber(sig);
    if (this.exitCode !== null || this.signalCode !== null || this.pid === undefined) return false;
    // Messages batched by send() are written before the signal (see lib/ipc.js).
    if (typeof this[ipc.kFlush] === 'function') this[ipc.kFlush]();
    try {
      this._native.kill(this._id, num);
    } catch (err) {
      if (/ESRCH/.test(err.message)) return false;
      // Node emits (not throws) EPERM and other kill failures.
      // A system error, as Node's ErrnoException prints it: `Error: kill EPERM`.
      const code = (/\b(E[A-Z]+)\b/.exec(err.message) || [])[1] || 'EPERM';
      const ex = Object.assign(new Error(`kill ${code}`),
        { errno: -(require('os').constants.errno[code] || 1), code, syscall: 'kill' });
      this.emit('error', ex);
      return false;
    }
    // As in Node, any successful kill(), signal 0 included, sets `killed`.
    this.killed = true;
    return true;
  }

  // `using w = ...` / `subprocess[Symbol.dispose]()`, as Node's ChildProcess
  // (Node 20.5+): kill() with SIGTERM unless already killed.
  [Symbol.dispose || Symbol.for('nodejs.dispose')]() {
    if (!this.killed) this.kill();
  }

  ref() {
    this._refed = true;
    if (this.exitCode === null && this.signalCode === null) this._onRefChange();
  }

  unref() {
    this._refed = false;
    this._onRefChange();
  }

  _onRefChange() {}

  /** Called by the primary when the Rust supervisor reaped the process. */
  _exited(code, signal) {
    this.signalCode = signalName(signal);
    this.exitCode = this.signalCode === null && code !== undefined ? code : null;
    if (this.stdin && !this.stdin.destroyed) this.stdin.destroy();
    this.emit('exit', this.exitCode, this.signalCode);
    this._closeAfterStdio();
  }

  /** posix_spawn failed: Node's ChildProcess emits 'error' instead of 'exit'. */
  _spawnFailed(errno, err) {
    this.exitCode = errno;
    if (this.stdin && !this.stdin.destroyed) this.stdin.destroy();
    this.emit('error', err);
    this.emit('close', this.exitCode, this.signalCode);
  }

  _closeAfterStdio() {
    // 'close' once the process is gone and every readable stdio stream and
    // the IPC channel have closed, as ChildProcess does.
    const close = () => this.emit('close', this.exitCode, this.signalCode);
    const waits = [];
    for (const s of this.stdio) {
      if (s && s !== this.stdin && !s.destroyed && !s.closed) {
        waits.push(new Promise((resolve) => s.once('close', resolve)));
        // Pull the data through if nobody reads it (Node's flushStdio).
        process.nextTick(() => { if (s.readableFlowing === null) s.resume(); });
      }
    }
    if (this.connected) waits.push(new Promise((resolve) => this.once('disconnect', resolve)));
    if (waits.length === 0) return close();
    Promise.all(waits).then(close);
  }

  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `WorkerProcess { pid: ${this.pid}, exitCode: ${this.exitCode}, signalCode: ${this.signalCode} }`;
  }
}

module.exports = { WorkerProcess, signalNumber, signalName };
