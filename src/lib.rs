//! rcluster: Node's `cluster` with a Rust core.
//!
//! The core modules below carry no napi types and are tested with `cargo test`;
//! `napi` converts between them and JavaScript and nothing else.
#![deny(clippy::all)]

pub mod channel;
pub mod frame;
pub mod listener;
pub mod offload;
pub mod policy;
pub mod poller;
pub mod process;
pub mod reactor;
pub mod spawn;
pub mod supervisor;
pub mod sys;
pub mod systemd;
pub mod worker_io;

#[cfg(not(test))]
mod napi;
