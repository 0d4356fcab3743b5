//! A batch of channel events as JavaScript sees it: one flat array, six
//! slots per event, `[type, flags, id, fd, listener, payload]`, unpacked by
//! `lib/frames.js`. Slots at their default (`flags` 0, `id` 0, `fd` -1,
//! `listener` 0, no payload) are left as holes, so a JSON message costs two
//! element stores. An array of numbers and strings is several times cheaper
//! to build through Node-API than one object per event (no property names to
//! look up, no hidden-class transitions), and it is built on every read.

use std::os::fd::{AsRawFd, IntoRawFd};
use std::ptr;

use napi::bindgen_prelude::{Buffer, ToNapiValue};
use napi::{check_status, sys, Result};

use crate::frame::{self, Kind};
use crate::worker_io::WorkerEvent;

/// Slots per event.
pub const SLOTS: usize = 6;
/// Event type of an error (the payload is its message).
pub const EV_ERROR: u32 = 100;
/// Event type of the channel's end.
pub const EV_DISCONNECT: u32 = 101;

/// Events on their way to JavaScript (see the module docs).
pub struct FrameBatch(pub Vec<WorkerEvent>);

enum Payload {
    None,
    Text(String),
    Bytes(Vec<u8>),
}

impl ToNapiValue for FrameBatch {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let mut arr = ptr::null_mut();
        check_status!(sys::napi_create_array_with_length(
            env,
            val.0.len() * SLOTS,
            &mut arr
        ))?;
        for (i, e) in val.0.into_iter().enumerate() {
            let base = (i * SLOTS) as u32;
            // An fd becomes JS's once its slot is stored; until then (an
            // error below) it stays owned here and is closed.
            let mut owned = None;
            let (kind, flags, id, fd, listener, payload) = match e {
                WorkerEvent::Frame(f) => {
                    owned = f.fd;
                    let fd = owned.as_ref().map_or(-1, AsRawFd::as_raw_fd);
                    let mut listener = 0;
                    let payload = if f.kind == Kind::Conn {
                        listener = frame::decode_u32(Kind::Conn, &f.payload).unwrap_or(0);
                        Payload::None
                    } else if f.kind == Kind::Message
                        && f.flags & frame::FLAG_ADVANCED == 0
                        && fd < 0
                    {
                        // A JSON message as text: cheaper for JS than a Buffer.
                        match String::from_utf8(f.payload) {
                            Ok(text) => Payload::Text(text),
                            Err(e) => Payload::Bytes(e.into_bytes()),
                        }
                    } else {
                        Payload::Bytes(f.payload)
                    };
                    (f.kind as u32, f.flags as u32, f.id, fd, listener, payload)
                }
                WorkerEvent::Error(m) => (EV_ERROR, 0, 0, -1, 0, Payload::Text(m)),
                WorkerEvent::Disconnect => (EV_DISCONNECT, 0, 0, -1, 0, Payload::None),
            };
            set(env, arr, base, u32::to_napi_value(env, kind)?)?;
            if flags != 0 {
                set(env, arr, base + 1, u32::to_napi_value(env, flags)?)?;
            }
            if id != 0 {
                set(env, arr, base + 2, f64::to_napi_value(env, id as f64)?)?;
            }
            if fd >= 0 {
                set(env, arr, base + 3, i32::to_napi_value(env, fd)?)?;
            }
            if listener != 0 {
                set(env, arr, base + 4, u32::to_napi_value(env, listener)?)?;
            }
            match payload {
                Payload::None => {}
                Payload::Text(t) => {
                    let mut s = ptr::null_mut();
                    check_status!(sys::napi_create_string_utf8(
                        env,
                        t.as_ptr().cast(),
                        t.len() as isize,
                        &mut s
                    ))?;
                    set(env, arr, base + 5, s)?;
                }
                Payload::Bytes(b) => {
                    set(env, arr, base + 5, Buffer::to_napi_value(env, b.into())?)?;
                }
            }
            // Every slot stored: JS owns the fd now.
            let _ = owned.map(IntoRawFd::into_raw_fd);
        }
        Ok(arr)
    }
}

/// Stores `v` at `index` of `arr`.
///
/// # Safety
/// `env` is the live env on its JS thread; `arr` and `v` are values of it.
unsafe fn set(
    env: sys::napi_env,
    arr: sys::napi_value,
    index: u32,
    v: sys::napi_value,
) -> Result<()> {
    check_status!(sys::napi_set_element(env, arr, index, v))
}
