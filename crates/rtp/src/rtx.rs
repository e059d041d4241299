// SPDX-License-Identifier: MIT
//! Retransmitted packets back into original ones, in place: RFC 4588 RTX
//! (its own SSRC and payload type, the original sequence number in the
//! first two payload bytes) and RIST simple profile (VSF TR-06-1: the
//! original packet with the SSRC's least significant bit set).
//!
//! Both take the packet as received, in a buffer the caller owns, and
//! leave the original packet at its start, returning its length.

use crate::header::RtpPacket;

/// Turn an RTX packet (RFC 4588 4) in `buf[..len]` into the packet it
/// repairs: sequence number from the OSN field, payload type `media_pt`,
/// SSRC `media_ssrc`; timestamp, marker, CSRCs and extension as the RTX
/// packet has them (which RFC 4588 says are the original's); padding
/// dropped. Returns the original's length and sequence number; `None` when
/// `buf[..len]` is not RTP or too short for the OSN.
pub fn unwrap_rtx(buf: &mut [u8], len: usize, media_pt: u8, media_ssrc: u32) -> Option<(usize, u16)> {
    let (header_len, payload_len) = {
        let p = RtpPacket::parse(buf.get(..len)?).ok()?;
        (p.header_len(), p.payload().len())
    };
    if payload_len < 2 {
        return None;
    }
    let osn = u16::from_be_bytes([buf[header_len], buf[header_len + 1]]);
    buf[0] &= !0x20; // no padding any more
    buf[1] = (buf[1] & 0x80) | (media_pt & 0x7f);
    buf[2..4].copy_from_slice(&osn.to_be_bytes());
    buf[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    buf.copy_within(header_len + 2..header_len + payload_len, header_len);
    Some((header_len + payload_len - 2, osn))
}

/// Whether `ssrc` is a RIST retransmission of `media_ssrc`: the same
/// SSRC with its least significant bit set (the media SSRC's being clear).
pub fn is_rist_retransmission(ssrc: u32, media_ssrc: u32) -> bool {
    media_ssrc & 1 == 0 && ssrc == media_ssrc | 1
}

/// Give a RIST retransmission in `buf` its media SSRC back (LSB cleared).
pub fn restore_rist(buf: &mut [u8]) {
    if let Some(b) = buf.get_mut(11) {
        *b &= !1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RtpBuilder;

    #[test]
    fn rtx_back_to_the_original() {
        let original = RtpBuilder::new(33, 4242, 90_000, 0xaaaa).marker(true).csrc(7).to_vec(&[1, 2, 3, 4, 5]);
        let mut rtx_payload = 4242u16.to_be_bytes().to_vec();
        rtx_payload.extend_from_slice(&[1, 2, 3, 4, 5]);
        let rtx = RtpBuilder::new(97, 17, 90_000, 0xbbbb).marker(true).csrc(7).pad_to_multiple(8).to_vec(&rtx_payload);
        let mut buf = rtx.clone();
        buf.resize(2048, 0xee);
        let (len, osn) = unwrap_rtx(&mut buf, rtx.len(), 33, 0xaaaa).unwrap();
        assert_eq!(osn, 4242);
        assert_eq!(&buf[..len], &original[..]);
        // Too short for an OSN, or not RTP.
        let empty = RtpBuilder::new(97, 1, 0, 2).to_vec(&[9]);
        let mut b = empty.clone();
        assert_eq!(unwrap_rtx(&mut b, empty.len(), 33, 1), None);
        assert_eq!(unwrap_rtx(&mut [0u8; 4], 4, 33, 1), None);
    }

    #[test]
    fn rist_retransmissions() {
        assert!(is_rist_retransmission(0x1001, 0x1000));
        assert!(!is_rist_retransmission(0x1000, 0x1000));
        assert!(!is_rist_retransmission(0x1001, 0x1001), "an odd media SSRC has no RIST twin");
        let mut p = RtpBuilder::new(33, 1, 2, 0x1001).to_vec(&[0; 4]);
        restore_rist(&mut p);
        assert_eq!(RtpPacket::parse(&p).unwrap().ssrc(), 0x1000);
    }
}
