//! Keeping Node's loop alive while a channel's output waits.
//!
//! In Node, a `send()` the pipe could not take at once is a pending write
//! request, and it keeps the process alive until it is written, also after
//! `channel.unref()`: a worker that sends a large message and then runs out
//! of work still delivers it. Here what the socket could not take waits in
//! the channel's queue, which the event loop does not see. [`Pending`] makes
//! the loop wait for it: the default mode references the channel's poll
//! handle (`uv_channel.rs`), the reader-thread mode its threadsafe function
//! ([`LoopHold`]), each until the queue is empty.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use napi::sys;

use super::uv_channel::WeakUvChannel;
use crate::channel::{Channel, Flush};

/// What a send that left output queued tells, so that the loop waits.
pub enum Pending {
    /// The poll handle watches for writability and holds the loop meanwhile.
    Uv(WeakUvChannel),
    /// A reader thread flushes the queue; its threadsafe function holds the
    /// loop meanwhile.
    Thread(Arc<LoopHold>),
}

impl Pending {
    /// After a send that left output queued.
    ///
    /// # Safety
    /// On the JS thread of `env`, which is live.
    pub unsafe fn sent(&self, env: sys::napi_env) {
        match self {
            Pending::Uv(uv) => uv.sent(Flush::Pending),
            Pending::Thread(hold) => hold.pending(env),
        }
    }
}

/// The reader-thread mode's hold on the loop: the threadsafe function that
/// carries frames to JS is unreferenced, except while output waits.
///
/// The JS thread references it after a send left output queued; the reader
/// thread, once a flush emptied the queue, sends an empty batch through it
/// (only while held), whose callback lets the loop go if the queue is still
/// empty. Each side checks the other's state after publishing its own, under
/// the queue's lock, so that one of them always sees that the hold is over.
#[derive(Default)]
pub struct LoopHold {
    tsfn: AtomicPtr<c_void>,
    held: AtomicBool,
    channel: OnceLock<Weak<Channel>>,
}

impl LoopHold {
    /// Completes the hold once the threadsafe function and the channel exist.
    pub fn bind(&self, tsfn: sys::napi_threadsafe_function, channel: &Arc<Channel>) {
        self.tsfn.store(tsfn.cast(), Ordering::SeqCst);
        let _ = self.channel.set(Arc::downgrade(channel));
    }

    /// Whether the reader thread should tell JS that the queue drained.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    fn idle(&self) -> bool {
        self.channel
            .get()
            .and_then(Weak::upgrade)
            .is_none_or(|ch| ch.queued_bytes() == 0)
    }

    /// JS thread, after a send left output queued: the loop waits.
    ///
    /// # Safety
    /// On the JS thread of `env`, which is live.
    pub unsafe fn pending(&self, env: sys::napi_env) {
        let tsfn = self.tsfn.load(Ordering::SeqCst);
        if tsfn.is_null() || self.held.swap(true, Ordering::SeqCst) {
            return;
        }
        sys::napi_ref_threadsafe_function(env, tsfn.cast());
        // The reader thread may have emptied the queue before `held` was set
        // (and then sent nothing).
        self.release(env, false);
    }

    /// JS thread: lets the loop go when nothing waits any more, or the
    /// channel closed (what is left will never be written).
    ///
    /// # Safety
    /// On the JS thread of `env`, which is live.
    pub unsafe fn release(&self, env: sys::napi_env, closed: bool) {
        if !(closed || self.idle()) || !self.held.swap(false, Ordering::SeqCst) {
            return;
        }
        let tsfn = self.tsfn.load(Ordering::SeqCst);
        if !tsfn.is_null() {
            sys::napi_unref_threadsafe_function(env, tsfn.cast());
        }
    }
}
