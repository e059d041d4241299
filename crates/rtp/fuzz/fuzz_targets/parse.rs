// SPDX-License-Identifier: MIT
//! Parse arbitrary bytes as RTP; on success check the view, rebuild the
//! packet with `RtpBuilder` and compare, and feed it to `StreamStats`. The
//! checks are in `rtp::fuzzing::check_parse`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rtp::fuzzing::check_parse(data);
});
