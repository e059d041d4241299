// SPDX-License-Identifier: MIT
//! Receiver-side verification of a stream sent by `rtpgen send`.

use crate::stream::{synthetic_payload, PAYLOAD};
use serde::Serialize;

/// What the payload must be.
pub enum Expect<'a> {
    /// The synthetic stream: derived from each packet's header.
    Synthetic,
    /// A file's RTP payloads in order, packet `i` carrying sequence
    /// `start_seq + i` (mod 2^16).
    File { payloads: Vec<&'a [u8]>, start_seq: u16 },
}

/// Running verdict over the packets seen so far.
#[derive(Debug, Default, Serialize, Clone, PartialEq)]
pub struct Summary {
    pub received: u64,
    pub unique: u64,
    pub payload_bytes: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub corrupt: u64,
    pub not_rtp: u64,
    pub first_seq: Option<u16>,
    pub seconds: f64,
    pub mbit_per_s: f64,
}

pub struct Verifier<'a> {
    expect: Expect<'a>,
    /// Extended sequence number of the first packet (its 16-bit value plus
    /// 2^16 so earlier late packets stay non-negative).
    base: Option<u64>,
    last_ext: u64,
    highest: u64,
    seen: Vec<bool>,
    s: Summary,
}

impl<'a> Verifier<'a> {
    pub fn new(expect: Expect<'a>) -> Self {
        Verifier { expect, base: None, last_ext: 0, highest: 0, seen: Vec::new(), s: Summary::default() }
    }

    /// Account one datagram.
    pub fn packet(&mut self, datagram: &[u8]) {
        let Ok(p) = rtp::RtpPacket::parse(datagram) else {
            self.s.not_rtp += 1;
            return;
        };
        self.s.received += 1;
        let seq = p.sequence_number();
        let ext = match self.base {
            None => {
                let ext = (1u64 << 16) + seq as u64;
                self.base = Some(ext);
                self.s.first_seq = Some(seq);
                self.highest = ext;
                ext
            }
            Some(_) => {
                // Nearest extended value to the previous packet.
                let delta = seq.wrapping_sub(self.last_ext as u16) as i16 as i64;
                (self.last_ext as i64 + delta).max(0) as u64
            }
        };
        self.last_ext = ext;
        let base = self.base.unwrap_or(ext);
        let Some(index) = ext.checked_sub(base).map(|i| i as usize) else {
            // Older than the first packet we saw: late, counts as reordered.
            self.s.reordered += 1;
            return;
        };
        if index >= self.seen.len() {
            self.seen.resize(index + 1, false);
        }
        if self.seen[index] {
            self.s.duplicates += 1;
            return;
        }
        self.seen[index] = true;
        self.s.unique += 1;
        if ext < self.highest {
            self.s.reordered += 1;
        }
        self.highest = self.highest.max(ext);
        self.s.payload_bytes += p.payload().len() as u64;
        let ok = match &self.expect {
            Expect::Synthetic => {
                let mut want = [0u8; PAYLOAD];
                synthetic_payload(seq, p.timestamp(), &mut want);
                p.payload() == want
            }
            Expect::File { payloads, start_seq } => {
                let first = self.s.first_seq.unwrap_or(*start_seq);
                let i = index + first.wrapping_sub(*start_seq) as usize;
                payloads.get(i).is_some_and(|w| *w == p.payload())
            }
        };
        if !ok {
            self.s.corrupt += 1;
        }
    }

    /// The verdict, with `expected` the number of packets the sender sent
    /// (packets never seen at the end count as lost).
    pub fn summary(&self, expected: Option<u64>, seconds: f64) -> Summary {
        let mut s = self.s.clone();
        let span = self.seen.len() as u64;
        s.lost = expected.unwrap_or(span).saturating_sub(s.unique);
        s.seconds = seconds;
        s.mbit_per_s = if seconds > 0.0 { s.payload_bytes as f64 * 8.0 / seconds / 1e6 } else { 0.0 };
        s
    }
}

impl Summary {
    pub fn intact(&self, expected: u64) -> bool {
        self.unique == expected
            && self.received == expected
            && self.lost == 0
            && self.duplicates == 0
            && self.reordered == 0
            && self.corrupt == 0
            && self.not_rtp == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::PT_MP2T;

    fn pkt(seq: u16) -> Vec<u8> {
        let ts = seq as u32 * 90;
        let mut payload = [0u8; PAYLOAD];
        synthetic_payload(seq, ts, &mut payload);
        rtp::RtpBuilder::new(PT_MP2T, seq, ts, 1).to_vec(&payload)
    }

    #[test]
    fn clean_stream_across_the_wrap_is_intact() {
        let mut v = Verifier::new(Expect::Synthetic);
        for i in 0..1000u32 {
            v.packet(&pkt((65_000 + i) as u16));
        }
        let s = v.summary(Some(1000), 1.0);
        assert!(s.intact(1000), "{s:?}");
        assert_eq!(s.payload_bytes, 1000 * PAYLOAD as u64);
    }

    #[test]
    fn loss_duplicates_reordering_corruption_are_counted() {
        let mut v = Verifier::new(Expect::Synthetic);
        for seq in [0u16, 1, 3, 2, 4, 4, 6] {
            v.packet(&pkt(seq));
        }
        let mut bad = pkt(7);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        v.packet(&bad);
        v.packet(b"not rtp");
        let s = v.summary(Some(9), 1.0);
        assert_eq!((s.unique, s.duplicates, s.reordered, s.corrupt, s.not_rtp), (7, 1, 1, 1, 1));
        assert_eq!(s.lost, 2); // 5 and 8
        assert!(!s.intact(9));
    }

    #[test]
    fn file_payloads_are_compared_in_order() {
        let chunks: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 10]).collect();
        let payloads: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        let mut v = Verifier::new(Expect::File { payloads, start_seq: 100 });
        for (i, c) in chunks.iter().enumerate() {
            v.packet(&rtp::RtpBuilder::new(PT_MP2T, 100 + i as u16, 0, 1).to_vec(c));
        }
        v.packet(&rtp::RtpBuilder::new(PT_MP2T, 103, 0, 1).to_vec(&[9; 10]));
        let s = v.summary(Some(4), 1.0);
        assert_eq!((s.unique, s.corrupt), (4, 1), "a fourth packet the file does not have");
    }
}
