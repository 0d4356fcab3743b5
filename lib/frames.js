'use strict';

// Frame kinds and flags of the channel; they mirror src/frame.rs.
const F = {
  ONLINE: 1,
  MESSAGE: 2,
  LISTEN_REQUEST: 3,
  LISTEN_REPLY: 4,
  CONN: 5,
  ACK: 6,
  CLOSE_LISTEN: 7,
  DISCONNECT: 8,
  EXITED_AFTER_DISCONNECT: 9,
  LISTENING: 10,
  CONTROL: 11,
  RELAY: 12,
  HAND_BACK: 13,
  // Worker-side events that are not frames.
  EV_ERROR: 100,
  EV_DISCONNECT: 101,

  // The id of a DISCONNECT frame from the primary's JavaScript: an end frame
  // (DISCONNECT_END) follows, after the messages sent in the same stretch;
  // the worker closes its channel once it has read it (lib/primary.js).
  DISCONNECT_THEN_END: 1,
  DISCONNECT_END: 2,

  FLAG_ADVANCED: 0x04,
  FLAG_HANDLE: 0x10,
  FLAG_BATCH: 0x20,
};

// The addon hands each batch of frames over as one flat array, six slots a
// frame: [type, flags, id, fd, listener, payload], defaults left as holes
// (src/napi/frame_batch.rs). `frameAt` turns a frame into an object
// { type, flags, id, fd, listener, data, text, message }, where the payload
// is `text` for a JSON message, `message` for an error, `data` otherwise;
// `jsonTextAt` reads a plain JSON message without making one.
const SLOTS = 6;

/** The frame at slot `i` of a flat batch, as an object. */
function frameAt(flat, i) {
  const type = flat[i];
  const payload = flat[i + 5];
  const str = typeof payload === 'string';
  return {
    type,
    flags: flat[i + 1] | 0,
    id: flat[i + 2] === undefined ? 0 : flat[i + 2],
    fd: flat[i + 3] === undefined ? -1 : flat[i + 3],
    listener: flat[i + 4] | 0,
    data: str ? undefined : payload,
    text: str && type === F.MESSAGE ? payload : undefined,
    message: str && type === F.EV_ERROR ? payload : undefined,
  };
}

/**
 * The JSON text of the frame at slot `i` if it is a plain JSON message (no
 * fd), the common case that needs no object; otherwise undefined.
 */
function jsonTextAt(flat, i) {
  const payload = flat[i + 5];
  return flat[i] === F.MESSAGE && typeof payload === 'string' && flat[i + 3] === undefined
    ? payload : undefined;
}

module.exports = Object.freeze({ ...F, SLOTS, frameAt, jsonTextAt });
