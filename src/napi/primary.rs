//! `Primary`: the JS handle on the reactor, the spawner and the worker table.

use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, Function};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::Result;
use napi_derive::napi;

use super::{dup_js_fd, io_err};
use crate::channel::Channel;
use crate::reactor::{
    spawn_worker, Config, Event, Handle, Reactor, Registry, Started, SuperviseCmd,
};
use crate::spawn::{self, SpawnOptions, Stdio};

/// One event for the primary's JS (batched into an array per callback).
#[napi(object)]
pub struct PrimaryEvent {
    /// "online" | "message" | "listening" | "exitedAfterDisconnect" |
    /// "control" | "disconnect" | "exit" | "error"
    pub kind: String,
    pub worker: u32,
    pub flags: Option<u32>,
    pub data: Option<Buffer>,
    /// An fd now owned by JS: the handle passed with a message, or a
    /// spawned worker's message channel (the primary's end).
    pub fd: Option<i32>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub message: Option<String>,
    /// A JSON message as text (cheaper for JS than a Buffer to decode).
    pub text: Option<String>,
    /// Supervisor events: the slot, the new worker's pid and pipes, a JSON info object.
    pub slot: Option<u32>,
    pub pid: Option<i32>,
    pub pipes: Option<Vec<i32>>,
    pub info: Option<String>,
}

fn to_js(e: Event) -> PrimaryEvent {
    let mut out = PrimaryEvent {
        kind: String::new(),
        worker: 0,
        flags: None,
        data: None,
        fd: None,
        code: None,
        signal: None,
        message: None,
        text: None,
        slot: None,
        pid: None,
        pipes: None,
        info: None,
    };
    match e {
        Event::Online { worker } => {
            out.kind = "online".into();
            out.worker = worker;
        }
        Event::Message {
            worker,
            flags,
            data,
            fd,
        } => {
            out.kind = "message".into();
            out.worker = worker;
            out.flags = Some(flags as u32);
            out.fd = fd.map(OwnedFd::into_raw_fd);
            if flags & crate::frame::FLAG_ADVANCED == 0 && out.fd.is_none() {
                match String::from_utf8(data) {
                    Ok(text) => out.text = Some(text),
                    Err(e) => out.data = Some(e.into_bytes().into()),
                }
            } else {
                out.data = Some(data.into());
            }
        }
        Event::Frame { worker, kind, data } => {
            out.kind = match kind {
                crate::frame::Kind::Listening => "listening",
                crate::frame::Kind::ExitedAfterDisconnect => "exitedAfterDisconnect",
                _ => "control",
            }
            .into();
            out.worker = worker;
            out.data = Some(data.into());
        }
        Event::Disconnect { worker } => {
            out.kind = "disconnect".into();
            out.worker = worker;
        }
        Event::Exit {
            worker,
            code,
            signal,
        } => {
            out.kind = "exit".into();
            out.worker = worker;
            out.code = code;
            out.signal = signal;
        }
        Event::Error { worker, message } => {
            out.kind = "error".into();
            out.worker = worker;
            out.message = Some(message);
        }
        Event::Spawned {
            worker,
            slot,
            pid,
            pipes,
            messages,
            reason,
        } => {
            out.kind = "spawned".into();
            out.worker = worker;
            out.slot = Some(slot);
            out.pid = Some(pid);
            out.pipes = Some(pipes);
            out.fd = (messages >= 0).then_some(messages);
            out.message = Some(reason);
        }
        Event::Supervisor {
            kind,
            worker,
            slot,
            info,
        } => {
            out.kind = format!("sup:{kind}");
            out.worker = worker;
            out.slot = Some(slot);
            out.info = Some(info);
        }
    }
    out
}

/// See [`crate::reactor::Counters`]: once nothing is held,
/// `accepted === acknowledged + closed`.
#[napi(object)]
pub struct DispatchCounters {
    pub accepted: f64,
    pub acknowledged: f64,
    pub redispatched: f64,
    pub closed: f64,
    pub held: f64,
}

/// How to start one worker.
#[napi(object)]
pub struct SpawnRequest {
    pub file: String,
    /// argv, argv[0] included.
    pub args: Vec<String>,
    /// `KEY=VALUE` strings.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// Per child fd: -1 inherit, -2 ignore, -3 pipe, -4 the channel, -5 the
    /// message channel, >= 0 a parent fd.
    pub stdio: Vec<i32>,
}

/// A started worker.
#[napi(object)]
pub struct SpawnResult {
    pub pid: i32,
    /// Per stdio slot: the parent's end of a pipe, or -1.
    pub pipes: Vec<i32>,
    /// The primary's end of the message channel (now owned by JS), or -1.
    pub messages: i32,
}

/// The primary's native side.
#[napi]
pub struct Primary {
    reactor: Reactor,
    registry: Arc<Registry>,
}

#[napi]
impl Primary {
    /// Starts the reactor; `callback` receives arrays of events.
    #[napi(constructor, catch_unwind)]
    pub fn new(callback: Function<Vec<PrimaryEvent>, ()>, window: Option<u32>) -> Result<Self> {
        // The reactor stops reading a worker whose messages JS has not
        // taken yet beyond this (see `MessageBacklog`); JS takes a batch here.
        let registry = Arc::new(Registry::default());
        registry
            .backlog
            .set_limit(crate::reactor::DEFAULT_MESSAGE_BACKLOG);
        let taken = registry.clone();
        let tsfn = callback
            .build_threadsafe_function::<Vec<Event>>()
            .weak::<true>()
            .build_callback(move |ctx| {
                for e in &ctx.value {
                    if let Event::Message { worker, data, .. } = e {
                        taken.backlog.taken(*worker, data.len());
                    }
                }
                Ok(ctx.value.into_iter().map(to_js).collect::<Vec<_>>())
            })?;
        let sink = Box::new(move |batch: Vec<Event>| {
            tsfn.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
        });
        let mut config = Config::default();
        if let Some(w) = window {
            config.window = w.max(1) as usize;
        }
        let reactor = Reactor::start_with(sink, config, registry.clone()).map_err(io_err)?;
        Ok(Primary { reactor, registry })
    }

    /// The next worker id (shared with the supervisor's restarts).
    #[napi(catch_unwind)]
    pub fn allocate_id(&self) -> u32 {
        self.registry.allocate()
    }

    /// Spawns worker `id` into slot `slot` (default: a new slot numbered like
    /// the worker) and starts watching it. `supervise` is the JSON supervision
    /// config of the slot (restart policy, readiness, timeouts...).
    #[napi(catch_unwind)]
    pub fn spawn(
        &self,
        id: u32,
        req: SpawnRequest,
        slot: Option<u32>,
        supervise: Option<String>,
        agent: Option<bool>,
    ) -> Result<SpawnResult> {
        let stdio = req
            .stdio
            .iter()
            .map(|v| match *v {
                -1 => Stdio::Inherit,
                -2 => Stdio::Ignore,
                -3 => Stdio::Pipe,
                -4 => Stdio::Channel,
                -5 => Stdio::Messages,
                fd => Stdio::Fd(fd),
            })
            .collect();
        let opts = SpawnOptions {
            file: req.file,
            argv: req.args,
            env: req.env,
            cwd: req.cwd,
            stdio,
        };
        let config: crate::supervisor::Config = match supervise.as_deref() {
            Some(json) => serde_json::from_str(json).map_err(|e| {
                napi::Error::from_reason(format!("invalid supervision settings: {e}"))
            })?,
            None => Default::default(),
        };
        let slot = slot.unwrap_or(id);
        let Started {
            handle: h,
            pipes,
            messages,
        } = spawn_worker(&self.registry, id, &opts).map_err(io_err)?;
        self.reactor
            .add_worker(id, slot, h.channel.clone(), h.process.clone());
        self.reactor.supervise(SuperviseCmd::Slot {
            worker: id,
            slot,
            config: Box::new(config),
            spawn: Box::new(opts),
            agent: agent.unwrap_or(false),
        });
        Ok(SpawnResult {
            pid: h.pid,
            pipes: pipes
                .into_iter()
                .map(|p| p.map(OwnedFd::into_raw_fd).unwrap_or(-1))
                .collect(),
            messages: messages.map_or(-1, OwnedFd::into_raw_fd),
        })
    }

    /// Sends `state` to systemd (`NOTIFY_SOCKET`); false when not under systemd.
    #[napi(catch_unwind)]
    pub fn sd_notify(&self, state: String) -> Result<bool> {
        crate::systemd::notify(std::env::var("NOTIFY_SOCKET").ok().as_deref(), &state)
            .map_err(io_err)
    }

    /// A JSON snapshot of workers and listeners (`cluster.stats()`), or `null`
    /// once the reactor has stopped.
    #[napi(catch_unwind)]
    pub fn stats(&self) -> Option<String> {
        self.reactor
            .stats()
            .and_then(|s| serde_json::to_string(&s).ok())
    }

    /// Weighted round robin: sets worker `id`'s weight (default 1).
    #[napi(catch_unwind)]
    pub fn set_weight(&self, id: u32, weight: u32) {
        self.reactor.set_weight(id, weight);
    }

    /// The primary disconnects or kills this worker on purpose: no restart.
    #[napi(catch_unwind)]
    pub fn on_purpose(&self, id: u32) {
        self.reactor
            .supervise(SuperviseCmd::OnPurpose { worker: id });
    }

    /// Drains worker `id` (deadline, then SIGTERM, then SIGKILL) and stops its slot.
    #[napi(catch_unwind)]
    pub fn retire(&self, id: u32) {
        self.reactor.supervise(SuperviseCmd::Retire { worker: id });
    }

    /// Starts a rolling reload; the outcome arrives as a `sup:reloadDone` event.
    #[napi(catch_unwind)]
    pub fn reload(&self, concurrency: u32) {
        self.reactor.supervise(SuperviseCmd::Reload {
            concurrency: concurrency.max(1) as usize,
        });
    }

    /// Graceful stop of every worker within `timeout_ms`; ends with `sup:shutdownDone`.
    #[napi(catch_unwind)]
    pub fn shutdown(&self, timeout_ms: u32) {
        self.reactor.supervise(SuperviseCmd::Shutdown {
            timeout: Duration::from_millis(timeout_ms as u64),
        });
    }

    /// Sends a user message to worker `id`; returns the bytes still queued.
    #[napi(catch_unwind)]
    pub fn send(&self, id: u32, data: Buffer, flags: u32, fd: Option<i32>) -> Result<u32> {
        let channel = self.channel(id)?;
        let pass = fd.map(dup_js_fd).transpose()?;
        channel
            .send_message(flags as u8, data.to_vec(), pass)
            .map_err(io_err)?;
        Ok(channel.queued_bytes().min(u32::MAX as usize) as u32)
    }

    /// Sends a control frame (JSON payload) to worker `id`.
    #[napi(catch_unwind)]
    pub fn control(&self, id: u32, data: Buffer) -> Result<()> {
        let channel = self.channel(id)?;
        channel
            .send_frame(crate::frame::Kind::Control, 0, 0, &data, None)
            .map_err(io_err)?;
        Ok(())
    }

    /// Waits (at most 2 s) until the reactor has read sync token `seq` on
    /// worker `id`'s control channel (see `Registry::wait_synced`).
    #[napi(catch_unwind)]
    pub fn await_sync(&self, id: u32, seq: f64) -> bool {
        self.registry
            .wait_synced(id, seq as u64, Duration::from_secs(2))
    }

    /// Signals worker `id` (through its pidfd on Linux: never a recycled pid).
    #[napi(catch_unwind)]
    pub fn kill(&self, id: u32, signal: i32) -> Result<()> {
        let process = match self.handle(id) {
            Some(h) => h.process,
            None => return Err(io_err(std::io::Error::from_raw_os_error(libc::ESRCH))),
        };
        spawn::signal(&process, signal).map_err(io_err)
    }

    /// Stops dispatching to worker `id` and, unless `notify` is false (JS
    /// tells the worker itself, in order with its messages), asks it to
    /// disconnect.
    #[napi(catch_unwind)]
    pub fn disconnect(&self, id: u32, notify: Option<bool>) {
        self.reactor.disconnect(id, notify.unwrap_or(true));
    }

    /// Closes the channel of worker `id` from this side (`worker.process.disconnect()`):
    /// the worker sees end of file, the reactor reports the disconnect.
    #[napi(catch_unwind)]
    pub fn close_channel(&self, id: u32) {
        if let Some(h) = self.handle(id) {
            h.channel.shutdown();
        }
    }

    /// The dispatcher's connection accounting (`cluster._rclusterCounters()`),
    /// or `null` once the reactor has stopped.
    #[napi(catch_unwind)]
    pub fn counters(&self) -> Option<DispatchCounters> {
        self.reactor.counters().map(|c| DispatchCounters {
            accepted: c.accepted as f64,
            acknowledged: c.acknowledged as f64,
            redispatched: c.redispatched as f64,
            closed: c.closed as f64,
            held: c.held as f64,
        })
    }

    /// Drops the table entry of an exited worker.
    #[napi(catch_unwind)]
    pub fn forget(&self, id: u32) {
        self.registry.workers.lock().remove(&id);
        self.registry.drop_synced(id);
    }

    /// Stops the reactor (listeners close; workers see their channel close).
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        for (_, h) in self.registry.workers.lock().drain() {
            h.channel.shutdown();
        }
        self.reactor.stop();
    }

    fn handle(&self, id: u32) -> Option<Handle> {
        self.registry.workers.lock().get(&id).cloned()
    }

    fn channel(&self, id: u32) -> Result<Arc<Channel>> {
        self.handle(id).map(|h| h.channel).ok_or_else(|| {
            io_err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "worker is gone",
            ))
        })
    }
}
