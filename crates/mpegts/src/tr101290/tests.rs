// SPDX-License-Identifier: MIT
//! Each indicator on a crafted stream, exact counts asserted.
//!
//! The stream: program 1 (PMT on PID 0x1000) with video on 0x100 and
//! audio on 0x101; every 10 ms one video and one audio packet, every
//! 100 ms a PAT and a PMT, as a head-end sends them.

use super::*;
use crate::psi::{build_pat, build_pmt};

const PMT_PID: u16 = 0x1000;
const VIDEO: u16 = 0x100;
const AUDIO: u16 = 0x101;
const MS: u64 = 1_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pat,
    Pmt,
    Video,
    Audio,
}

#[derive(Clone)]
struct Pkt {
    bytes: [u8; PACKET_LEN],
    t: u64,
    kind: Kind,
}

struct Mux {
    cc: Vec<u8>,
}

impl Mux {
    fn new() -> Self {
        Mux { cc: vec![0; 8192] }
    }

    fn packet(&mut self, pid: u16, pusi: bool, payload: &[u8]) -> [u8; PACKET_LEN] {
        let mut b = [0xffu8; PACKET_LEN];
        let cc = &mut self.cc[usize::from(pid)];
        b[0] = SYNC_BYTE;
        b[1] = (pid >> 8) as u8 | if pusi { 0x40 } else { 0 };
        b[2] = pid as u8;
        b[3] = 0x10 | *cc;
        *cc = (*cc + 1) & 15;
        b[4..4 + payload.len()].copy_from_slice(payload);
        b
    }

    fn section(&mut self, pid: u16, section: &[u8]) -> [u8; PACKET_LEN] {
        let mut p = vec![0u8];
        p.extend_from_slice(section);
        self.packet(pid, true, &p)
    }

    fn make(&mut self, kind: Kind, t: u64) -> Pkt {
        let bytes = match kind {
            Kind::Pat => self.section(PID_PAT, &build_pat(1, 0, &[(1, PMT_PID)])),
            Kind::Pmt => self.section(PMT_PID, &build_pmt(1, 0, VIDEO, &[(0x02, VIDEO), (0x03, AUDIO)])),
            Kind::Video => self.packet(VIDEO, false, &[0xaa; 184]),
            Kind::Audio => self.packet(AUDIO, false, &[0xbb; 184]),
        };
        Pkt { bytes, t, kind }
    }
}

/// The stream from 0 up to `end_ms`, leaving out what `skip` says.
fn stream(end_ms: u64, skip: impl Fn(Kind, u64) -> bool) -> Vec<Pkt> {
    let mut m = Mux::new();
    let mut v = Vec::new();
    for ms in (0..end_ms).step_by(10) {
        let mut kinds = vec![];
        if ms % 100 == 0 {
            kinds.extend([Kind::Pat, Kind::Pmt]);
        }
        kinds.extend([Kind::Video, Kind::Audio]);
        for k in kinds {
            if !skip(k, ms) {
                v.push(m.make(k, ms * MS));
            }
        }
    }
    v
}

fn feed(pkts: &[Pkt]) -> Analyzer {
    let mut a = Analyzer::new(AnalyzerConfig::default());
    for p in pkts {
        a.packet(&p.bytes, p.t);
    }
    a
}

fn index_of(v: &[Pkt], kind: Kind, nth: usize) -> usize {
    v.iter().enumerate().filter(|(_, p)| p.kind == kind).nth(nth).map(|(i, _)| i).unwrap()
}

#[test]
fn a_clean_stream_has_no_errors() {
    let v = stream(10_000, |_, _| false);
    let a = feed(&v);
    assert_eq!(a.counters(), Counters { ts_packets: v.len() as u64, ..Counters::default() });
    assert_eq!(a.cc_counters(), CcCounters::default());
    assert!(a.in_sync());
    assert_eq!((a.programs(), a.es_pids()), (1, 2));
}

#[test]
fn sync_loss_needs_two_bad_sync_bytes_after_sync_was_held() {
    let mut v = stream(2_000, |_, _| false);
    let video = |v: &[Pkt], n| index_of(v, Kind::Video, n);
    // One bad byte: an error, sync held.
    let i = video(&v, 20);
    v[i].bytes[0] = 0x46;
    // Two in a row: sync lost (1).
    let i = video(&v, 40);
    v[i].bytes[0] = 0x00;
    v[i + 1].bytes[0] = 0x00;
    // Three good, then two bad: still out of sync, no new loss.
    v[i + 5].bytes[0] = 0x00;
    v[i + 6].bytes[0] = 0x00;
    // Five good re-acquire; then two bad lose it again (2).
    v[i + 12].bytes[0] = 0x48;
    v[i + 13].bytes[0] = 0x48;
    let a = feed(&v);
    let c = a.counters();
    assert_eq!((c.sync_loss, c.sync_byte_error), (2, 7));
    assert!(a.in_sync(), "re-acquired after five good packets");
}

#[test]
fn sync_byte_errors_are_counted_per_packet() {
    let mut v = stream(3_000, |_, _| false);
    for n in 0..10 {
        let i = index_of(&v, Kind::Audio, 10 + 20 * n);
        v[i].bytes[0] = 0xb8;
    }
    let c = feed(&v).counters();
    assert_eq!((c.sync_byte_error, c.sync_loss), (10, 0));
    // The packets behind the bad sync bytes are not judged: their PIDs
    // show a gap of one (a CC error each), as a receiver sees it.
    assert_eq!(c.cc_error, 10);
}

#[test]
fn pat_error_for_a_missing_pat_a_wrong_table_and_scrambling() {
    // No PAT from 1.0 s to 2.75 s while the rest flows: 0.5 s after the
    // PAT of 0.9 s, and every 0.5 s after, is an error (1.4, 1.9, 2.4).
    let mut v = stream(4_000, |k, ms| k == Kind::Pat && (1_000..2_750).contains(&ms));
    // A section with table_id 0x02 on PID 0 (in place of one PAT).
    // (PATs 0 to 9 are those of 0.0 to 0.9 s, 10 is that of 2.8 s.)
    let i = index_of(&v, Kind::Pat, 14);
    v[i].bytes[5] = 0x02;
    // A PAT packet with scrambling_control 10.
    let i = index_of(&v, Kind::Pat, 17);
    v[i].bytes[3] |= 0x80;
    let c = feed(&v).counters();
    assert_eq!(c.pat_error, 3 + 1 + 1, "{c:?}");
    assert_eq!((c.pmt_error, c.pid_error, c.cc_error, c.crc_error), (0, 0, 0, 0), "{c:?}");
}

#[test]
fn a_pat_with_a_bad_crc_does_not_count_as_a_pat() {
    // Every PAT from 1.0 s to 1.55 s corrupted: the PAT of 0.9 s is the
    // last good one until 1.6 s, 0.7 s later: one PAT error, six CRC errors.
    let mut v = stream(3_000, |_, _| false);
    for n in 10..16 {
        let i = index_of(&v, Kind::Pat, n);
        v[i].bytes[12] ^= 0x01;
    }
    let c = feed(&v).counters();
    assert_eq!((c.pat_error, c.crc_error), (1, 6), "{c:?}");
}

#[test]
fn continuity_count_errors_loss_duplicates_and_order() {
    let mut v = stream(3_000, |_, _| false);
    // A lost video packet: 1 error, 1 lost.
    let i = index_of(&v, Kind::Video, 50);
    v.remove(i);
    // An audio packet sent twice: allowed, no error.
    let i = index_of(&v, Kind::Audio, 80);
    let dup = v[i].clone();
    v.insert(i + 1, dup);
    // A video packet three times: one error.
    let i = index_of(&v, Kind::Video, 120);
    let dup = v[i].clone();
    v.insert(i + 1, dup.clone());
    v.insert(i + 2, dup);
    // Two video packets swapped (an audio packet between them stays):
    // the first jumps (error), the second is late (error).
    let a = index_of(&v, Kind::Video, 200);
    let b = index_of(&v, Kind::Video, 201);
    let (pa, pb) = (v[a].bytes, v[b].bytes);
    v[a].bytes = pb;
    v[b].bytes = pa;
    // A discontinuity_indicator on audio allows a jump: no error.
    let i = index_of(&v, Kind::Audio, 250);
    let mut m = Mux::new();
    let mut d = m.packet(AUDIO, false, &[0xbb; 184]);
    d[3] = 0x30 | 0x7; // adaptation field and payload, CC 7
    d[4] = 1;
    d[5] = 0x80; // discontinuity_indicator
    v[i].bytes = d;
    let i = index_of(&v, Kind::Audio, 251);
    v[i].bytes[3] = 0x10 | 0x8;
    // The audio packets after it continue from 8.
    let mut next = 9u8;
    for p in v.iter_mut().filter(|p| p.kind == Kind::Audio).skip(252) {
        p.bytes[3] = 0x10 | next;
        next = (next + 1) & 15;
    }
    let a = feed(&v);
    let c = a.counters();
    assert_eq!(c.cc_error, 1 + 1 + 2, "{c:?}");
    let cc = a.cc_counters();
    assert_eq!((cc.lost, cc.duplicates, cc.reordered), (1, 3, 1), "{cc:?}");
    assert_eq!((c.pat_error, c.pmt_error, c.pid_error), (0, 0, 0));
}

#[test]
fn pmt_error_for_a_missing_pmt_and_scrambling() {
    // No PMT from 1.0 s to 2.2 s: errors at 1.4 and 1.9.
    let mut v = stream(4_000, |k, ms| k == Kind::Pmt && (1_000..2_200).contains(&ms));
    let i = index_of(&v, Kind::Pmt, 20);
    v[i].bytes[3] |= 0xc0;
    let c = feed(&v).counters();
    assert_eq!(c.pmt_error, 2 + 1, "{c:?}");
    assert_eq!((c.pat_error, c.pid_error, c.cc_error), (0, 0, 0), "{c:?}");
}

#[test]
fn pid_error_for_an_elementary_stream_absent_too_long() {
    // Audio stops at 1.0 s and comes back at 13.0 s: absent 12 s, with a
    // 5 s timeout that is two errors (at 5.99 s and 10.99 s after the last
    // audio packet at 0.99 s).
    let v = stream(15_000, |k, ms| k == Kind::Audio && (1_000..13_000).contains(&ms));
    let a = feed(&v);
    let c = a.counters();
    assert_eq!(c.pid_error, 2, "{c:?}");
    // (The crafted sender paused, so its counter continues: no CC error.)
    assert_eq!((c.cc_error, c.pat_error, c.pmt_error), (0, 0, 0), "{c:?}");
    // A 1 s timeout counts every second from 1.99 s to 12.99 s: 12.
    let mut a = Analyzer::new(AnalyzerConfig { pid_timeout_ns: 1_000 * MS });
    for p in &v {
        a.packet(&p.bytes, p.t);
    }
    assert_eq!(a.counters().pid_error, 12);
}

#[test]
fn a_pid_the_pmt_drops_is_no_longer_expected() {
    let mut m = Mux::new();
    let mut a = Analyzer::new(AnalyzerConfig { pid_timeout_ns: 1_000 * MS });
    for ms in (0..6_000u64).step_by(10) {
        let t = ms * MS;
        if ms % 100 == 0 {
            a.packet(&m.section(PID_PAT, &build_pat(1, 0, &[(1, PMT_PID)])), t);
            // From 2 s on, version 1 of the PMT names video only.
            let pmt = if ms < 2_000 {
                build_pmt(1, 0, VIDEO, &[(0x02, VIDEO), (0x03, AUDIO)])
            } else {
                build_pmt(1, 1, VIDEO, &[(0x02, VIDEO)])
            };
            a.packet(&m.section(PMT_PID, &pmt), t);
        }
        a.packet(&m.packet(VIDEO, false, &[0; 184]), t);
        if ms < 2_000 {
            a.packet(&m.packet(AUDIO, false, &[0; 184]), t);
        }
    }
    assert_eq!(a.counters().pid_error, 0);
    assert_eq!(a.es_pids(), 1);
}

#[test]
fn a_new_pat_moves_the_pmt() {
    let mut m = Mux::new();
    let mut a = Analyzer::new(AnalyzerConfig::default());
    for ms in (0..4_000u64).step_by(10) {
        let t = ms * MS;
        let pmt_pid = if ms < 1_000 { PMT_PID } else { 0x1001 };
        if ms % 100 == 0 {
            a.packet(&m.section(PID_PAT, &build_pat(1, u8::from(ms >= 1_000), &[(1, pmt_pid)])), t);
            a.packet(&m.section(pmt_pid, &build_pmt(1, 0, VIDEO, &[(0x02, VIDEO)])), t);
        }
        a.packet(&m.packet(VIDEO, false, &[0; 184]), t);
    }
    let c = a.counters();
    assert_eq!((c.pat_error, c.pmt_error, c.pid_error, c.cc_error), (0, 0, 0, 0), "{c:?}");
    assert_eq!(a.programs(), 1);
}

#[test]
fn null_packets_and_reserved_adaptation_control_are_not_judged() {
    let mut m = Mux::new();
    let mut a = Analyzer::new(AnalyzerConfig::default());
    for i in 0..100u64 {
        let mut n = m.packet(PID_NULL, false, &[]);
        n[3] = 0x10 | (i as u8 * 7) & 15; // any counter
        a.packet(&n, i * MS);
        let mut r = m.packet(VIDEO, false, &[]);
        r[3] &= 0xcf; // adaptation_field_control 00
        a.packet(&r, i * MS);
    }
    assert_eq!(a.counters().cc_error, 0);
    assert_eq!(a.counters().ts_packets, 200);
}

#[test]
fn expire_counts_whole_intervals() {
    let mut d = 500;
    assert_eq!(expire(&mut d, 500, 500), 0);
    assert_eq!(expire(&mut d, 501, 500), 1);
    assert_eq!(d, 1000);
    assert_eq!(expire(&mut d, 2_600, 500), 4);
    assert_eq!(d, 3000);
    assert_eq!(expire(&mut d, u64::MAX, 500), (u64::MAX - 3001) / 500 + 1);
}

#[test]
fn a_repeated_datagram_is_a_duplicate_not_a_jump_back() {
    let mut m = Mux::new();
    let mut a = Analyzer::new(AnalyzerConfig::default());
    let dgrams: Vec<Vec<u8>> =
        (0..40u8).map(|i| (0..7).flat_map(|_| m.packet(VIDEO, false, &[i; 184])).collect()).collect();
    for (i, d) in dgrams.iter().enumerate() {
        assert!(a.datagram(d, i as u64 * MS));
        if i == 10 {
            assert!(!a.datagram(d, i as u64 * MS), "the copy is recognised");
        }
    }
    // A copy of one sent 5 datagrams ago is recognised as well.
    assert!(!a.datagram(&dgrams[35], 41 * MS));
    // Null packets repeat themselves: never taken for copies.
    let null: Vec<u8> = (0..7).flat_map(|_| m.packet(PID_NULL, false, &[0; 184])).collect();
    assert!(a.datagram(&null, 42 * MS) && a.datagram(&null, 43 * MS));
    let (c, cc) = (a.counters(), a.cc_counters());
    assert_eq!((c.ts_packets, c.cc_error), (294, 0), "{c:?}");
    assert_eq!((cc.duplicates, cc.lost, a.duplicate_datagrams()), (14, 0, 2));
    assert_eq!(datagram_hash(&[]), datagram_hash(&[]));
    assert_ne!(datagram_hash(&dgrams[0]), datagram_hash(&dgrams[1]));
}
