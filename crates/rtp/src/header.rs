// SPDX-License-Identifier: MIT
//! RTP fixed header (RFC 3550 section 5.1): a validated zero-copy view and a
//! builder that writes into caller memory.

use core::fmt;

pub const RTP_VERSION: u8 = 2;
pub const FIXED_HEADER_LEN: usize = 12;
/// The CSRC count is 4 bits wide.
pub const MAX_CSRCS: usize = 15;

/// Why bytes are not an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the 12-byte fixed header.
    TooShort { len: usize },
    /// Version field other than 2.
    BadVersion { version: u8 },
    /// The CSRC list (4 bytes per entry) runs past the end.
    CsrcOverrun { csrc_count: u8, len: usize },
    /// The extension header, or the body it announces, runs past the end.
    ExtensionOverrun { len: usize },
    /// P bit set, but the count in the last byte is 0 (it counts itself, so
    /// it is at least 1) or larger than the bytes after the headers.
    BadPadding { pad_len: u8, available: usize },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParseError::TooShort { len } => write!(f, "{len} bytes is shorter than the 12-byte RTP header"),
            ParseError::BadVersion { version } => write!(f, "RTP version {version}, expected 2"),
            ParseError::CsrcOverrun { csrc_count, len } => {
                write!(
                    f,
                    "{csrc_count} CSRCs need {} bytes, packet has {len}",
                    FIXED_HEADER_LEN + 4 * csrc_count as usize
                )
            }
            ParseError::ExtensionOverrun { len } => {
                write!(f, "header extension runs past the end of a {len}-byte packet")
            }
            ParseError::BadPadding { pad_len, available } => {
                write!(f, "padding count {pad_len} with {available} bytes after the header")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// A validated RTP packet borrowed from a buffer. All offsets were checked
/// once in [`RtpPacket::parse`]; accessors cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    /// Fixed header + CSRCs + extension.
    header_len: usize,
    padding_len: usize,
    /// Offset of the extension header (profile, length), if present.
    ext_at: Option<usize>,
}

impl<'a> RtpPacket<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        let len = buf.len();
        if len < FIXED_HEADER_LEN {
            return Err(ParseError::TooShort { len });
        }
        let b0 = buf[0];
        let version = b0 >> 6;
        if version != RTP_VERSION {
            return Err(ParseError::BadVersion { version });
        }
        let csrc_count = b0 & 0x0f;
        let csrc_end = FIXED_HEADER_LEN + 4 * csrc_count as usize;
        if csrc_end > len {
            return Err(ParseError::CsrcOverrun { csrc_count, len });
        }
        let (header_len, ext_at) = if b0 & 0x10 != 0 {
            let words = match buf.get(csrc_end + 2..csrc_end + 4) {
                Some(w) => u16::from_be_bytes([w[0], w[1]]) as usize,
                None => return Err(ParseError::ExtensionOverrun { len }),
            };
            let end = csrc_end + 4 + 4 * words;
            if end > len {
                return Err(ParseError::ExtensionOverrun { len });
            }
            (end, Some(csrc_end))
        } else {
            (csrc_end, None)
        };
        let padding_len = if b0 & 0x20 != 0 {
            let available = len - header_len;
            let pad_len = buf[len - 1];
            if pad_len == 0 || pad_len as usize > available {
                return Err(ParseError::BadPadding { pad_len, available });
            }
            pad_len as usize
        } else {
            0
        };
        Ok(RtpPacket { buf, header_len, padding_len, ext_at })
    }

    fn word(&self, at: usize) -> u32 {
        // In bounds: only called for offsets validated by `parse`.
        u32::from_be_bytes([self.buf[at], self.buf[at + 1], self.buf[at + 2], self.buf[at + 3]])
    }

    pub fn version(&self) -> u8 {
        self.buf[0] >> 6
    }
    pub fn padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }
    pub fn extension(&self) -> bool {
        self.buf[0] & 0x10 != 0
    }
    pub fn csrc_count(&self) -> u8 {
        self.buf[0] & 0x0f
    }
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }
    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }
    pub fn timestamp(&self) -> u32 {
        self.word(4)
    }
    pub fn ssrc(&self) -> u32 {
        self.word(8)
    }
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let list = &self.buf[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4 * self.csrc_count() as usize];
        list.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
    /// The profile-defined 16 bits and the extension body.
    pub fn extension_header(&self) -> Option<(u16, &'a [u8])> {
        let at = self.ext_at?;
        let profile = u16::from_be_bytes([self.buf[at], self.buf[at + 1]]);
        Some((profile, &self.buf[at + 4..self.header_len]))
    }
    /// The payload: after header, CSRCs and extension, before padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..self.buf.len() - self.padding_len]
    }
    pub fn padding_len(&self) -> usize {
        self.padding_len
    }
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// Why a packet could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildError {
    BufferTooSmall {
        needed: usize,
    },
    /// Payload types are 7 bits.
    InvalidPayloadType(u8),
    TooManyCsrcs,
    /// Extension bodies are whole 32-bit words, at most 65535 of them.
    ExtensionNotWordAligned,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::BufferTooSmall { needed } => write!(f, "buffer too small, {needed} bytes needed"),
            BuildError::InvalidPayloadType(pt) => write!(f, "payload type {pt} does not fit 7 bits"),
            BuildError::TooManyCsrcs => write!(f, "more than {MAX_CSRCS} CSRCs"),
            BuildError::ExtensionNotWordAligned => write!(f, "extension body is not a whole number of 32-bit words"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Writes RTP packets. Fields are set by value; `write` checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpBuilder {
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    csrcs: Vec<u32>,
    extension: Option<(u16, Vec<u8>)>,
    padding: u8,
}

impl RtpBuilder {
    pub fn new(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32) -> Self {
        RtpBuilder {
            payload_type,
            sequence,
            timestamp,
            ssrc,
            marker: false,
            csrcs: Vec::new(),
            extension: None,
            padding: 0,
        }
    }
    pub fn marker(mut self, m: bool) -> Self {
        self.marker = m;
        self
    }
    /// Add a contributing source (at most 15; `write` refuses more).
    pub fn csrc(mut self, c: u32) -> Self {
        self.csrcs.push(c);
        self
    }
    /// Header extension: 16 profile-defined bits and a body of whole words.
    pub fn extension(mut self, profile: u16, body: &[u8]) -> Self {
        self.extension = Some((profile, body.to_vec()));
        self
    }
    /// Padding bytes to append, including the count byte; 0 for none.
    pub fn padding(mut self, pad_len: u8) -> Self {
        self.padding = pad_len;
        self
    }

    fn header_len(&self) -> usize {
        FIXED_HEADER_LEN + 4 * self.csrcs.len() + self.extension.as_ref().map_or(0, |(_, b)| 4 + b.len())
    }

    /// Total packet length for a payload of `payload_len` bytes.
    pub fn len(&self, payload_len: usize) -> usize {
        self.header_len() + payload_len + self.padding as usize
    }

    /// Write the packet into `out`; returns its length.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, BuildError> {
        if self.payload_type > 0x7f {
            return Err(BuildError::InvalidPayloadType(self.payload_type));
        }
        if self.csrcs.len() > MAX_CSRCS {
            return Err(BuildError::TooManyCsrcs);
        }
        if let Some((_, body)) = &self.extension {
            if body.len() % 4 != 0 || body.len() / 4 > u16::MAX as usize {
                return Err(BuildError::ExtensionNotWordAligned);
            }
        }
        let needed = self.len(payload.len());
        let out = out.get_mut(..needed).ok_or(BuildError::BufferTooSmall { needed })?;
        out[0] = RTP_VERSION << 6
            | if self.padding > 0 { 0x20 } else { 0 }
            | if self.extension.is_some() { 0x10 } else { 0 }
            | self.csrcs.len() as u8;
        out[1] = if self.marker { 0x80 } else { 0 } | self.payload_type;
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut at = FIXED_HEADER_LEN;
        for c in &self.csrcs {
            out[at..at + 4].copy_from_slice(&c.to_be_bytes());
            at += 4;
        }
        if let Some((profile, body)) = &self.extension {
            out[at..at + 2].copy_from_slice(&profile.to_be_bytes());
            out[at + 2..at + 4].copy_from_slice(&((body.len() / 4) as u16).to_be_bytes());
            out[at + 4..at + 4 + body.len()].copy_from_slice(body);
            at += 4 + body.len();
        }
        out[at..at + payload.len()].copy_from_slice(payload);
        at += payload.len();
        if self.padding > 0 {
            let end = at + self.padding as usize;
            out[at..end - 1].fill(0);
            out[end - 1] = self.padding;
            at = end;
        }
        Ok(at)
    }

    /// The packet as a new vector.
    ///
    /// # Panics
    /// On the builder misuse `write` reports: a payload type over 127, more
    /// than 15 CSRCs, or an extension body that is not whole words.
    pub fn to_vec(&self, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; self.len(payload.len())];
        match self.write(payload, &mut v) {
            Ok(n) => v.truncate(n),
            Err(e) => panic!("RtpBuilder misuse: {e}"),
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// V=2 P=0 X=0 CC=0, M=1 PT=33, seq 0x1234, ts 0x01020304,
    /// SSRC 0xdeadbeef, payload "TS".
    const SIMPLE: [u8; 14] = [0x80, 0xa1, 0x12, 0x34, 0x01, 0x02, 0x03, 0x04, 0xde, 0xad, 0xbe, 0xef, b'T', b'S'];

    #[test]
    fn parses_a_known_packet() {
        let p = RtpPacket::parse(&SIMPLE).unwrap();
        assert_eq!(p.version(), 2);
        assert!(!p.padding() && !p.extension());
        assert!(p.marker());
        assert_eq!(p.payload_type(), 33);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 0x0102_0304);
        assert_eq!(p.ssrc(), 0xdead_beef);
        assert_eq!(p.csrc_count(), 0);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.payload(), b"TS");
        assert_eq!(p.extension_header(), None);
    }

    #[test]
    fn parses_csrcs_extension_and_padding() {
        // CC=2, X=1, P=1; extension 0xBEDE with one word; payload 3 bytes;
        // 4 padding bytes (last one = 4).
        let mut b = vec![0xb2, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7];
        b.extend_from_slice(&[0, 0, 0, 0x11, 0, 0, 0, 0x22]); // CSRCs
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // extension
        b.extend_from_slice(&[1, 2, 3]); // payload
        b.extend_from_slice(&[0, 0, 0, 4]); // padding
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [0x11, 0x22]);
        assert_eq!(p.extension_header(), Some((0xbede, &[0x10, 0xaa, 0, 0][..])));
        assert_eq!(p.header_len(), 12 + 8 + 8);
        assert_eq!(p.padding_len(), 4);
        assert_eq!(p.payload(), [1, 2, 3]);
        assert_eq!(p.payload_type(), 0x60);
        assert!(!p.marker());
    }

    #[test]
    fn every_parse_error() {
        assert_eq!(RtpPacket::parse(&SIMPLE[..11]), Err(ParseError::TooShort { len: 11 }));
        assert_eq!(RtpPacket::parse(&[]), Err(ParseError::TooShort { len: 0 }));
        let mut v1 = SIMPLE;
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(ParseError::BadVersion { version: 1 }));
        let mut cc = SIMPLE;
        cc[0] = 0x81; // one CSRC needs 16 bytes, have 14
        assert_eq!(RtpPacket::parse(&cc), Err(ParseError::CsrcOverrun { csrc_count: 1, len: 14 }));
        let mut x = SIMPLE;
        x[0] = 0x90; // extension header needs 4 bytes after 12, have 2
        assert_eq!(RtpPacket::parse(&x), Err(ParseError::ExtensionOverrun { len: 14 }));
        let mut xb = SIMPLE.to_vec();
        xb[0] = 0x90;
        // "TS" becomes the profile field; a length of 2 words needs 24 bytes.
        xb.extend_from_slice(&[0, 2]);
        assert_eq!(RtpPacket::parse(&xb), Err(ParseError::ExtensionOverrun { len: 16 }));
        let mut p0 = SIMPLE;
        p0[0] = 0xa0;
        p0[13] = 0; // padding count 0
        assert_eq!(RtpPacket::parse(&p0), Err(ParseError::BadPadding { pad_len: 0, available: 2 }));
        let mut p3 = SIMPLE;
        p3[0] = 0xa0;
        p3[13] = 3; // 3 bytes of padding, only 2 after the header
        assert_eq!(RtpPacket::parse(&p3), Err(ParseError::BadPadding { pad_len: 3, available: 2 }));
        let mut p2 = SIMPLE;
        p2[0] = 0xa0;
        p2[13] = 2; // all of the bytes after the header are padding
        assert_eq!(RtpPacket::parse(&p2).unwrap().payload(), b"");
    }

    #[test]
    fn builder_round_trip() {
        let b = RtpBuilder::new(96, 65_535, 4_000_000_000, 42)
            .marker(true)
            .csrc(7)
            .csrc(8)
            .extension(0x1000, &[1, 2, 3, 4, 5, 6, 7, 8])
            .padding(3);
        let bytes = b.to_vec(b"hello");
        assert_eq!(bytes.len(), 12 + 8 + 12 + 5 + 3);
        assert_eq!(b.len(5), bytes.len());
        let p = RtpPacket::parse(&bytes).unwrap();
        assert_eq!((p.payload_type(), p.sequence_number(), p.timestamp(), p.ssrc()), (96, 65_535, 4_000_000_000, 42));
        assert!(p.marker());
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [7, 8]);
        assert_eq!(p.extension_header(), Some((0x1000, &[1, 2, 3, 4, 5, 6, 7, 8][..])));
        assert_eq!(p.payload(), b"hello");
        assert_eq!(p.padding_len(), 3);
        assert_eq!(RtpBuilder::new(33, 0x1234, 0x0102_0304, 0xdead_beef).marker(true).to_vec(b"TS"), SIMPLE);
    }

    #[test]
    fn builder_errors() {
        let mut small = [0u8; 13];
        assert_eq!(
            RtpBuilder::new(0, 0, 0, 0).write(b"ab", &mut small),
            Err(BuildError::BufferTooSmall { needed: 14 })
        );
        let mut buf = [0u8; 200];
        assert_eq!(RtpBuilder::new(128, 0, 0, 0).write(b"", &mut buf), Err(BuildError::InvalidPayloadType(128)));
        let many = (0..16).fold(RtpBuilder::new(0, 0, 0, 0), |b, c| b.csrc(c));
        assert_eq!(many.write(b"", &mut buf), Err(BuildError::TooManyCsrcs));
        assert_eq!(
            RtpBuilder::new(0, 0, 0, 0).extension(1, &[1, 2, 3]).write(b"", &mut buf),
            Err(BuildError::ExtensionNotWordAligned)
        );
    }
}
