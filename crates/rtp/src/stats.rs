// SPDX-License-Identifier: MIT
//! Receiver statistics per RTP source: RFC 3550 appendix A.1 (sequence
//! validity, wrap, probation, resynchronisation), A.3 (expected, lost,
//! fraction lost per interval) and A.8 (interarrival jitter), plus duplicate
//! and reordering detection, which A.1 does not do.
//!
//! Definitions used throughout:
//! * `received` counts every packet accepted as belonging to the source,
//!   duplicates included (as A.1's `received` does);
//! * `duplicates` counts packets whose extended sequence number was already
//!   seen within the last [`DUP_WINDOW`] numbers;
//! * `reordered` counts packets that arrive after a higher sequence number
//!   and are not duplicates (late packets);
//! * `lost = expected - (received - duplicates)`. The RFC's formula is
//!   `expected - received`, which lets every duplicate hide one loss; we
//!   subtract duplicates so a stream with 3 losses and 3 duplicates reports 3
//!   lost, not 0. It can still go negative only for packets older than the
//!   duplicate window that arrive twice.
//!
//! One deviation from A.1 on purpose: A.1 does not count the packets that
//! make up the probation run (a source is valid after MIN_SEQUENTIAL
//! in-order packets, and counting restarts at the last one). We count them,
//! so a clean stream of N packets reports `received == expected == N`.
//! Likewise the two packets that resynchronise a source after a large jump
//! both count.

use crate::header::RtpPacket;

pub const MAX_DROPOUT: u16 = 3000;
pub const MAX_MISORDER: u16 = 100;
pub const MIN_SEQUENTIAL: u16 = 2;
const RTP_SEQ_MOD: u64 = 1 << 16;
/// Extended sequence numbers carry this bias internally so that the base of
/// a probation run that straddles the 16-bit wrap is never negative.
const BIAS: u64 = RTP_SEQ_MOD;
/// How many recent sequence numbers duplicate detection remembers.
pub const DUP_WINDOW: u64 = 1024;

/// How one packet was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    /// Next in sequence, or ahead with a gap (loss) within MAX_DROPOUT.
    InOrder,
    /// Late: a higher sequence number was seen before it.
    Reordered,
    /// Its sequence number was seen already.
    Duplicate,
    /// The source is still in probation; the packet does not count (yet).
    Probation,
    /// Second packet after a large jump: the source restarted here.
    Resync,
    /// A large jump; not counted unless the next packet confirms it.
    BadSequence,
}

/// A.3 figures for the interval since the previous report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalReport {
    pub expected: u64,
    pub received: u64,
    pub lost: i64,
    /// Fraction lost, 8-bit fixed point (256 = all).
    pub fraction_lost: u8,
}

/// Statistics of one synchronisation source.
#[derive(Debug, Clone)]
pub struct SourceStats {
    ssrc: u32,
    clock_rate: u32,
    probation: u16,
    max_seq: u16,
    /// Count of wraps, in units of 2^16 (A.1 `cycles`).
    cycles: u64,
    /// Biased extended sequence number of the first counted packet.
    base_ext: u64,
    /// A.1 `bad_seq`: the sequence number that would confirm a jump.
    bad_seq: u32,
    received: u64,
    duplicates: u64,
    reordered: u64,
    resyncs: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Bit per extended sequence number, indexed modulo DUP_WINDOW.
    seen: [u64; (DUP_WINDOW / 64) as usize],
    /// A.8: previous transit time, and jitter scaled by 16.
    transit: Option<u32>,
    jitter_x16: u32,
    /// Probation run so far (to count it once the source is valid).
    run: u16,
}

impl SourceStats {
    /// A new source whose first packet has sequence `first_seq`; feed that
    /// packet to [`SourceStats::update`] as well.
    pub fn new(ssrc: u32, first_seq: u16, clock_rate: u32) -> Self {
        let mut s = SourceStats {
            ssrc,
            clock_rate: clock_rate.max(1),
            probation: MIN_SEQUENTIAL,
            max_seq: first_seq.wrapping_sub(1),
            cycles: 0,
            base_ext: 0,
            bad_seq: RTP_SEQ_MOD as u32 + 1,
            received: 0,
            duplicates: 0,
            reordered: 0,
            resyncs: 0,
            expected_prior: 0,
            received_prior: 0,
            seen: [0; (DUP_WINDOW / 64) as usize],
            transit: None,
            jitter_x16: 0,
            run: 0,
        };
        s.base_ext = s.ext_max();
        s
    }

    fn ext_max(&self) -> u64 {
        BIAS + self.cycles + self.max_seq as u64
    }

    fn bit(ext: u64) -> (usize, u64) {
        let i = ext % DUP_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// A.1 `init_seq` for a source that becomes valid at `seq`, with the
    /// `counted` packets before and including it counting as received.
    fn init_seq(&mut self, seq: u16, counted: u16) {
        self.max_seq = seq;
        self.cycles = 0;
        self.bad_seq = RTP_SEQ_MOD as u32 + 1;
        self.base_ext = self.ext_max() + 1 - counted as u64;
        self.received = counted as u64;
        self.duplicates = 0;
        self.reordered = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.seen = [0; (DUP_WINDOW / 64) as usize];
        for k in 0..counted as u64 {
            let (w, b) = Self::bit(self.ext_max() - k);
            self.seen[w] |= b;
        }
    }

    /// Advance the highest sequence number to `ext`, forgetting the window
    /// positions it passes.
    fn advance_window(&mut self, old_max: u64, new_max: u64) {
        let steps = (new_max - old_max).min(DUP_WINDOW);
        for k in 1..=steps {
            let (w, b) = Self::bit(new_max - steps + k);
            self.seen[w] &= !b;
        }
    }

    /// Feed one packet. `arrival_ns` is its arrival time in nanoseconds on
    /// any clock that does not jump (only differences matter).
    pub fn update(&mut self, seq: u16, rtp_timestamp: u32, arrival_ns: u64) -> PacketClass {
        let class = self.update_seq(seq);
        // Every packet from the source but repeats and stray jumps feeds the
        // jitter estimate, probation included, as A.8 computes it per packet.
        if !matches!(class, PacketClass::Duplicate | PacketClass::BadSequence) {
            self.update_jitter(rtp_timestamp, arrival_ns);
        }
        class
    }

    fn update_seq(&mut self, seq: u16) -> PacketClass {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                self.run += 1;
                if self.probation == 0 {
                    let run = self.run;
                    self.init_seq(seq, run);
                    return PacketClass::InOrder;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
                self.run = 1;
            }
            return PacketClass::Probation;
        }
        let old_max = self.ext_max();
        if udelta < MAX_DROPOUT {
            if udelta == 0 {
                self.received += 1;
                self.duplicates += 1;
                return PacketClass::Duplicate;
            }
            if seq < self.max_seq {
                self.cycles += RTP_SEQ_MOD; // wrapped
            }
            self.max_seq = seq;
            let new_max = self.ext_max();
            self.advance_window(old_max, new_max);
            let (w, b) = Self::bit(new_max);
            self.seen[w] |= b;
            self.received += 1;
            PacketClass::InOrder
        } else if udelta as u64 <= RTP_SEQ_MOD - MAX_MISORDER as u64 {
            // A very large jump. Two sequential packets after it mean the
            // sender restarted: resynchronise there.
            if seq as u32 == self.bad_seq {
                self.init_seq(seq, 2);
                self.resyncs += 1;
                PacketClass::Resync
            } else {
                self.bad_seq = (seq as u32 + 1) & (RTP_SEQ_MOD as u32 - 1);
                PacketClass::BadSequence
            }
        } else {
            // Behind the highest by at most MAX_MISORDER: late or repeated.
            let behind = self.max_seq.wrapping_sub(seq) as u64;
            self.received += 1;
            let ext = old_max.checked_sub(behind).filter(|e| *e >= self.base_ext);
            match ext {
                Some(e) if old_max - e < DUP_WINDOW => {
                    let (w, b) = Self::bit(e);
                    if self.seen[w] & b != 0 {
                        self.duplicates += 1;
                        return PacketClass::Duplicate;
                    }
                    self.seen[w] |= b;
                    self.reordered += 1;
                    PacketClass::Reordered
                }
                _ => {
                    // Older than the source's first packet or the window:
                    // late, and we cannot tell a repeat; count as late.
                    self.reordered += 1;
                    PacketClass::Reordered
                }
            }
        }
    }

    /// A.8 in the integer form: J += |D| - J/16, kept scaled by 16.
    fn update_jitter(&mut self, rtp_timestamp: u32, arrival_ns: u64) {
        let arrival_units = (arrival_ns as u128 * self.clock_rate as u128 / 1_000_000_000) as u32;
        let transit = arrival_units.wrapping_sub(rtp_timestamp);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            // Same arithmetic as A.8: jitter += d - ((jitter + 8) >> 4).
            self.jitter_x16 = self.jitter_x16.wrapping_add(d).wrapping_sub((self.jitter_x16 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }
    pub fn in_probation(&self) -> bool {
        self.probation > 0
    }
    pub fn received(&self) -> u64 {
        self.received
    }
    /// A.1 extended highest sequence number: cycles + max_seq, as RTCP
    /// receiver reports carry it.
    pub fn extended_highest_seq(&self) -> u32 {
        (self.cycles + self.max_seq as u64) as u32
    }
    /// A.3: extended highest - base + 1; 0 while in probation.
    pub fn expected(&self) -> u64 {
        if self.in_probation() {
            return 0;
        }
        self.ext_max() + 1 - self.base_ext
    }
    /// Cumulative packets lost (see the module documentation).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - (self.received - self.duplicates) as i64
    }
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
    pub fn reordered(&self) -> u64 {
        self.reordered
    }
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }
    /// Interarrival jitter in timestamp units (A.8's `jitter >> 4`).
    pub fn jitter_units(&self) -> u32 {
        self.jitter_x16 >> 4
    }
    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_x16 as f64 / 16.0 / self.clock_rate as f64 * 1000.0
    }
    /// A.3 interval figures since the previous call.
    pub fn interval_report(&mut self) -> IntervalReport {
        let expected = self.expected();
        let received = self.received - self.duplicates;
        let expected_interval = expected - self.expected_prior.min(expected);
        let received_interval = received - self.received_prior.min(received);
        self.expected_prior = expected;
        self.received_prior = received;
        let lost = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost <= 0 {
            0
        } else {
            ((lost << 8) / expected_interval as i64).min(255) as u8
        };
        IntervalReport { expected: expected_interval, received: received_interval, lost, fraction_lost }
    }
}

/// All sources heard on one stream, bounded.
#[derive(Debug, Clone)]
pub struct StreamStats {
    clock_rate: u32,
    max_sources: usize,
    /// Sources with the tick they were last heard at.
    sources: Vec<(SourceStats, u64)>,
    tick: u64,
    current: Option<u32>,
    ssrc_changes: u64,
}

impl StreamStats {
    pub fn new(clock_rate: u32, max_sources: usize) -> Self {
        StreamStats {
            clock_rate,
            max_sources: max_sources.max(1),
            sources: Vec::new(),
            tick: 0,
            current: None,
            ssrc_changes: 0,
        }
    }

    /// Account one packet; creates its source on first sight, evicting the
    /// source heard least recently when the table is full.
    pub fn update(&mut self, pkt: &RtpPacket<'_>, arrival_ns: u64) -> PacketClass {
        self.tick += 1;
        let ssrc = pkt.ssrc();
        if self.current.is_some_and(|c| c != ssrc) {
            self.ssrc_changes += 1;
        }
        self.current = Some(ssrc);
        let pos = match self.sources.iter().position(|(s, _)| s.ssrc == ssrc) {
            Some(p) => p,
            None => {
                if self.sources.len() >= self.max_sources {
                    if let Some(oldest) = (0..self.sources.len()).min_by_key(|&i| self.sources[i].1) {
                        self.sources.swap_remove(oldest);
                    }
                }
                self.sources.push((SourceStats::new(ssrc, pkt.sequence_number(), self.clock_rate), self.tick));
                self.sources.len() - 1
            }
        };
        let (src, heard) = &mut self.sources[pos];
        *heard = self.tick;
        src.update(pkt.sequence_number(), pkt.timestamp(), arrival_ns)
    }

    pub fn sources(&self) -> impl Iterator<Item = &SourceStats> {
        self.sources.iter().map(|(s, _)| s)
    }

    /// The source heard most recently.
    pub fn current(&self) -> Option<&SourceStats> {
        let c = self.current?;
        self.sources().find(|s| s.ssrc == c)
    }

    /// Times the SSRC differed from the previous packet's.
    pub fn ssrc_changes(&self) -> u64 {
        self.ssrc_changes
    }
}

#[cfg(test)]
mod tests;
