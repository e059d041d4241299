// SPDX-License-Identifier: MIT
//! Continuity counters (ISO/IEC 13818-1 2.4.3.3) of one PID, turned into
//! loss, duplicate and reordering counts, for streams without RTP sequence
//! numbers (`format = "udp-ts"`), and into TR 101 290's
//! Continuity_count_error.
//!
//! Dependency-free, no allocation and no `crate::` paths: the kernel
//! module can compile this same file (`#[path]`) for its `udp-ts` path.
//!
//! # Rules
//!
//! The counter is 4 bits and steps by one on every packet of the PID that
//! carries payload. For each such packet, with `last` the counter of the
//! previous one:
//!
//! * `last + 1`: in order;
//! * `last`: a duplicate. One is allowed (13818-1 permits sending a packet
//!   twice); a third copy in a row is an error;
//! * a value that an earlier jump skipped, fewer than 16 packets of the PID
//!   ago: a late packet. It was counted lost; it is now counted reordered
//!   and no longer lost;
//! * anything else: `(cc - last - 1) mod 16` packets are lost. The skipped
//!   values are remembered, for the late-packet rule.
//!
//! A packet whose adaptation field sets discontinuity_indicator may carry
//! any counter, and restarts the PID's history. Packets without payload do
//! not step the counter and are not judged. The 4-bit counter cannot tell
//! 16 lost packets from none, or a packet more than 15 packets of its PID
//! late from a jump: such cases are counted as the rules above say.

/// How one packet's continuity counter was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcVerdict {
    /// The PID's first packet with payload.
    First,
    /// The next counter.
    InOrder,
    /// The previous packet again, the one duplicate allowed.
    Duplicate,
    /// The previous packet a third (or later) time: an error.
    ExcessDuplicate,
    /// Skipped by an earlier jump and arriving now: an error (13818-1's
    /// "incorrect packet order"), and one packet fewer lost.
    Late,
    /// This many packets (1..=15) are missing before this one: an error.
    Lost(u8),
    /// discontinuity_indicator set: history restarts, no error.
    Discontinuity,
    /// No payload: the counter does not step and is not judged.
    NoPayload,
}

impl CcVerdict {
    /// Whether TR 101 290 counts a Continuity_count_error for it.
    pub fn is_error(self) -> bool {
        matches!(self, CcVerdict::ExcessDuplicate | CcVerdict::Late | CcVerdict::Lost(_))
    }
}

const NONE: u8 = 0xff;

/// The continuity state of one PID: 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CcState {
    /// Counter of the last packet with payload, or NONE.
    last: u8,
    /// Copies of `last` seen after the first.
    dups: u8,
    /// Bit `v`: counter value `v` was skipped by a jump within the last 16
    /// counter values and has not arrived since.
    missing: u16,
}

impl Default for CcState {
    fn default() -> Self {
        CcState::new()
    }
}

impl CcState {
    /// A PID not seen yet.
    pub const fn new() -> Self {
        CcState { last: NONE, dups: 0, missing: 0 }
    }

    /// Whether a packet with payload was seen on this PID.
    pub fn seen(&self) -> bool {
        self.last != NONE
    }

    /// Judge one packet of the PID: its counter (only the low 4 bits are
    /// used), whether it has payload, and its discontinuity_indicator.
    pub fn update(&mut self, cc: u8, has_payload: bool, discontinuity: bool) -> CcVerdict {
        let cc = cc & 0x0f;
        if discontinuity {
            if has_payload {
                self.last = cc;
            } else {
                self.last = NONE;
            }
            self.dups = 0;
            self.missing = 0;
            return CcVerdict::Discontinuity;
        }
        if !has_payload {
            return CcVerdict::NoPayload;
        }
        if self.last == NONE {
            self.last = cc;
            self.dups = 0;
            self.missing = 0;
            return CcVerdict::First;
        }
        let bit = 1u16 << cc;
        if cc == (self.last + 1) & 0x0f {
            self.last = cc;
            self.dups = 0;
            // A value skipped 16 counts ago is older than the window.
            self.missing &= !bit;
            return CcVerdict::InOrder;
        }
        if cc == self.last {
            self.dups = self.dups.saturating_add(1);
            return if self.dups == 1 { CcVerdict::Duplicate } else { CcVerdict::ExcessDuplicate };
        }
        if self.missing & bit != 0 {
            self.missing &= !bit;
            return CcVerdict::Late;
        }
        // A jump: every value strictly between last and cc was skipped.
        let gap = (cc.wrapping_sub(self.last).wrapping_sub(1)) & 0x0f;
        let mut v = (self.last + 1) & 0x0f;
        while v != cc {
            self.missing |= 1 << v;
            v = (v + 1) & 0x0f;
        }
        self.missing &= !bit;
        self.last = cc;
        self.dups = 0;
        CcVerdict::Lost(gap)
    }
}

/// Loss, duplicates and reordering of TS packets, summed over PIDs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CcCounters {
    /// Packets missing: jumps add their size, late packets take one off.
    pub lost: u64,
    /// Copies of a packet (allowed or not).
    pub duplicates: u64,
    /// Late packets.
    pub reordered: u64,
    /// Continuity_count_errors (TR 101 290 1.4).
    pub errors: u64,
}

impl CcCounters {
    /// Account one verdict.
    pub fn add(&mut self, v: CcVerdict) {
        match v {
            CcVerdict::Lost(n) => self.lost += u64::from(n),
            CcVerdict::Late => {
                self.lost = self.lost.saturating_sub(1);
                self.reordered += 1;
            }
            CcVerdict::Duplicate | CcVerdict::ExcessDuplicate => self.duplicates += 1,
            CcVerdict::First | CcVerdict::InOrder | CcVerdict::Discontinuity | CcVerdict::NoPayload => {}
        }
        if v.is_error() {
            self.errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ccs: &[u8]) -> (CcCounters, [CcVerdict; 32], usize) {
        let mut s = CcState::new();
        let mut c = CcCounters::default();
        let mut out = [CcVerdict::NoPayload; 32];
        for (i, &cc) in ccs.iter().enumerate() {
            let v = s.update(cc, true, false);
            c.add(v);
            out[i] = v;
        }
        (c, out, ccs.len())
    }

    #[test]
    fn in_order_across_the_wrap() {
        let ccs: [u8; 20] = core::array::from_fn(|i| (i as u8 + 10) & 15);
        let (c, v, _) = run(&ccs);
        assert_eq!(c, CcCounters::default());
        assert_eq!(v[0], CcVerdict::First);
        assert!(v[1..20].iter().all(|&x| x == CcVerdict::InOrder));
    }

    #[test]
    fn loss_is_the_gap() {
        let (c, v, _) = run(&[0, 1, 4, 5, 15]);
        assert_eq!(v[2], CcVerdict::Lost(2));
        assert_eq!(v[4], CcVerdict::Lost(9));
        assert_eq!(c, CcCounters { lost: 11, duplicates: 0, reordered: 0, errors: 2 });
    }

    #[test]
    fn one_duplicate_allowed_a_third_copy_is_an_error() {
        let (c, v, _) = run(&[3, 4, 4, 5, 5, 5, 6]);
        assert_eq!(
            (v[2], v[4], v[5], v[6]),
            (CcVerdict::Duplicate, CcVerdict::Duplicate, CcVerdict::ExcessDuplicate, CcVerdict::InOrder)
        );
        assert_eq!(c, CcCounters { lost: 0, duplicates: 3, reordered: 0, errors: 1 });
    }

    #[test]
    fn a_swap_is_one_gap_then_one_late_packet_and_nothing_lost() {
        // 0 1 3 2 4: 3 jumps over 2 (lost 1), 2 comes late (lost 0).
        let (c, v, _) = run(&[0, 1, 3, 2, 4]);
        assert_eq!((v[2], v[3], v[4]), (CcVerdict::Lost(1), CcVerdict::Late, CcVerdict::InOrder));
        assert_eq!(c, CcCounters { lost: 0, duplicates: 0, reordered: 1, errors: 2 });
    }

    #[test]
    fn a_whole_datagram_late_is_seven_late_packets() {
        // Two datagrams of seven packets each swap places.
        let mut ccs = [0u8; 21];
        let order = [0usize, 1, 2, 3, 4, 5, 6, 14, 15, 16, 17, 18, 19, 20, 7, 8, 9, 10, 11, 12, 13];
        for (i, &k) in order.iter().enumerate() {
            ccs[i] = (k & 15) as u8;
        }
        let (c, _, _) = run(&ccs);
        assert_eq!(c, CcCounters { lost: 0, duplicates: 0, reordered: 7, errors: 8 });
    }

    #[test]
    fn skipped_values_expire_after_a_lap() {
        // 2 is skipped, then the counter goes round: the next 2 is in order.
        let mut ccs = [0u8; 20];
        let mut k = 0u8;
        for slot in ccs.iter_mut() {
            if k == 2 {
                k += 1;
            }
            *slot = k & 15;
            k += 1;
        }
        let (c, v, n) = run(&ccs);
        assert_eq!(v[2], CcVerdict::Lost(1));
        assert!(v[3..n].iter().all(|&x| x == CcVerdict::InOrder), "{v:?}");
        assert_eq!((c.lost, c.reordered, c.errors), (1, 0, 1));
    }

    #[test]
    fn discontinuity_and_no_payload() {
        let mut s = CcState::new();
        assert_eq!(s.update(5, true, false), CcVerdict::First);
        assert_eq!(s.update(5, false, false), CcVerdict::NoPayload);
        assert_eq!(s.update(12, true, true), CcVerdict::Discontinuity);
        assert_eq!(s.update(13, true, false), CcVerdict::InOrder);
        assert_eq!(s.update(9, false, true), CcVerdict::Discontinuity);
        assert!(!s.seen());
        assert_eq!(s.update(0, true, false), CcVerdict::First);
    }
}
