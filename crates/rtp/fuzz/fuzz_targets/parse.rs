// SPDX-License-Identifier: MIT
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rtp::fuzzing::check_parse(data);
});
