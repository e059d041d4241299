// SPDX-License-Identifier: MIT
//! Hand-computed vectors for the receiver statistics.

use super::*;
use crate::header::RtpBuilder;

/// Feed sequence numbers with timestamps 90 per step and arrivals exactly
/// 1 ms per step (so jitter stays 0 at 90 kHz).
fn feed(s: &mut SourceStats, seqs: impl IntoIterator<Item = u32>) -> Vec<PacketClass> {
    seqs.into_iter().map(|n| s.update(n as u16, n.wrapping_mul(90), n as u64 * 1_000_000)).collect()
}

#[test]
fn clean_stream_counts_every_packet() {
    let mut s = SourceStats::new(1, 0, 90_000);
    let classes = feed(&mut s, 0..1000);
    assert_eq!(classes[0], PacketClass::Probation);
    assert!(classes[1..].iter().all(|c| *c == PacketClass::InOrder));
    assert_eq!((s.received(), s.expected(), s.lost()), (1000, 1000, 0));
    assert_eq!((s.duplicates(), s.reordered()), (0, 0));
    assert_eq!(s.extended_highest_seq(), 999);
    assert_eq!(s.jitter_units(), 0);
}

#[test]
fn exactly_the_dropped_packets_are_lost() {
    let dropped = [5u32, 6, 100, 101, 102, 500, 998];
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, (0..1000).filter(|n| !dropped.contains(n)));
    assert_eq!(s.lost(), 7);
    assert_eq!(s.received(), 993);
    assert_eq!((s.duplicates(), s.reordered()), (0, 0));
}

#[test]
fn duplicates_are_counted_and_do_not_hide_loss() {
    let mut s = SourceStats::new(1, 0, 90_000);
    let mut seqs: Vec<u32> = (0..100).collect();
    // Duplicate 10 (immediately), 20 (three later) and 30 (after 31).
    seqs.insert(11, 10);
    seqs.insert(24, 20);
    let at = seqs.iter().position(|&n| n == 31).unwrap();
    seqs.insert(at + 1, 30);
    let classes = feed(&mut s, seqs);
    assert_eq!(classes.iter().filter(|c| **c == PacketClass::Duplicate).count(), 3);
    assert_eq!((s.duplicates(), s.lost(), s.reordered()), (3, 0, 0));
    // Now three losses as well: lost must say 3, not 0.
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, [0, 1, 2, 2, 3, 3, 4, 4, 8, 9]);
    assert_eq!((s.duplicates(), s.lost()), (3, 3));
}

#[test]
fn swapped_neighbours_are_reordered_not_lost() {
    let mut s = SourceStats::new(1, 0, 90_000);
    let mut seqs: Vec<u32> = (0..200).collect();
    for pair in [10usize, 40, 80, 120, 160] {
        seqs.swap(pair, pair + 1);
    }
    let classes = feed(&mut s, seqs);
    assert_eq!(classes.iter().filter(|c| **c == PacketClass::Reordered).count(), 5);
    assert_eq!((s.reordered(), s.lost(), s.duplicates()), (5, 0, 0));
    assert_eq!(s.received(), 200);
}

#[test]
fn sequence_wrap_extends_the_sequence_number() {
    let mut s = SourceStats::new(1, 65_530, 90_000);
    feed(&mut s, 65_530..65_540); // 65530..=65535 then 0..=3
    assert_eq!(s.extended_highest_seq(), 65_536 + 3);
    assert_eq!((s.received(), s.expected(), s.lost()), (10, 10, 0));
    // A late packet from before the wrap is reordered, not a jump.
    let mut s = SourceStats::new(1, 65_534, 90_000);
    feed(&mut s, [65_534, 65_535, 1, 0, 2]);
    assert_eq!((s.reordered(), s.lost(), s.extended_highest_seq()), (1, 0, 65_536 + 2));
}

#[test]
fn probation_straddling_the_wrap() {
    let mut s = SourceStats::new(1, 65_535, 8_000);
    feed(&mut s, [65_535, 0, 1]);
    assert_eq!((s.received(), s.expected(), s.lost()), (3, 3, 0));
}

#[test]
fn large_jump_resynchronises_after_two_sequential_packets() {
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, 0..50);
    // The sender restarts at 30000: more than MAX_DROPOUT ahead.
    assert_eq!(s.update(30_000, 0, 0), PacketClass::BadSequence);
    assert_eq!(s.received(), 50, "a lone jump does not count");
    assert_eq!(s.update(30_001, 90, 1_000_000), PacketClass::Resync);
    assert_eq!(s.resyncs(), 1);
    assert_eq!((s.received(), s.expected(), s.lost()), (2, 2, 0));
    feed(&mut s, 30_002..30_010);
    assert_eq!((s.received(), s.lost(), s.extended_highest_seq()), (10, 0, 30_009));
    // A single stray far-away packet is dropped, not a resync.
    assert_eq!(s.update(5, 0, 0), PacketClass::BadSequence);
    assert_eq!(s.update(30_010, 0, 0), PacketClass::InOrder);
    assert_eq!(s.resyncs(), 1);
}

#[test]
fn jitter_zero_for_perfect_spacing() {
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, 0..500);
    assert_eq!(s.jitter_units(), 0);
    assert_eq!(s.jitter_ms(), 0.0);
}

#[test]
fn jitter_first_steps_by_hand() {
    // 90 kHz, 20 ms packets (1800 ticks). Arrivals alternate 1 ms late and
    // on time: transit differences are +90, -90, +90 ticks.
    // J16 starts 0. Step 1: d=90: J16 = 0 + 90 - ((0+8)>>4) = 90.
    // Step 2: d=90: J16 = 90 + 90 - ((90+8)>>4 = 6) = 174.
    // Step 3: d=90: J16 = 174 + 90 - ((174+8)>>4 = 11) = 253.
    let mut s = SourceStats::new(1, 0, 90_000);
    let arrival = |i: u64| i * 20_000_000 + if i % 2 == 1 { 1_000_000 } else { 0 };
    s.update(0, 0, arrival(0));
    s.update(1, 1800, arrival(1));
    assert_eq!(s.jitter_units(), 90 >> 4);
    s.update(2, 3600, arrival(2));
    assert_eq!(s.jitter_units(), 174 >> 4);
    s.update(3, 5400, arrival(3));
    assert_eq!(s.jitter_units(), 253 >> 4);
    assert!((s.jitter_ms() - 253.0 / 16.0 / 90.0).abs() < 1e-9);
    // Converges to 90 ticks = 1 ms.
    for i in 4..400u64 {
        s.update(i as u16, (i * 1800) as u32, arrival(i));
    }
    assert!((s.jitter_ms() - 1.0).abs() < 0.02, "{}", s.jitter_ms());
}

#[test]
fn interval_report_fraction_lost() {
    let mut s = SourceStats::new(1, 0, 8_000);
    feed(&mut s, [0, 1, 2, 3]);
    let r = s.interval_report();
    assert_eq!((r.expected, r.received, r.lost, r.fraction_lost), (4, 4, 0, 0));
    feed(&mut s, [4, 5, 7]); // 6 lost: 1 of 4 expected (4..=7)
    let r = s.interval_report();
    assert_eq!((r.expected, r.received, r.lost, r.fraction_lost), (4, 3, 1, 64));
    let r = s.interval_report();
    assert_eq!((r.expected, r.received, r.fraction_lost), (0, 0, 0));
}

#[test]
fn stream_tracks_ssrc_changes_and_bounds_sources() {
    let mut st = StreamStats::new(90_000, 2);
    let pkt = |ssrc: u32, seq: u16| RtpBuilder::new(33, seq, seq as u32 * 90, ssrc).to_vec(b"x");
    for seq in 0..10 {
        st.update(&RtpPacket::parse(&pkt(0xa, seq)).unwrap(), seq as u64 * 1_000_000);
    }
    for seq in 500..520 {
        st.update(&RtpPacket::parse(&pkt(0xb, seq)).unwrap(), seq as u64 * 1_000_000);
    }
    assert_eq!(st.ssrc_changes(), 1);
    assert_eq!(st.current().map(|s| s.ssrc()), Some(0xb));
    let a = st.sources().find(|s| s.ssrc() == 0xa).unwrap();
    let b = st.sources().find(|s| s.ssrc() == 0xb).unwrap();
    assert_eq!((a.received(), a.lost()), (10, 0));
    assert_eq!((b.received(), b.lost()), (20, 0));
    // A third source evicts the least recently heard (0xa).
    st.update(&RtpPacket::parse(&pkt(0xc, 0)).unwrap(), 0);
    assert_eq!(st.ssrc_changes(), 2);
    let mut ssrcs: Vec<u32> = st.sources().map(|s| s.ssrc()).collect();
    ssrcs.sort();
    assert_eq!(ssrcs, [0xb, 0xc]);
}
