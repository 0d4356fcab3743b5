//! Arbitrary bytes as a script of message chunks: the inbox's reassembly
//! must match a reference model exactly, and leak no fd.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_common/mod.rs"]
mod fuzz_common;

fuzz_target!(|data: &[u8]| {
    fuzz_common::reassemble(data);
});
