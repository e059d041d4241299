// SPDX-License-Identifier: MIT
//! Payload-type facts from RFC 3551 (the audio/video profile).

/// Clock rate (Hz) of a static RTP payload type as assigned by RFC 3551,
/// tables 4 and 5. Dynamic types (96..=127) and unassigned numbers return
/// `None`: their rate comes from signalling (SDP) or configuration.
pub fn static_clock_rate(payload_type: u8) -> Option<u32> {
    match payload_type {
        // PCMU, GSM, G723, DVI4/8000, LPC, PCMA, G722 (8000 by RFC 3551's
        // historical note), QCELP, CN, G728, G729.
        0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18 => Some(8_000),
        6 => Some(16_000),       // DVI4/16000
        10 | 11 => Some(44_100), // L16 stereo, L16 mono
        16 => Some(11_025),      // DVI4/11025
        17 => Some(22_050),      // DVI4/22050
        // MPA, CelB, JPEG, nv, H261, MPV, MP2T, H263: 90 kHz video clock.
        14 | 25 | 26 | 28 | 31 | 32 | 33 | 34 => Some(90_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3551_table_entries() {
        assert_eq!(static_clock_rate(0), Some(8_000)); // PCMU
        assert_eq!(static_clock_rate(8), Some(8_000)); // PCMA
        assert_eq!(static_clock_rate(10), Some(44_100)); // L16/2
        assert_eq!(static_clock_rate(33), Some(90_000)); // MP2T
        assert_eq!(static_clock_rate(96), None); // dynamic
        assert_eq!(static_clock_rate(1), None); // reserved
        assert_eq!(static_clock_rate(35), None); // unassigned
    }
}
