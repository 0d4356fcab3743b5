'use strict';

// Message encoding on the channel: JSON (Node's default) or V8's structured
// serialization (`serialization: 'advanced'`). Errors surface exactly where
// Node raises them: synchronously from `send()`.

const { FLAG_ADVANCED } = require('./frames');

// Loaded when an error is thrown: a worker's first message would pay for it
// otherwise.
const errors = () => require('./errors');

function validate(message) {
  if (message === undefined) throw errors().missingArgs('message');
  const t = typeof message;
  if (t !== 'string' && t !== 'object' && t !== 'number' && t !== 'boolean') {
    throw errors().invalidArgType('message', ['string', 'object', 'number', 'boolean'], message);
  }
}

/** Encodes `message`; returns `[buffer, flags]`. Throws like Node on bad input. */
function encode(message, advanced) {
  if (advanced) return [require('v8').serialize(message), FLAG_ADVANCED];
  return [Buffer.from(JSON.stringify(message), 'utf8'), 0];
}

/** Decodes a received payload (a Buffer, or already text for JSON). */
function decode(data, flags) {
  if (flags & FLAG_ADVANCED) return require('v8').deserialize(data);
  return JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
}

module.exports = { validate, encode, decode };
