// SPDX-License-Identifier: MIT
//! Invariants checked by the cargo-fuzz targets (`fuzz/`) and, on
//! pseudo-random input, by this module's unit tests, so CI exercises them
//! without a nightly toolchain. Not a stable API.
//!
//! The checks panic (assert) on a broken invariant: that is how a fuzzer
//! learns of it.

use crate::payload::static_clock_rate;
use crate::{PacketClass, RtpBuilder, RtpPacket, SourceStats, StreamStats, FIXED_HEADER_LEN, RTP_VERSION};

/// The same bytes as RTCP, as a SMPTE 2022-1 FEC packet and as an RTX
/// packet: no panic; a compound packet's parts add up; every NACK'd
/// number comes from an FCI word; a FEC packet names NA members `Offset`
/// apart; an RTX packet unwraps into an RTP packet 2 bytes shorter than
/// its unpadded self.
pub fn check_rtcp_fec_rtx(data: &[u8]) {
    use crate::{fec, rtcp, rtx};
    if let Some(pkts) = rtcp::parse_compound(data) {
        let mut total = 0;
        for p in pkts {
            total += 4 + p.body.len();
            if let Some((_, blocks)) = rtcp::report_blocks(&p) {
                assert!(blocks.count() <= usize::from(p.count));
            }
            if let Some((_, _, seqs)) = rtcp::nack(&p) {
                assert!(seqs.count() <= (p.body.len() - 8) / 4 * 17);
            }
            let _ = rtcp::sender_info(&p);
        }
        assert!(total <= data.len());
    }
    if let Ok(f) = fec::parse_fec(data) {
        let members: Vec<u16> = f.members().collect();
        assert_eq!(members.len(), usize::from(f.na));
        assert!(members.windows(2).all(|w| w[1].wrapping_sub(w[0]) == u16::from(f.offset)));
        let mut dec = fec::FecDecoder::new(2048, 1);
        dec.on_fec(data, 1, 0, &mut |_, p| assert!(p.len() >= 12 && p.len() <= 2048));
        dec.tick(10);
    }
    if let Ok(orig) = RtpPacket::parse(data) {
        let mut buf = data.to_vec();
        if let Some((len, osn)) = rtx::unwrap_rtx(&mut buf, data.len(), 33, 7) {
            assert_eq!(len + 2, orig.header_len() + orig.payload().len());
            let restored = RtpPacket::parse(&buf[..len]).expect("an unwrapped RTX packet is RTP");
            assert_eq!((restored.sequence_number(), restored.ssrc(), restored.payload_type()), (osn, 7, 33));
        }
    }
}

/// Parse arbitrary bytes; if they are RTP, check that the view is
/// consistent, that rebuilding it from its fields gives the same bytes, and
/// feed it to a [`StreamStats`].
pub fn check_parse(data: &[u8]) {
    check_rtcp_fec_rtx(data);
    let Ok(p) = RtpPacket::parse(data) else { return };
    assert_eq!(p.as_bytes(), data);
    assert_eq!(p.version(), RTP_VERSION);
    assert_eq!(p.header_len() + p.payload().len() + p.padding_len(), data.len());
    assert!(p.header_len() >= FIXED_HEADER_LEN + 4 * p.csrc_count() as usize);
    assert_eq!(p.csrcs().count(), p.csrc_count() as usize);
    assert_eq!(p.padding(), p.padding_len() > 0);
    assert_eq!(p.extension(), p.extension_header().is_some());
    if let Some((_, body)) = p.extension_header() {
        assert_eq!(body.len() % 4, 0);
    }
    assert_eq!(data.get(p.header_len()..p.header_len() + p.payload().len()), Some(p.payload()));
    if p.padding() {
        assert_eq!(data.last().map(|&b| b as usize), Some(p.padding_len()));
    }

    // Every parsed packet is representable: CC <= 15, the extension body is
    // whole words, the padding count is 1..=255. The builder zero-fills
    // padding, so compare with the padding's filler bytes zeroed.
    let mut b = RtpBuilder::new(p.payload_type(), p.sequence_number(), p.timestamp(), p.ssrc()).marker(p.marker());
    for c in p.csrcs() {
        b = b.csrc(c);
    }
    if let Some((profile, body)) = p.extension_header() {
        b = b.extension(profile, body);
    }
    b = b.padding(u8::try_from(p.padding_len()).unwrap_or(0));
    let rebuilt = b.try_to_vec(p.payload()).expect("a parsed packet rebuilds");
    let mut want = data.to_vec();
    let filler = want.len() - p.padding_len()..want.len().saturating_sub(1);
    if let Some(bytes) = want.get_mut(filler) {
        bytes.fill(0);
    }
    assert_eq!(rebuilt, want);

    // A source's first packet starts probation; the next in sequence
    // completes it and both count.
    let clock_rate = static_clock_rate(p.payload_type()).unwrap_or(90_000);
    let mut st = StreamStats::new(clock_rate, 2);
    assert_eq!(st.update(&p, 0), PacketClass::Probation);
    let bytes = RtpBuilder::new(p.payload_type(), p.sequence_number().wrapping_add(1), p.timestamp(), p.ssrc())
        .to_vec(p.payload());
    let q = RtpPacket::parse(&bytes).expect("built packets parse");
    assert_eq!(st.update(&q, 1_000_000), PacketClass::InOrder);
    let src = st.current().expect("a current source");
    assert_eq!((src.ssrc(), src.received(), src.lost()), (p.ssrc(), 2, 0));
    assert_eq!(st.ssrc_changes(), 0);
}

/// Decode fuzzer bytes into (sequence, timestamp, arrival) events, 10 bytes
/// each, as deltas from the previous event: sequence `i16`, timestamp `i32`,
/// arrival `u32` nanoseconds. Deltas let a fuzzer reach the interesting
/// cases (runs, small gaps, swaps, repeats, wraps) far more easily than
/// absolute values, and any value is still reachable through wrapping.
pub fn events_from_bytes(data: &[u8]) -> Vec<(u16, u32, u64)> {
    let (mut seq, mut ts, mut arrival) = (0u16, 0u32, 0u64);
    data.chunks_exact(10)
        .map(|c| {
            let &[s0, s1, t0, t1, t2, t3, a0, a1, a2, a3] = c else { return (seq, ts, arrival) };
            seq = seq.wrapping_add_signed(i16::from_le_bytes([s0, s1]));
            ts = ts.wrapping_add_signed(i32::from_le_bytes([t0, t1, t2, t3]));
            arrival = arrival.wrapping_add(u32::from_le_bytes([a0, a1, a2, a3]).into());
            (seq, ts, arrival)
        })
        .collect()
}

/// Counters of one source, to compare before and after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    received: u64,
    duplicates: u64,
    reordered: u64,
    resyncs: u64,
    expected: u64,
    probation: bool,
}

impl Counts {
    fn of(s: &SourceStats) -> Self {
        Counts {
            received: s.received(),
            duplicates: s.duplicates(),
            reordered: s.reordered(),
            resyncs: s.resyncs(),
            expected: s.expected(),
            probation: s.in_probation(),
        }
    }
}

/// Drive one source with arbitrary (seq, timestamp, arrival) events and
/// check, after every packet, what its classification implies for the
/// counters, that loss is never negative, and the A.3 interval figures.
pub fn check_stats(events: &[(u16, u32, u64)]) {
    let Some(&(first, _, _)) = events.first() else { return };
    let mut s = SourceStats::new(7, first, 90_000);
    // What the previous interval report saw, to check the next one.
    let (mut last_expected, mut last_distinct) = (0u64, 0u64);
    for &(seq, ts, arrival) in events {
        let before = Counts::of(&s);
        let class = s.update(seq, ts, arrival);
        let after = Counts::of(&s);
        let unchanged = |c: Counts| Counts { probation: after.probation, ..c };
        match class {
            PacketClass::Probation => {
                assert!(after.probation);
                assert_eq!(after, unchanged(before));
            }
            PacketClass::InOrder if before.probation => {
                assert!(!after.probation);
                assert_eq!((after.received, after.expected), (2, 2));
            }
            PacketClass::InOrder => {
                assert_eq!(after.received, before.received + 1);
                assert!(after.expected > before.expected);
                assert_eq!((after.duplicates, after.reordered), (before.duplicates, before.reordered));
            }
            PacketClass::Reordered => {
                assert_eq!(after.received, before.received + 1);
                assert_eq!(after.reordered, before.reordered + 1);
                assert_eq!(after.duplicates, before.duplicates);
            }
            PacketClass::Duplicate => {
                assert_eq!(after.received, before.received + 1);
                assert_eq!(after.duplicates, before.duplicates + 1);
                assert_eq!((after.reordered, after.expected), (before.reordered, before.expected));
            }
            PacketClass::BadSequence => assert_eq!(after, before),
            PacketClass::Resync => {
                assert_eq!(after.resyncs, before.resyncs + 1);
                assert_eq!((after.received, after.duplicates, after.reordered, after.expected), (2, 0, 0, 2));
                (last_expected, last_distinct) = (0, 0);
            }
        }
        assert!(!after.probation || after.received == 0);
        assert!(s.duplicates() + s.reordered() <= s.received());
        assert!(s.lost() >= 0, "lost {} after {class:?}", s.lost());
        assert!(s.jitter_ms().is_finite() && s.jitter_ms() >= 0.0);

        let r = s.interval_report();
        let distinct = s.received() - s.duplicates();
        assert_eq!((r.expected, r.received), (s.expected() - last_expected, distinct - last_distinct));
        assert_eq!(r.lost, r.expected as i64 - r.received as i64);
        if r.lost <= 0 {
            assert_eq!(r.fraction_lost, 0);
        } else {
            assert_eq!(u64::from(r.fraction_lost), ((r.lost as u64) << 8) / r.expected);
        }
        (last_expected, last_distinct) = (s.expected(), distinct);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: deterministic, so a failure reproduces.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn parse_invariants_on_random_and_mutated_packets() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let seeds = [
            RtpBuilder::new(33, 1, 2, 3).csrc(4).extension(0xbede, &[1, 2, 3, 4]).padding(4).to_vec(&[5; 40]),
            RtpBuilder::new(96, 65_535, u32::MAX, 9).marker(true).to_vec(&[0x47; 188]),
            RtpBuilder::new(0, 0, 0, 0).extension(0x1000, &[]).pad_to_multiple(16).to_vec(b"abc"),
        ];
        let mut parsed = 0;
        for i in 0..20_000 {
            // Mutate a valid packet: flip a few bytes (often the flag byte,
            // so CC, X and P change), then maybe truncate.
            let mut d = seeds[i % seeds.len()].clone();
            for _ in 0..rng.below(4) {
                let at = if rng.below(3) == 0 { 0 } else { rng.below(d.len() as u64) as usize };
                if let Some(b) = d.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
            if rng.below(4) == 0 {
                d.truncate(rng.below(d.len() as u64 + 1) as usize);
            }
            parsed += usize::from(RtpPacket::parse(&d).is_ok());
            check_parse(&d);
            // And plain noise, with the version bits forced to 2 half the
            // time so that some of it gets past the first check.
            let mut noise: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            if let (Some(b), 0) = (noise.first_mut(), rng.below(2)) {
                *b = (*b & 0x3f) | 0x80;
            }
            check_parse(&noise);
        }
        assert!(parsed > 5_000, "the mutations should leave many packets valid, got {parsed}");
    }

    #[test]
    fn stats_invariants_on_random_sequences() {
        let mut rng = XorShift(42);
        let mut classes = [0usize; 6];
        for _ in 0..500 {
            let mut seq = rng.next() as u16;
            let mut ts = rng.next() as u32;
            let mut arrival = rng.next() >> 1;
            let events: Vec<(u16, u32, u64)> = (0..300)
                .map(|_| {
                    let step: i32 = match rng.below(20) {
                        0 => rng.next() as u16 as i32,    // anywhere
                        1 => -(rng.below(160) as i32),    // late or repeated, around MAX_MISORDER
                        2 => 2990 + rng.below(20) as i32, // around MAX_DROPOUT
                        3 => 0,                           // repeat
                        4 | 5 => 2 + rng.below(8) as i32, // small gap
                        _ => 1,
                    };
                    seq = seq.wrapping_add(step as u16);
                    ts = ts.wrapping_add(3600);
                    arrival = arrival.wrapping_add(40_000_000 + rng.below(4_000_000));
                    (seq, ts, arrival)
                })
                .collect();
            check_stats(&events);
            let mut s = SourceStats::new(0, events[0].0, 90_000);
            for &(q, t, a) in &events {
                let i = match s.update(q, t, a) {
                    PacketClass::InOrder => 0,
                    PacketClass::Reordered => 1,
                    PacketClass::Duplicate => 2,
                    PacketClass::Probation => 3,
                    PacketClass::Resync => 4,
                    PacketClass::BadSequence => 5,
                };
                classes[i] += 1;
            }
        }
        // The generator reaches every classification.
        assert!(classes.iter().all(|&n| n > 0), "{classes:?}");
    }

    #[test]
    fn stats_invariants_on_random_bytes() {
        let mut rng = XorShift(7);
        for _ in 0..2_000 {
            let bytes: Vec<u8> = (0..rng.below(400)).map(|_| rng.next() as u8).collect();
            check_stats(&events_from_bytes(&bytes));
        }
    }

    #[test]
    fn events_decode_as_wrapping_deltas() {
        let mut bytes = vec![];
        bytes.extend_from_slice(&(-1i16).to_le_bytes());
        bytes.extend_from_slice(&(-1i32).to_le_bytes());
        bytes.extend_from_slice(&7u32.to_le_bytes());
        bytes.extend_from_slice(&2i16.to_le_bytes());
        bytes.extend_from_slice(&3000i32.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.push(0xff); // an incomplete trailing event is ignored
        assert_eq!(events_from_bytes(&bytes), [(65_535, u32::MAX, 7), (1, 2999, 7 + u64::from(u32::MAX))]);
    }
}
