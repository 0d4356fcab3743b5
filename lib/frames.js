'use strict';

// Frame kinds and flags of the channel; they mirror src/frame.rs.
module.exports = Object.freeze({
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
  // Worker-side events that are not frames.
  EV_ERROR: 100,
  EV_DISCONNECT: 101,

  FLAG_ADVANCED: 0x04,
  FLAG_HANDLE: 0x10,
  FLAG_BATCH: 0x20,
});
