//! Binary frames of the primary <-> worker channel.
//!
//! Every packet on the `SOCK_SEQPACKET` channel is exactly one frame:
//!
//! ```text
//! offset size field
//! 0      1    kind   (see [`Kind`])
//! 1      1    flags  (see the `FLAG_*` constants)
//! 2      2    nfds   number of fds passed with this packet (little endian)
//! 4      4    len    payload length in bytes (little endian)
//! 8      8    id     connection id, request id or message id (little endian)
//! 16     len  payload
//! ```
//!
//! The header says exactly what the packet carries, so a decoder can reject a
//! packet whose size, kind or fd count does not match it ([`FrameError`]).

use std::fmt;

/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 16;
/// Largest payload carried by one packet. Larger user messages are chunked.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest packet on the wire.
pub const MAX_PACKET: usize = HEADER_LEN + MAX_PAYLOAD;
/// Most fds a single frame may carry.
pub const MAX_FDS: usize = 1;

/// More chunks of the same message follow this one.
pub const FLAG_MORE: u8 = 0x01;
/// This chunk continues a message started by an earlier chunk.
pub const FLAG_CONT: u8 = 0x02;
/// The message is V8-serialized (`serialization: 'advanced'`), not JSON.
pub const FLAG_ADVANCED: u8 = 0x04;
/// Connection acknowledgement: the worker refused the connection.
pub const FLAG_REJECTED: u8 = 0x08;
/// The message carries a handle (the fd travels with its first chunk).
pub const FLAG_HANDLE: u8 = 0x10;
/// The message is several JSON texts joined by `\n` (one synchronous stretch
/// of `send()` calls, coalesced by the sender; JSON never contains a raw `\n`).
pub const FLAG_BATCH: u8 = 0x20;

/// Every flag bit defined; a frame with any other bit set is refused.
pub const KNOWN_FLAGS: u8 =
    FLAG_MORE | FLAG_CONT | FLAG_ADVANCED | FLAG_REJECTED | FLAG_HANDLE | FLAG_BATCH;

/// What a frame is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// worker -> primary: the worker's runtime is up (Node's `online`).
    Online = 1,
    /// both ways: a user message (or one chunk of it).
    Message = 2,
    /// worker -> primary: `server.listen()`/`socket.bind()` wants a listener (JSON payload).
    ListenRequest = 3,
    /// primary -> worker: answer to a listen request (JSON payload, maybe one fd).
    ListenReply = 4,
    /// primary -> worker: one accepted connection; payload is the listener id (u32), one fd.
    Conn = 5,
    /// worker -> primary: batch of connection ids taken (payload: n x u64).
    /// The header's `id` is a load report: 0 says nothing, `n + 1` says the
    /// worker has `n` open connections it took from the primary (the `least`
    /// policy's count; see [`load_of_ack`]). An empty payload is a report alone.
    Ack = 6,
    /// worker -> primary: the worker's server for a listener closed (payload: u32).
    CloseListen = 7,
    /// primary -> worker: please disconnect (Node's `worker.disconnect()`).
    /// The id is 0 from the reactor; from the primary's JavaScript, 1 says
    /// that a second one with id 2 follows the messages sent in the same
    /// stretch, and the worker closes its channel once it has read it
    /// (`lib/frames.js`).
    Disconnect = 8,
    /// worker -> primary: the worker is exiting on purpose (sets `exitedAfterDisconnect`).
    ExitedAfterDisconnect = 9,
    /// worker -> primary: a server in the worker emitted `listening` (JSON payload).
    Listening = 10,
    /// both ways: control message encoded as JSON (extensions).
    Control = 11,
    /// both ways: a worker-to-worker message routed by the primary's reactor
    /// (chunked like [`Kind::Message`]). Payload: u32 peer (target from a
    /// worker, sender towards a worker), u32 sequence, then the message bytes.
    Relay = 12,
    /// worker -> primary: a connection the worker took but will not serve,
    /// of which it has read nothing (its server is closing); payload is the
    /// listener id (u32), one fd; the id is 1 when the worker had it from
    /// the primary (acknowledged), 0 when it took it from an offloaded
    /// listener's shared socket itself. The reactor hands it to another
    /// worker.
    HandBack = 13,
}

impl Kind {
    /// Parses a kind byte.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Online,
            2 => Kind::Message,
            3 => Kind::ListenRequest,
            4 => Kind::ListenReply,
            5 => Kind::Conn,
            6 => Kind::Ack,
            7 => Kind::CloseListen,
            8 => Kind::Disconnect,
            9 => Kind::ExitedAfterDisconnect,
            10 => Kind::Listening,
            11 => Kind::Control,
            12 => Kind::Relay,
            13 => Kind::HandBack,
            _ => return None,
        })
    }

    /// Whether frames of this kind may be chunked (user payloads of any size).
    pub fn chunked(self) -> bool {
        matches!(self, Kind::Message | Kind::Relay)
    }

    /// How many fds a frame of this kind may carry: (min, max).
    pub fn fd_range(self) -> (usize, usize) {
        match self {
            Kind::Conn | Kind::HandBack => (1, 1),
            Kind::ListenReply | Kind::Message => (0, 1),
            _ => (0, 0),
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub flags: u8,
    pub nfds: u16,
    pub len: u32,
    pub id: u64,
}

/// Why a packet was refused. Any of these closes the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header.
    Short(usize),
    /// The kind byte is not one we know.
    UnknownKind(u8),
    /// A flag bit that no kind defines.
    UnknownFlags(u8),
    /// `len` disagrees with the packet size.
    BadLength { declared: u32, actual: usize },
    /// `len` is more than a frame may carry ([`MAX_PAYLOAD`]): on a stream,
    /// where no packet size tells, a header is refused for this before its
    /// payload is awaited.
    OverMax { declared: u32 },
    /// More or fewer fds than the header or the kind allows.
    BadFds {
        kind: Kind,
        declared: u16,
        received: usize,
    },
    /// The kernel truncated the packet or its control data.
    Truncated,
    /// A chunk arrived that does not continue the message in progress.
    OutOfSequence(u64),
    /// A message grew past the configured limit.
    TooLarge(usize),
    /// The payload of a fixed-layout frame is malformed.
    BadPayload(Kind),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Short(n) => write!(f, "short frame: {n} bytes, header needs {HEADER_LEN}"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::UnknownFlags(fl) => write!(f, "unknown frame flags {fl:#04x}"),
            FrameError::BadLength { declared, actual } => write!(
                f,
                "frame length lies: header says {declared} payload bytes, packet has {actual}"
            ),
            FrameError::OverMax { declared } => write!(
                f,
                "frame length lies: header says {declared} payload bytes, more than the {MAX_PAYLOAD} a frame can carry"
            ),
            FrameError::BadFds {
                kind,
                declared,
                received,
            } => write!(
                f,
                "{kind:?} frame declares {declared} fds and carried {received}"
            ),
            FrameError::Truncated => write!(f, "packet or its control data was truncated"),
            FrameError::OutOfSequence(id) => write!(f, "message chunk {id} out of sequence"),
            FrameError::TooLarge(n) => write!(f, "message of {n} bytes exceeds the limit"),
            FrameError::BadPayload(k) => write!(f, "malformed {k:?} payload"),
        }
    }
}

impl std::error::Error for FrameError {}

impl Header {
    /// A header for `kind` with a payload of `len` bytes.
    pub fn new(kind: Kind, flags: u8, nfds: u16, len: usize, id: u64) -> Header {
        debug_assert!(len <= MAX_PAYLOAD);
        Header {
            kind,
            flags,
            nfds,
            len: len as u32,
            id,
        }
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.kind as u8;
        out[1] = self.flags;
        out[2..4].copy_from_slice(&self.nfds.to_le_bytes());
        out[4..8].copy_from_slice(&self.len.to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
    }

    /// Decodes and validates the header of a received packet carrying `nfds` fds.
    pub fn parse(packet: &[u8], received_fds: usize) -> Result<Header, FrameError> {
        if packet.len() < HEADER_LEN {
            return Err(FrameError::Short(packet.len()));
        }
        let kind = Kind::from_u8(packet[0]).ok_or(FrameError::UnknownKind(packet[0]))?;
        let flags = packet[1];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::UnknownFlags(flags));
        }
        let nfds = u16::from_le_bytes([packet[2], packet[3]]);
        let len = u32::from_le_bytes(packet[4..8].try_into().expect("4 bytes"));
        let id = u64::from_le_bytes(packet[8..16].try_into().expect("8 bytes"));
        let actual = packet.len() - HEADER_LEN;
        if len as usize != actual || actual > MAX_PAYLOAD {
            return Err(FrameError::BadLength {
                declared: len,
                actual,
            });
        }
        let (min, max) = kind.fd_range();
        if nfds as usize != received_fds || received_fds < min || received_fds > max {
            return Err(FrameError::BadFds {
                kind,
                declared: nfds,
                received: received_fds,
            });
        }
        Ok(Header {
            kind,
            flags,
            nfds,
            len,
            id,
        })
    }
}

/// Encodes a whole packet (header and payload) into a new buffer.
pub fn encode(kind: Kind, flags: u8, nfds: u16, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + payload.len()];
    Header::new(kind, flags, nfds, payload.len(), id).write(&mut buf);
    buf[HEADER_LEN..].copy_from_slice(payload);
    buf
}

/// Encodes the payload of an [`Kind::Ack`] frame: connection ids, high bit set when refused.
pub fn encode_acks(acks: &[(u64, bool)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(acks.len() * 8);
    for &(id, accepted) in acks {
        let v = if accepted { id } else { id | (1 << 63) };
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes an [`Kind::Ack`] payload into `(connection id, accepted)` pairs.
pub fn decode_acks(payload: &[u8]) -> Result<Vec<(u64, bool)>, FrameError> {
    if !payload.len().is_multiple_of(8) {
        return Err(FrameError::BadPayload(Kind::Ack));
    }
    Ok(payload
        .chunks_exact(8)
        .map(|c| {
            let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            (v & !(1 << 63), v & (1 << 63) == 0)
        })
        .collect())
}

/// The header `id` of an [`Kind::Ack`] frame reporting `open` connections.
pub fn ack_load_id(open: Option<u32>) -> u64 {
    open.map_or(0, |n| u64::from(n) + 1)
}

/// The open-connection count an [`Kind::Ack`] header `id` reports, if any.
pub fn load_of_ack(id: u64) -> Option<u32> {
    id.checked_sub(1).map(|n| n.min(u64::from(u32::MAX)) as u32)
}

/// Decodes a 4-byte little-endian listener id payload.
pub fn decode_u32(kind: Kind, payload: &[u8]) -> Result<u32, FrameError> {
    let b: [u8; 4] = payload
        .try_into()
        .map_err(|_| FrameError::BadPayload(kind))?;
    Ok(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let p = encode(Kind::Conn, 0, 1, 42, &7u32.to_le_bytes());
        let h = Header::parse(&p, 1).unwrap();
        assert_eq!(h.kind, Kind::Conn);
        assert_eq!(h.id, 42);
        assert_eq!(h.len, 4);
        assert_eq!(decode_u32(Kind::Conn, &p[HEADER_LEN..]).unwrap(), 7);
    }

    #[test]
    fn rejects_lies() {
        assert_eq!(Header::parse(&[1, 2, 3], 0), Err(FrameError::Short(3)));
        let mut p = encode(Kind::Message, 0, 0, 1, b"abc");
        p[0] = 200;
        assert_eq!(Header::parse(&p, 0), Err(FrameError::UnknownKind(200)));
        let mut p = encode(Kind::Message, 0, 0, 1, b"abc");
        p[4] = 99;
        assert!(matches!(
            Header::parse(&p, 0),
            Err(FrameError::BadLength { .. })
        ));
        let p = encode(Kind::Message, 0x80, 0, 1, b"abc");
        assert_eq!(Header::parse(&p, 0), Err(FrameError::UnknownFlags(0x80)));
        // fds where none belong
        let p = encode(Kind::Ack, 0, 0, 1, &[0; 8]);
        assert!(matches!(
            Header::parse(&p, 1),
            Err(FrameError::BadFds { .. })
        ));
        // a connection without its fd
        let p = encode(Kind::Conn, 0, 1, 1, &[0; 4]);
        assert!(matches!(
            Header::parse(&p, 0),
            Err(FrameError::BadFds { .. })
        ));
    }

    #[test]
    fn acks_round_trip() {
        let acks = vec![(1, true), (2, false), ((1 << 62) + 5, true)];
        assert_eq!(decode_acks(&encode_acks(&acks)).unwrap(), acks);
        assert!(decode_acks(&[0; 7]).is_err());
    }
}
