'use strict';

// Coalescing of JSON messages per synchronous stretch of code, shared by
// send() (lib/ipc.js) and sendTo()/broadcast() (lib/worker.js).
//
// The first DIRECT messages of a stretch are written at once, each as Node
// writes it, so that a few sends followed by a long computation, a stuck
// loop or a death by signal (SIGKILL, abort) are delivered as under Node.
// The JSON messages that follow them in the same stretch (a bulk loop, to the
// same destination) are joined by '\n', which JSON never contains, and
// written as one frame by a microtask at the end of the stretch, at 32 KiB,
// when `flush()` is called (before anything else goes out, to keep order),
// or when the process exits.

/** A batch is written once it holds this many bytes of JSON. */
const LIMIT = 32 * 1024;
/** Messages (and other writes) of a stretch written at once before coalescing starts. */
const DIRECT = 16;

// Batches not written yet, written at the latest when the process exits.
const unflushed = new Set();
let exitHook = false;

class Batcher {
  /** `write(texts, extras, key)` writes one batch (the texts in order). */
  constructor(write) {
    this.write = write;
    this.stretch = false;
    this.written = 0; // writes of this stretch so far
    this.texts = null;
    this.extras = null;
    this.key = undefined;
    this.bytes = 0;
    this.end = () => {
      this.stretch = false;
      this.flush();
    };
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const b of [...unflushed]) b.flush();
      });
    }
  }

  /**
   * Whether a message to `key` joins the batch: DIRECT writes already went
   * out in this stretch, and what waits (if anything) goes to `key` too. If
   * not, the caller writes it itself, after calling `direct()`.
   */
  accepts(key) {
    return this.stretch && this.written >= DIRECT && (this.texts === null || this.key === key);
  }

  /** Adds a message that `accepts()` took: its JSON `text`, and an `extra` handed back to `write`. */
  join(text, extra, key) {
    if (this.texts === null) {
      this.texts = [];
      this.extras = [];
      this.key = key;
      this.bytes = 0;
      unflushed.add(this);
    }
    this.texts.push(text);
    this.extras.push(extra);
    this.bytes += text.length;
    if (this.bytes >= LIMIT) this.flush();
  }

  /** A message is about to be written directly: what waits goes first. */
  direct() {
    this.flush();
    if (!this.stretch) {
      this.stretch = true;
      this.written = 0;
      queueMicrotask(this.end);
    }
    this.written++;
  }

  /** Writes what waits, if anything. */
  flush() {
    const texts = this.texts;
    if (texts === null) return;
    const { extras, key } = this;
    this.texts = null;
    this.extras = null;
    this.bytes = 0;
    unflushed.delete(this);
    this.write(texts, extras, key);
  }

  /** Bytes waiting. */
  get waiting() {
    return this.texts === null ? 0 : this.bytes;
  }
}

module.exports = { Batcher };
