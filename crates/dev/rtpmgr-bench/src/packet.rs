// SPDX-License-Identifier: MIT
//! The benchmark's RTP packets: a 12-byte RTP header (payload type 33,
//! MPEG-TS, so rtpmgrd's payload-type check passes) and a 1316-byte payload
//! (seven 188-byte TS packets' worth) that starts with the send time and a
//! tag.
//!
//! ```text
//! 0       12            20     24                          1328
//! | RTP   | send time ns | tag  | filler (0x47, then 0xff) |
//! ```
//!
//! The receiver reads only the first [`HEAD`] bytes of each datagram.

use rtpmgr_test_kit::packet::write_header;
pub use rtpmgr_test_kit::packet::{PT_MP2T, PT_PCMU};
use std::sync::OnceLock;
use std::time::Instant;

pub const RTP_HEADER: usize = rtp::FIXED_HEADER_LEN;
/// RTP payload bytes: seven MPEG-TS packets.
pub const PAYLOAD: usize = 1316;
/// One datagram.
pub const PACKET: usize = RTP_HEADER + PAYLOAD;
/// Bytes of a datagram the receiver looks at.
pub const HEAD: usize = RTP_HEADER + 12;

/// The datagrams of one traffic profile: their length and payload type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Datagram bytes (RTP header + payload).
    pub len: usize,
    pub pt: u8,
}

/// IPTV: RTP/MP2T, seven 188-byte TS packets (1328-byte datagrams).
pub const IPTV: Shape = Shape { len: PACKET, pt: PT_MP2T };
/// VoIP: G.711 at 20 ms, 160 payload bytes (172-byte datagrams).
pub const VOIP: Shape = Shape { len: RTP_HEADER + 160, pt: PT_PCMU };

impl Shape {
    pub fn payload(&self) -> usize {
        self.len - RTP_HEADER
    }
}

/// Payload tag of a measured packet.
pub const TAG_DATA: [u8; 4] = *b"RBd1";
/// Payload tag of a probe: sent until the path through a relay works,
/// then ignored.
pub const TAG_PROBE: [u8; 4] = *b"RBp1";

/// Nanoseconds on one monotonic clock shared by every thread of this
/// process (sender and receiver compare stamps of it).
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Fill `buf` (at least [`PACKET`] bytes) with a packet of `ssrc`; the
/// varying fields are set by [`stamp`].
pub fn init(buf: &mut [u8], ssrc: u32) {
    init_shape(buf, ssrc, IPTV)
}

/// [`init`] for datagrams of `shape` (`buf` at least `shape.len` bytes).
pub fn init_shape(buf: &mut [u8], ssrc: u32, shape: Shape) {
    let buf = &mut buf[..shape.len];
    buf.fill(0xff);
    write_header(buf, shape.pt, 0, 0, ssrc);
    if shape.pt == PT_MP2T {
        for ts in buf[RTP_HEADER..].chunks_mut(188) {
            ts[0] = 0x47;
        }
    }
}

/// Set sequence number, RTP timestamp, send time and tag of a packet made
/// by [`init`].
pub fn stamp(buf: &mut [u8], seq: u16, rtp_ts: u32, send_ns: u64, tag: [u8; 4]) {
    let (pt, ssrc) = match rtp::RtpPacket::parse(&buf[..RTP_HEADER]) {
        Ok(p) => (p.payload_type(), p.ssrc()),
        Err(e) => panic!("stamp of a buffer init did not make: {e}"),
    };
    write_header(buf, pt, seq, rtp_ts, ssrc);
    buf[12..20].copy_from_slice(&send_ns.to_le_bytes());
    buf[20..24].copy_from_slice(&tag);
}

/// What the receiver needs of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub ssrc: u32,
    pub seq: u16,
    pub send_ns: u64,
    pub probe: bool,
}

/// Decode the first bytes of a datagram; `None` for anything that is not
/// one of ours (wrong version or payload type, unknown tag, too short).
pub fn parse(head: &[u8]) -> Option<Head> {
    // The fixed header alone: the packet is cut at HEAD bytes.
    let rtp = rtp::RtpPacket::parse(head.get(..RTP_HEADER)?).ok()?;
    if head.len() < HEAD || !matches!(rtp.payload_type(), PT_MP2T | PT_PCMU) {
        return None;
    }
    let probe = match &head[20..24] {
        t if t == TAG_DATA => false,
        t if t == TAG_PROBE => true,
        _ => return None,
    };
    Some(Head {
        ssrc: rtp.ssrc(),
        seq: rtp.sequence_number(),
        send_ns: u64::from_le_bytes(head[12..20].try_into().ok()?),
        probe,
    })
}

/// The 90 kHz RTP timestamp of a packet sent `ns` after the stream began.
pub fn rtp_ts(ns: u64) -> u32 {
    (ns as u128 * 90_000 / 1_000_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_valid_rtp() {
        let mut buf = vec![0u8; PACKET];
        init(&mut buf, 0xdead_beef);
        stamp(&mut buf, 65535, 90_000, 123_456_789_012, TAG_DATA);
        let h = parse(&buf[..HEAD]).unwrap();
        assert_eq!(h, Head { ssrc: 0xdead_beef, seq: 65535, send_ns: 123_456_789_012, probe: false });
        // rtpmgrd parses with the project's RTP crate: it must accept it.
        let p = rtp::RtpPacket::parse(&buf).unwrap();
        assert_eq!(p.payload_type(), PT_MP2T);
        assert_eq!(p.sequence_number(), 65535);
        assert_eq!(p.ssrc(), 0xdead_beef);
        assert_eq!(p.timestamp(), 90_000);
        assert_eq!(p.payload().len(), PAYLOAD);
        assert_eq!(p.payload()[188], 0x47);
    }

    #[test]
    fn probes_and_strangers() {
        let mut buf = vec![0u8; PACKET];
        init(&mut buf, 7);
        stamp(&mut buf, 1, 0, 5, TAG_PROBE);
        assert!(parse(&buf).unwrap().probe);
        assert_eq!(parse(&buf[..HEAD - 1]), None);
        stamp(&mut buf, 1, 0, 5, *b"XXXX");
        assert_eq!(parse(&buf), None);
        stamp(&mut buf, 1, 0, 5, TAG_DATA);
        write_header(&mut buf, 96, 1, 0, 7);
        assert_eq!(parse(&buf), None);
        // The marker bit set is still ours.
        rtp::RtpBuilder::new(PT_MP2T, 1, 0, 7).marker(true).write(&[], &mut buf[..RTP_HEADER]).unwrap();
        assert!(parse(&buf).is_some());
        buf[0] = 0x40; // RTP version 1
        assert_eq!(parse(&buf), None);
    }

    #[test]
    fn voip_shape() {
        let mut buf = vec![0u8; VOIP.len];
        init_shape(&mut buf, 9, VOIP);
        stamp(&mut buf, 3, 160, 77, TAG_DATA);
        let h = parse(&buf[..HEAD]).unwrap();
        assert_eq!((h.ssrc, h.seq, h.send_ns, h.probe), (9, 3, 77, false));
        let p = rtp::RtpPacket::parse(&buf).unwrap();
        assert_eq!((p.payload_type(), p.payload().len()), (PT_PCMU, 160));
        write_header(&mut buf, 8, 3, 160, 9); // PCMA: not ours
        assert_eq!(parse(&buf), None);
    }

    #[test]
    fn rtp_clock() {
        assert_eq!(rtp_ts(1_000_000_000), 90_000);
        assert_eq!(rtp_ts(0), 0);
        // Wraps like a 32-bit RTP timestamp, not saturating.
        assert_eq!(rtp_ts(100_000_000_000_000), (9_000_000_000u64 % (1 << 32)) as u32);
    }

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
