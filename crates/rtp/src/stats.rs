// SPDX-License-Identifier: MIT
//! Receiver statistics per RTP source: RFC 3550 appendix A.1 (sequence
//! validity, wrap, probation, resynchronisation), A.3 (expected, lost,
//! fraction lost per interval) and A.8 (interarrival jitter), plus duplicate
//! and reordering detection, which A.1 does not do.
//!
//! # Definitions
//!
//! All counters describe the source's current *sequence epoch*: from the
//! end of probation, or from the last resynchronisation (A.1's `init_seq`
//! resets `received` and the interval baselines, and so do we; see
//! [`SourceStats::resyncs`]).
//!
//! * `received`: every packet accepted as belonging to the source,
//!   duplicates included, as A.1's `received`. Packets dropped by A.1
//!   (probation runs that did not complete, lone far jumps, packets
//!   MAX_MISORDER or more behind) are not counted.
//! * `duplicates`: accepted packets whose extended sequence number was
//!   already received within the last [`DUP_WINDOW`] numbers.
//! * `reordered`: accepted packets with a sequence number below the highest
//!   seen, that are not duplicates (late, but new).
//! * `expected`: A.3, `extended_max - base + 1`.
//! * `lost = expected - (received - duplicates)`. A.3 uses `expected -
//!   received`, so every duplicate hides one loss and a stream with 3 losses
//!   and 3 duplicates reports 0 lost. Subtracting duplicates reports 3.
//!
//! # Deviations from A.1, on purpose
//!
//! * A.1 counts only the last packet of the probation run (`init_seq` then
//!   `received++`), so a clean stream of N packets reports N-1 received of
//!   N-1 expected. We count the whole run (MIN_SEQUENTIAL packets) and set
//!   the base to its first packet, so a clean stream reports N of N. The same
//!   applies to the two packets that confirm a resynchronisation.
//! * A.1 counts a late packet from before the first counted packet as
//!   received but not expected, making loss negative. We move the base back
//!   to it, so it is expected as well.
//!
//! With both, and duplicates detected over a window wider than
//! MAX_MISORDER, `received - duplicates` counts distinct sequence numbers
//! between base and highest, so `lost()` is never negative.
//!
//! # Jitter
//!
//! A.8 in its integer form, kept scaled by 16. Every accepted packet except
//! duplicates updates it, in arrival order, as A.8 does per packet:
//! reordered packets and packets sharing a timestamp (video frames split
//! over several packets) included. A repeated packet is skipped because it
//! says nothing new about the path's delay. After a resynchronisation the
//! previous transit time is forgotten, so the sender's restart (a new
//! timestamp base) is not taken for network jitter.

use crate::header::RtpPacket;

pub use crate::seqstats::{
    IntervalReport, PacketClass, SourceStats, DUP_WINDOW, MAX_DROPOUT, MAX_MISORDER, MIN_SEQUENTIAL, RTP_SEQ_MOD,
};

impl SourceStats {
    /// Interarrival jitter in milliseconds, from the unrounded scaled value
    /// (so it keeps the 1/16 unit that `jitter_units` truncates).
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_x16() as f64 * 1000.0 / (16.0 * f64::from(self.clock_rate()))
    }
}

/// A source and when it was last heard, for eviction.
#[derive(Debug, Clone)]
struct Entry {
    stats: SourceStats,
    last_heard: u64,
}

/// All sources heard on one stream.
///
/// Bounded: at most `max_sources` are tracked, and a new SSRC evicts the one
/// heard least recently, so a flood of spoofed SSRCs costs bounded memory
/// (it can still push out the real source, whose statistics then restart).
#[derive(Debug, Clone)]
pub struct StreamStats {
    clock_rate: u32,
    max_sources: usize,
    entries: Vec<Entry>,
    /// Packets seen, as a clock for `last_heard`.
    tick: u64,
    current: Option<u32>,
    ssrc_changes: u64,
}

impl StreamStats {
    /// No sources yet. `max_sources` of 0 is taken as 1.
    pub fn new(clock_rate: u32, max_sources: usize) -> Self {
        let max_sources = max_sources.max(1);
        StreamStats {
            clock_rate,
            max_sources,
            entries: Vec::with_capacity(max_sources.min(16)),
            tick: 0,
            current: None,
            ssrc_changes: 0,
        }
    }

    /// Account one packet to its SSRC, creating the source on first sight
    /// (evicting the least recently heard one when full).
    pub fn update(&mut self, pkt: &RtpPacket<'_>, arrival_ns: u64) -> PacketClass {
        self.tick += 1;
        let ssrc = pkt.ssrc();
        let seq = pkt.sequence_number();
        if self.current.is_some_and(|c| c != ssrc) {
            self.ssrc_changes += 1;
        }
        self.current = Some(ssrc);
        let idx = match self.entries.iter().position(|e| e.stats.ssrc() == ssrc) {
            Some(idx) => idx,
            None => self.insert(SourceStats::new(ssrc, seq, self.clock_rate)),
        };
        // In bounds: `position` found it, or `insert` returned it.
        let entry = &mut self.entries[idx];
        entry.last_heard = self.tick;
        entry.stats.update(seq, pkt.timestamp(), arrival_ns)
    }

    /// Track a new source, evicting the least recently heard one if full;
    /// returns its index.
    fn insert(&mut self, stats: SourceStats) -> usize {
        if self.entries.len() >= self.max_sources {
            let oldest = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_heard).map(|(i, _)| i);
            if let Some(oldest) = oldest {
                self.entries.swap_remove(oldest);
            }
        }
        self.entries.push(Entry { stats, last_heard: self.tick });
        self.entries.len() - 1
    }

    /// The tracked sources, in no particular order.
    pub fn sources(&self) -> impl Iterator<Item = &SourceStats> {
        self.entries.iter().map(|e| &e.stats)
    }

    /// The source with this SSRC, if tracked.
    pub fn source(&self, ssrc: u32) -> Option<&SourceStats> {
        self.sources().find(|s| s.ssrc() == ssrc)
    }

    /// The source with this SSRC, mutable (an RTCP report starts its next
    /// A.3 interval).
    pub fn source_mut(&mut self, ssrc: u32) -> Option<&mut SourceStats> {
        self.entries.iter_mut().map(|e| &mut e.stats).find(|s| s.ssrc() == ssrc)
    }

    /// The source heard most recently.
    pub fn current(&self) -> Option<&SourceStats> {
        self.source(self.current?)
    }

    /// Packets whose SSRC differed from the previous packet's: 1 for a
    /// sender that restarts with a new SSRC, more if two senders interleave.
    pub fn ssrc_changes(&self) -> u64 {
        self.ssrc_changes
    }
}

#[cfg(test)]
mod tests;
