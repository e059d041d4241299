// SPDX-License-Identifier: MIT
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 14 bytes per event: seq (2), timestamp (4), arrival (8).
    let events: Vec<(u16, u32, u64)> = data
        .chunks_exact(14)
        .map(|c| {
            let seq = u16::from_le_bytes([c[0], c[1]]);
            let ts = u32::from_le_bytes([c[2], c[3], c[4], c[5]]);
            let arrival = u64::from_le_bytes([c[6], c[7], c[8], c[9], c[10], c[11], c[12], c[13]]);
            (seq, ts, arrival)
        })
        .collect();
    rtp::fuzzing::check_stats(&events);
});
