//! The worker's side of the channel: one I/O thread that reads frames and
//! hands them to JavaScript in batches, and flushes what the JS thread queued
//! when the socket was full. The JS thread writes directly (see [`Channel`]).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::channel::{Channel, Flush, Inbox, Incoming, Read};
use crate::poller::{self, Poller, Ready};
use crate::sys;

/// What the worker's JS must hear about.
#[derive(Debug)]
pub enum WorkerEvent {
    Frame(Incoming),
    /// A bad frame or an I/O error; the channel is closed after it.
    Error(String),
    /// The channel closed (the primary went away or disconnected us).
    Disconnect,
}

/// Receives each batch the reader thread read; an empty batch says that a
/// flush wrote everything the channel had queued.
pub type WorkerSink = Box<dyn FnMut(Vec<WorkerEvent>) + Send>;

/// The worker's channel and its I/O thread.
pub struct WorkerIo {
    channel: Arc<Channel>,
    /// Wakes the thread: to stop, or to watch for writability.
    wake: Arc<sys::Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const T_CHANNEL: u64 = 1;
const T_WAKE: u64 = 2;

impl WorkerIo {
    /// Takes over the channel socket `fd` and starts reading it.
    pub fn start(fd: OwnedFd, mut sink: WorkerSink) -> io::Result<WorkerIo> {
        sys::set_cloexec(fd.as_raw_fd(), true)?;
        let channel = Arc::new(Channel::new(fd)?);
        let wake = Arc::new(sys::Waker::new()?);
        let stop = Arc::new(AtomicBool::new(false));
        channel.set_waker(wake.clone());
        let mut poller = Poller::new()?;
        const READ: u32 = poller::READABLE | poller::HANGUP;
        let mut watch = READ;
        poller.add(channel.as_raw_fd(), T_CHANNEL, watch)?;
        poller.add(wake.fd(), T_WAKE, poller::READABLE)?;
        let ch = channel.clone();
        let (wake2, stop2) = (wake.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("rcluster-worker-io".into())
            .spawn(move || {
                let mut inbox = Inbox::default();
                let mut ready: Vec<Ready> = Vec::new();
                loop {
                    ready.clear();
                    // Level-triggered: writability only while output waits.
                    let want = if ch.queued_bytes() > 0 {
                        READ | poller::WRITABLE
                    } else {
                        READ
                    };
                    if want != watch && poller.modify(ch.as_raw_fd(), T_CHANNEL, want).is_ok() {
                        watch = want;
                    }
                    if poller.wait(&mut ready, -1).is_err() {
                        break;
                    }
                    let mut batch = Vec::new();
                    let mut done = false;
                    let mut drained = false;
                    for r in &ready {
                        if r.token == T_WAKE {
                            wake2.drain();
                            done |= stop2.load(Ordering::Acquire);
                            continue;
                        }
                        if r.events & poller::WRITABLE != 0 {
                            // On an error the read side reports the reason
                            // (EOF or error).
                            drained |= matches!(ch.flush(), Ok(Flush::Done));
                        }
                        done |= read_into(&mut inbox, &ch, &mut batch, usize::MAX);
                    }
                    if !batch.is_empty() || drained {
                        sink(batch);
                    }
                    if done {
                        ch.shutdown();
                        break;
                    }
                }
            })?;
        Ok(WorkerIo {
            channel,
            wake,
            stop,
            thread: Some(thread),
        })
    }

    /// The channel, for sending from the JS thread.
    pub fn channel(&self) -> &Arc<Channel> {
        &self.channel
    }

    /// Closes the channel (the primary sees EOF) and stops the thread.
    pub fn close(&mut self) {
        self.channel.shutdown();
        self.stop.store(true, Ordering::Release);
        self.wake.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerIo {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads frames into `batch` until nothing is waiting or it holds `max`
/// events. Returns true when the channel ended: end of file, or a bad frame
/// (reported in `batch` as an error followed by a disconnect).
pub fn read_into(
    inbox: &mut Inbox,
    ch: &Channel,
    batch: &mut Vec<WorkerEvent>,
    max: usize,
) -> bool {
    while batch.len() < max {
        match inbox.read(ch) {
            Ok(Read::Frame(f)) => batch.push(WorkerEvent::Frame(f)),
            Ok(Read::Partial) => continue,
            Ok(Read::Empty) => return false,
            Ok(Read::Eof) => {
                batch.push(WorkerEvent::Disconnect);
                return true;
            }
            Err(e) => {
                batch.push(WorkerEvent::Error(format!("{e}; channel closed")));
                batch.push(WorkerEvent::Disconnect);
                return true;
            }
        }
    }
    false
}

/// How long a worker whose primary died may take to leave by itself before
/// it is killed: on its channel's end of file it emits `'disconnect'` and
/// exits with code 0, running its `'exit'` handlers, as Node's cluster
/// workers do; one whose event loop is busy or stuck is killed then.
pub const PARENT_GRACE: Duration = Duration::from_millis(500);

/// Makes this process end with its parent `ppid` (the primary), and exits at
/// once if it is already gone. Linux: a thread waits on a pidfd of the
/// primary and kills this process [`PARENT_GRACE`] after the primary's death
/// if it has not left by then; where pidfds are missing, `PR_SET_PDEATHSIG`
/// kills it at once. Elsewhere (macOS) the worker ends when its channel
/// reports end of file, as Node's cluster workers do.
pub fn die_with_parent(ppid: i32) {
    #[cfg(target_os = "linux")]
    if !watch_parent(ppid) {
        kill_with_parent();
    }
    // SAFETY: getppid has no preconditions.
    if ppid > 0 && unsafe { libc::getppid() } != ppid {
        // SAFETY: _exit ends the process without running anything else.
        unsafe { libc::_exit(0) };
    }
}

/// The kernel SIGKILLs this process when its parent exits (`PR_SET_PDEATHSIG`).
#[cfg(target_os = "linux")]
fn kill_with_parent() {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes an integer signal number.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}

/// Starts the thread that kills this process [`PARENT_GRACE`] after its
/// parent `ppid` exits. False when it cannot (no pidfds, or `ppid` is not
/// the parent any more).
#[cfg(target_os = "linux")]
fn watch_parent(ppid: i32) -> bool {
    if ppid <= 0 {
        return false;
    }
    let Ok(pidfd) = crate::process::pidfd_open(ppid) else {
        return false;
    };
    // Still our parent now that the pidfd is open: it names the primary,
    // whose pid cannot be reused while we are its child.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != ppid {
        return false;
    }
    std::thread::Builder::new()
        .name("rcluster-parent".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut p = libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            loop {
                // SAFETY: one valid pollfd, for as long as the call lasts.
                let r = unsafe { libc::poll(&mut p, 1, -1) };
                if r > 0 {
                    break;
                }
                if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    // Cannot watch: the hard stop is the parent-death signal.
                    kill_with_parent();
                    return;
                }
            }
            std::thread::sleep(PARENT_GRACE);
            // SAFETY: kill takes a pid and a signal number; this process's own.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Kind;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn frames_reach_the_sink_and_eof_disconnects() {
        let (primary, theirs) = Channel::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut io = WorkerIo::start(
            theirs,
            Box::new(move |b| {
                for e in b {
                    tx.send(e).unwrap();
                }
            }),
        )
        .unwrap();
        primary.send_message(0, b"hello".to_vec(), None).unwrap();
        match rx.recv_timeout(Duration::from_secs(5)).unwrap() {
            WorkerEvent::Frame(f) => {
                assert_eq!(f.kind, Kind::Message);
                assert_eq!(f.payload, b"hello");
            }
            other => panic!("{other:?}"),
        }
        io.channel()
            .send_frame(Kind::Online, 0, 0, &[], None)
            .unwrap();
        let mut inbox = Inbox::default();
        let mut got = None;
        for _ in 0..500 {
            if let Ok(Read::Frame(f)) = inbox.read(&primary) {
                got = Some(f);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(got.unwrap().kind, Kind::Online);
        drop(primary);
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            WorkerEvent::Disconnect
        ));
        io.close();
    }

    #[test]
    fn a_flush_that_empties_the_queue_is_told_with_an_empty_batch() {
        let (primary, theirs) = Channel::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut io = WorkerIo::start(
            theirs,
            Box::new(move |b: Vec<WorkerEvent>| tx.send(b.len()).unwrap()),
        )
        .unwrap();
        // More than the socket takes at once: the rest waits in the queue.
        let big = vec![7u8; 8 << 20];
        assert_eq!(
            io.channel().send_message(0, big.clone(), None).unwrap(),
            Flush::Pending
        );
        assert!(rx.try_recv().is_err());
        let mut inbox = Inbox::default();
        let t0 = std::time::Instant::now();
        let mut got = None;
        while got.is_none() && t0.elapsed() < Duration::from_secs(10) {
            match inbox.read(&primary).unwrap() {
                Read::Frame(f) => got = Some(f),
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert_eq!(got.unwrap().payload, big);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 0);
        assert_eq!(io.channel().queued_bytes(), 0);
        io.close();
    }
}
