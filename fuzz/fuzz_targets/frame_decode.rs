//! Arbitrary bytes as one channel packet: the header parser and the inbox
//! must refuse or accept it without panicking, and leak no fd.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_common/mod.rs"]
mod fuzz_common;

fuzz_target!(|data: &[u8]| {
    fuzz_common::frame_decode(data);
});
