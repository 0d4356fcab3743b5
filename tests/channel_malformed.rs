#![cfg(target_os = "linux")]
//! Malformed input from the peer: every bad packet is an error (never a panic)
//! and every fd that came with it is closed.
//!
//! Every test here counts the process's open fds, so they all take `FD_LOCK`.

mod common;

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use common::*;
use rcluster::channel::{Channel, Inbox, Read, ReadError};
use rcluster::frame::{
    encode, FrameError, Header, Kind, FLAG_ADVANCED, FLAG_CONT, FLAG_HANDLE, FLAG_MORE, HEADER_LEN,
    MAX_PACKET, MAX_PAYLOAD,
};
use rcluster::sys;

static FD_LOCK: Mutex<()> = Mutex::new(());

fn fd_lock() -> MutexGuard<'static, ()> {
    FD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// One raw packet: its bytes and how many fds to attach.
struct Raw {
    bytes: Vec<u8>,
    fds: usize,
}

fn raw(bytes: Vec<u8>, fds: usize) -> Raw {
    Raw { bytes, fds }
}

/// A header with any field values, lies included.
fn header(kind: u8, flags: u8, nfds: u16, len: u32, id: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = kind;
    h[1] = flags;
    h[2..4].copy_from_slice(&nfds.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..16].copy_from_slice(&id.to_le_bytes());
    h
}

fn packet(kind: u8, flags: u8, nfds: u16, len: u32, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = header(kind, flags, nfds, len, id).to_vec();
    v.extend_from_slice(payload);
    v
}

fn msg(flags: u8, nfds: u16, id: u64, payload: &[u8]) -> Vec<u8> {
    encode(Kind::Message, flags, nfds, id, payload)
}

const NO_FD_KINDS: [Kind; 8] = [
    Kind::Online,
    Kind::ListenRequest,
    Kind::Ack,
    Kind::CloseListen,
    Kind::Disconnect,
    Kind::ExitedAfterDisconnect,
    Kind::Listening,
    Kind::Control,
];

/// What a case sends: packets that are fine on their own, then the bad one,
/// and the message limit of the receiving inbox.
struct Case {
    name: &'static str,
    packets: Vec<Raw>,
    max_message: usize,
}

const VARIANTS: usize = 20;

fn case(i: usize) -> Case {
    let p = i / VARIANTS;
    let big = rcluster::channel::DEFAULT_MAX_MESSAGE;
    let one = |name, r: Raw| Case {
        name,
        packets: vec![r],
        max_message: big,
    };
    match i % VARIANTS {
        0 => {
            let n = 1 + p % (HEADER_LEN - 1);
            one("short frame", raw(pattern(i as u64, n), p % 2))
        }
        1 => {
            let unknown: Vec<u8> = std::iter::once(0u8).chain(12..=255).collect();
            let k = unknown[p * 5 % unknown.len()];
            let fds = p % 2;
            one(
                "unknown kind",
                raw(packet(k, 0, fds as u16, 3, 1, b"abc"), fds),
            )
        }
        2 => {
            let flags = (0x40u8 << (p % 2)) | (p as u8 & 0x3f);
            let fds = p % 2;
            let kind = if fds == 1 {
                Kind::Message
            } else {
                Kind::Control
            };
            one(
                "unknown flags",
                raw(packet(kind as u8, flags, fds as u16, 2, 1, b"{}"), fds),
            )
        }
        3 => {
            let fds = p % 2;
            let body = pattern(i as u64, 10 + p);
            one(
                "length bigger than the packet",
                raw(
                    packet(2, 0, fds as u16, (body.len() + 1 + p) as u32, 1, &body),
                    fds,
                ),
            )
        }
        4 => {
            let body = pattern(i as u64, 10 + p);
            one(
                "length smaller than the packet",
                raw(packet(5, 0, 1, (p % 10) as u32, 1, &body), 1),
            )
        }
        5 => one(
            "length field huge",
            raw(
                packet(2, 0, (p % 2) as u16, u32::MAX - p as u32, 1, b"xyz"),
                p % 2,
            ),
        ),
        6 => {
            let k = NO_FD_KINDS[p % NO_FD_KINDS.len()];
            one(
                "fd on a kind that takes none (declared)",
                raw(encode(k, 0, 1, 9, &[0; 8]), 1),
            )
        }
        7 => {
            let k = NO_FD_KINDS[p % NO_FD_KINDS.len()];
            one(
                "fd on a kind that takes none (undeclared)",
                raw(encode(k, 0, 0, 9, &[0; 8]), 1),
            )
        }
        8 => one(
            "connection without its fd",
            raw(
                encode(Kind::Conn, 0, (p % 2) as u16, 1, &7u32.to_le_bytes()),
                0,
            ),
        ),
        9 => {
            let n = 2 + p % 7; // fits the receive buffer: the count is wrong
            let declared = if p.is_multiple_of(2) { n as u16 } else { 1 };
            let k = [Kind::Message, Kind::Conn, Kind::ListenReply][p % 3];
            one(
                "2..=8 fds in one packet",
                raw(encode(k, 0, declared, 1, &[0; 4]), n),
            )
        }
        10 => {
            let n = (9 + p * 4).min(200); // more than the receiver takes: truncated
            let k = [Kind::Message, Kind::Conn, Kind::Ack][p % 3];
            one(
                "9..=200 fds in one packet",
                raw(encode(k, 0, 1, 1, &[0; 4]), n),
            )
        }
        11 => {
            let body = vec![0x55; MAX_PAYLOAD + 1 + p * 100];
            assert!(HEADER_LEN + body.len() > MAX_PACKET);
            let fds = p % 2;
            one(
                "packet larger than MAX_PACKET",
                raw(packet(2, 0, fds as u16, body.len() as u32, 1, &body), fds),
            )
        }
        12 => {
            let flags = FLAG_CONT | if p % 2 == 1 { FLAG_MORE } else { 0 };
            let fds = usize::from(p.is_multiple_of(3));
            one(
                "continuation without a start",
                raw(msg(flags, fds as u16, 5, b"tail"), fds),
            )
        }
        13 => Case {
            name: "continuation of a different message",
            packets: vec![
                raw(msg(FLAG_MORE | FLAG_HANDLE, 1, 40, &[1; 100]), 1),
                raw(msg(FLAG_CONT, 0, 41 + p as u64, &[2; 100]), 0),
            ],
            max_message: big,
        },
        14 => {
            let first_fd = p % 2;
            let more = if p % 4 >= 2 { FLAG_MORE } else { 0 };
            Case {
                name: "fd on a continuation chunk",
                packets: vec![
                    raw(
                        msg(FLAG_MORE, first_fd as u16, 8, &[1; MAX_PAYLOAD]),
                        first_fd,
                    ),
                    raw(msg(FLAG_CONT | more, 1, 8, &[2; 10]), 1),
                ],
                max_message: big,
            }
        }
        15 => {
            let (k, fds) = [(Kind::Control, 0), (Kind::Conn, 1), (Kind::ListenReply, 1)][p % 3];
            let flags = [FLAG_MORE, FLAG_CONT, FLAG_MORE | FLAG_CONT][p % 3];
            one(
                "chunk flags on a non-message kind",
                raw(encode(k, flags, fds as u16, 3, &[0; 4]), fds),
            )
        }
        16 => Case {
            name: "new message while another is in progress",
            packets: vec![
                raw(msg(FLAG_MORE | FLAG_HANDLE, 1, 1, &[1; 1000]), 1),
                raw(
                    msg(
                        if p.is_multiple_of(2) { 0 } else { FLAG_MORE },
                        p.is_multiple_of(3) as u16,
                        2,
                        b"x",
                    ),
                    usize::from(p.is_multiple_of(3)),
                ),
            ],
            max_message: big,
        },
        17 => {
            let (declared, sent) = [(1u16, 0usize), (2, 1), (0, 1), (u16::MAX, 1)][p % 4];
            one(
                "fd count in the header lies",
                raw(msg(FLAG_ADVANCED, declared, 3, b"{}"), sent),
            )
        }
        18 => {
            let limit = MAX_PAYLOAD + 1 + p * 1000;
            let mut packets = vec![raw(
                msg(FLAG_MORE | FLAG_HANDLE, 1, 6, &[1; MAX_PAYLOAD]),
                1,
            )];
            let mut total = MAX_PAYLOAD;
            while total <= limit {
                packets.push(raw(msg(FLAG_CONT | FLAG_MORE, 0, 6, &[2; MAX_PAYLOAD]), 0));
                total += MAX_PAYLOAD;
            }
            Case {
                name: "message over the inbox limit",
                packets,
                max_message: limit,
            }
        }
        19 => {
            let k = [Kind::Conn, Kind::ListenReply, Kind::Message][p % 3];
            one(
                "two fds declared and sent",
                raw(encode(k, 0, 2, 1, &[0; 4]), 2),
            )
        }
        _ => unreachable!(),
    }
}

/// Sends `r` from `sock` with `r.fds` fresh, inheritable copies of `source`;
/// our copies are closed right after.
fn send_raw(sock: RawFd, r: &Raw, source: RawFd) {
    let fds: Vec<OwnedFd> = (0..r.fds).map(|_| dup_inheritable(source)).collect();
    let sent = if r.fds <= 1 {
        sys::send_packet(
            sock,
            &[IoSlice::new(&r.bytes)],
            fds.first().map(|f| f.as_raw_fd()),
        )
    } else {
        let raws: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        send_with_fds(sock, &r.bytes, &raws)
    };
    assert_eq!(sent.expect("send raw packet"), r.bytes.len());
}

#[test]
fn a_thousand_malformed_packets_error_and_leak_nothing() {
    let _g = fd_lock();
    let (_pr, pw) = pipe();
    let start = fds_open();
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for i in 0..1000 {
        let c = case(i);
        {
            let (a, b) = sys::seqpacket_pair().unwrap();
            let b = Channel::new(b).unwrap();
            for r in &c.packets {
                send_raw(a.as_raw_fd(), r, pw.as_raw_fd());
            }
            let mut inbox = Inbox::new(c.max_message);
            let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                expect_error(&mut inbox, &b)
            }))
            .unwrap_or_else(|_| panic!("case {i} ({}) did not produce an error", c.name));
            assert!(
                matches!(e, ReadError::Frame(_)),
                "case {i} ({}): {e}",
                c.name
            );
            // The message states what went wrong.
            assert!(!e.to_string().is_empty());
            // A well-behaved owner closes the channel now; drop everything.
            drop(inbox);
        }
        assert_eq!(fds_open(), start, "case {i} ({}) leaked an fd", c.name);
        *seen.entry(c.name).or_default() += 1;
    }
    assert_eq!(seen.len(), VARIANTS);
    assert_eq!(fds_open(), start);
}

#[test]
fn errors_name_the_problem() {
    let _g = fd_lock();
    let (_pr, pw) = pipe();
    let check = |packets: Vec<Raw>, want: &dyn Fn(&FrameError) -> bool| {
        let (a, b) = sys::seqpacket_pair().unwrap();
        let b = Channel::new(b).unwrap();
        for r in &packets {
            send_raw(a.as_raw_fd(), r, pw.as_raw_fd());
        }
        let mut inbox = Inbox::default();
        match expect_error(&mut inbox, &b) {
            ReadError::Frame(f) => assert!(want(&f), "unexpected {f:?}"),
            ReadError::Io(e) => panic!("io error {e}"),
        }
    };
    check(vec![raw(vec![1; 5], 0)], &|e| *e == FrameError::Short(5));
    check(vec![raw(packet(99, 0, 0, 0, 0, &[]), 0)], &|e| {
        *e == FrameError::UnknownKind(99)
    });
    check(vec![raw(packet(2, 0x80, 0, 0, 0, &[]), 0)], &|e| {
        *e == FrameError::UnknownFlags(0x80)
    });
    check(vec![raw(packet(2, 0, 0, 5, 0, b"abc"), 0)], &|e| {
        matches!(
            e,
            FrameError::BadLength {
                declared: 5,
                actual: 3
            }
        )
    });
    check(vec![raw(encode(Kind::Ack, 0, 1, 0, &[0; 8]), 1)], &|e| {
        matches!(
            e,
            FrameError::BadFds {
                kind: Kind::Ack,
                ..
            }
        )
    });
    check(vec![raw(encode(Kind::Conn, 0, 1, 0, &[0; 4]), 0)], &|e| {
        matches!(
            e,
            FrameError::BadFds {
                kind: Kind::Conn,
                received: 0,
                ..
            }
        )
    });
    check(vec![raw(encode(Kind::Conn, 0, 1, 0, &[0; 4]), 30)], &|e| {
        *e == FrameError::Truncated
    });
    check(vec![raw(vec![0; MAX_PACKET + 1], 0)], &|e| {
        *e == FrameError::Truncated
    });
    check(vec![raw(msg(FLAG_CONT, 0, 4, b"x"), 0)], &|e| {
        *e == FrameError::OutOfSequence(4)
    });
}

#[test]
fn good_frames_before_a_bad_one_still_arrive() {
    let _g = fd_lock();
    let (a, b) = sys::seqpacket_pair().unwrap();
    let b = Channel::new(b).unwrap();
    let (_pr, pw) = pipe();
    send_raw(
        a.as_raw_fd(),
        &raw(encode(Kind::Online, 0, 0, 0, &[]), 0),
        pw.as_raw_fd(),
    );
    send_raw(
        a.as_raw_fd(),
        &raw(encode(Kind::Conn, 0, 1, 3, &1u32.to_le_bytes()), 1),
        pw.as_raw_fd(),
    );
    send_raw(a.as_raw_fd(), &raw(vec![0; 3], 0), pw.as_raw_fd());
    let mut inbox = Inbox::default();
    assert_eq!(next_frame(&mut inbox, &b).kind, Kind::Online);
    let conn = next_frame(&mut inbox, &b);
    assert_eq!(conn.kind, Kind::Conn);
    assert!(is_cloexec(conn.fd.as_ref().unwrap().as_raw_fd()));
    assert!(matches!(
        expect_error(&mut inbox, &b),
        ReadError::Frame(FrameError::Short(3))
    ));
    // Header::parse agrees with the inbox on a valid header.
    let p = encode(Kind::Conn, 0, 1, 3, &1u32.to_le_bytes());
    assert_eq!(Header::parse(&p, 1).unwrap().id, 3);
}

/// A zero-length packet is indistinguishable, to `recvmsg`, from end of file:
/// both return 0 bytes. The inbox tells them apart by asking whether the peer
/// has really hung up; a live peer sending an empty packet is a short frame.
#[test]
fn zero_length_packet_from_the_peer() {
    let _g = fd_lock();
    let start = fds_open();
    {
        let (a, b) = sys::seqpacket_pair().unwrap();
        let b = Channel::new(b).unwrap();
        let (_pr, pw) = pipe();
        // Raw level: 0 bytes, no fds, not truncated.
        sys::send_packet(a.as_raw_fd(), &[], None).unwrap();
        let mut buf = vec![0u8; MAX_PACKET];
        let r = b.recv_raw(&mut buf).unwrap().expect("a packet");
        assert_eq!(r.len, 0);
        assert!(r.fds.is_empty() && !r.truncated);
        // The same packet through the inbox: an error, not end of file.
        sys::send_packet(a.as_raw_fd(), &[], None).unwrap();
        let mut inbox = Inbox::default();
        match inbox.read(&b) {
            Err(ReadError::Frame(FrameError::Short(0))) => {}
            other => panic!("zero-length packet gave {other:?}"),
        }
        // With an fd it is a short frame too, and the fd is closed.
        sys::send_packet(a.as_raw_fd(), &[], Some(pw.as_raw_fd())).unwrap();
        let before = fds_open();
        match inbox.read(&b) {
            Err(ReadError::Frame(FrameError::Short(0))) => {}
            other => panic!("zero-length packet with an fd gave {other:?}"),
        }
        assert_eq!(fds_open(), before);
        // The socket itself is still fine: the peer is alive.
        sys::send_packet(
            a.as_raw_fd(),
            &[IoSlice::new(&encode(Kind::Online, 0, 0, 0, &[]))],
            None,
        )
        .unwrap();
        assert_eq!(next_frame(&mut inbox, &b).kind, Kind::Online);
        // A real hang-up is end of file, also after an empty packet.
        sys::send_packet(a.as_raw_fd(), &[], None).unwrap();
        drop(a);
        // The last read found the socket empty; a poll loop would be woken.
        inbox.rearm();
        assert!(matches!(inbox.read(&b).unwrap(), Read::Eof));
        assert!(matches!(inbox.read(&b).unwrap(), Read::Eof));
    }
    assert_eq!(fds_open(), start);
}

#[test]
fn shutdown_for_writing_is_end_of_file() {
    let _g = fd_lock();
    let (a, b) = sys::seqpacket_pair().unwrap();
    let b = Channel::new(b).unwrap();
    // SAFETY: shutdown takes no pointers.
    assert_eq!(unsafe { libc::shutdown(a.as_raw_fd(), libc::SHUT_WR) }, 0);
    let mut inbox = Inbox::default();
    assert!(matches!(inbox.read(&b).unwrap(), Read::Eof));
}
