// SPDX-License-Identifier: MIT
//! Hand-computed vectors for the receiver statistics.

use super::*;
use crate::header::RtpBuilder;

/// Feed sequence numbers `n` with timestamp `90 n` and arrival `n` ms: at
/// 90 kHz the arrivals match the timestamps exactly, so jitter stays 0.
/// Values above 65535 wrap as the 16-bit field does.
fn feed(s: &mut SourceStats, seqs: impl IntoIterator<Item = u32>) -> Vec<PacketClass> {
    seqs.into_iter().map(|n| s.update(n as u16, n.wrapping_mul(90), u64::from(n) * 1_000_000)).collect()
}

fn count(classes: &[PacketClass], class: PacketClass) -> usize {
    classes.iter().filter(|c| **c == class).count()
}

#[test]
fn clean_stream_counts_every_packet() {
    let mut s = SourceStats::new(1, 0, 90_000);
    let classes = feed(&mut s, 0..1000);
    // Packet 0 starts probation, packet 1 completes it (and both count).
    assert_eq!(classes[0], PacketClass::Probation);
    assert_eq!(count(&classes[1..], PacketClass::InOrder), 999);
    // A.1 as written would report 999 of 999: it drops packet 0.
    assert_eq!((s.received(), s.expected(), s.lost()), (1000, 1000, 0));
    assert_eq!((s.duplicates(), s.reordered(), s.resyncs()), (0, 0, 0));
    assert_eq!(s.extended_highest_seq(), 999);
    assert_eq!(s.jitter_units(), 0);
    assert!(!s.in_probation());
}

#[test]
fn probation_restarts_on_a_non_sequential_packet() {
    let mut s = SourceStats::new(1, 10, 90_000);
    assert_eq!(s.update(10, 0, 0), PacketClass::Probation);
    assert!(s.in_probation());
    assert_eq!((s.received(), s.expected(), s.lost()), (0, 0, 0));
    // 50 is not 11: the run restarts at 50, and 10 never counts.
    assert_eq!(s.update(50, 0, 0), PacketClass::Probation);
    assert!(s.in_probation());
    assert_eq!(feed(&mut s, [51, 52]), [PacketClass::InOrder, PacketClass::InOrder]);
    assert!(!s.in_probation());
    assert_eq!((s.received(), s.expected(), s.lost(), s.extended_highest_seq()), (3, 3, 0, 52));
}

#[test]
fn probation_straddling_the_wrap() {
    let mut s = SourceStats::new(1, 65_535, 8_000);
    feed(&mut s, [65_535, 0, 1]);
    // 65535 is the base, in cycle "-1" internally; 0 and 1 are cycle 0.
    assert_eq!((s.received(), s.expected(), s.lost(), s.extended_highest_seq()), (3, 3, 0, 1));
}

#[test]
fn exactly_the_dropped_packets_are_lost() {
    let dropped = [5u32, 6, 100, 101, 102, 500, 998];
    let mut s = SourceStats::new(1, 0, 90_000);
    let classes = feed(&mut s, (0..1000).filter(|n| !dropped.contains(n)));
    assert_eq!(count(&classes, PacketClass::InOrder), 992); // 993 minus probation's first
    assert_eq!((s.received(), s.expected(), s.lost()), (993, 1000, 7));
    assert_eq!((s.duplicates(), s.reordered()), (0, 0));
}

#[test]
fn duplicates_are_counted_and_do_not_hide_loss() {
    let mut s = SourceStats::new(1, 0, 90_000);
    let mut seqs: Vec<u32> = (0..100).collect();
    // Repeat 10 right away, 20 three packets later, and 30 after 31.
    seqs.insert(11, 10);
    seqs.insert(24, 20);
    seqs.insert(34, 30);
    assert_eq!(seqs[30..36], [28, 29, 30, 31, 30, 32]);
    let classes = feed(&mut s, seqs);
    assert_eq!(count(&classes, PacketClass::Duplicate), 3);
    assert_eq!((s.received(), s.duplicates(), s.lost(), s.reordered()), (103, 3, 0, 0));

    // Three losses (5, 6, 7) and three duplicates: lost says 3. The RFC's
    // expected - received would say 10 - 10 = 0.
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, [0, 1, 2, 2, 3, 3, 4, 4, 8, 9]);
    assert_eq!((s.received(), s.expected(), s.duplicates(), s.lost()), (10, 10, 3, 3));
}

#[test]
fn a_late_packet_repeated_is_reordered_then_duplicate() {
    let mut s = SourceStats::new(1, 0, 90_000);
    let classes = feed(&mut s, [0, 1, 3, 2, 2, 4]);
    assert_eq!(classes[3..], [PacketClass::Reordered, PacketClass::Duplicate, PacketClass::InOrder]);
    assert_eq!((s.received(), s.reordered(), s.duplicates(), s.lost()), (6, 1, 1, 0));
}

#[test]
fn duplicate_window_forgets_numbers_it_moved_past() {
    // 1050 shares its window slot with 26 (1050 - DUP_WINDOW). When it
    // arrives late it must not look like a repeat of 26.
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, (0..1060).filter(|n| *n != 1050));
    assert_eq!(s.update(1050, 0, 0), PacketClass::Reordered);
    assert_eq!(s.update(1050, 0, 0), PacketClass::Duplicate);
    // The same after a gap (up to MAX_DROPOUT) that jumps over many slots.
    feed(&mut s, [1060, 3000]);
    assert_eq!(s.update(2990, 0, 0), PacketClass::Reordered);
    // Distinct: 0..=1060, 2990 and 3000 = 1063 of 3001 expected.
    assert_eq!((s.received(), s.duplicates(), s.reordered(), s.lost()), (1064, 1, 2, 3001 - 1063));
}

#[test]
fn swapped_neighbours_are_reordered_not_lost() {
    let mut s = SourceStats::new(1, 0, 90_000);
    let mut seqs: Vec<u32> = (0..200).collect();
    for at in [10usize, 40, 80, 120, 160] {
        seqs.swap(at, at + 1);
    }
    assert_eq!(seqs[9..13], [9, 11, 10, 12]);
    for (i, &n) in seqs.iter().enumerate() {
        s.update(n as u16, n * 90, i as u64 * 1_000_000);
        if i == 10 {
            // 11 arrived, 10 not yet: counted lost until it shows up.
            assert_eq!(s.lost(), 1);
        }
    }
    assert_eq!((s.received(), s.reordered(), s.lost(), s.duplicates()), (200, 5, 0, 0));
}

#[test]
fn misorder_and_dropout_limits() {
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, (0..500).filter(|n| *n != 400));
    assert_eq!((s.received(), s.lost()), (499, 1));
    // 99 behind the highest (499) is late; 100 behind is a jump (A.1:
    // udelta = 65436 = RTP_SEQ_MOD - MAX_MISORDER), even for a repeat.
    assert_eq!(s.update(400, 0, 0), PacketClass::Reordered);
    assert_eq!(s.update(399, 0, 0), PacketClass::BadSequence);
    assert_eq!((s.received(), s.duplicates(), s.lost()), (500, 0, 0));
    // 2999 ahead is in order with 2998 lost; 3000 ahead is a jump.
    assert_eq!(s.update(499 + 2999, 0, 0), PacketClass::InOrder);
    assert_eq!((s.received(), s.expected(), s.lost()), (501, 3499, 2998));
    assert_eq!(s.update(3498 + 3000, 0, 0), PacketClass::BadSequence);
    assert_eq!((s.received(), s.expected()), (501, 3499));
}

#[test]
fn sequence_wrap_extends_the_sequence_number() {
    let mut s = SourceStats::new(1, 65_530, 90_000);
    let classes = feed(&mut s, 65_530..65_540); // 65530..=65535, then 0..=3
    assert_eq!(count(&classes, PacketClass::InOrder), 9);
    assert_eq!(s.extended_highest_seq(), 65_536 + 3);
    assert_eq!((s.received(), s.expected(), s.lost()), (10, 10, 0));

    // Swapped across the wrap: 65535 arrives after 0.
    let mut s = SourceStats::new(1, 65_533, 90_000);
    let classes = feed(&mut s, [65_533, 65_534, 65_536, 65_535, 65_537]);
    assert_eq!(classes[3], PacketClass::Reordered);
    assert_eq!((s.reordered(), s.lost(), s.extended_highest_seq()), (1, 0, 65_536 + 1));

    // A repeat of the packet before the wrap is still a duplicate.
    assert_eq!(s.update(65_535, 0, 0), PacketClass::Duplicate);
    assert_eq!((s.duplicates(), s.lost()), (1, 0));
}

#[test]
fn late_packet_before_the_first_moves_the_base_back() {
    let mut s = SourceStats::new(1, 10, 90_000);
    feed(&mut s, [10, 11, 12]);
    assert_eq!(s.update(9, 0, 0), PacketClass::Reordered);
    // A.1 would say received 4, expected 3, lost -1.
    assert_eq!((s.received(), s.expected(), s.lost()), (4, 4, 0));
    // Two further back: 7 arrives, 8 never does.
    assert_eq!(s.update(7, 0, 0), PacketClass::Reordered);
    assert_eq!((s.received(), s.expected(), s.lost()), (5, 6, 1));
    assert_eq!(s.update(7, 0, 0), PacketClass::Duplicate);
    assert_eq!((s.received(), s.duplicates(), s.lost()), (6, 1, 1));
}

#[test]
fn large_jump_resynchronises_after_two_sequential_packets() {
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, 0..50);
    // The sender restarts at 30000, more than MAX_DROPOUT ahead, with a new
    // timestamp base; arrivals keep the 1 ms spacing.
    assert_eq!(s.update(30_000, 7_000_000, 50_000_000), PacketClass::BadSequence);
    assert_eq!((s.received(), s.expected()), (50, 50), "a lone jump does not count");
    assert_eq!(s.update(30_001, 7_000_090, 51_000_000), PacketClass::Resync);
    assert_eq!(s.resyncs(), 1);
    assert_eq!((s.received(), s.expected(), s.lost(), s.extended_highest_seq()), (2, 2, 0, 30_001));
    for k in 2..10u32 {
        assert_eq!(
            s.update(30_000 + k as u16, 7_000_000 + 90 * k, 50_000_000 + u64::from(k) * 1_000_000),
            PacketClass::InOrder
        );
    }
    assert_eq!((s.received(), s.lost(), s.extended_highest_seq()), (10, 0, 30_009));
    // The new timestamp base did not register as jitter.
    assert_eq!(s.jitter_units(), 0);
    // A single stray far-away packet is dropped, not a resync.
    assert_eq!(s.update(5, 0, 0), PacketClass::BadSequence);
    assert_eq!(s.update(30_010, 7_000_900, 60_000_000), PacketClass::InOrder);
    assert_eq!((s.resyncs(), s.received(), s.lost()), (1, 11, 0));
}

#[test]
fn jitter_zero_for_perfect_spacing() {
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, 0..500);
    assert_eq!(s.jitter_units(), 0);
    assert_eq!(s.jitter_ms(), 0.0);

    // Also across the 32-bit timestamp wrap and with arrival times whose
    // conversion needs more than 64 bits (2^62 ns * 90000).
    let mut s = SourceStats::new(1, 0, 90_000);
    let ts0 = u32::MAX - 5 * 1800;
    for i in 0..20u32 {
        s.update(i as u16, ts0.wrapping_add(i * 1800), (1 << 62) + u64::from(i) * 20_000_000);
    }
    assert_eq!(s.jitter_units(), 0);
}

#[test]
fn jitter_alternating_one_ms_early_and_late() {
    // 90 kHz, 20 ms packets (1800 ticks), sent at 10 ms + 20 ms * i and
    // arriving 1 ms (90 ticks) late for even i and 1 ms early for odd i.
    // Transit alternates 900 + 90 and 900 - 90, so |D| = 180 from the
    // second packet on. With J16 the jitter scaled by 16 and
    // J16 += |D| - ((J16 + 8) >> 4):
    //   packet 1: 0   + 180 - (8   >> 4 =  0) = 180
    //   packet 2: 180 + 180 - (188 >> 4 = 11) = 349
    //   packet 3: 349 + 180 - (357 >> 4 = 22) = 507
    //   packet 4: 507 + 180 - (515 >> 4 = 32) = 655
    // It rises until (J16 + 8) >> 4 == 180, first true at J16 = 2872, and
    // then stays: the increment just below is exactly 1, so it cannot
    // overshoot. 2872 / 16 = 179.5 ticks: the integer form settles half a
    // tick under the 180 (2 ms) that the floating-point form tends to.
    let mut s = SourceStats::new(1, 0, 90_000);
    let arrival = |i: u64| 10_000_000 + 20_000_000 * i + 1_000_000 - 2_000_000 * (i % 2);
    let feed_one = |s: &mut SourceStats, i: u64| s.update(i as u16, (i * 1800) as u32, arrival(i));
    feed_one(&mut s, 0);
    assert_eq!(s.jitter_ms(), 0.0);
    let ms = |j16: f64| j16 / 16.0 / 90.0;
    for (i, j16) in [(1, 180.0), (2, 349.0), (3, 507.0), (4, 655.0)] {
        feed_one(&mut s, i);
        assert!((s.jitter_ms() - ms(j16)).abs() < 1e-12, "packet {i}: {} ms", s.jitter_ms());
        assert_eq!(s.jitter_units(), j16 as u32 >> 4);
    }
    for i in 5..400 {
        feed_one(&mut s, i);
    }
    assert_eq!(s.jitter_units(), 179);
    assert!((s.jitter_ms() - ms(2872.0)).abs() < 1e-12, "{} ms", s.jitter_ms());
}

#[test]
fn duplicates_do_not_feed_jitter_but_late_packets_do() {
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, 0..10);
    // A repeat of 9 arriving 50 ms late says nothing about the path.
    assert_eq!(s.update(9, 9 * 90, 59_000_000), PacketClass::Duplicate);
    assert_eq!(s.jitter_units(), 0);
    // Skip 10; 11 on time; then 10 arrives 2 ms late (transit +180 ticks).
    feed(&mut s, [11]);
    assert_eq!(s.update(10, 10 * 90, 12_000_000), PacketClass::Reordered);
    // J16 = 0 + 180 - 0 = 180.
    assert!((s.jitter_ms() - 180.0 / 16.0 / 90.0).abs() < 1e-12);
}

#[test]
fn interval_report_fraction_lost() {
    let mut s = SourceStats::new(1, 0, 8_000);
    feed(&mut s, [0, 1, 2, 3]);
    assert_eq!(s.interval_report(), IntervalReport { expected: 4, received: 4, lost: 0, fraction_lost: 0 });
    // 4..=7 expected, 6 lost: 1 of 4 is 64/256.
    feed(&mut s, [4, 5, 7]);
    assert_eq!(s.interval_report(), IntervalReport { expected: 4, received: 3, lost: 1, fraction_lost: 64 });
    // Nothing new.
    assert_eq!(s.interval_report(), IntervalReport { expected: 0, received: 0, lost: 0, fraction_lost: 0 });
    // 6 turns up late: this interval received more than it expected.
    feed(&mut s, [6]);
    assert_eq!(s.interval_report(), IntervalReport { expected: 0, received: 1, lost: -1, fraction_lost: 0 });
    // 8..=15 without 9, 11, 13: (3 << 8) / 8 = 96. Duplicates do not count
    // as received.
    feed(&mut s, [8, 10, 10, 12, 14, 15]);
    assert_eq!(s.interval_report(), IntervalReport { expected: 8, received: 5, lost: 3, fraction_lost: 96 });
    assert_eq!((s.expected(), s.lost()), (16, 3));
}

#[test]
fn cumulative_lost_is_clamped_for_rtcp() {
    // Jumps of 2999 (just under MAX_DROPOUT) lose 2998 packets each and
    // wrap the 16-bit number many times.
    let mut s = SourceStats::new(1, 0, 90_000);
    feed(&mut s, [0, 1]);
    for k in 1..=2800u32 {
        assert_eq!(s.update((1 + 2999 * k) as u16, 0, 0), PacketClass::InOrder);
    }
    // Highest 1 + 2999 * 2800 = 8_397_201; expected 8_397_202; 2802 received.
    assert_eq!(s.extended_highest_seq(), 8_397_201);
    assert_eq!(s.lost(), 8_394_400);
    assert_eq!(s.cumulative_lost_rtcp(), 0x7f_ffff);
    let mut small = SourceStats::new(1, 0, 90_000);
    feed(&mut small, [0, 1, 5]);
    assert_eq!(small.cumulative_lost_rtcp(), 3);
}

#[test]
fn zero_clock_rate_does_not_divide_by_zero() {
    let mut s = SourceStats::new(1, 0, 0);
    s.update(0, 0, 0);
    s.update(1, 0, 3_000_000_000); // 3 s later at a 1 Hz clock: |D| = 3
    assert_eq!(s.clock_rate(), 1);
    assert_eq!(s.jitter_ms(), 3.0 * 1000.0 / 16.0);
}

fn packet(ssrc: u32, seq: u16) -> Vec<u8> {
    RtpBuilder::new(33, seq, u32::from(seq) * 90, ssrc).to_vec(b"x")
}

fn update(st: &mut StreamStats, ssrc: u32, seq: u16) -> PacketClass {
    let bytes = packet(ssrc, seq);
    let p = RtpPacket::parse(&bytes).unwrap();
    st.update(&p, u64::from(seq) * 1_000_000)
}

#[test]
fn stream_tracks_an_ssrc_change() {
    let mut st = StreamStats::new(90_000, 4);
    assert!(st.current().is_none());
    assert_eq!(update(&mut st, 0xa, 0), PacketClass::Probation);
    for seq in 1..10 {
        update(&mut st, 0xa, seq);
    }
    // The head-end restarts with a new SSRC and sequence.
    assert_eq!(update(&mut st, 0xb, 500), PacketClass::Probation);
    for seq in 501..520 {
        update(&mut st, 0xb, seq);
    }
    assert_eq!(st.ssrc_changes(), 1);
    assert_eq!(st.sources().count(), 2);
    assert_eq!(st.current().map(|s| s.ssrc()), Some(0xb));
    let a = st.source(0xa).unwrap();
    let b = st.source(0xb).unwrap();
    assert_eq!((a.received(), a.lost(), a.extended_highest_seq()), (10, 0, 9));
    assert_eq!((b.received(), b.lost(), b.extended_highest_seq()), (20, 0, 519));
    // A late packet of the old source counts to it, and back again.
    assert_eq!(update(&mut st, 0xa, 10), PacketClass::InOrder);
    update(&mut st, 0xb, 520);
    assert_eq!(st.ssrc_changes(), 3);
    assert_eq!(st.source(0xa).map(|s| s.received()), Some(11));
}

#[test]
fn stream_evicts_the_least_recently_heard_source() {
    let mut st = StreamStats::new(90_000, 2);
    update(&mut st, 0xa, 0);
    update(&mut st, 0xb, 0);
    update(&mut st, 0xa, 1); // 0xa is now the more recent
    update(&mut st, 0xc, 0); // evicts 0xb
    let mut ssrcs: Vec<u32> = st.sources().map(|s| s.ssrc()).collect();
    ssrcs.sort();
    assert_eq!(ssrcs, [0xa, 0xc]);
    assert_eq!(st.source(0xa).map(|s| s.received()), Some(2));
    // 0xb comes back: a fresh source, in probation again.
    assert_eq!(update(&mut st, 0xb, 1), PacketClass::Probation);
    assert!(st.source(0xa).is_none());
    assert_eq!(st.ssrc_changes(), 4);
    // max_sources 0 still tracks one.
    let mut one = StreamStats::new(90_000, 0);
    update(&mut one, 0xa, 0);
    update(&mut one, 0xb, 0);
    assert_eq!(one.sources().map(|s| s.ssrc()).collect::<Vec<_>>(), [0xb]);
}

#[test]
fn arrival_units_without_u128_is_exact() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let rates = [1u32, 8000, 48_000, 90_000, 1_000_000_000, u32::MAX];
    for i in 0..20_000u64 {
        let ns = match i % 4 {
            0 => next(),
            1 => next() % 4_000_000_000_000,
            2 => u64::MAX - next() % 1000,
            _ => i,
        };
        for &rate in &rates {
            let want = (u128::from(ns) * u128::from(rate) / 1_000_000_000) as u32;
            assert_eq!(crate::seqstats::arrival_units(ns, rate), want, "ns {ns} rate {rate}");
        }
    }
}
