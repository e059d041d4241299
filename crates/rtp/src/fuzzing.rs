// SPDX-License-Identifier: MIT
//! Invariants checked by the cargo-fuzz targets (`fuzz/`) and, on
//! pseudo-random input, by the unit tests, so CI exercises them without a
//! nightly toolchain.

use crate::{RtpBuilder, RtpPacket, SourceStats, StreamStats};

/// Parse arbitrary bytes; if they are RTP, check the view is consistent and
/// that rebuilding it gives the same bytes.
pub fn check_parse(data: &[u8]) {
    let Ok(p) = RtpPacket::parse(data) else { return };
    assert_eq!(p.header_len() + p.payload().len() + p.padding_len(), data.len());
    assert_eq!(p.csrcs().count(), p.csrc_count() as usize);
    assert_eq!(p.version(), 2);
    let mut b = RtpBuilder::new(p.payload_type(), p.sequence_number(), p.timestamp(), p.ssrc()).marker(p.marker());
    for c in p.csrcs() {
        b = b.csrc(c);
    }
    if let Some((profile, body)) = p.extension_header() {
        b = b.extension(profile, body);
    }
    // The builder zero-fills padding; compare with padding bytes zeroed.
    b = b.padding(p.padding_len() as u8);
    let rebuilt = b.to_vec(p.payload());
    let mut want = data.to_vec();
    if p.padding_len() > 0 {
        let end = want.len() - 1;
        want[end - (p.padding_len() - 1)..end].fill(0);
    }
    assert_eq!(rebuilt, want);
    let mut st = StreamStats::new(90_000, 4);
    st.update(&p, 0);
}

/// Drive one source with arbitrary (seq, timestamp, arrival) triples.
pub fn check_stats(events: &[(u16, u32, u64)]) {
    let Some(&(first, _, _)) = events.first() else { return };
    let mut s = SourceStats::new(7, first, 90_000);
    for &(seq, ts, arrival) in events {
        s.update(seq, ts, arrival);
        assert!(s.duplicates() + s.reordered() <= s.received());
        let _ = s.interval_report();
        let _ = s.jitter_ms();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn parse_invariants_on_random_and_mutated_packets() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let seed = RtpBuilder::new(33, 1, 2, 3).csrc(4).extension(0xbede, &[1, 2, 3, 4]).padding(4).to_vec(&[5; 40]);
        for _ in 0..20_000 {
            let mut d = seed.clone();
            for _ in 0..(rng.next() % 4) {
                let i = (rng.next() as usize) % d.len();
                d[i] = rng.next() as u8;
            }
            d.truncate((rng.next() as usize) % (d.len() + 1));
            check_parse(&d);
            let len = (rng.next() % 64) as usize;
            let random: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            check_parse(&random);
        }
    }

    #[test]
    fn stats_invariants_on_random_sequences() {
        let mut rng = XorShift(42);
        for _ in 0..500 {
            let mut seq = rng.next() as u16;
            let events: Vec<(u16, u32, u64)> = (0..200)
                .map(|i| {
                    seq = match rng.next() % 10 {
                        0 => rng.next() as u16,
                        1 => seq.wrapping_sub((rng.next() % 5) as u16),
                        _ => seq.wrapping_add(1),
                    };
                    (seq, rng.next() as u32, i * 1_000_000 + rng.next() % 5_000_000)
                })
                .collect();
            check_stats(&events);
        }
    }
}
