//! The hot path of `process.send()` / `worker.send()`: a plain Node-API
//! function, `send(flags, text)`, bound to one channel, that writes one JSON
//! message frame straight from the JS string.
//!
//! A message round trip crosses this function once on each side, and a
//! napi-rs class method costs more than the write itself needs: the class
//! identity check and the native-borrow bookkeeping of `&self`, an `Arc`
//! clone of the channel, and on the JS side a Buffer to carry the text. Here
//! the channel travels as the function's data pointer and the text is copied
//! into a stack buffer (as Node's own stream writes do for small strings).

use std::ffi::{c_char, c_void};
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Arc, Weak};

use napi::sys;

use super::loop_hold::Pending;
use crate::channel::{Channel, Flush};

/// Texts up to this many bytes are copied on the stack.
const STACK: usize = 4096;

/// What a sender function holds (its data pointer, freed with it). Weak
/// references: the function lives until garbage collection, the channel's fd
/// must not.
pub struct TextSender {
    channel: Weak<Channel>,
    /// What holds the loop while what the socket could not take at once
    /// waits to be flushed.
    pending: Pending,
}

impl TextSender {
    pub fn new(channel: &Arc<Channel>, pending: Pending) -> TextSender {
        TextSender {
            channel: Arc::downgrade(channel),
            pending,
        }
    }

    /// Makes the JS function.
    ///
    /// # Safety
    /// `env` is the live env, on its JS thread.
    pub unsafe fn into_function(self, env: sys::napi_env) -> napi::Result<sys::napi_value> {
        let data = Box::into_raw(Box::new(self));
        let mut func = ptr::null_mut();
        let status = sys::napi_create_function(
            env,
            c"send".as_ptr(),
            4,
            Some(send_text),
            data.cast(),
            &mut func,
        );
        if status != sys::Status::napi_ok {
            // SAFETY: not handed to JS: still ours.
            drop(Box::from_raw(data));
            return Err(napi::Error::from_reason("cannot create the send function"));
        }
        // Should this fail, the sender leaks (a few words) rather than being
        // freed under a live function.
        sys::napi_add_finalizer(
            env,
            func,
            data.cast(),
            Some(finalize),
            ptr::null_mut(),
            ptr::null_mut(),
        );
        Ok(func)
    }

    /// Writes one message frame; returns the bytes still queued.
    ///
    /// # Safety
    /// On the JS thread of `env`, which is live.
    unsafe fn send(&self, env: sys::napi_env, flags: u8, text: &[u8]) -> std::io::Result<usize> {
        let Some(channel) = self.channel.upgrade() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "channel closed",
            ));
        };
        let flush = channel.send_message_from(flags, text, None)?;
        if flush == Flush::Done {
            return Ok(0);
        }
        self.pending.sent(env);
        Ok(channel.queued_bytes())
    }
}

// SAFETY: called by Node when the function is collected; `data` is the Box
// made in `into_function`, freed exactly once here.
unsafe extern "C" fn finalize(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    drop(Box::from_raw(data as *mut TextSender));
}

// SAFETY: called by Node on the JS thread with the callback info of a call to
// a function made by `into_function`, whose data is a live `TextSender`.
unsafe extern "C" fn send_text(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let mut argc = 2usize;
    let mut argv = [ptr::null_mut(); 2];
    let mut data = ptr::null_mut();
    if sys::napi_get_cb_info(
        env,
        info,
        &mut argc,
        argv.as_mut_ptr(),
        ptr::null_mut(),
        &mut data,
    ) != sys::Status::napi_ok
        || data.is_null()
    {
        return throw(env, "EINVAL: bad call of the channel's send");
    }
    let sender = &*(data as *const TextSender);
    let mut flags = 0u32;
    if sys::napi_get_value_uint32(env, argv[0], &mut flags) != sys::Status::napi_ok {
        return throw(env, "EINVAL: flags must be a number");
    }
    let mut stack = [MaybeUninit::<u8>::uninit(); STACK];
    let mut len = 0usize;
    if sys::napi_get_value_string_utf8(
        env,
        argv[1],
        stack.as_mut_ptr() as *mut c_char,
        STACK,
        &mut len,
    ) != sys::Status::napi_ok
    {
        return throw(env, "EINVAL: the message must be a string");
    }
    let heap;
    // Node copies whole characters only, up to STACK - 1 bytes: a cut text
    // stops within a character's length (at most 4 bytes) of that end.
    let text: &[u8] = if len < STACK - 4 {
        // SAFETY: Node wrote `len` bytes (and a NUL) into the buffer.
        std::slice::from_raw_parts(stack.as_ptr() as *const u8, len)
    } else {
        // It may have been cut at the buffer's end: take it whole.
        sys::napi_get_value_string_utf8(env, argv[1], ptr::null_mut(), 0, &mut len);
        let mut buf = vec![0u8; len + 1];
        sys::napi_get_value_string_utf8(
            env,
            argv[1],
            buf.as_mut_ptr() as *mut c_char,
            buf.len(),
            &mut len,
        );
        buf.truncate(len);
        heap = buf;
        &heap
    };
    match catch_unwind(AssertUnwindSafe(|| sender.send(env, flags as u8, text))) {
        Ok(Ok(queued)) => {
            let mut out = ptr::null_mut();
            sys::napi_create_uint32(env, queued.min(u32::MAX as usize) as u32, &mut out);
            out
        }
        Ok(Err(e)) => throw(env, &super::io_err(e).reason),
        Err(_) => throw(env, "EIO: internal error in the channel's send"),
    }
}

/// Throws an Error with `message`; returns the undefined a callback returns
/// with an exception pending.
unsafe fn throw(env: sys::napi_env, message: &str) -> sys::napi_value {
    let msg = std::ffi::CString::new(message.replace('\0', " ")).unwrap_or_default();
    sys::napi_throw_error(env, ptr::null(), msg.as_ptr());
    ptr::null_mut()
}
