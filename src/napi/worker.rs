//! `WorkerChannel`: the worker's JS handle on its channel to the primary.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;

use napi::bindgen_prelude::{BufferSlice, Function, Unknown};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{Env, JsValue, Result};
use napi_derive::napi;

use super::frame_batch::FrameBatch;
use super::loop_hold::{LoopHold, Pending};
use super::text_sender::TextSender;
use super::uv_channel::UvChannel;
use super::{dup_js_fd, io_err};
use crate::channel::{Channel, Flush};
use crate::frame::{self, Kind};
use crate::worker_io::{self, WorkerEvent, WorkerIo};

/// How long a worker's [`WorkerChannel::close`] waits for the primary to take
/// what the worker queued.
const CLOSE_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

static CHANNEL_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static MESSAGES_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Which end of which channel a [`WorkerChannel`] drives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The worker's channel to the primary's reactor (connections, listen
    /// requests, control): the worker dies with the primary.
    Control,
    /// The worker's message channel (`process.send()`).
    Messages,
    /// The primary's end of a worker's message channel.
    Primary,
}

impl Role {
    fn parse(role: Option<&str>) -> Result<Role> {
        match role {
            None | Some("control") => Ok(Role::Control),
            Some("messages") => Ok(Role::Messages),
            Some("primary") => Ok(Role::Primary),
            Some(other) => Err(napi::Error::from_reason(format!(
                "unknown channel role {other:?} (control, messages or primary)"
            ))),
        }
    }

    /// The once-per-process guard of the worker's two channel fds.
    fn taken(self) -> Option<&'static std::sync::atomic::AtomicBool> {
        match self {
            Role::Control => Some(&CHANNEL_TAKEN),
            Role::Messages => Some(&MESSAGES_TAKEN),
            Role::Primary => None,
        }
    }
}

/// How the worker reads its channel.
enum Io {
    /// A poll handle on Node's own loop (the default): no thread hop.
    Uv(UvChannel),
    /// A reader thread and a threadsafe function (`RCLUSTER_WORKER_IO=thread`,
    /// or when libuv cannot be reached), and the hold that keeps the loop
    /// alive while output waits.
    Thread(WorkerIo, Arc<LoopHold>),
}

impl Io {
    fn channel(&self) -> Arc<Channel> {
        match self {
            Io::Uv(u) => u.channel(),
            Io::Thread(t, _) => t.channel().clone(),
        }
    }

    /// What a send that left output queued tells (see `loop_hold.rs`).
    fn pending(&self) -> Pending {
        match self {
            Io::Uv(u) => Pending::Uv(u.downgrade()),
            Io::Thread(_, hold) => Pending::Thread(hold.clone()),
        }
    }

    /// After a send: while output waits, the loop waits for it.
    fn sent(&self, env: &Env, flush: Flush) {
        if flush == Flush::Pending {
            // SAFETY: `env` is the live env of the JS thread calling us.
            unsafe { self.pending().sent(env.raw()) };
        }
    }
}

/// One end of a channel driven from JS: the worker's two channels, and the
/// primary's end of each worker's message channel.
#[napi]
pub struct WorkerChannel {
    io: Option<Io>,
    /// A worker's end: its close writes what it queued first (the worker
    /// is leaving). The primary's end of a worker's message channel closes
    /// at once: the primary's loop must not wait on a worker.
    leaving_flushes: bool,
}

#[napi]
impl WorkerChannel {
    /// Takes over the channel at `fd`. `role` is `"control"` (the default:
    /// the worker's channel to the reactor; `ppid` is the primary's pid, and
    /// the worker dies with it), `"messages"` (the worker's message channel)
    /// or `"primary"` (the primary's end of a worker's message channel).
    /// `callback` receives batches of frames (flat arrays, see
    /// `lib/frames.js`).
    #[napi(constructor, catch_unwind)]
    pub fn new(
        env: Env,
        fd: i32,
        ppid: i32,
        callback: Function<FrameBatch, ()>,
        role: Option<String>,
    ) -> Result<Self> {
        let role = Role::parse(role.as_deref())?;
        // A worker's channel fds are taken over once per process; a second
        // taker (a preload run again on another thread) gets an error, not a
        // double close.
        if role
            .taken()
            .is_some_and(|t| t.swap(true, std::sync::atomic::Ordering::SeqCst))
        {
            return Err(napi::Error::from_reason(
                "the rcluster channel is already open in this process",
            ));
        }
        // SAFETY: F_GETFD on an integer; it only checks that the fd is open.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(napi::Error::from_reason(format!(
                "rcluster channel fd {fd} is not open"
            )));
        }
        if role == Role::Control {
            worker_io::die_with_parent(ppid);
        }
        // SAFETY: the primary placed the channel at `fd` for this process (or,
        // for the primary's end, the spawner gave it to JS) and nothing else
        // in the process owns it; JS hands it over exactly once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let thread = role != Role::Primary
            && std::env::var_os("RCLUSTER_WORKER_IO").is_some_and(|v| v == "thread");
        if !thread {
            crate::sys::set_cloexec(fd, true).map_err(io_err)?;
            let channel = Arc::new(Channel::new(owned).map_err(io_err)?);
            let uv_loop = env.get_uv_event_loop()?;
            // SAFETY: on the JS thread, with this call's live env and a
            // function value of it.
            let uv = unsafe {
                UvChannel::start(
                    env.raw(),
                    uv_loop as *mut std::ffi::c_void,
                    callback.raw(),
                    channel.clone(),
                )
            };
            if let Some(uv) = uv {
                return Ok(WorkerChannel {
                    io: Some(Io::Uv(uv)),
                    leaving_flushes: role != Role::Primary,
                });
            }
            // libuv unreachable: the thread takes the channel over.
            let fd = Arc::try_unwrap(channel)
                .map_err(|_| napi::Error::from_reason("channel still shared"))?
                .into_fd();
            return Self::with_thread(fd, callback, role != Role::Primary);
        }
        Self::with_thread(owned, callback, role != Role::Primary)
    }

    fn with_thread(
        owned: OwnedFd,
        callback: Function<FrameBatch, ()>,
        leaving_flushes: bool,
    ) -> Result<Self> {
        let hold = Arc::new(LoopHold::default());
        let on_js = hold.clone();
        let tsfn = callback
            .build_threadsafe_function::<Vec<WorkerEvent>>()
            .weak::<true>()
            .build_callback(move |ctx| {
                let closed = ctx
                    .value
                    .iter()
                    .any(|e| matches!(e, WorkerEvent::Disconnect));
                // SAFETY: the threadsafe function's callback runs on the JS
                // thread, with its live env.
                unsafe { on_js.release(ctx.env.raw(), closed) };
                Ok(FrameBatch(ctx.value))
            })?;
        let raw = tsfn.raw();
        let on_thread = hold.clone();
        let io = WorkerIo::start(
            owned,
            Box::new(move |batch| {
                // An empty batch says that the queued output was written:
                // news only while the loop is held for it.
                if batch.is_empty() && !on_thread.held() {
                    return;
                }
                tsfn.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
            }),
        )
        .map_err(io_err)?;
        hold.bind(raw, io.channel());
        Ok(WorkerChannel {
            io: Some(Io::Thread(io, hold)),
            leaving_flushes,
        })
    }

    /// Sends a frame of `kind`. Messages of any size are chunked; other kinds
    /// carry at most one packet. Returns the bytes still queued.
    #[napi(catch_unwind)]
    pub fn send(
        &self,
        env: Env,
        kind: u32,
        flags: u32,
        id: f64,
        data: Option<BufferSlice>,
        fd: Option<i32>,
    ) -> Result<u32> {
        let io = self.io()?;
        let ch = io.channel();
        let kind = Kind::from_u8(kind as u8)
            .ok_or_else(|| napi::Error::from_reason(format!("unknown frame kind {kind}")))?;
        let pass = fd.map(dup_js_fd).transpose()?;
        let payload: &[u8] = data.as_deref().unwrap_or(&[]);
        let flush = if kind == Kind::Message {
            ch.send_message_from(flags as u8, payload, pass)
        } else if kind == Kind::Relay {
            ch.send_relay(flags as u8, payload.to_vec())
        } else {
            ch.send_frame(kind, flags as u8, id as u64, payload, pass)
        }
        .map_err(io_err)?;
        // Done: the queue is empty (only this thread sends on it).
        if flush == Flush::Done {
            return Ok(0);
        }
        io.sent(&env, Flush::Pending);
        Ok(ch.queued_bytes().min(u32::MAX as usize) as u32)
    }

    /// A function `send(flags, text) -> queuedBytes` that writes one JSON
    /// message frame (`text`, a string) on this channel: `send()` without the
    /// method call's overhead (see `text_sender.rs`). It keeps working as
    /// long as the channel is open, then throws ERR_IPC_CHANNEL_CLOSED.
    #[napi(catch_unwind)]
    pub fn text_sender<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let io = self.io()?;
        // SAFETY: on the JS thread, with this call's live env.
        unsafe {
            let f = TextSender::new(&io.channel(), io.pending()).into_function(env.raw())?;
            Ok(Unknown::from_raw_unchecked(env.raw(), f))
        }
    }

    /// Acknowledges connections: taken ones and refused ones. `open`, when
    /// given, reports the worker's open connections (the `least` policy's
    /// count) on the same frame; with nothing to acknowledge it is sent alone.
    #[napi(catch_unwind)]
    pub fn ack(
        &self,
        env: Env,
        accepted: Vec<f64>,
        refused: Vec<f64>,
        open: Option<u32>,
    ) -> Result<()> {
        let io = self.io()?;
        let mut acks: Vec<(u64, bool)> = accepted.iter().map(|i| (*i as u64, true)).collect();
        acks.extend(refused.iter().map(|i| (*i as u64, false)));
        let load = frame::ack_load_id(open);
        let ch = io.channel();
        let mut flush = Flush::Done;
        if acks.is_empty() && open.is_some() {
            flush = ch
                .send_frame(Kind::Ack, 0, load, &[], None)
                .map_err(io_err)?;
        }
        for chunk in acks.chunks(frame::MAX_PAYLOAD / 8) {
            flush = ch
                .send_frame(Kind::Ack, 0, load, &frame::encode_acks(chunk), None)
                .map_err(io_err)?;
        }
        io.sent(&env, flush);
        Ok(())
    }

    /// The frames waiting now, read at once instead of on the next poll (the
    /// primary calls it before reporting a worker's exit). Empty when a
    /// reader thread drives the channel.
    #[napi(catch_unwind)]
    pub fn drain(&self) -> FrameBatch {
        match &self.io {
            Some(Io::Uv(u)) => FrameBatch(u.drain()),
            _ => FrameBatch(Vec::new()),
        }
    }

    /// Closes the channel; the other side sees it disconnect. A worker's end
    /// first writes what it queued, for up to [`CLOSE_FLUSH_LIMIT`]: a
    /// message larger than the socket takes at once, sent just before (as
    /// in `process.send(big); process.disconnect()`), reaches the primary
    /// before the end of file instead of being lost to a worker that exits
    /// right after its disconnect.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        let Some(io) = self.io.take() else { return };
        if self.leaving_flushes {
            io.channel().flush_within(CLOSE_FLUSH_LIMIT);
        }
        match io {
            Io::Thread(mut t, _) => t.close(),
            Io::Uv(u) => u.close(),
        }
    }

    fn io(&self) -> Result<&Io> {
        self.io.as_ref().ok_or_else(|| {
            io_err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "channel closed",
            ))
        })
    }
}

/// Whether this is the process's main thread. A worker's bootstrap runs again
/// in worker threads and in Node's loader-hooks thread; only the main thread
/// takes the channel. (Cheaper than loading `worker_threads` at startup.)
#[napi(catch_unwind)]
pub fn is_main_thread() -> bool {
    crate::sys::is_main_thread()
}

/// Whether this process was exec'd in secure-execution mode (`AT_SECURE`),
/// where node ignores `NODE_OPTIONS`: the primary then puts a worker's
/// bootstrap on its command line instead.
#[napi(catch_unwind)]
pub fn secure_exec() -> bool {
    crate::sys::secure_exec()
}

/// Closes an fd that JS received but cannot use.
#[napi(catch_unwind)]
pub fn close_fd(fd: i32) {
    if fd >= 0 {
        // SAFETY: JS passes an fd it owns and will not use again.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Duplicates an fd (close-on-exec); JS owns the copy.
#[napi(catch_unwind)]
pub fn dup_fd(fd: i32) -> Result<i32> {
    Ok(dup_js_fd(fd)?.into_raw_fd())
}
