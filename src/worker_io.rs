//! The worker's side of the channel: one I/O thread that reads frames and
//! hands them to JavaScript in batches, and flushes what the JS thread queued
//! when the socket was full. The JS thread writes directly (see [`Channel`]).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::channel::{Channel, Inbox, Incoming, Read};
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
                    for r in &ready {
                        if r.token == T_WAKE {
                            wake2.drain();
                            done |= stop2.load(Ordering::Acquire);
                            continue;
                        }
                        if r.events & poller::WRITABLE != 0 && ch.flush().is_err() {
                            // The read side reports the reason (EOF or error).
                        }
                        done |= read_into(&mut inbox, &ch, &mut batch, usize::MAX);
                    }
                    if !batch.is_empty() {
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

/// Makes this process die with its parent (`PR_SET_PDEATHSIG`, SIGKILL), and
/// exits at once if the parent `ppid` is already gone.
/// Elsewhere (macOS) there is no such signal: the worker ends when its
/// channel reports end of file, as Node's cluster workers do.
pub fn die_with_parent(ppid: i32) {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes an integer signal number.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    // SAFETY: getppid has no preconditions.
    if ppid > 0 && unsafe { libc::getppid() } != ppid {
        // SAFETY: _exit ends the process without running anything else.
        unsafe { libc::_exit(0) };
    }
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
}
