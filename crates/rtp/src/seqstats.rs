// SPDX-License-Identifier: MIT
//! The dependency-free core of the receiver statistics (see `stats`, which
//! re-exports it): sequence validity, loss, duplicates, reordering and
//! jitter of one source. No allocation, no floating point, no u128 and no
//! `crate::` paths, so the kernel module compiles this same file
//! (`#[path]`, like abi.rs) for its per-stream RTP counters.

/// A.1: a forward jump of this many or more is not taken as loss.
pub const MAX_DROPOUT: u16 = 3000;
/// A.1: a packet fewer than this many behind the highest is late; this
/// many or more, a jump.
pub const MAX_MISORDER: u16 = 100;
/// A.1: sequential packets needed before a new source counts.
pub const MIN_SEQUENTIAL: u16 = 2;
/// A.1's RTP_SEQ_MOD: sequence numbers are 16 bits.
pub const RTP_SEQ_MOD: u32 = 1 << 16;
/// How many recent extended sequence numbers duplicate detection remembers.
/// Only packets fewer than MAX_MISORDER behind the highest reach the
/// lookup, so any window of at least MAX_MISORDER is exact; 1024 keeps a
/// margin and the bitmap at 128 bytes.
pub const DUP_WINDOW: u64 = 1024;
const _: () = assert!(DUP_WINDOW >= MAX_MISORDER as u64 && DUP_WINDOW % 64 == 0);

/// Internal extended sequence numbers carry this bias, so that a base moved
/// back across the 16-bit wrap of the first cycle stays non-negative.
const BIAS: u64 = RTP_SEQ_MOD as u64;
/// A.1 sets `bad_seq` to this so that no sequence number matches it.
const NO_BAD_SEQ: u32 = RTP_SEQ_MOD + 1;

/// How [`SourceStats::update`] classified one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    /// Above the highest sequence number so far: the next one, or ahead by
    /// less than MAX_DROPOUT (the numbers skipped count as lost until they
    /// arrive). Also the packet that completes probation.
    InOrder,
    /// Below the highest by fewer than MAX_MISORDER, and not seen before:
    /// late, and counted.
    Reordered,
    /// Seen already (within [`DUP_WINDOW`]): counted in `received` and in
    /// `duplicates`, not in jitter.
    Duplicate,
    /// The source is in probation and this packet did not complete it; it
    /// counts only if the run it starts or continues completes.
    Probation,
    /// Confirms a large jump: the sender restarted, and the statistics
    /// restart at the two packets of the jump.
    Resync,
    /// A jump of MAX_DROPOUT or more ahead, or MAX_MISORDER or more
    /// behind: dropped from the statistics unless the next packet confirms
    /// it.
    BadSequence,
}

/// A.3 figures for the interval since the previous report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalReport {
    /// Sequence numbers the interval added to `expected`.
    pub expected: u64,
    /// Distinct packets received in the interval (duplicates excluded, as
    /// in [`SourceStats::lost`]).
    pub received: u64,
    /// `expected - received`; negative when late packets of an earlier
    /// interval arrived in this one.
    pub lost: i64,
    /// `lost / expected` in 8-bit fixed point, as an RTCP report block
    /// carries it: 0 when nothing was lost (or less than nothing), and at
    /// most 255.
    pub fraction_lost: u8,
}

/// Which extended sequence numbers arrived, over the last [`DUP_WINDOW`].
///
/// Bit `ext % DUP_WINDOW` stands for `ext`; when the highest number moves
/// forward, the positions it moves over are cleared before reuse.
#[derive(Debug, Clone)]
struct SeqWindow {
    bits: [u64; (DUP_WINDOW / 64) as usize],
}

impl SeqWindow {
    fn new() -> Self {
        SeqWindow { bits: [0; (DUP_WINDOW / 64) as usize] }
    }

    fn slot(ext: u64) -> (usize, u64) {
        let i = ext % DUP_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn contains(&self, ext: u64) -> bool {
        let (w, b) = Self::slot(ext);
        self.bits.get(w).is_some_and(|word| word & b != 0)
    }

    fn insert(&mut self, ext: u64) {
        let (w, b) = Self::slot(ext);
        if let Some(word) = self.bits.get_mut(w) {
            *word |= b;
        }
    }

    fn clear(&mut self) {
        self.bits = [0; (DUP_WINDOW / 64) as usize];
    }

    /// The highest number moves from `old_max` to `new_max`: forget what
    /// the positions of `old_max + 1 ..= new_max` held.
    fn advance(&mut self, old_max: u64, new_max: u64) {
        let steps = new_max.saturating_sub(old_max);
        if steps >= DUP_WINDOW {
            self.clear();
            return;
        }
        for ext in old_max + 1..=new_max {
            let (w, b) = Self::slot(ext);
            if let Some(word) = self.bits.get_mut(w) {
                *word &= !b;
            }
        }
    }
}

/// `floor(ns * rate / 1e9)` truncated to 32 bits, in u64 arithmetic (see
/// `update_jitter`).
pub(crate) fn arrival_units(ns: u64, rate: u32) -> u32 {
    let (q, r) = (ns / 1_000_000_000, ns % 1_000_000_000);
    let rate = u64::from(rate);
    q.wrapping_mul(rate).wrapping_add(r * rate / 1_000_000_000) as u32
}

/// Statistics of one synchronisation source (SSRC).
#[derive(Debug, Clone)]
pub struct SourceStats {
    ssrc: u32,
    clock_rate: u32,
    /// A.1 `probation`: sequential packets still needed.
    probation: u16,
    /// Packets in the current probation run, counted when it completes.
    run: u16,
    /// A.1 `max_seq`: highest sequence number seen.
    max_seq: u16,
    /// A.1 `cycles`: wraps, in units of RTP_SEQ_MOD.
    cycles: u64,
    /// Biased extended sequence number of the first counted packet (A.1
    /// `base_seq`).
    base_ext: u64,
    /// A.1 `bad_seq`: the sequence number that would confirm a jump.
    bad_seq: u32,
    received: u64,
    duplicates: u64,
    reordered: u64,
    resyncs: u64,
    /// A.3 baselines of the previous interval report.
    expected_prior: u64,
    received_prior: u64,
    window: SeqWindow,
    /// A.8: transit time of the previous packet, in timestamp units.
    transit: Option<u32>,
    /// A.8: jitter scaled by 16. 64 bits so that even |D| near 2^31 (the
    /// RFC's 32-bit form overflows there) cannot wrap.
    jitter_x16: u64,
}

impl SourceStats {
    /// A new source that starts in probation, as A.1 does on the first
    /// packet of an SSRC: `max_seq = first_seq - 1`, so that `first_seq`
    /// begins the run. Feed that first packet to [`update`](Self::update)
    /// as well. A `clock_rate` of 0 is taken as 1 (jitter is then in
    /// arrival-clock units of one second).
    pub fn new(ssrc: u32, first_seq: u16, clock_rate: u32) -> Self {
        let max_seq = first_seq.wrapping_sub(1);
        SourceStats {
            ssrc,
            clock_rate: clock_rate.max(1),
            probation: MIN_SEQUENTIAL,
            run: 0,
            max_seq,
            cycles: 0,
            base_ext: BIAS + u64::from(max_seq),
            bad_seq: NO_BAD_SEQ,
            received: 0,
            duplicates: 0,
            reordered: 0,
            resyncs: 0,
            expected_prior: 0,
            received_prior: 0,
            window: SeqWindow::new(),
            transit: None,
            jitter_x16: 0,
        }
    }

    /// Biased extended highest sequence number.
    fn ext_max(&self) -> u64 {
        BIAS + self.cycles + u64::from(self.max_seq)
    }

    /// A.1 `init_seq` at `seq`, counting it and the `counted - 1` packets
    /// just before it as received (the probation run, or the two packets of
    /// a resynchronisation).
    fn init_seq(&mut self, seq: u16, counted: u16) {
        self.max_seq = seq;
        self.cycles = 0;
        self.bad_seq = NO_BAD_SEQ;
        let max = self.ext_max();
        self.base_ext = max + 1 - u64::from(counted);
        self.received = u64::from(counted);
        self.duplicates = 0;
        self.reordered = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.window.clear();
        for ext in self.base_ext..=max {
            self.window.insert(ext);
        }
    }

    /// Account one packet and classify it. `arrival_ns` is its arrival time
    /// in nanoseconds on any clock that does not jump; only differences
    /// between packets matter, and they are taken modulo 2^32 timestamp
    /// units, like the timestamps themselves.
    pub fn update(&mut self, seq: u16, rtp_timestamp: u32, arrival_ns: u64) -> PacketClass {
        let class = self.update_seq(seq);
        match class {
            PacketClass::Duplicate | PacketClass::BadSequence => {}
            PacketClass::Resync => {
                self.transit = None;
                self.update_jitter(rtp_timestamp, arrival_ns);
            }
            PacketClass::InOrder | PacketClass::Reordered | PacketClass::Probation => {
                self.update_jitter(rtp_timestamp, arrival_ns)
            }
        }
        class
    }

    /// A.1 `update_seq`, with the deviations in the module documentation.
    fn update_seq(&mut self, seq: u16) -> PacketClass {
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.run += 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init_seq(seq, self.run);
                    return PacketClass::InOrder;
                }
            } else {
                // Not sequential: this packet starts a new run.
                self.probation = MIN_SEQUENTIAL - 1;
                self.run = 1;
                self.max_seq = seq;
            }
            return PacketClass::Probation;
        }

        let udelta = seq.wrapping_sub(self.max_seq);
        let old_max = self.ext_max();
        if udelta == 0 {
            // A.1 treats this as "in order with a gap of 0" and counts it.
            self.received += 1;
            self.duplicates += 1;
            PacketClass::Duplicate
        } else if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += u64::from(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
            let new_max = self.ext_max();
            self.window.advance(old_max, new_max);
            self.window.insert(new_max);
            self.received += 1;
            PacketClass::InOrder
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump. The next sequential packet confirms that
            // the sender restarted; a lone one is dropped.
            if u32::from(seq) == self.bad_seq {
                self.init_seq(seq, 2);
                self.resyncs += 1;
                PacketClass::Resync
            } else {
                self.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                PacketClass::BadSequence
            }
        } else {
            // Fewer than MAX_MISORDER behind the highest: duplicate or late.
            // `old_max` is at least BIAS and `behind` below MAX_MISORDER, so
            // the subtraction cannot underflow.
            let behind = u64::from(self.max_seq.wrapping_sub(seq));
            let ext = old_max.saturating_sub(behind);
            self.received += 1;
            if ext >= self.base_ext && self.window.contains(ext) {
                self.duplicates += 1;
                return PacketClass::Duplicate;
            }
            // Older than the first counted packet: the stream began earlier
            // than we thought. Expect it too, rather than let it make the
            // loss negative.
            self.base_ext = self.base_ext.min(ext);
            self.window.insert(ext);
            self.reordered += 1;
            PacketClass::Reordered
        }
    }

    /// A.8, integer form: `J += |D| - ((J + 8) >> 4)` with J scaled by 16,
    /// the same as `J += (|D| - J) / 16` in floating point, rounded.
    fn update_jitter(&mut self, rtp_timestamp: u32, arrival_ns: u64) {
        // Arrival in timestamp units, exactly floor(ns * rate / 1e9) in u64
        // (no u128: its division is not available in the kernel). With
        // ns = q * 1e9 + r: q * rate + floor(r * rate / 1e9); r * rate <
        // 1e9 * 2^32 < 2^62. q * rate may wrap, which is fine: truncating
        // to u32 wraps as RTP timestamps do, and only differences are used.
        let arrival = arrival_units(arrival_ns, self.clock_rate);
        let transit = arrival.wrapping_sub(rtp_timestamp);
        if let Some(prev) = self.transit {
            // The difference of two wrapping transits, as a signed 32-bit
            // value: correct across timestamp and arrival wraps.
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            // (J + 8) >> 4 <= J for every J >= 1, and is 0 for J = 0.
            self.jitter_x16 = self.jitter_x16.saturating_add(d).saturating_sub((self.jitter_x16 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// The synchronisation source identifier.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
    /// Timestamp clock rate, Hz, used to convert arrival times.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }
    /// True until MIN_SEQUENTIAL sequential packets arrived; nothing is
    /// counted before that.
    pub fn in_probation(&self) -> bool {
        self.probation > 0
    }
    /// Packets received in this epoch, duplicates included (module docs).
    pub fn received(&self) -> u64 {
        self.received
    }
    /// A.1 extended highest sequence number, `cycles + max_seq`, truncated
    /// to 32 bits as an RTCP report block carries it.
    pub fn extended_highest_seq(&self) -> u32 {
        (self.cycles + u64::from(self.max_seq)) as u32
    }
    /// A.3: extended highest - base + 1; 0 while in probation.
    pub fn expected(&self) -> u64 {
        if self.in_probation() {
            return 0;
        }
        (self.ext_max() + 1).saturating_sub(self.base_ext)
    }
    /// Cumulative packets lost: `expected - (received - duplicates)`. Not
    /// the RFC's `expected - received`; see the module documentation.
    pub fn lost(&self) -> i64 {
        let distinct = self.received.saturating_sub(self.duplicates);
        (self.expected() as i64).saturating_sub(distinct as i64)
    }
    /// [`lost`](Self::lost) clamped to the signed 24-bit field of an RTCP
    /// report block (RFC 3550 6.4.1).
    pub fn cumulative_lost_rtcp(&self) -> i32 {
        self.lost().clamp(-0x80_0000, 0x7f_ffff) as i32
    }
    /// Packets received more than once (within [`DUP_WINDOW`]).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
    /// Packets that arrived after a higher sequence number and were new.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }
    /// Times the source resynchronised after a large sequence jump (A.1
    /// `bad_seq`); each one restarted the counters.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }
    /// Interarrival jitter in timestamp units: A.8's `jitter >> 4`, the
    /// value an RTCP report block carries.
    pub fn jitter_units(&self) -> u32 {
        u32::try_from(self.jitter_x16 >> 4).unwrap_or(u32::MAX)
    }
    /// Interarrival jitter in timestamp units scaled by 16 (A.8's `jitter`
    /// before the shift), unrounded.
    pub fn jitter_x16(&self) -> u64 {
        self.jitter_x16
    }
    /// A.3 figures since the previous call (or the start of the epoch), and
    /// start a new interval.
    pub fn interval_report(&mut self) -> IntervalReport {
        let expected = self.expected();
        let received = self.received.saturating_sub(self.duplicates);
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = received;
        let lost = (expected_interval as i64).saturating_sub(received_interval as i64);
        let fraction_lost = if expected_interval == 0 || lost <= 0 {
            0
        } else {
            // lost <= expected_interval, so this is at most 256; 256 (all
            // lost) does not fit the 8-bit field and is reported as 255.
            (((lost as u64) << 8) / expected_interval).min(255) as u8
        };
        IntervalReport { expected: expected_interval, received: received_interval, lost, fraction_lost }
    }
}
