'use strict';

// Message encoding on the channel: JSON (Node's default) or V8's structured
// serialization (`serialization: 'advanced'`). Errors surface exactly where
// Node raises them: synchronously from `send()`.

const { FLAG_ADVANCED } = require('./frames');
const v8 = require('./lazy').once(() => require('v8'));

// (A message is checked before it gets here: `validate` in lib/ipc.js.)

/** Encodes `message`; returns `[buffer, flags]`. Throws like Node on bad input. */
function encode(message, advanced) {
  if (advanced) return [v8().serialize(message), FLAG_ADVANCED];
  return [Buffer.from(JSON.stringify(message), 'utf8'), 0];
}

/** Decodes a received payload (a Buffer, or already text for JSON). */
function decode(data, flags) {
  if (flags & FLAG_ADVANCED) return v8().deserialize(data);
  return JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
}

module.exports = { encode, decode };
