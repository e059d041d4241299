// SPDX-License-Identifier: MIT
//! RTP packet layout (RFC 3550 section 5.1): a validated zero-copy view and a
//! builder that writes into caller memory.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                             SSRC                              |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |                   CSRC list (CC words)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | profile-defined (16 bits)     |  length (in 32-bit words)     | if X
//! |                  extension body (length words)                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            payload ...        |  padding ...  | pad count (n) | if P
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! [`RtpPacket::parse`] does every bounds check once and keeps the pieces as
//! sub-slices, so the accessors have no failure path and no indexing that
//! could panic. The receive path parses every datagram from the network, so
//! this matters more than the few extra words the view carries.

use core::fmt;

use crate::rules::{
    self, HeaderError, EXTENSION_HEADER_LEN, FLAG_EXTENSION, FLAG_MARKER, FLAG_PADDING, MASK_CSRC_COUNT,
    MASK_PAYLOAD_TYPE,
};
pub use crate::rules::{FIXED_HEADER_LEN, MAX_CSRCS, RTP_VERSION};

/// Why bytes are not an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the 12-byte fixed header.
    TooShort {
        /// Bytes in the buffer.
        len: usize,
    },
    /// Version field other than 2.
    BadVersion {
        /// The two version bits.
        version: u8,
    },
    /// The CSRC list (4 bytes per entry) runs past the end.
    CsrcOverrun {
        /// The CC field.
        csrc_count: u8,
        /// Bytes in the buffer.
        len: usize,
    },
    /// The 4-byte extension header, or the body it announces, runs past the
    /// end.
    ExtensionOverrun {
        /// Bytes in the buffer.
        len: usize,
    },
    /// P bit set, but the count in the last byte is 0 (the count includes
    /// itself, so a valid one is at least 1) or larger than the bytes after
    /// the headers. Either would make the payload length negative, or eat
    /// into the header, if trusted.
    BadPadding {
        /// The last byte of the packet.
        pad_len: u8,
        /// Bytes after the fixed header, CSRCs and extension.
        available: usize,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParseError::TooShort { len } => write!(f, "{len} bytes is shorter than the 12-byte RTP header"),
            ParseError::BadVersion { version } => write!(f, "RTP version {version}, expected {RTP_VERSION}"),
            ParseError::CsrcOverrun { csrc_count, len } => write!(
                f,
                "{csrc_count} CSRCs need {} bytes, packet has {len}",
                FIXED_HEADER_LEN + 4 * csrc_count as usize
            ),
            ParseError::ExtensionOverrun { len } => {
                write!(f, "header extension runs past the end of a {len}-byte packet")
            }
            ParseError::BadPadding { pad_len, available } => {
                write!(f, "padding count {pad_len} with {available} bytes after the headers")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// A validated RTP packet borrowed from a buffer.
///
/// All lengths were checked once in [`RtpPacket::parse`], which split the
/// buffer into its parts; the accessors only read those parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    fixed: &'a [u8; FIXED_HEADER_LEN],
    /// The CSRC list, `4 * CC` bytes.
    csrcs: &'a [u8],
    /// Profile-defined 16 bits and the body (whole words).
    extension: Option<(u16, &'a [u8])>,
    payload: &'a [u8],
    /// Fixed header + CSRCs + extension header and body.
    header_len: usize,
    /// Padding including the count byte; 0 when P is clear.
    padding_len: u8,
}

impl<'a> RtpPacket<'a> {
    /// Validate `buf` as one RTP packet: version 2, the CSRC list and the
    /// extension inside the buffer, and, if P is set, a padding count of at
    /// least 1 that fits after the headers.
    ///
    /// Payload type, SSRC and sequence are not judged here: which values are
    /// acceptable is the stream's business (configured PT, A.1 statistics).
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        // The rules are `rules.rs`'s, which the kernel module applies too;
        // this only adds the details of the error and splits the buffer.
        let len = buf.len();
        let (fixed, _) = buf.split_first_chunk::<FIXED_HEADER_LEN>().ok_or(ParseError::TooShort { len })?;
        let flags = fixed[0];
        let header_len = rules::header_len(buf, len).map_err(|e| match e {
            HeaderError::TooShort => ParseError::TooShort { len },
            HeaderError::BadVersion => ParseError::BadVersion { version: flags >> 6 },
            HeaderError::CsrcOverrun => ParseError::CsrcOverrun { csrc_count: flags & MASK_CSRC_COUNT, len },
            HeaderError::ExtensionOverrun | HeaderError::BadPadding => ParseError::ExtensionOverrun { len },
        })?;

        // `header_len` checked every range below against `len`.
        let csrc_end = FIXED_HEADER_LEN + 4 * (flags & MASK_CSRC_COUNT) as usize;
        let csrcs = buf.get(FIXED_HEADER_LEN..csrc_end).unwrap_or_default();
        let extension = (flags & FLAG_EXTENSION != 0).then(|| {
            let profile = match buf.get(csrc_end..csrc_end + 2) {
                Some(&[a, b]) => u16::from_be_bytes([a, b]),
                _ => 0,
            };
            (profile, buf.get(csrc_end + EXTENSION_HEADER_LEN..header_len).unwrap_or_default())
        });
        let rest = buf.get(header_len..).unwrap_or_default();

        let (payload, padding_len) = if flags & FLAG_PADDING != 0 {
            // The count is the packet's last octet. With nothing after the
            // headers that octet belongs to the header, and any value is
            // rejected because `available` is 0.
            let pad_len = buf.last().copied().unwrap_or(0);
            let available = rest.len();
            if !rules::padding_ok(pad_len, available) {
                return Err(ParseError::BadPadding { pad_len, available });
            }
            (rest.get(..available - pad_len as usize).unwrap_or_default(), pad_len)
        } else {
            (rest, 0)
        };

        Ok(RtpPacket { buf, fixed, csrcs, extension, payload, header_len, padding_len })
    }

    fn word(&self, at: usize) -> u32 {
        match self.fixed.get(at..at + 4) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => 0,
        }
    }

    /// Always [`RTP_VERSION`]: `parse` accepts nothing else.
    pub fn version(&self) -> u8 {
        self.fixed[0] >> 6
    }
    /// The P bit: the packet ends in [`padding_len`](Self::padding_len)
    /// bytes that are not payload.
    pub fn padding(&self) -> bool {
        self.fixed[0] & FLAG_PADDING != 0
    }
    /// The X bit: a header extension follows the CSRC list.
    pub fn extension(&self) -> bool {
        self.fixed[0] & FLAG_EXTENSION != 0
    }
    /// The CC field: number of contributing sources (0..=15).
    pub fn csrc_count(&self) -> u8 {
        self.fixed[0] & MASK_CSRC_COUNT
    }
    /// The M bit; its meaning is up to the payload format (for video,
    /// usually the last packet of a frame).
    pub fn marker(&self) -> bool {
        self.fixed[1] & FLAG_MARKER != 0
    }
    /// The 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.fixed[1] & MASK_PAYLOAD_TYPE
    }
    /// The 16-bit sequence number (extend it with
    /// [`SourceStats`](crate::SourceStats)).
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.fixed[2], self.fixed[3]])
    }
    /// The media timestamp, in units of the payload's clock rate.
    pub fn timestamp(&self) -> u32 {
        self.word(4)
    }
    /// The synchronisation source identifier.
    pub fn ssrc(&self) -> u32 {
        self.word(8)
    }
    /// The contributing sources, in packet order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.csrcs.chunks_exact(4).map(|c| match *c {
            [a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
            _ => 0, // chunks_exact(4) yields only 4-byte chunks
        })
    }
    /// The header extension, if X is set: the 16 profile-defined bits
    /// (0xBEDE for RFC 8285 one-byte elements, 0x100x for two-byte ones)
    /// and the body, a whole number of 32-bit words (possibly none).
    pub fn extension_header(&self) -> Option<(u16, &'a [u8])> {
        self.extension
    }
    /// The payload: after the header, CSRCs and extension, before padding.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// Padding bytes at the end, including the count byte; 0 without P.
    pub fn padding_len(&self) -> usize {
        self.padding_len as usize
    }
    /// Bytes before the payload: fixed header, CSRCs and the extension.
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// The whole packet as parsed.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// Why [`RtpBuilder::write`] could not build a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildError {
    /// The output buffer is shorter than the packet.
    BufferTooSmall {
        /// The packet's length, [`RtpBuilder::len`].
        needed: usize,
    },
    /// Payload types are 7 bits (0..=127).
    InvalidPayloadType(u8),
    /// More than [`MAX_CSRCS`] contributing sources were added.
    TooManyCsrcs {
        /// How many were added.
        count: usize,
    },
    /// The extension's length field counts 32-bit words, so the body must
    /// be a multiple of 4 bytes.
    ExtensionNotWordAligned {
        /// Body length in bytes.
        len: usize,
    },
    /// The extension's length field is 16 bits: at most 65535 words.
    ExtensionTooLong {
        /// Body length in bytes.
        len: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BuildError::BufferTooSmall { needed } => write!(f, "buffer too small, {needed} bytes needed"),
            BuildError::InvalidPayloadType(pt) => write!(f, "payload type {pt} does not fit 7 bits"),
            BuildError::TooManyCsrcs { count } => write!(f, "{count} CSRCs, at most {MAX_CSRCS} fit"),
            BuildError::ExtensionNotWordAligned { len } => {
                write!(f, "extension body of {len} bytes is not a whole number of 32-bit words")
            }
            BuildError::ExtensionTooLong { len } => {
                write!(f, "extension body of {len} bytes exceeds 65535 words")
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// How the builder pads (RFC 3550 5.1: padding for block ciphers or to
/// carry several packets in one lower-layer unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Padding {
    None,
    /// This many bytes, count byte included.
    Exact(u8),
    /// Pad the whole packet to a multiple of this (2..=255).
    ToMultipleOf(u8),
}

/// Writes RTP packets into caller memory.
///
/// The setters take and return the builder by value and never fail; all
/// checks happen in [`write`](Self::write), which reports them as a
/// [`BuildError`]. The builder itself allocates only for an extension body
/// (its type has no lifetime so it can be stored and cloned per stream);
/// `write` never allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpBuilder {
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    csrcs: [u32; MAX_CSRCS],
    /// CSRCs added; may exceed `MAX_CSRCS` (only the first 15 are kept),
    /// which `write` reports rather than silently dropping them.
    csrc_count: usize,
    extension: Option<(u16, Vec<u8>)>,
    padding: Padding,
}

impl RtpBuilder {
    /// A packet with no marker, CSRCs, extension or padding.
    pub fn new(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32) -> Self {
        RtpBuilder {
            payload_type,
            sequence,
            timestamp,
            ssrc,
            marker: false,
            csrcs: [0; MAX_CSRCS],
            csrc_count: 0,
            extension: None,
            padding: Padding::None,
        }
    }

    /// Set the M bit.
    pub fn marker(mut self, m: bool) -> Self {
        self.marker = m;
        self
    }

    /// Add a contributing source. At most 15 fit; `write` refuses more.
    pub fn csrc(mut self, c: u32) -> Self {
        if let Some(slot) = self.csrcs.get_mut(self.csrc_count) {
            *slot = c;
        }
        self.csrc_count = self.csrc_count.saturating_add(1);
        self
    }

    /// Header extension: 16 profile-defined bits and a body whose length is
    /// a multiple of 4 (the wire format counts words). Replaces any earlier
    /// extension.
    pub fn extension(mut self, profile: u16, body: &[u8]) -> Self {
        self.extension = Some((profile, body.to_vec()));
        self
    }

    /// Append exactly `pad_len` padding bytes, the count byte included
    /// (zeros, then `pad_len`); 0 means no padding and a clear P bit.
    pub fn padding(mut self, pad_len: u8) -> Self {
        self.padding = if pad_len == 0 { Padding::None } else { Padding::Exact(pad_len) };
        self
    }

    /// Pad the whole packet to a multiple of `block` bytes, as a block
    /// cipher needs. Adds nothing (and leaves P clear) when the packet is
    /// already a multiple; `block` 0 or 1 means no padding. Replaces
    /// [`padding`](Self::padding).
    pub fn pad_to_multiple(mut self, block: u8) -> Self {
        self.padding = if block <= 1 { Padding::None } else { Padding::ToMultipleOf(block) };
        self
    }

    fn header_len(&self) -> usize {
        FIXED_HEADER_LEN
            + 4 * self.csrc_count.min(MAX_CSRCS)
            + self.extension.as_ref().map_or(0, |(_, body)| 4 + body.len())
    }

    fn padding_for(&self, payload_len: usize) -> usize {
        match self.padding {
            Padding::None => 0,
            Padding::Exact(n) => n as usize,
            Padding::ToMultipleOf(block) => {
                let block = block as usize;
                let unpadded = self.header_len().saturating_add(payload_len);
                (block - unpadded % block) % block
            }
        }
    }

    /// Total packet length for a payload of `payload_len` bytes: what
    /// [`write`](Self::write) needs and returns.
    pub fn len(&self, payload_len: usize) -> usize {
        self.header_len().saturating_add(payload_len).saturating_add(self.padding_for(payload_len))
    }

    /// Check the fields without writing.
    pub fn validate(&self) -> Result<(), BuildError> {
        if self.payload_type > MASK_PAYLOAD_TYPE {
            return Err(BuildError::InvalidPayloadType(self.payload_type));
        }
        if self.csrc_count > MAX_CSRCS {
            return Err(BuildError::TooManyCsrcs { count: self.csrc_count });
        }
        if let Some((_, body)) = &self.extension {
            let len = body.len();
            if len % 4 != 0 {
                return Err(BuildError::ExtensionNotWordAligned { len });
            }
            if len / 4 > u16::MAX as usize {
                return Err(BuildError::ExtensionTooLong { len });
            }
        }
        Ok(())
    }

    /// Write the packet for `payload` to the start of `out`; returns its
    /// length. On error nothing useful is in `out`.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, BuildError> {
        self.validate()?;
        let needed = self.len(payload.len());
        let mut w = Cursor { rest: out.get_mut(..needed).ok_or(BuildError::BufferTooSmall { needed })?, needed };
        let pad_len = self.padding_for(payload.len());
        let csrcs = self.csrcs.get(..self.csrc_count).unwrap_or_default();

        let mut flags = RTP_VERSION << 6 | csrcs.len() as u8;
        if pad_len > 0 {
            flags |= FLAG_PADDING;
        }
        if self.extension.is_some() {
            flags |= FLAG_EXTENSION;
        }
        let marker = if self.marker { FLAG_MARKER } else { 0 };
        w.put(&[flags, marker | self.payload_type])?;
        w.put(&self.sequence.to_be_bytes())?;
        w.put(&self.timestamp.to_be_bytes())?;
        w.put(&self.ssrc.to_be_bytes())?;
        for c in csrcs {
            w.put(&c.to_be_bytes())?;
        }
        if let Some((profile, body)) = &self.extension {
            w.put(&profile.to_be_bytes())?;
            w.put(&((body.len() / 4) as u16).to_be_bytes())?;
            w.put(body)?;
        }
        w.put(payload)?;
        if pad_len > 0 {
            // Zeros, then the count. `pad_len` fits a u8: it is an explicit
            // u8, or a remainder modulo a u8 block size.
            w.fill_zero(pad_len - 1)?;
            w.put(&[pad_len as u8])?;
        }
        Ok(needed)
    }

    /// The packet as a new vector; [`write`](Self::write) for callers that
    /// own their buffers.
    pub fn try_to_vec(&self, payload: &[u8]) -> Result<Vec<u8>, BuildError> {
        self.validate()?;
        let mut v = vec![0u8; self.len(payload.len())];
        let n = self.write(payload, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// The packet as a new vector.
    ///
    /// # Panics
    /// On builder misuse, which is a programming error rather than bad
    /// input: a payload type over 127, more than 15 CSRCs, or an extension
    /// body that is not whole words or exceeds 65535 of them. Use
    /// [`try_to_vec`](Self::try_to_vec) when the fields come from outside.
    pub fn to_vec(&self, payload: &[u8]) -> Vec<u8> {
        self.try_to_vec(payload).unwrap_or_else(|e| panic!("RtpBuilder misuse: {e}"))
    }
}

/// Sequential writer over a buffer already checked to be `needed` long;
/// running out is reported, never a panic.
struct Cursor<'b> {
    rest: &'b mut [u8],
    needed: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&mut [u8], BuildError> {
        let rest = core::mem::take(&mut self.rest);
        let (head, tail) = rest.split_at_mut_checked(n).ok_or(BuildError::BufferTooSmall { needed: self.needed })?;
        self.rest = tail;
        Ok(head)
    }
    fn put(&mut self, bytes: &[u8]) -> Result<(), BuildError> {
        self.take(bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }
    fn fill_zero(&mut self, n: usize) -> Result<(), BuildError> {
        self.take(n)?.fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
