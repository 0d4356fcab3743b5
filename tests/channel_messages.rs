//! Messages and control frames over a real socketpair: sizes around the chunk
//! boundary, ordering with concurrent writers, back-pressure, flags and fds.

mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rcluster::channel::{Flush, Inbox, Read};
use rcluster::frame::{
    Kind, FLAG_ADVANCED, FLAG_CONT, FLAG_HANDLE, FLAG_MORE, HEADER_LEN, MAX_PAYLOAD,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Sends every payload as a message from this thread while a reader thread
/// receives; returns what the reader got.
fn round_trip(payloads: Vec<Vec<u8>>, flags: u8) -> Vec<(u8, Vec<u8>)> {
    let (a, b) = pair();
    let n = payloads.len();
    let reader = thread::spawn(move || {
        let mut inbox = Inbox::default();
        let mut got = Vec::with_capacity(n);
        for _ in 0..n {
            let f = next_frame(&mut inbox, &b);
            assert_eq!(f.kind, Kind::Message);
            assert!(f.fd.is_none());
            got.push((f.flags, f.payload));
        }
        // Nothing else arrives.
        assert!(matches!(inbox.read(&b).unwrap(), Read::Empty));
        got
    });
    for p in payloads {
        let st = a.send_message(flags, p, None).expect("send_message");
        flush_all(&a, st);
    }
    assert_eq!(a.queued_bytes(), 0);
    let got = reader.join().expect("reader panicked");
    drop(a);
    got
}

#[test]
fn sizes_round_trip_byte_exact() {
    let sizes = [
        0,
        1,
        MAX_PAYLOAD - 1,
        MAX_PAYLOAD,
        MAX_PAYLOAD + 1,
        2 * MAX_PAYLOAD,
        MIB,
        64 * MIB,
    ];
    assert_eq!(MAX_PAYLOAD, 64 * KIB);
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(i as u64 + 1, n))
        .collect();
    let got = round_trip(payloads.clone(), 0);
    assert_eq!(got.len(), sizes.len());
    for ((flags, data), want) in got.iter().zip(&payloads) {
        assert_eq!(*flags, 0, "chunk flags leak into the message");
        assert_eq!(data.len(), want.len());
        assert!(data == want, "payload of {} bytes differs", want.len());
    }
}

#[test]
fn each_size_alone() {
    for (i, n) in [0, 1, MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, MIB]
        .into_iter()
        .enumerate()
    {
        let want = pattern(100 + i as u64, n);
        let got = round_trip(vec![want.clone()], FLAG_ADVANCED);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, FLAG_ADVANCED);
        assert!(got[0].1 == want, "size {n}");
    }
}

/// Payload of an ordering test item: writer, sequence number, then a pattern.
fn item(writer: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + len);
    v.extend_from_slice(&writer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&pattern(writer << 32 | seq, len));
    v
}

#[test]
fn two_writers_keep_their_order_and_never_interleave() {
    const PER_WRITER: u64 = 400;
    let (a, b) = pair();
    let a = Arc::new(a);
    let reader = thread::spawn(move || {
        let mut inbox = Inbox::default();
        let mut next = [0u64; 2];
        let mut messages = 0;
        let mut controls = 0;
        while next.iter().any(|&n| n < PER_WRITER) {
            let f = next_frame(&mut inbox, &b);
            let writer = u64::from_le_bytes(f.payload[0..8].try_into().unwrap());
            let seq = u64::from_le_bytes(f.payload[8..16].try_into().unwrap());
            assert!(writer < 2, "garbage writer id {writer}");
            assert_eq!(seq, next[writer as usize], "writer {writer} out of order");
            next[writer as usize] += 1;
            match f.kind {
                Kind::Message => {
                    messages += 1;
                    assert_eq!(f.flags & (FLAG_MORE | FLAG_CONT), 0);
                    // The whole payload must be exactly what that writer sent:
                    // a chunk of another message in the middle would break it.
                    let len = f.payload.len() - 16;
                    assert!(
                        f.payload[16..] == pattern(writer << 32 | seq, len)[..],
                        "message {writer}/{seq} corrupted"
                    );
                }
                Kind::Control => {
                    controls += 1;
                    assert_eq!(f.id, writer << 32 | seq);
                    assert!(
                        f.payload[16..] == pattern(writer << 32 | seq, f.payload.len() - 16)[..]
                    );
                }
                k => panic!("unexpected kind {k:?}"),
            }
        }
        assert!(matches!(inbox.read(&b).unwrap(), Read::Empty));
        (messages, controls)
    });
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let a = Arc::clone(&a);
            thread::spawn(move || {
                for seq in 0..PER_WRITER {
                    let st = if seq % 3 == 2 {
                        a.send_frame(
                            Kind::Control,
                            0,
                            w << 32 | seq,
                            &item(w, seq, (seq as usize * 37) % 1000),
                            None,
                        )
                        .expect("send_frame")
                    } else {
                        // Sizes from tiny to several chunks.
                        let len = match seq % 5 {
                            0 => 3,
                            1 => MAX_PAYLOAD - 16,
                            2 => MAX_PAYLOAD * 3 + 7,
                            3 => 1000 + seq as usize,
                            _ => 200 * 1024 + (seq as usize) * 13,
                        };
                        a.send_message(0, item(w, seq, len), None)
                            .expect("send_message")
                    };
                    if st == Flush::Pending && seq % 7 == 0 {
                        // Sometimes wait for the socket, sometimes keep queueing.
                        poll_fd(a.as_raw_fd(), libc::POLLOUT, 50);
                    }
                }
                let st = a.flush().expect("flush");
                flush_all(&a, st);
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer panicked");
    }
    // Either writer may have left packets queued after the other's last flush.
    let st = a.flush().unwrap();
    flush_all(&a, st);
    let (messages, controls) = reader.join().expect("reader panicked");
    assert_eq!(messages + controls, 2 * PER_WRITER as usize);
    assert!(controls > 0 && messages > 0);
    assert_eq!(a.queued_bytes(), 0);
}

#[test]
fn back_pressure_never_blocks_and_drains_in_order() {
    let (a, b) = pair();
    let mut last_queued = 0;
    let mut saw_pending = false;
    let mut grew = 0;
    let count = 3000u64;
    for i in 0..count {
        let len = if i % 10 == 0 { 150 * 1024 } else { 4096 };
        let t = Instant::now();
        let st = a
            .send_message(0, item(0, i, len), None)
            .expect("send never errors under back-pressure");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "send_message blocked for {:?}",
            t.elapsed()
        );
        if st == Flush::Pending {
            saw_pending = true;
            let q = a.queued_bytes();
            assert!(q >= last_queued, "queue shrank with no reader");
            if q > last_queued {
                grew += 1;
            }
            last_queued = q;
        }
    }
    assert!(saw_pending, "the socket never filled up");
    assert!(grew > 100, "queued_bytes did not keep growing");
    // flush with nobody reading stays pending and does not block.
    let t = Instant::now();
    assert_eq!(a.flush().unwrap(), Flush::Pending);
    assert!(t.elapsed() < Duration::from_secs(2));
    let queued = a.queued_bytes();
    assert!(queued > 10 * MIB, "only {queued} bytes queued");

    let reader = thread::spawn(move || {
        let mut inbox = Inbox::default();
        for i in 0..count {
            let f = next_frame(&mut inbox, &b);
            let seq = u64::from_le_bytes(f.payload[8..16].try_into().unwrap());
            assert_eq!(seq, i);
            let len = f.payload.len() - 16;
            assert!(f.payload[16..] == pattern(i, len)[..]);
        }
        assert!(matches!(inbox.read(&b).unwrap(), Read::Empty));
    });
    flush_all(&a, Flush::Pending);
    assert_eq!(a.queued_bytes(), 0);
    reader.join().expect("reader panicked");
}

#[test]
fn advanced_flag_and_fd_ride_on_a_chunked_message() {
    let (a, b) = pair();
    let (pr, pw) = pipe();
    let payload = pattern(7, 3 * MAX_PAYLOAD + 5);
    let st = a
        .send_message(
            FLAG_ADVANCED | FLAG_HANDLE,
            payload.clone(),
            Some(dup_inheritable(pw.as_raw_fd())),
        )
        .unwrap();
    // A single-chunk message with an fd too.
    let st2 = a
        .send_message(
            FLAG_HANDLE,
            b"small".to_vec(),
            Some(dup_inheritable(pr.as_raw_fd())),
        )
        .unwrap();
    let reader = thread::spawn(move || {
        let mut inbox = Inbox::default();
        let big = next_frame(&mut inbox, &b);
        let small = next_frame(&mut inbox, &b);
        (big, small)
    });
    flush_all(&a, if st == Flush::Pending { st } else { st2 });
    let (big, small) = reader.join().unwrap();
    assert_eq!(big.kind, Kind::Message);
    assert_eq!(big.flags, FLAG_ADVANCED | FLAG_HANDLE);
    assert!(big.payload == payload);
    let fd = big.fd.expect("fd of the first chunk");
    assert!(is_cloexec(fd.as_raw_fd()));
    assert_eq!(file_id(fd.as_raw_fd()), file_id(pw.as_raw_fd()));
    assert_eq!(small.flags, FLAG_HANDLE);
    assert_eq!(small.payload, b"small");
    let rfd = small.fd.expect("fd of the small message");
    assert!(is_cloexec(rfd.as_raw_fd()));
    assert_eq!(file_id(rfd.as_raw_fd()), file_id(pr.as_raw_fd()));
    // The passed write end really is the pipe.
    // SAFETY: writes 2 bytes from a valid buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), b"ok".as_ptr() as *const libc::c_void, 2) };
    assert_eq!(n, 2);
    let mut buf = [0u8; 2];
    // SAFETY: reads 2 bytes into a valid buffer.
    let n = unsafe { libc::read(pr.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, 2) };
    assert_eq!(n, 2);
    assert_eq!(&buf, b"ok");
}

#[test]
fn control_frames_carry_kind_flags_id_payload_and_fd() {
    let (a, b) = pair();
    let (_pr, pw) = pipe();
    let mut inbox = Inbox::default();
    let cases: Vec<(Kind, u8, u64, Vec<u8>, bool)> = vec![
        (Kind::Online, 0, 0, vec![], false),
        (Kind::ListenRequest, 0, 9, b"{\"port\":0}".to_vec(), false),
        (Kind::ListenReply, 0, 9, b"{\"ok\":true}".to_vec(), true),
        (Kind::ListenReply, 0, 10, b"{\"ok\":false}".to_vec(), false),
        (Kind::Conn, 0, u64::MAX, 77u32.to_le_bytes().to_vec(), true),
        (Kind::Ack, FLAG_REJECTED_FOR_TEST, 3, vec![0; 16], false),
        (Kind::CloseListen, 0, 0, 5u32.to_le_bytes().to_vec(), false),
        (Kind::Disconnect, 0, 0, vec![], false),
        (Kind::ExitedAfterDisconnect, 0, 0, vec![], false),
        (Kind::Listening, 0, 1, b"{}".to_vec(), false),
        (Kind::Control, 0, 2, vec![0xAB; MAX_PAYLOAD], false),
        (Kind::Message, FLAG_ADVANCED, 4, vec![1, 2, 3], false),
    ];
    for (kind, flags, id, payload, with_fd) in &cases {
        let fd = with_fd.then(|| dup_inheritable(pw.as_raw_fd()));
        assert_eq!(
            a.send_frame(*kind, *flags, *id, payload, fd).unwrap(),
            Flush::Done
        );
        let f = next_frame(&mut inbox, &b);
        assert_eq!(f.kind, *kind);
        assert_eq!(f.flags, *flags);
        assert_eq!(f.id, *id);
        assert_eq!(&f.payload, payload);
        assert_eq!(f.fd.is_some(), *with_fd);
        if let Some(fd) = f.fd {
            assert!(is_cloexec(fd.as_raw_fd()));
            assert_eq!(file_id(fd.as_raw_fd()), file_id(pw.as_raw_fd()));
        }
    }
    // Oversized control frames are refused up front.
    assert!(a
        .send_frame(Kind::Control, 0, 0, &vec![0; MAX_PAYLOAD + 1], None)
        .is_err());
    assert_eq!(a.queued_bytes(), 0);
    assert!(matches!(inbox.read(&b).unwrap(), Read::Empty));
    drop(a);
    assert!(matches!(inbox.read(&b).unwrap(), Read::Eof));
}

const FLAG_REJECTED_FOR_TEST: u8 = rcluster::frame::FLAG_REJECTED;

#[test]
fn queued_bytes_counts_headers_and_payload() {
    let (a, b) = pair();
    // Fill the socket so that later sends stay queued.
    while a.send_message(0, vec![0; MAX_PAYLOAD], None).unwrap() == Flush::Done {}
    let before = a.queued_bytes();
    assert!(a.send_message(0, vec![1; 10], None).unwrap() == Flush::Pending);
    assert_eq!(a.queued_bytes(), before + HEADER_LEN + 10);
    a.send_message(0, vec![1; 2 * MAX_PAYLOAD + 1], None)
        .unwrap();
    assert_eq!(
        a.queued_bytes(),
        before + HEADER_LEN + 10 + 3 * HEADER_LEN + 2 * MAX_PAYLOAD + 1
    );
    a.send_frame(Kind::Online, 0, 0, &[], None).unwrap();
    assert_eq!(
        a.queued_bytes(),
        before + 4 * HEADER_LEN + 10 + HEADER_LEN + 2 * MAX_PAYLOAD + 1
    );
    // close_output drops the queue; later sends fail.
    a.close_output();
    assert_eq!(a.queued_bytes(), 0);
    assert!(a.send_message(0, vec![], None).is_err());
    assert!(a.send_frame(Kind::Online, 0, 0, &[], None).is_err());
    drop(b);
}

#[test]
fn send_to_a_closed_peer_errors_and_closes_the_outbox() {
    let (a, b) = pair();
    drop(b);
    let e = a.send_message(0, vec![1; 10], None).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE), "{e}");
    assert_eq!(a.queued_bytes(), 0);
    assert!(a.send_frame(Kind::Online, 0, 0, &[], None).is_err());
}

#[test]
fn reader_sees_eof_after_partial_message_and_peer_close() {
    let (a, b) = pair();
    // Fill so the big message is only partly written, then drop the sender.
    let st = a.send_message(0, vec![9; 16 * MIB], None).unwrap();
    assert_eq!(st, Flush::Pending);
    drop(a);
    let mut inbox = Inbox::default();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(Instant::now() < deadline);
        match inbox.read(&b).unwrap() {
            Read::Partial => {}
            Read::Eof => break,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn send_side_refuses_what_the_receiver_would_refuse() {
    let (a, b) = pair();
    let (_pr, pw) = pipe();
    let fd = || Some(dup_inheritable(pw.as_raw_fd()));
    let invalid = |r: std::io::Result<Flush>| {
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    };
    // A connection without its fd, an fd where none belongs.
    invalid(a.send_frame(Kind::Conn, 0, 1, &[0; 4], None));
    invalid(a.send_frame(Kind::Ack, 0, 1, &[0; 8], fd()));
    invalid(a.send_frame(Kind::Online, 0, 0, &[], fd()));
    // Chunk flags and unknown flags.
    invalid(a.send_frame(Kind::Control, FLAG_MORE, 0, b"{}", None));
    invalid(a.send_frame(Kind::Message, FLAG_CONT, 0, b"{}", None));
    invalid(a.send_frame(Kind::Control, 0x80, 0, b"{}", None));
    invalid(a.send_message(FLAG_MORE, vec![1; 10], None));
    invalid(a.send_message(FLAG_CONT | FLAG_ADVANCED, vec![1; 10], None));
    invalid(a.send_message(0x40, vec![1; 10], fd()));
    // Nothing reached the queue or the socket, and the channel still works.
    assert_eq!(a.queued_bytes(), 0);
    let mut inbox = Inbox::default();
    assert!(matches!(inbox.read(&b).unwrap(), Read::Empty));
    a.send_frame(Kind::Conn, 0, 1, &[0; 4], fd()).unwrap();
    assert_eq!(next_frame(&mut inbox, &b).kind, Kind::Conn);
}

#[test]
fn inbox_limit_applies_to_single_packet_messages_too() {
    let (a, b) = pair();
    a.send_message(0, vec![1; 100], None).unwrap();
    a.send_message(0, vec![1; 101], None).unwrap();
    let mut inbox = Inbox::new(100);
    assert_eq!(next_frame(&mut inbox, &b).payload.len(), 100);
    assert!(matches!(
        inbox.read(&b),
        Err(rcluster::channel::ReadError::Frame(
            rcluster::frame::FrameError::TooLarge(101)
        ))
    ));
}
