// SPDX-License-Identifier: MIT
//! RTP packets for tests, benchmarks and tools, every header written by
//! [`rtp::RtpBuilder`]: the one place that knows the header layout besides
//! the parser (`rtp::rules`).

use rtp::{RtpBuilder, FIXED_HEADER_LEN};

pub use rtp::PT_MP2T;

/// The dynamic payload type (RFC 3551) the tests use for non-MPEG-TS RTP.
pub const PT_DYNAMIC: u8 = 96;
/// G.711 µ-law (RFC 3551), the VoIP profile's payload type.
pub const PT_PCMU: u8 = 0;
/// SSRC of [`numbered`]'s packets.
pub const NUMBERED_SSRC: u32 = 0x5EED_0001;

/// Write a fixed RTP header (version 2, no padding, extension, CSRC or
/// marker) into `buf[..12]`, leaving the rest of `buf` as it is: for
/// senders that keep a datagram buffer and restamp it per packet.
///
/// Panics if `buf` is shorter than 12 bytes or `payload_type` > 127.
pub fn write_header(buf: &mut [u8], payload_type: u8, seq: u16, timestamp: u32, ssrc: u32) {
    RtpBuilder::new(payload_type, seq, timestamp, ssrc)
        .write(&[], &mut buf[..FIXED_HEADER_LEN])
        .expect("a 12-byte header with a 7-bit payload type");
}

/// An RTP packet: fixed header and `payload`.
pub fn packet(payload_type: u8, seq: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    RtpBuilder::new(payload_type, seq, timestamp, ssrc).to_vec(payload)
}

/// Packet `seq` of the guest tests' stream: payload type 96, SSRC
/// [`NUMBERED_SSRC`], timestamp `160 * seq`, and a payload of 0..=400
/// bytes derived from `seq`, so a receiver can rebuild and compare it.
pub fn numbered(seq: u32) -> Vec<u8> {
    let len = (seq.wrapping_mul(2_654_435_761) % 401) as usize;
    let payload: Vec<u8> = (0..len).map(|j| (seq as u8).wrapping_mul(7).wrapping_add(j as u8)).collect();
    packet(PT_DYNAMIC, seq as u16, seq.wrapping_mul(160), NUMBERED_SSRC, &payload)
}

/// Packet `seq` of source `ssrc`: payload type 96, timestamp `160 * seq`,
/// 20 payload bytes of `seq`'s low byte.
pub fn with_ssrc(seq: u16, ssrc: u32) -> Vec<u8> {
    packet(PT_DYNAMIC, seq, u32::from(seq).wrapping_mul(160), ssrc, &[seq as u8; 20])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_makers_write_what_the_parser_reads() {
        for seq in [0u32, 1, 2, 65_535, 65_536, 1 << 31] {
            let b = numbered(seq);
            let p = rtp::RtpPacket::parse(&b).unwrap();
            assert_eq!(
                (p.payload_type(), p.sequence_number(), p.timestamp(), p.ssrc(), p.marker()),
                (PT_DYNAMIC, seq as u16, seq.wrapping_mul(160), NUMBERED_SSRC, false)
            );
            assert_eq!(p.payload().len(), (seq.wrapping_mul(2_654_435_761) % 401) as usize);
        }
        let b = with_ssrc(7, 0xabcd);
        let p = rtp::RtpPacket::parse(&b).unwrap();
        assert_eq!((p.sequence_number(), p.timestamp(), p.ssrc(), p.payload()), (7, 1120, 0xabcd, &[7u8; 20][..]));

        let mut buf = [0xffu8; 40];
        write_header(&mut buf, PT_MP2T, 9, 90, 5);
        let p = rtp::RtpPacket::parse(&buf).unwrap();
        assert_eq!((p.payload_type(), p.sequence_number(), p.timestamp(), p.ssrc()), (PT_MP2T, 9, 90, 5));
        assert_eq!(p.payload(), &[0xff; 28]);
    }
}
