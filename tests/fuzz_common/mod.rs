//! The fuzz targets' logic, shared by `fuzz/fuzz_targets/*.rs` (libFuzzer
//! through cargo-fuzz) and `tests/fuzz_replay.rs` (corpus replay and a
//! bounded random loop under plain `cargo test`).
//!
//! Packets go through a real `SOCK_SEQPACKET` socketpair into an
//! [`Inbox`], exactly as the primary and the workers receive them.
#![allow(dead_code)]

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};

use rcluster::channel::{Channel, Inbox, Read, ReadError};
use rcluster::frame::{
    self, FrameError, Header, Kind, FLAG_CONT, FLAG_MORE, HEADER_LEN, KNOWN_FLAGS, MAX_PACKET,
    MAX_PAYLOAD,
};
use rcluster::sys;

/// A connected pair: the raw sending end and the receiving channel.
fn pair() -> (OwnedFd, Channel) {
    let (a, b) = sys::seqpacket_pair().expect("socketpair");
    // Big enough for a whole script of chunks without blocking.
    for fd in [a.as_raw_fd(), b.as_raw_fd()] {
        let size: libc::c_int = 4 << 20;
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    (a, Channel::new(b).expect("channel"))
}

/// One arbitrary packet: the header parser on its own, then the inbox.
pub fn frame_decode(data: &[u8]) {
    for nfds in 0..=2 {
        if let Ok(h) = Header::parse(data, nfds) {
            // What parse accepts is exactly what the header says.
            assert_eq!(h.len as usize, data.len() - HEADER_LEN);
            assert!(h.len as usize <= MAX_PAYLOAD);
            assert_eq!(h.nfds as usize, nfds);
            let (min, max) = h.kind.fd_range();
            assert!(nfds >= min && nfds <= max);
            assert_eq!(h.flags & !KNOWN_FLAGS, 0);
            let mut again = [0u8; HEADER_LEN];
            h.write(&mut again);
            assert_eq!(&again[..], &data[..HEADER_LEN]);
        }
    }
    // The fixed-layout payload decoders.
    if let Ok(acks) = frame::decode_acks(data) {
        assert_eq!(acks.len() * 8, data.len());
        assert_eq!(
            frame::decode_acks(&frame::encode_acks(&acks)).unwrap(),
            acks
        );
    }
    let _ = frame::decode_u32(Kind::CloseListen, data);
    if data.len() >= 8 {
        let id = u64::from_le_bytes(data[..8].try_into().unwrap());
        if let Some(n) = frame::load_of_ack(id) {
            assert_eq!(frame::load_of_ack(frame::ack_load_id(Some(n))), Some(n));
        }
    }
    if data.len() > MAX_PACKET + 64 {
        return;
    }
    // The same bytes as a packet on a real channel; an fd rides along when
    // the first byte is odd.
    let before = sys::count_open_fds();
    {
        let (tx, rx) = pair();
        let pass = data.first().is_some_and(|b| b & 1 == 1);
        let extra = sys::seqpacket_pair().expect("socketpair");
        let fd = pass.then(|| extra.0.as_raw_fd());
        if sys::send_packet(tx.as_raw_fd(), &[IoSlice::new(data)], fd).is_err() {
            return;
        }
        let mut inbox = Inbox::new(4 * MAX_PAYLOAD);
        match inbox.read(&rx) {
            Ok(Read::Frame(f)) => {
                let h = Header::parse(data, usize::from(pass)).expect("a frame parses");
                assert_eq!(f.kind, h.kind);
                assert_eq!(f.payload, &data[HEADER_LEN..]);
                assert_eq!(f.fd.is_some(), pass);
            }
            Ok(Read::Partial) => {
                let h = Header::parse(data, usize::from(pass)).expect("a chunk parses");
                assert!(h.kind.chunked(), "only chunked kinds may be partial");
                assert!(h.flags & FLAG_MORE != 0 && h.flags & FLAG_CONT == 0);
            }
            Ok(Read::Empty) | Ok(Read::Eof) => panic!("a packet was sent"),
            Err(ReadError::Frame(_)) => {}
            Err(ReadError::Io(e)) => panic!("unexpected I/O error {e}"),
        }
    }
    assert_eq!(sys::count_open_fds(), before, "an fd leaked");
}

/// One step of a reassembly script.
#[derive(Debug)]
struct Chunk {
    flags: u8,
    id: u64,
    payload: Vec<u8>,
    fd: bool,
}

/// Turns arbitrary bytes into chunks: per chunk a flags byte, an id byte
/// (ids 1..=3, so that they often match), a length byte (x 37, so that the
/// limit is reached) and that many payload bytes (repeated from the input).
fn script(data: &[u8]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() && out.len() < 64 {
        let (f, id, n) = (data[i], data[i + 1], data[i + 2]);
        i += 3;
        let len = usize::from(n) * 37;
        let src = &data[i.min(data.len())..];
        let payload: Vec<u8> = if src.is_empty() {
            vec![n; len]
        } else {
            src.iter().copied().cycle().take(len).collect()
        };
        i += usize::from(n % 8);
        out.push(Chunk {
            // Mostly the chunking flags, sometimes anything.
            flags: if f & 0x80 != 0 { f & 0x7f } else { f & 0x17 },
            id: u64::from(id % 3) + 1,
            payload,
            fd: f & 0x20 != 0,
        });
    }
    out
}

/// What the inbox must answer, by a straightforward model of the protocol.
#[derive(Debug, PartialEq)]
enum Expect {
    Frame(Vec<u8>, bool),
    Partial,
    Error,
}

const LIMIT: usize = 4096;

/// A chunk script through a real channel: the inbox must agree with the
/// model on every packet, and leak no fd.
pub fn reassemble(data: &[u8]) {
    let chunks = script(data);
    let before = sys::count_open_fds();
    {
        let (tx, rx) = pair();
        let extra = sys::seqpacket_pair().expect("socketpair");
        let mut inbox = Inbox::new(LIMIT);
        let mut partial: Option<(u64, Vec<u8>, bool)> = None;
        for c in &chunks {
            let mut packet = vec![0u8; HEADER_LEN];
            Header {
                kind: Kind::Message,
                flags: c.flags,
                nfds: u16::from(c.fd),
                len: c.payload.len() as u32,
                id: c.id,
            }
            .write(&mut packet);
            packet.extend_from_slice(&c.payload);
            let fd = c.fd.then(|| extra.0.as_raw_fd());
            sys::send_packet(tx.as_raw_fd(), &[IoSlice::new(&packet)], fd).expect("send");

            let more = c.flags & FLAG_MORE != 0;
            let cont = c.flags & FLAG_CONT != 0;
            let expect = if c.flags & !KNOWN_FLAGS != 0 {
                Expect::Error
            } else {
                match (partial.take(), cont) {
                    (None, false) if c.payload.len() > LIMIT => Expect::Error,
                    (None, false) if !more => Expect::Frame(c.payload.clone(), c.fd),
                    (None, false) => {
                        partial = Some((c.id, c.payload.clone(), c.fd));
                        Expect::Partial
                    }
                    (Some((id, mut acc, fd)), true) if id == c.id => {
                        if c.fd || acc.len() + c.payload.len() > LIMIT {
                            Expect::Error
                        } else {
                            acc.extend_from_slice(&c.payload);
                            if more {
                                partial = Some((id, acc, fd));
                                Expect::Partial
                            } else {
                                Expect::Frame(acc, fd)
                            }
                        }
                    }
                    _ => Expect::Error,
                }
            };
            // A packet was just sent: read it even if the last batch was short.
            inbox.rearm();
            let got = match inbox.read(&rx) {
                Ok(Read::Frame(f)) => {
                    assert_eq!(f.kind, Kind::Message);
                    Expect::Frame(f.payload, f.fd.is_some())
                }
                Ok(Read::Partial) => Expect::Partial,
                Ok(other) => panic!("unexpected {other:?} for {c:?}"),
                Err(ReadError::Frame(
                    FrameError::UnknownFlags(_)
                    | FrameError::TooLarge(_)
                    | FrameError::OutOfSequence(_)
                    | FrameError::BadFds { .. },
                )) => Expect::Error,
                Err(e) => panic!("unexpected error {e} for {c:?}"),
            };
            assert_eq!(got, expect, "chunk {c:?}");
            if got == Expect::Error {
                // The channel would be closed now; the model and the inbox
                // both start over.
                partial = None;
                inbox = Inbox::new(LIMIT);
            }
        }
    }
    assert_eq!(sys::count_open_fds(), before, "an fd leaked");
}

/// A small deterministic generator (xorshift64*) for the bounded random loops.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Random bytes, often shaped like a frame (a valid header with some
    /// fields changed), so that the loop gets past the first checks.
    pub fn input(&mut self) -> Vec<u8> {
        let r = self.next_u64();
        let len = match r % 4 {
            0 => (r >> 8) as usize % 24,
            1 => (r >> 8) as usize % 300,
            2 => HEADER_LEN + (r >> 8) as usize % 64,
            _ => (r >> 8) as usize % 2000,
        };
        let mut v: Vec<u8> = (0..len).map(|_| self.next_u64() as u8).collect();
        if v.len() >= HEADER_LEN && r & (1 << 40) != 0 {
            let kind = 1 + (self.next_u64() % 12) as u8;
            let flags = if r & (1 << 41) != 0 {
                self.next_u64() as u8
            } else {
                self.next_u64() as u8 & KNOWN_FLAGS
            };
            let lie = r & (1 << 42) != 0;
            let len = if lie {
                self.next_u64() as u32
            } else {
                (v.len() - HEADER_LEN) as u32
            };
            let nfds = (self.next_u64() % 3) as u16;
            v[0] = kind;
            v[1] = flags;
            v[2..4].copy_from_slice(&nfds.to_le_bytes());
            v[4..8].copy_from_slice(&len.to_le_bytes());
        }
        v
    }
}
