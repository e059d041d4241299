// SPDX-License-Identifier: MIT
//! What a receiver can judge of a raw UDP MPEG-TS datagram from the first
//! [`HEAD_LEN`] bytes of each of its 188-byte packets: the datagram rule
//! (`format = "udp-ts"`), the header fields continuity needs, and the
//! recognition of a datagram the network delivered twice.
//!
//! Dependency-free, no allocation and no `crate::` paths, like
//! [`crate::cc`]: the kernel module compiles this same file (`#[path]`) and
//! feeds it private copies of these bytes taken from the socket buffer, so
//! it never reads a packet back from the ring user space shares.
//! [`crate::packet`] and the analyser use the same constants and rule.

/// Every transport packet is 188 bytes.
pub const PACKET_LEN: usize = 188;
/// The first byte of every transport packet.
pub const SYNC_BYTE: u8 = 0x47;
/// Null packets: stuffing, with no continuity counter to check.
pub const PID_NULL: u16 = 0x1fff;
/// Bytes of a packet's start that [`TsHead`] reads: the 4-byte header,
/// the adaptation field's length and its flags.
pub const HEAD_LEN: usize = 6;

/// Why a datagram is not raw MPEG-TS, judged from its length and heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Zero bytes.
    Empty,
    /// Not a multiple of 188 bytes.
    NotWholePackets,
    /// The packet with this index does not start with the sync byte.
    SyncByte(usize),
}

/// The number of packets in a datagram of `len` bytes, if it is a whole,
/// non-zero number of them.
pub const fn whole_packets(len: usize) -> Result<usize, HeadError> {
    if len == 0 {
        Err(HeadError::Empty)
    } else if len % PACKET_LEN != 0 {
        Err(HeadError::NotWholePackets)
    } else {
        Ok(len / PACKET_LEN)
    }
}

/// The first [`HEAD_LEN`] bytes of one transport packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsHead(pub [u8; HEAD_LEN]);

impl TsHead {
    /// The head at the start of `bytes`, if it holds one.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let b = bytes.get(..HEAD_LEN)?;
        let mut h = [0u8; HEAD_LEN];
        h.copy_from_slice(b);
        Some(TsHead(h))
    }
    /// The first byte is [`SYNC_BYTE`].
    pub fn sync_ok(&self) -> bool {
        self.0[0] == SYNC_BYTE
    }
    /// transport_error_indicator.
    pub fn transport_error(&self) -> bool {
        self.0[1] & 0x80 != 0
    }
    /// The 13-bit packet identifier.
    pub fn pid(&self) -> u16 {
        u16::from_be_bytes([self.0[1] & 0x1f, self.0[2]])
    }
    /// adaptation_field_control (0 is reserved: the packet is discarded).
    pub fn adaptation_field_control(&self) -> u8 {
        (self.0[3] >> 4) & 3
    }
    /// The 4-bit continuity counter.
    pub fn continuity_counter(&self) -> u8 {
        self.0[3] & 0x0f
    }
    /// Whether the packet carries payload (and so steps its counter).
    pub fn has_payload(&self) -> bool {
        self.0[3] & 0x10 != 0
    }
    /// discontinuity_indicator, of an adaptation field that is present,
    /// not empty and fits the packet (at most 183 bytes after its length).
    pub fn discontinuity(&self) -> bool {
        self.0[3] & 0x20 != 0 && (1..=183).contains(&self.0[4]) && self.0[5] & 0x80 != 0
    }
    /// Whether continuity is judged for this packet at all: not discarded
    /// (adaptation_field_control 0) and not a null packet.
    pub fn judged(&self) -> bool {
        self.adaptation_field_control() != 0 && self.pid() != PID_NULL
    }
}

/// Check a datagram of `len` bytes whose packets' heads are `heads`
/// ([`HEAD_LEN`] bytes each, in order): a whole number of packets, each
/// with the sync byte. Returns the number of packets.
pub fn check_heads(len: usize, heads: &[u8]) -> Result<usize, HeadError> {
    let n = whole_packets(len)?;
    for i in 0..n {
        match heads.get(i * HEAD_LEN) {
            Some(&SYNC_BYTE) => {}
            _ => return Err(HeadError::SyncByte(i)),
        }
    }
    Ok(n)
}

/// How many recent datagrams [`RecentHeads`] remembers.
pub const RECENT_HEADS: usize = 8;

/// The last few datagrams' heads, hashed, to recognise a copy the network
/// made (a duplicating path, a doubled multicast route) before its
/// continuity counters read as a jump back. Heads alone identify a
/// datagram well here: consecutive datagrams with payload differ in their
/// counters, and a PID's 16 counter values only come round again after
/// more datagrams than are remembered. Datagrams without payload outside
/// the null PID (stuffing) repeat by nature and are never called copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentHeads {
    hashes: [u64; RECENT_HEADS],
    next: usize,
}

impl RecentHeads {
    /// Remembering nothing.
    pub const fn new() -> Self {
        RecentHeads { hashes: [0; RECENT_HEADS], next: 0 }
    }

    /// Whether the datagram with these heads (of `n` packets) is a copy of
    /// a recent one; if not, it is remembered.
    pub fn is_copy(&mut self, heads: &[u8], n: usize) -> bool {
        let heads = heads.get(..n * HEAD_LEN).unwrap_or(heads);
        let content = heads.chunks_exact(HEAD_LEN).any(|h| {
            let h = TsHead::from_slice(h).unwrap_or(TsHead([0; HEAD_LEN]));
            h.pid() != PID_NULL && h.has_payload()
        });
        if !content {
            return false;
        }
        // FNV-1a, never 0 (the value of an empty entry).
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for &b in heads {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let hash = hash | 1;
        if self.hashes.contains(&hash) {
            return true;
        }
        self.hashes[self.next % RECENT_HEADS] = hash;
        self.next = self.next.wrapping_add(1);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pid: u16, cc: u8) -> [u8; HEAD_LEN] {
        [SYNC_BYTE, (pid >> 8) as u8 & 0x1f, pid as u8, 0x10 | (cc & 15), 0xff, 0xff]
    }

    fn heads(pid: u16, first_cc: u8, n: usize) -> [u8; 7 * HEAD_LEN] {
        let mut out = [0u8; 7 * HEAD_LEN];
        for i in 0..n {
            out[i * HEAD_LEN..(i + 1) * HEAD_LEN].copy_from_slice(&head(pid, first_cc + i as u8));
        }
        out
    }

    #[test]
    fn fields() {
        let h = TsHead([0x47, 0x80 | 0x01, 0x00, 0x3a, 7, 0x80]);
        assert!(h.sync_ok() && h.transport_error() && h.has_payload() && h.discontinuity() && h.judged());
        assert_eq!((h.pid(), h.continuity_counter(), h.adaptation_field_control()), (0x100, 0xa, 3));
        // An adaptation field longer than the packet, or empty, has no flags.
        assert!(!TsHead([0x47, 1, 0, 0x3a, 184, 0x80]).discontinuity());
        assert!(!TsHead([0x47, 1, 0, 0x3a, 0, 0x80]).discontinuity());
        // No adaptation field: byte 5 is payload, not flags.
        assert!(!TsHead([0x47, 1, 0, 0x1a, 7, 0x80]).discontinuity());
        assert!(!TsHead([0x47, 0x1f, 0xff, 0x10, 0, 0]).judged());
        assert!(!TsHead([0x47, 1, 0, 0x0a, 0, 0]).judged());
    }

    #[test]
    fn datagram_rule() {
        let h = heads(0x100, 0, 7);
        assert_eq!(check_heads(1316, &h), Ok(7));
        assert_eq!(check_heads(0, &h), Err(HeadError::Empty));
        assert_eq!(check_heads(1000, &h), Err(HeadError::NotWholePackets));
        let mut bad = h;
        bad[3 * HEAD_LEN] = 0x48;
        assert_eq!(check_heads(1316, &bad), Err(HeadError::SyncByte(3)));
        // Heads missing for a packet: not accepted.
        assert_eq!(check_heads(1316, &h[..6 * HEAD_LEN]), Err(HeadError::SyncByte(6)));
    }

    #[test]
    fn copies_are_recognised_new_datagrams_are_not() {
        let mut r = RecentHeads::new();
        let a = heads(0x100, 0, 7);
        let b = heads(0x100, 7, 7);
        assert!(!r.is_copy(&a, 7));
        assert!(!r.is_copy(&b, 7));
        assert!(r.is_copy(&a, 7) && r.is_copy(&b, 7));
        // Sixteen datagrams of seven packets later the counters come round,
        // by then the first is forgotten.
        for k in 2..16u8 {
            assert!(!r.is_copy(&heads(0x100, (k * 7) & 15, 7), 7), "datagram {k}");
        }
        assert!(!r.is_copy(&a, 7));
        // Stuffing is never a copy.
        let null = heads(PID_NULL, 0, 7);
        assert!(!r.is_copy(&null, 7) && !r.is_copy(&null, 7));
    }
}
