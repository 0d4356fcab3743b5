//! `WorkerChannel`: the worker's JS handle on its channel to the primary.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Function};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{Env, JsValue, Result};
use napi_derive::napi;

use super::uv_channel::UvChannel;
use super::{dup_js_fd, io_err};
use crate::channel::{Channel, Flush};
use crate::frame::{self, Kind};
use crate::worker_io::{self, WorkerEvent, WorkerIo};

/// Event type numbers beyond frame kinds.
const EV_ERROR: u32 = 100;
const EV_DISCONNECT: u32 = 101;

/// One event for the worker's JS.
#[napi(object)]
pub struct WorkerFrame {
    /// A frame kind (1..=11), 100 for an error, 101 for disconnect.
    #[napi(js_name = "type")]
    pub kind: u32,
    pub id: f64,
    pub flags: u32,
    pub data: Option<Buffer>,
    /// An fd that came with the frame (now owned by JS), or -1.
    pub fd: i32,
    /// For connections: the listener id.
    pub listener: u32,
    pub message: Option<String>,
    /// A JSON message as text (cheaper for JS than a Buffer to decode).
    pub text: Option<String>,
}

fn to_js(e: WorkerEvent) -> WorkerFrame {
    let mut out = WorkerFrame {
        kind: 0,
        id: 0.0,
        flags: 0,
        data: None,
        fd: -1,
        listener: 0,
        message: None,
        text: None,
    };
    match e {
        WorkerEvent::Frame(f) => {
            out.kind = f.kind as u32;
            out.id = f.id as f64;
            out.flags = f.flags as u32;
            out.fd = f.fd.map(OwnedFd::into_raw_fd).unwrap_or(-1);
            if f.kind == Kind::Conn {
                out.listener = frame::decode_u32(Kind::Conn, &f.payload).unwrap_or(0);
            } else if f.kind == Kind::Message && f.flags & frame::FLAG_ADVANCED == 0 && out.fd < 0 {
                match String::from_utf8(f.payload) {
                    Ok(text) => out.text = Some(text),
                    Err(e) => out.data = Some(e.into_bytes().into()),
                }
            } else {
                out.data = Some(f.payload.into());
            }
        }
        WorkerEvent::Error(m) => {
            out.kind = EV_ERROR;
            out.message = Some(m);
        }
        WorkerEvent::Disconnect => out.kind = EV_DISCONNECT,
    }
    out
}

static CHANNEL_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How the worker reads its channel.
enum Io {
    /// A poll handle on Node's own loop (the default): no thread hop.
    Uv(UvChannel),
    /// A reader thread and a threadsafe function (`RCLUSTER_WORKER_IO=thread`,
    /// or when libuv cannot be reached).
    Thread(WorkerIo),
}

impl Io {
    fn channel(&self) -> Arc<Channel> {
        match self {
            Io::Uv(u) => u.channel(),
            Io::Thread(t) => t.channel().clone(),
        }
    }

    fn sent(&self, flush: Flush) {
        if let Io::Uv(u) = self {
            u.sent(flush);
        }
    }
}

/// The worker's native side of the channel.
#[napi]
pub struct WorkerChannel {
    io: Option<Io>,
}

#[napi]
impl WorkerChannel {
    /// Takes over the channel at `fd`; `ppid` is the primary's pid (the worker
    /// dies with it). `callback` receives arrays of frames.
    #[napi(constructor, catch_unwind)]
    pub fn new(
        env: Env,
        fd: i32,
        ppid: i32,
        callback: Function<Vec<WorkerFrame>, ()>,
    ) -> Result<Self> {
        // The channel fd is taken over once per process; a second taker (a
        // preload run again on another thread) gets an error, not a double close.
        if CHANNEL_TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
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
        worker_io::die_with_parent(ppid);
        // SAFETY: the primary placed the channel at `fd` for this process and
        // nothing else in the process owns it; JS hands it over exactly once.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        if std::env::var_os("RCLUSTER_WORKER_IO").is_none_or(|v| v != "thread") {
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
                    to_js,
                )
            };
            if let Some(uv) = uv {
                return Ok(WorkerChannel {
                    io: Some(Io::Uv(uv)),
                });
            }
            // libuv unreachable: the thread takes the channel over.
            let fd = Arc::try_unwrap(channel)
                .map_err(|_| napi::Error::from_reason("channel still shared"))?
                .into_fd();
            return Self::with_thread(fd, callback);
        }
        Self::with_thread(owned, callback)
    }

    fn with_thread(owned: OwnedFd, callback: Function<Vec<WorkerFrame>, ()>) -> Result<Self> {
        let tsfn = callback
            .build_threadsafe_function::<Vec<WorkerEvent>>()
            .weak::<true>()
            .build_callback(|ctx| Ok(ctx.value.into_iter().map(to_js).collect::<Vec<_>>()))?;
        let io = WorkerIo::start(
            owned,
            Box::new(move |batch| {
                tsfn.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
            }),
        )
        .map_err(io_err)?;
        Ok(WorkerChannel {
            io: Some(Io::Thread(io)),
        })
    }

    /// Sends a frame of `kind`. Messages of any size are chunked; other kinds
    /// carry at most one packet. Returns the bytes still queued.
    #[napi(catch_unwind)]
    pub fn send(
        &self,
        kind: u32,
        flags: u32,
        id: f64,
        data: Option<Buffer>,
        fd: Option<i32>,
    ) -> Result<u32> {
        let io = self.io()?;
        let ch = io.channel();
        let kind = Kind::from_u8(kind as u8)
            .ok_or_else(|| napi::Error::from_reason(format!("unknown frame kind {kind}")))?;
        let pass = fd.map(dup_js_fd).transpose()?;
        let payload = data.map(|d| d.to_vec()).unwrap_or_default();
        if kind == Kind::Message {
            ch.send_message(flags as u8, payload, pass)
        } else if kind == Kind::Relay {
            ch.send_relay(flags as u8, payload)
        } else {
            ch.send_frame(kind, flags as u8, id as u64, &payload, pass)
        }
        .map_err(io_err)?;
        let queued = ch.queued_bytes();
        if queued > 0 {
            io.sent(Flush::Pending);
        }
        Ok(queued.min(u32::MAX as usize) as u32)
    }

    /// Acknowledges connections: taken ones and refused ones. `open`, when
    /// given, reports the worker's open connections (the `least` policy's
    /// count) on the same frame; with nothing to acknowledge it is sent alone.
    #[napi(catch_unwind)]
    pub fn ack(&self, accepted: Vec<f64>, refused: Vec<f64>, open: Option<u32>) -> Result<()> {
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
        io.sent(flush);
        Ok(())
    }

    /// Closes the channel; the primary sees the worker disconnect.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        match self.io.take() {
            Some(Io::Thread(mut t)) => t.close(),
            Some(Io::Uv(u)) => u.close(),
            None => {}
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
