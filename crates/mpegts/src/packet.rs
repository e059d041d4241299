// SPDX-License-Identifier: MIT
//! The transport packet (ISO/IEC 13818-1 section 2.4.3.2):
//!
//! ```text
//! sync_byte 0x47 (8) | TEI (1) PUSI (1) priority (1) PID (13)
//! | scrambling (2) adaptation_field_control (2) continuity_counter (4)
//! | [adaptation field: length (8), flags (8: discontinuity, ...), ...]
//! | [payload]
//! ```

use core::fmt;

use crate::head::{whole_packets, HeadError};
pub use crate::head::{PACKET_LEN, PID_NULL, SYNC_BYTE};

/// The PID of the program association table.
pub const PID_PAT: u16 = 0x0000;

/// A view of one transport packet. It never fails: a packet with a bad
/// sync byte or an adaptation field longer than the packet is still
/// viewable, and [`payload`](Self::payload) then returns `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsPacket<'a> {
    b: &'a [u8; PACKET_LEN],
}

impl<'a> TsPacket<'a> {
    /// View `bytes`.
    pub fn new(bytes: &'a [u8; PACKET_LEN]) -> Self {
        TsPacket { b: bytes }
    }
    /// The first byte is [`SYNC_BYTE`].
    pub fn sync_ok(&self) -> bool {
        self.b[0] == SYNC_BYTE
    }
    /// transport_error_indicator: a demodulator upstream saw an
    /// uncorrectable error in this packet.
    pub fn transport_error(&self) -> bool {
        self.b[1] & 0x80 != 0
    }
    /// payload_unit_start_indicator: a PES packet or a PSI section starts
    /// here (for PSI, after the pointer field).
    pub fn pusi(&self) -> bool {
        self.b[1] & 0x40 != 0
    }
    /// The 13-bit packet identifier.
    pub fn pid(&self) -> u16 {
        u16::from_be_bytes([self.b[1] & 0x1f, self.b[2]])
    }
    /// transport_scrambling_control: 0 when not scrambled.
    pub fn scrambling(&self) -> u8 {
        self.b[3] >> 6
    }
    /// adaptation_field_control: 1 payload only, 2 adaptation field only,
    /// 3 both, 0 reserved (the packet is to be discarded).
    pub fn adaptation_field_control(&self) -> u8 {
        (self.b[3] >> 4) & 3
    }
    /// The 4-bit continuity counter.
    pub fn continuity_counter(&self) -> u8 {
        self.b[3] & 0x0f
    }
    /// Whether the packet carries payload (and so advances its PID's
    /// continuity counter).
    pub fn has_payload(&self) -> bool {
        self.b[3] & 0x10 != 0
    }
    /// The adaptation field after its length byte, if the packet has one
    /// that fits.
    pub fn adaptation_field(&self) -> Option<&'a [u8]> {
        if self.b[3] & 0x20 == 0 {
            return None;
        }
        let len = self.b[4] as usize;
        self.b.get(5..5 + len)
    }
    /// discontinuity_indicator of the adaptation field: the continuity
    /// counter (or the time base) may jump here without an error.
    pub fn discontinuity(&self) -> bool {
        self.adaptation_field().and_then(|af| af.first()).is_some_and(|flags| flags & 0x80 != 0)
    }
    /// The payload, if the packet has one and its adaptation field leaves
    /// room for it; `None` for an adaptation field running past the end.
    pub fn payload(&self) -> Option<&'a [u8]> {
        match self.adaptation_field_control() {
            1 => self.b.get(4..),
            3 => self.b.get(5 + self.b[4] as usize..).filter(|p| !p.is_empty()),
            _ => None,
        }
    }
    /// The 188 bytes.
    pub fn as_bytes(&self) -> &'a [u8; PACKET_LEN] {
        self.b
    }
}

/// Why a datagram is not raw MPEG-TS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramError {
    /// Zero bytes.
    Empty,
    /// Not a multiple of 188 bytes.
    NotWholePackets {
        /// Bytes in the datagram.
        len: usize,
    },
    /// A packet that does not start with 0x47.
    SyncByte {
        /// Its index in the datagram.
        index: usize,
        /// The byte found instead.
        byte: u8,
    },
}

impl fmt::Display for DatagramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DatagramError::Empty => write!(f, "empty datagram"),
            DatagramError::NotWholePackets { len } => {
                write!(f, "{len} bytes is not a whole number of 188-byte TS packets")
            }
            DatagramError::SyncByte { index, byte } => {
                write!(f, "TS packet {index} starts with {byte:#04x}, not the sync byte 0x47")
            }
        }
    }
}

impl std::error::Error for DatagramError {}

/// The packets of a datagram that is a whole number of 188-byte packets,
/// whatever their sync bytes (the analyser counts bad ones).
pub fn packets(buf: &[u8]) -> impl Iterator<Item = &[u8; PACKET_LEN]> {
    buf.chunks_exact(PACKET_LEN).filter_map(|c| c.try_into().ok())
}

/// Check a datagram as raw UDP MPEG-TS: a non-zero whole number of
/// 188-byte packets, each starting with the sync byte. Returns the number
/// of packets.
pub fn check_datagram(buf: &[u8]) -> Result<usize, DatagramError> {
    // The rule of `head::check_heads`, which the kernel module applies.
    match whole_packets(buf.len()) {
        Ok(_) => {}
        Err(HeadError::Empty) => return Err(DatagramError::Empty),
        Err(_) => return Err(DatagramError::NotWholePackets { len: buf.len() }),
    }
    for (index, p) in buf.chunks_exact(PACKET_LEN).enumerate() {
        if p[0] != SYNC_BYTE {
            return Err(DatagramError::SyncByte { index, byte: p[0] });
        }
    }
    Ok(buf.len() / PACKET_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(header: [u8; 4]) -> [u8; PACKET_LEN] {
        let mut p = [0xffu8; PACKET_LEN];
        p[..4].copy_from_slice(&header);
        p
    }

    #[test]
    fn header_fields() {
        let b = pkt([0x47, 0x41 | 0x80, 0x00, 0x5a]);
        let p = TsPacket::new(&b);
        assert!(p.sync_ok() && p.transport_error() && p.pusi());
        assert_eq!(p.pid(), 0x0100);
        assert_eq!((p.scrambling(), p.adaptation_field_control(), p.continuity_counter()), (1, 1, 0xa));
        assert_eq!(p.payload().map(<[u8]>::len), Some(184));
        assert!(p.adaptation_field().is_none() && !p.discontinuity());
    }

    #[test]
    fn adaptation_field_and_discontinuity() {
        let mut b = pkt([0x47, 0x1f, 0xfe, 0x33]);
        b[4] = 7;
        b[5] = 0x80;
        let p = TsPacket::new(&b);
        assert_eq!(p.adaptation_field().map(<[u8]>::len), Some(7));
        assert!(p.discontinuity());
        assert_eq!(p.payload().map(<[u8]>::len), Some(188 - 5 - 7));
        // An adaptation field of 183 bytes leaves no payload.
        b[4] = 183;
        assert_eq!(TsPacket::new(&b).payload(), None);
        // One that runs past the end is refused, not trusted.
        b[4] = 200;
        let p = TsPacket::new(&b);
        assert_eq!((p.adaptation_field(), p.payload(), p.discontinuity()), (None, None, false));
        // Adaptation only: no payload, no continuity step.
        let b = pkt([0x47, 0x00, 0x20, 0x25]);
        assert!(!TsPacket::new(&b).has_payload());
    }

    #[test]
    fn datagram_checks() {
        let good = pkt([0x47, 0, 0, 0x10]);
        let mut d = Vec::new();
        for _ in 0..7 {
            d.extend_from_slice(&good);
        }
        assert_eq!(check_datagram(&d), Ok(7));
        assert_eq!(check_datagram(&[]), Err(DatagramError::Empty));
        assert_eq!(check_datagram(&d[..1000]), Err(DatagramError::NotWholePackets { len: 1000 }));
        d[188 * 3] = 0x48;
        assert_eq!(check_datagram(&d), Err(DatagramError::SyncByte { index: 3, byte: 0x48 }));
        assert_eq!(packets(&d).count(), 7);
        assert_eq!(packets(&d[..200]).count(), 1);
        // An RTP header in front is not raw TS.
        let mut rtp = vec![0x80, 33, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        rtp.extend_from_slice(&d[..188]);
        assert_eq!(check_datagram(&rtp), Err(DatagramError::NotWholePackets { len: 200 }));
    }
}
