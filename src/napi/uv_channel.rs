//! The worker's channel driven by Node's own event loop: a libuv poll handle
//! on the channel fd, so frames reach JavaScript with no thread hop (the
//! thread-and-threadsafe-function path in `worker_io` costs two context
//! switches per batch). libuv's functions are looked up at run time
//! (`dlsym`), so nothing here is linked into test binaries; when they are
//! missing the caller falls back to the thread.

use std::cell::RefCell;
use std::ffi::{c_int, c_void, CStr};
use std::rc::{Rc, Weak};
use std::sync::{Arc, OnceLock};

use napi::bindgen_prelude::ToNapiValue;
use napi::sys;

use super::frame_batch::FrameBatch;
use crate::channel::{Channel, Flush, Inbox};
use crate::worker_io::{read_into, WorkerEvent};

#[repr(C)]
pub struct UvHandle {
    _opaque: [u8; 0],
}

type PollCb = unsafe extern "C" fn(*mut UvHandle, c_int, c_int);
type CloseCb = unsafe extern "C" fn(*mut UvHandle);

type HandleSizeFn = unsafe extern "C" fn(c_int) -> usize;
type PollInitFn = unsafe extern "C" fn(*mut c_void, *mut UvHandle, c_int) -> c_int;
type PollStartFn = unsafe extern "C" fn(*mut UvHandle, c_int, PollCb) -> c_int;
type PollStopFn = unsafe extern "C" fn(*mut UvHandle) -> c_int;
type CloseFn = unsafe extern "C" fn(*mut UvHandle, CloseCb);
type UnrefFn = unsafe extern "C" fn(*mut UvHandle);
type RefFn = unsafe extern "C" fn(*mut UvHandle);
type SetDataFn = unsafe extern "C" fn(*mut UvHandle, *mut c_void);
type GetDataFn = unsafe extern "C" fn(*const UvHandle) -> *mut c_void;

struct UvApi {
    handle_size: HandleSizeFn,
    poll_init: PollInitFn,
    poll_start: PollStartFn,
    poll_stop: PollStopFn,
    close: CloseFn,
    unref: UnrefFn,
    ref_: RefFn,
    set_data: SetDataFn,
    get_data: GetDataFn,
}

const UV_POLL: c_int = 8;
const UV_READABLE: c_int = 1;
const UV_WRITABLE: c_int = 2;
/// Frames handed to JavaScript per callback at most (keeps the loop fair).
const BATCH: usize = 1024;

fn api() -> Option<&'static UvApi> {
    static API: OnceLock<Option<UvApi>> = OnceLock::new();
    API.get_or_init(|| {
        fn sym(name: &CStr) -> Option<*mut c_void> {
            // SAFETY: dlsym with RTLD_DEFAULT looks a symbol up in the process
            // (Node exports libuv); a null result means it is not there.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            (!p.is_null()).then_some(p)
        }
        // SAFETY: each symbol is libuv's function of that name, whose C
        // signature the field's type spells out.
        unsafe {
            Some(UvApi {
                handle_size: std::mem::transmute::<*mut c_void, HandleSizeFn>(sym(
                    c"uv_handle_size",
                )?),
                poll_init: std::mem::transmute::<*mut c_void, PollInitFn>(sym(c"uv_poll_init")?),
                poll_start: std::mem::transmute::<*mut c_void, PollStartFn>(sym(c"uv_poll_start")?),
                poll_stop: std::mem::transmute::<*mut c_void, PollStopFn>(sym(c"uv_poll_stop")?),
                close: std::mem::transmute::<*mut c_void, CloseFn>(sym(c"uv_close")?),
                unref: std::mem::transmute::<*mut c_void, UnrefFn>(sym(c"uv_unref")?),
                ref_: std::mem::transmute::<*mut c_void, RefFn>(sym(c"uv_ref")?),
                set_data: std::mem::transmute::<*mut c_void, SetDataFn>(sym(
                    c"uv_handle_set_data",
                )?),
                get_data: std::mem::transmute::<*mut c_void, GetDataFn>(sym(
                    c"uv_handle_get_data",
                )?),
            })
        }
    })
    .as_ref()
}

struct State {
    env: sys::napi_env,
    callback: sys::napi_ref,
    ctx: sys::napi_async_context,
    channel: Arc<Channel>,
    inbox: Inbox,
    /// The poll handle's memory (u64s for alignment); `None` once closed.
    handle: Option<Box<[u64]>>,
    writable: bool,
}

/// The worker's channel on Node's loop. Single-threaded: everything happens
/// on the JS thread.
pub struct UvChannel {
    state: Rc<RefCell<State>>,
}

impl UvChannel {
    /// Starts polling `channel` on the loop of `env`; `callback` gets arrays
    /// of frames. `None` when libuv cannot be reached (use the thread).
    ///
    /// # Safety
    /// `env` must be the current, live napi env and `callback` a JS function
    /// value of it; called on the JS thread.
    pub unsafe fn start(
        env: sys::napi_env,
        uv_loop: *mut c_void,
        callback: sys::napi_value,
        channel: Arc<Channel>,
    ) -> Option<UvChannel> {
        let api = api()?;
        let size = (api.handle_size)(UV_POLL);
        if size == 0 {
            return None;
        }
        let mut mem = vec![0u64; size.div_ceil(8)].into_boxed_slice();
        let handle = mem.as_mut_ptr() as *mut UvHandle;
        use std::os::fd::AsRawFd;
        if (api.poll_init)(uv_loop, handle, channel.as_raw_fd()) != 0 {
            return None;
        }
        let mut cb_ref = std::ptr::null_mut();
        sys::napi_create_reference(env, callback, 1, &mut cb_ref);
        let mut name = std::ptr::null_mut();
        sys::napi_create_string_utf8(env, c"rcluster:channel".as_ptr(), 16, &mut name);
        let mut ctx = std::ptr::null_mut();
        sys::napi_async_init(env, std::ptr::null_mut(), name, &mut ctx);
        let state = Rc::new(RefCell::new(State {
            env,
            callback: cb_ref,
            ctx,
            channel,
            inbox: Inbox::default(),
            handle: Some(mem),
            writable: false,
        }));
        // The handle holds one strong reference, given back in `on_close`.
        (api.set_data)(handle, Rc::into_raw(state.clone()) as *mut c_void);
        (api.unref)(handle);
        if (api.poll_start)(handle, UV_READABLE, on_poll) != 0 {
            return None;
        }
        Some(UvChannel { state })
    }

    pub fn channel(&self) -> Arc<Channel> {
        self.state.borrow().channel.clone()
    }

    /// A reference that does not keep the channel (its fd) open.
    pub fn downgrade(&self) -> WeakUvChannel {
        WeakUvChannel(Rc::downgrade(&self.state))
    }

    /// After a send: watch for writability while packets wait. The handle,
    /// unreferenced otherwise (JS keeps the loop alive while the channel is
    /// referenced), holds the loop until they are written: as a pending
    /// write request does in Node, also after `channel.unref()`, so that a
    /// process ending naturally still delivers what it sent.
    pub fn sent(&self, flush: Flush) {
        let mut st = self.state.borrow_mut();
        if flush == Flush::Pending && !st.writable {
            st.writable = true;
            if let (Some(api), Some(h)) = (api(), st.handle.as_mut()) {
                let h = h.as_mut_ptr() as *mut UvHandle;
                // SAFETY: the handle is initialised and open (Some).
                unsafe {
                    (api.poll_start)(h, UV_READABLE | UV_WRITABLE, on_poll);
                    (api.ref_)(h);
                };
            }
        }
    }

    /// Reads everything waiting now, on the caller's turn (the primary, before
    /// it reports a worker's exit, takes the messages the worker wrote before
    /// dying). At end of file the batch ends with a disconnect and the handle
    /// closes.
    pub fn drain(&self) -> Vec<WorkerEvent> {
        let mut batch = Vec::new();
        let mut st = self.state.borrow_mut();
        if st.handle.is_none() {
            return batch;
        }
        let st = &mut *st;
        st.inbox.rearm();
        if read_into(&mut st.inbox, &st.channel, &mut batch, usize::MAX) {
            st.channel.shutdown();
            close_handle(st);
        }
        batch
    }

    /// Closes the channel (the peer sees EOF) and the poll handle.
    pub fn close(&self) {
        let mut st = self.state.borrow_mut();
        st.channel.shutdown();
        close_handle(&mut st);
    }
}

/// See [`UvChannel::downgrade`].
pub struct WeakUvChannel(Weak<RefCell<State>>);

impl WeakUvChannel {
    /// [`UvChannel::sent`], if the channel is still there.
    pub fn sent(&self, flush: Flush) {
        if let Some(state) = self.0.upgrade() {
            UvChannel { state }.sent(flush);
        }
    }
}

fn close_handle(st: &mut State) {
    if let (Some(api), Some(h)) = (api(), st.handle.as_mut()) {
        let p = h.as_mut_ptr() as *mut UvHandle;
        // SAFETY: the handle is initialised and not closed yet; uv_close calls
        // on_close later, which frees the state the handle points to. The
        // memory moves into that state's keeping below (`closing`).
        unsafe {
            (api.poll_stop)(p);
            (api.close)(p, on_close);
        }
    }
    // Keep the memory alive until on_close runs: leak it into the close path.
    if let Some(mem) = st.handle.take() {
        CLOSING.with(|c| c.borrow_mut().push(mem));
    }
}

thread_local! {
    /// Handle memory waiting for its close callback.
    static CLOSING: RefCell<Vec<Box<[u64]>>> = const { RefCell::new(Vec::new()) };
}

// SAFETY: called by libuv on the JS thread once `handle` (ours, initialised in
// `start`) is closed; its data is the Rc given away in `start`.
unsafe extern "C" fn on_close(handle: *mut UvHandle) {
    let Some(api) = api() else { return };
    let data = (api.get_data)(handle) as *const RefCell<State>;
    CLOSING.with(|c| {
        c.borrow_mut()
            .retain(|m| m.as_ptr() as *mut UvHandle != handle)
    });
    if !data.is_null() {
        // SAFETY: `data` came from Rc::into_raw in `start`; this gives that
        // reference back exactly once.
        let state = Rc::from_raw(data);
        let st = state.borrow();
        sys::napi_async_destroy(st.env, st.ctx);
        sys::napi_delete_reference(st.env, st.callback);
    }
}

// SAFETY: called by libuv on the JS thread while `handle` is open; its data
// is the Rc given away in `start`, alive until `on_close`.
unsafe extern "C" fn on_poll(handle: *mut UvHandle, status: c_int, events: c_int) {
    let Some(api) = api() else { return };
    let data = (api.get_data)(handle) as *const RefCell<State>;
    if data.is_null() {
        return;
    }
    // SAFETY: the handle's strong reference keeps the state alive while the
    // handle is open; borrow it without taking that reference.
    Rc::increment_strong_count(data);
    let state = Rc::from_raw(data);
    let mut batch = Vec::new();
    let mut done = false;
    {
        let mut st = state.borrow_mut();
        if st.handle.is_none() {
            return;
        }
        if status < 0 {
            // libuv reports a socket error (POLLERR) as UV_EBADF and stops
            // the handle. A peer that went away with frames it had not read
            // (a worker killed before reading a message) leaves ECONNRESET
            // pending: that is an end of file, not an error. Read what is
            // left; the read ends in the end of file or the real error.
            let st = &mut *st;
            done = read_into(&mut st.inbox, &st.channel, &mut batch, usize::MAX);
            if !done {
                batch.push(WorkerEvent::Error(format!(
                    "channel poll failed (libuv error {status}); channel closed"
                )));
                batch.push(WorkerEvent::Disconnect);
                done = true;
            }
        }
        if !done && events & UV_WRITABLE != 0 {
            if let Ok(Flush::Done) = st.channel.flush() {
                st.writable = false;
                (api.poll_start)(handle, UV_READABLE, on_poll);
                // Written: the loop no longer waits for this channel.
                (api.unref)(handle);
            }
        }
        if !done {
            let st = &mut *st;
            done = read_into(&mut st.inbox, &st.channel, &mut batch, BATCH);
        }
        if done {
            st.channel.shutdown();
            close_handle(&mut st);
        }
    }
    if !batch.is_empty() {
        call_js(&state, batch);
    }
}

// SAFETY (for callers): on the JS thread, from a libuv callback, with the
// state's env live; every napi call below uses that env and values created in
// the handle scope opened here.
unsafe fn call_js(state: &Rc<RefCell<State>>, batch: Vec<WorkerEvent>) {
    let (env, cb, ctx) = {
        let st = state.borrow();
        (st.env, st.callback, st.ctx)
    };
    let mut scope = std::ptr::null_mut();
    sys::napi_open_handle_scope(env, &mut scope);
    if let Ok(arr) = FrameBatch::to_napi_value(env, FrameBatch(batch)) {
        let mut func = std::ptr::null_mut();
        let mut recv = std::ptr::null_mut();
        let mut result = std::ptr::null_mut();
        sys::napi_get_reference_value(env, cb, &mut func);
        sys::napi_get_global(env, &mut recv);
        // A callback scope, as Node opens around each libuv callback into
        // JavaScript: closing it runs the process.nextTick callbacks and the
        // microtasks, where rcluster emits what it read. napi_make_callback
        // would do the same inside napi's own try/catch, which keeps only the
        // exception value of a listener that throws: Node would then report
        // it with no source line (`<anonymous_script>:0` above an
        // AssertionError). The callback scope's own try/catch reports the
        // exception from where it was thrown, as an uncaught exception.
        let mut cb_scope = std::ptr::null_mut();
        let opened =
            sys::napi_open_callback_scope(env, recv, ctx, &mut cb_scope) == sys::Status::napi_ok;
        let status = if opened {
            sys::napi_call_function(env, recv, func, 1, &arr, &mut result)
        } else {
            sys::napi_make_callback(env, ctx, recv, func, 1, &arr, &mut result)
        };
        if status == sys::Status::napi_pending_exception {
            // rcluster's own callback threw (it defers the listeners' errors
            // to a tick), or a tick did without the callback scope: still an
            // uncaught exception, as in Node.
            let mut err = std::ptr::null_mut();
            sys::napi_get_and_clear_last_exception(env, &mut err);
            sys::napi_fatal_exception(env, err);
        }
        if opened {
            sys::napi_close_callback_scope(env, cb_scope);
        }
    }
    sys::napi_close_handle_scope(env, scope);
}
