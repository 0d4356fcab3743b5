//! fd passing at volume, and fd-leak accounting.
//!
//! Every test here counts the process's open fds, so they all take `FD_LOCK`:
//! cargo runs the tests of one binary on parallel threads of one process.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::thread;

use common::*;
use rcluster::channel::{Flush, Inbox, Read};
use rcluster::frame::{decode_u32, Kind, FLAG_HANDLE, MAX_PAYLOAD};

static FD_LOCK: Mutex<()> = Mutex::new(());

fn fd_lock() -> MutexGuard<'static, ()> {
    FD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn ten_thousand_fds_one_per_frame() {
    let _g = fd_lock();
    const N: u64 = 10_000;
    let start = fds_open();
    {
        let (a, b) = pair();
        let (pr, pw) = pipe();
        let want_w = file_id(pw.as_raw_fd());
        let want_r = file_id(pr.as_raw_fd());
        let reader = thread::spawn(move || {
            let mut inbox = Inbox::default();
            for i in 0..N {
                let f = next_frame(&mut inbox, &b);
                let fd: OwnedFd = f.fd.expect("frame without its fd");
                assert!(is_cloexec(fd.as_raw_fd()), "fd {i} is not close-on-exec");
                if i % 2 == 0 {
                    assert_eq!(f.kind, Kind::Conn, "frames out of order");
                    assert_eq!(f.id, i, "frames out of order");
                    assert_eq!(
                        decode_u32(Kind::Conn, &f.payload).unwrap(),
                        i as u32 ^ 0x5a5a
                    );
                    assert_eq!(file_id(fd.as_raw_fd()), want_w);
                } else {
                    assert_eq!(f.kind, Kind::Message, "frames out of order");
                    assert_eq!(f.flags, FLAG_HANDLE);
                    // Every tenth message spans several chunks; the fd rides the first.
                    let len = if i % 10 == 1 { 2 * MAX_PAYLOAD + 3 } else { 8 };
                    assert!(f.payload == pattern(i, len));
                    assert_eq!(file_id(fd.as_raw_fd()), want_r);
                }
                // `fd` dropped (closed) here.
            }
            assert!(matches!(inbox.read(&b).unwrap(), Read::Empty));
        });
        for i in 0..N {
            let st = if i % 2 == 0 {
                a.send_frame(
                    Kind::Conn,
                    0,
                    i,
                    &(i as u32 ^ 0x5a5a).to_le_bytes(),
                    Some(dup_inheritable(pw.as_raw_fd())),
                )
                .unwrap()
            } else {
                let len = if i % 10 == 1 { 2 * MAX_PAYLOAD + 3 } else { 8 };
                let st = a
                    .send_message(
                        FLAG_HANDLE,
                        pattern(i, len),
                        Some(dup_inheritable(pr.as_raw_fd())),
                    )
                    .unwrap();
                // Message ids come from the channel; the payload identifies `i`.
                st
            };
            // Keep the number of fds sitting in our queue bounded.
            if st == Flush::Pending {
                flush_all(&a, st);
            }
        }
        let st = a.flush().unwrap();
        flush_all(&a, st);
        reader.join().expect("reader panicked");
    }
    assert_eq!(fds_open(), start, "fds leaked");
}

#[test]
fn queued_fds_are_closed_by_close_output_and_by_drop() {
    let _g = fd_lock();
    let start = fds_open();
    {
        let (a, b) = pair();
        let (_pr, pw) = pipe();
        let with_pipe = fds_open();
        // Fill the socket, then queue frames holding fds.
        while a.send_message(0, vec![0; MAX_PAYLOAD], None).unwrap() == Flush::Done {}
        for i in 0..500 {
            let st = a
                .send_frame(
                    Kind::Conn,
                    0,
                    i,
                    &[0; 4],
                    Some(dup_inheritable(pw.as_raw_fd())),
                )
                .unwrap();
            assert_eq!(st, Flush::Pending);
        }
        assert_eq!(fds_open(), with_pipe + 500);
        a.close_output();
        assert_eq!(fds_open(), with_pipe, "close_output kept queued fds open");

        // Dropping a channel with a non-empty queue closes the queued fds too.
        let (c, d) = pair();
        while c.send_message(0, vec![0; MAX_PAYLOAD], None).unwrap() == Flush::Done {}
        for i in 0..100 {
            c.send_message(
                FLAG_HANDLE,
                vec![1; 10],
                Some(dup_inheritable(pw.as_raw_fd())),
            )
            .map(|_| i)
            .unwrap();
        }
        drop(c);
        drop(d);
        assert_eq!(
            fds_open(),
            with_pipe,
            "dropping the channel leaked queued fds"
        );
        drop(b);
    }
    assert_eq!(fds_open(), start);
}

#[test]
fn unread_fds_in_the_socket_die_with_it() {
    let _g = fd_lock();
    let start = fds_open();
    {
        let (a, b) = pair();
        let (_pr, pw) = pipe();
        for i in 0..200 {
            let st = a
                .send_frame(
                    Kind::Conn,
                    0,
                    i,
                    &[0; 4],
                    Some(dup_inheritable(pw.as_raw_fd())),
                )
                .unwrap();
            assert_eq!(st, Flush::Done);
        }
        // Read a few, leave the rest in the socket.
        let mut inbox = Inbox::default();
        for i in 0..10 {
            assert_eq!(next_frame(&mut inbox, &b).id, i);
        }
        drop(a);
        drop(b);
    }
    assert_eq!(fds_open(), start);
}

#[test]
fn partial_message_fd_is_closed_on_eof_and_on_drop() {
    let _g = fd_lock();
    let start = fds_open();
    {
        let (a, b) = pair();
        let (_pr, pw) = pipe();
        let base = fds_open();
        let mut inbox = Inbox::default();
        // The first chunks (the fd rides the first) get through; the rest stays queued.
        let st = a
            .send_message(
                FLAG_HANDLE,
                vec![3; 64 * MAX_PAYLOAD],
                Some(dup_inheritable(pw.as_raw_fd())),
            )
            .unwrap();
        assert_eq!(st, Flush::Pending);
        assert!(matches!(inbox.read(&b).unwrap(), Read::Partial));
        // The partial message holds the received fd: one in our table.
        drop(a);
        loop {
            match inbox.read(&b).unwrap() {
                Read::Partial => {}
                // Empty once after a short batch (see Inbox::rearm); EOF waits.
                Read::Empty => {
                    poll_fd(b.as_raw_fd(), libc::POLLIN, 100);
                }
                Read::Eof => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(inbox);
        drop(b);
        assert_eq!(fds_open(), base - 2, "partial message leaked its fd");
    }
    assert_eq!(fds_open(), start);
}

/// The count the leak checks rely on: a pipe and a /dev/null of ours count;
/// a file the runtime could be reading on another thread (here one under
/// /proc, held on purpose) does not.
#[cfg(target_os = "linux")]
#[test]
fn the_fd_count_sees_ours_and_not_the_runtimes() {
    let _g = fd_lock();
    let start = fds_open();
    let (pr, pw) = pipe();
    assert_eq!(fds_open(), start + 2, "a pipe is two fds");
    let null = std::fs::File::open("/dev/null").unwrap();
    assert_eq!(fds_open(), start + 3, "/dev/null is counted");
    let status = std::fs::File::open("/proc/self/status").unwrap();
    assert_eq!(fds_open(), start + 3, "a /proc file is the runtime's kind");
    drop((pr, pw, null, status));
    assert_eq!(fds_open(), start);
}
