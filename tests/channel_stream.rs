//! The stream channel (macOS, and Linux with `RCLUSTER_PORTABLE=1`): frames
//! back to back on a `SOCK_STREAM` socket. Bytes arrive in any split, so
//! these tests check what framing adds: frames cut at every byte, frames
//! gathered into one write, fds tied to the frame they started with, and
//! lying headers refused without leaking an fd.
//!
//! Every test counts the process's open fds, so they all take `FD_LOCK`.

mod common;

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use common::{expect_error, fds_open, file_id, flush_all, next_frame, pattern, pipe};
use common::{poll_fd, send_with_fds};
use rcluster::channel::{Channel, Flush, Inbox, Read, ReadError};
use rcluster::frame::{encode, FrameError, Kind, FLAG_CONT, FLAG_HANDLE, FLAG_MORE, HEADER_LEN};
use rcluster::sys;

static FD_LOCK: Mutex<()> = Mutex::new(());

fn fd_lock() -> MutexGuard<'static, ()> {
    FD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A raw stream socket for the test to write bytes into, and the channel
/// reading from its peer.
fn raw_pair() -> (OwnedFd, Channel) {
    let (a, b) = sys::stream_pair().unwrap();
    (a, Channel::new(b).unwrap())
}

fn write_all(fd: RawFd, bytes: &[u8]) {
    let mut off = 0;
    while off < bytes.len() {
        match sys::send_packet(fd, &[IoSlice::new(&bytes[off..])], None) {
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                poll_fd(fd, libc::POLLOUT, 100);
            }
            Err(e) => panic!("write: {e}"),
        }
    }
}

#[test]
fn the_channel_is_a_stream_when_built_on_one() {
    let _g = fd_lock();
    let (_a, ch) = raw_pair();
    assert!(ch.is_stream());
    let (x, y) = sys::channel_pair().unwrap();
    assert_eq!(
        Channel::new(x).unwrap().is_stream(),
        sys::portable(),
        "channel_pair gives seqpacket on Linux unless portable"
    );
    drop(y);
}

#[test]
fn frames_cut_at_every_byte_arrive_whole() {
    let _g = fd_lock();
    let (a, ch) = raw_pair();
    let mut wire = Vec::new();
    let mut expect = Vec::new();
    for i in 0..20u64 {
        let body = pattern(i, (i * 37 % 300) as usize);
        wire.extend_from_slice(&encode(Kind::Message, 0, 0, i, &body));
        expect.push(body);
    }
    let mut inbox = Inbox::default();
    let mut got = Vec::new();
    // One byte per write: the reader sees every possible split.
    for b in &wire {
        write_all(a.as_raw_fd(), std::slice::from_ref(b));
        loop {
            match inbox.read(&ch).unwrap() {
                Read::Frame(f) => got.push(f.payload),
                Read::Partial => continue,
                Read::Empty => break,
                Read::Eof => panic!("early EOF"),
            }
        }
    }
    assert_eq!(got, expect);
    drop(a);
    assert!(matches!(inbox.read(&ch).unwrap(), Read::Eof));
}

#[test]
fn many_small_frames_and_fds_survive_partial_writes() {
    let _g = fd_lock();
    let before = fds_open();
    {
        let (a, b) = sys::stream_pair().unwrap();
        let (tx, rx) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        assert!(tx.is_stream());
        let (pr, pw) = pipe();
        let want = file_id(pr.as_raw_fd());
        // Queue far more than the socket buffer holds, an fd every 50
        // messages and a big chunked one now and then, so writes are cut
        // anywhere (in a header, in a payload, after an fd).
        let mut state = Flush::Done;
        let mut sent = Vec::new();
        for i in 0..3000u64 {
            let body = if i % 500 == 7 {
                pattern(i, 200_000)
            } else {
                pattern(i, (i % 90) as usize)
            };
            let fd = (i % 50 == 3).then(|| pr.try_clone().unwrap());
            let flags = if fd.is_some() { FLAG_HANDLE } else { 0 };
            state = tx.send_message(flags, body.clone(), fd).unwrap();
            sent.push((body, i % 50 == 3));
        }
        let mut inbox = Inbox::default();
        let mut got = 0;
        while got < sent.len() {
            if state == Flush::Pending {
                state = tx.flush().unwrap();
            }
            match inbox.read(&rx).unwrap() {
                Read::Frame(f) => {
                    let (body, has_fd) = &sent[got];
                    assert_eq!(&f.payload, body, "message {got}");
                    assert_eq!(f.fd.is_some(), *has_fd, "fd of message {got}");
                    if let Some(fd) = f.fd {
                        assert_eq!(file_id(fd.as_raw_fd()), want);
                        assert!(common::is_cloexec(fd.as_raw_fd()));
                    }
                    got += 1;
                }
                Read::Partial => {}
                Read::Empty => {
                    poll_fd(rx.as_raw_fd(), libc::POLLIN, 10);
                }
                Read::Eof => panic!("early EOF"),
            }
        }
        flush_all(&tx, state);
        drop((pr, pw));
    }
    assert_eq!(fds_open(), before, "fds leaked");
}

/// Writes `bytes` with `nfds` fds of a pipe attached, then expects `expect`
/// in the error the reader reports, and no fd left open afterwards.
fn refused(name: &str, bytes: &[u8], nfds: usize, expect: &str) {
    let before = fds_open();
    {
        let (a, ch) = raw_pair();
        let (pr, pw) = pipe();
        let fds = vec![pr.as_raw_fd(); nfds];
        let n = send_with_fds(a.as_raw_fd(), bytes, &fds).unwrap();
        assert_eq!(n, bytes.len(), "{name}: short write");
        drop((pr, pw));
        let mut inbox = Inbox::default();
        let e = expect_error(&mut inbox, &ch);
        assert!(matches!(e, ReadError::Frame(_)), "{name}: {e}");
        assert!(e.to_string().contains(expect), "{name}: {e}");
    }
    assert_eq!(fds_open(), before, "{name}: fds leaked");
}

fn header(kind: u8, flags: u8, nfds: u16, len: u32, id: u64) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    h[0] = kind;
    h[1] = flags;
    h[2..4].copy_from_slice(&nfds.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..16].copy_from_slice(&id.to_le_bytes());
    h
}

#[test]
fn lying_frames_are_refused_and_leak_nothing() {
    let _g = fd_lock();
    // Refused as soon as the header is in, without waiting for a payload.
    refused(
        "unknown kind",
        &header(0xee, 0, 0, 4, 1),
        0,
        "unknown frame kind 238",
    );
    refused(
        "unknown flags",
        &header(2, 0x80, 0, 4, 1),
        0,
        "unknown frame flags",
    );
    refused(
        "huge length",
        &header(2, 0, 0, u32::MAX, 1),
        0,
        "frame length lies: header says 4294967295 payload bytes, more than the 65536 a frame can carry",
    );
    refused(
        "huge length with an fd",
        &header(2, 0, 1, u32::MAX, 1),
        1,
        "length lies",
    );
    // fds that do not match what the frame declares.
    refused(
        "fd on a kind that takes none",
        &encode(Kind::Online, 0, 1, 0, b""),
        1,
        "fds",
    );
    refused(
        "conn without its fd",
        &encode(Kind::Conn, 0, 1, 1, &[0; 4]),
        0,
        "fds",
    );
    // An fd that came with a frame declaring none is refused with the next
    // frame that starts after the read that brought it.
    let before = fds_open();
    {
        let (a, ch) = raw_pair();
        let (pr, _pw) = pipe();
        let first = encode(Kind::Message, 0, 0, 1, b"{}");
        send_with_fds(a.as_raw_fd(), &first, &[pr.as_raw_fd()]).unwrap();
        let mut inbox = Inbox::default();
        let f = next_frame(&mut inbox, &ch);
        assert!(f.fd.is_none());
        write_all(a.as_raw_fd(), &encode(Kind::Message, 0, 0, 2, b"{}"));
        let e = expect_error(&mut inbox, &ch);
        assert!(
            matches!(e, ReadError::Frame(FrameError::BadFds { .. })),
            "{e}"
        );
    }
    assert_eq!(fds_open(), before, "unclaimed fd leaked");
    // Chunks out of sequence.
    let mut chunks = encode(Kind::Message, FLAG_MORE, 0, 1, b"abc");
    chunks.extend_from_slice(&encode(Kind::Message, FLAG_CONT, 0, 2, b"def"));
    refused("chunk of another message", &chunks, 0, "out of sequence");
    refused(
        "continuation without a start",
        &encode(Kind::Message, FLAG_CONT, 0, 5, b"x"),
        0,
        "out of sequence",
    );
    // More fds than one read takes: the control data is truncated.
    refused("too many fds", &header(2, 0, 20, 0, 1), 20, "truncated");
}

#[test]
fn a_cut_frame_at_end_of_file_is_end_of_file() {
    let _g = fd_lock();
    let (a, ch) = raw_pair();
    let frame = encode(Kind::Message, 0, 0, 1, b"hello");
    write_all(a.as_raw_fd(), &frame[..HEADER_LEN + 2]);
    drop(a);
    let mut inbox = Inbox::default();
    loop {
        match inbox.read(&ch).unwrap() {
            Read::Eof => break,
            Read::Empty => {
                poll_fd(ch.as_raw_fd(), libc::POLLIN, 100);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A bounded random loop: valid frames, corrupted frames and garbage, cut at
/// random points and sent with random fds. The reader may refuse the stream
/// but never panics, and nothing it received stays open.
#[test]
fn random_streams_never_panic_or_leak() {
    let _g = fd_lock();
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut x = seed | 1;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    };
    let before = fds_open();
    for round in 0..300u64 {
        let (a, ch) = raw_pair();
        let (pr, pw) = pipe();
        let mut wire = Vec::new();
        for i in 0..rnd(8) + 1 {
            let kind = [1u8, 2, 5, 6, 11, 12][rnd(6) as usize];
            let body = pattern(round * 31 + i, rnd(200) as usize);
            let mut f = encode(
                Kind::from_u8(kind).unwrap(),
                [0u8, FLAG_MORE, FLAG_CONT][rnd(3) as usize],
                rnd(2) as u16,
                rnd(4),
                &body,
            );
            // Corrupt one byte of some frames.
            if rnd(4) == 0 {
                let at = rnd(f.len() as u64) as usize;
                f[at] = rnd(256) as u8;
            }
            wire.extend_from_slice(&f);
        }
        let mut inbox = Inbox::default();
        let mut off = 0;
        let mut closed = false;
        while off < wire.len() && !closed {
            let n = (rnd(64) as usize + 1).min(wire.len() - off);
            let fds = vec![pr.as_raw_fd(); rnd(3) as usize];
            if send_with_fds(a.as_raw_fd(), &wire[off..off + n], &fds).is_err() {
                break;
            }
            off += n;
            loop {
                match inbox.read(&ch) {
                    Ok(Read::Frame(_)) | Ok(Read::Partial) => continue,
                    Ok(Read::Empty) => break,
                    Ok(Read::Eof) | Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        drop((a, ch, inbox, pr, pw));
    }
    assert_eq!(fds_open(), before, "fds leaked (seed {seed})");
}
