// SPDX-License-Identifier: MIT
//! Arbitrary bytes as a run of raw UDP MPEG-TS datagrams through the
//! datagram check, the TR 101 290 analyser and a PSI section assembler.
//! The checks are in `mpegts::fuzzing::check_stream`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mpegts::fuzzing::check_stream(data);
});
