//! rcluster: Node's `cluster` with a Rust core.
//!
//! The core modules below carry no napi types and are tested with `cargo test`;
//! `napi` converts between them and JavaScript and nothing else.
#![deny(clippy::all)]

pub mod channel;
pub mod frame;
pub mod sys;

#[cfg(not(test))]
mod napi;
