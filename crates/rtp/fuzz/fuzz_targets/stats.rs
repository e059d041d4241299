// SPDX-License-Identifier: MIT
//! Drive one RTP source's statistics with arbitrary (sequence, timestamp,
//! arrival) events, decoded as deltas so runs, swaps and repeats are easy
//! for the fuzzer to find; the checks are in `rtp::fuzzing::check_stats`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rtp::fuzzing::check_stats(&rtp::fuzzing::events_from_bytes(data));
});
