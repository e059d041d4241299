// SPDX-License-Identifier: MIT
//! The RFC 3550 fixed-header rules, written once: which bytes are an RTP
//! packet (version 2, the CSRC list and the extension inside the packet, a
//! padding count of at least 1 that fits after the headers) and the field
//! layout they read.
//!
//! Dependency-free, no allocation, `const fn` and no `crate::` paths, like
//! `seqstats.rs`: the ABI (`crates/rtpmgr-abi/src/abi.rs`) includes
//! this same file by `#[path]` for `rtp_header_check`, so the kernel module,
//! which compiles `abi.rs`, applies exactly the rules
//! the `rtp` crate's `RtpPacket::parse` applies.

/// The only RTP version in use (RFC 3550). Versions 0 and 1 are historic,
/// and 3 is unassigned; anything else on the port is not RTP.
pub const RTP_VERSION: u8 = 2;
/// Length of the fixed header: flags, PT, sequence, timestamp, SSRC.
pub const FIXED_HEADER_LEN: usize = 12;
/// The CSRC count field is 4 bits wide.
pub const MAX_CSRCS: usize = 15;
/// The extension header: 16 profile-defined bits and a length in words.
pub const EXTENSION_HEADER_LEN: usize = 4;
/// Bytes of a packet's start that [`check`] reads: the fixed header, 15
/// CSRCs and the extension header.
pub const CHECK_LEN: usize = FIXED_HEADER_LEN + 4 * MAX_CSRCS + EXTENSION_HEADER_LEN;

/// First byte: the P bit.
pub const FLAG_PADDING: u8 = 0x20;
/// First byte: the X bit.
pub const FLAG_EXTENSION: u8 = 0x10;
/// First byte: the CC field.
pub const MASK_CSRC_COUNT: u8 = 0x0f;
/// Second byte: the M bit.
pub const FLAG_MARKER: u8 = 0x80;
/// Second byte: the PT field.
pub const MASK_PAYLOAD_TYPE: u8 = 0x7f;

/// MPEG-2 transport stream (RFC 3551 table 5, RFC 2250): IPTV's payload
/// type, 90 kHz clock.
pub const PT_MP2T: u8 = 33;

/// Which rule a datagram breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than the fixed header.
    TooShort,
    /// Version field other than [`RTP_VERSION`].
    BadVersion,
    /// The CSRC list runs past the end.
    CsrcOverrun,
    /// The extension header, or the body it announces, runs past the end.
    ExtensionOverrun,
    /// P set, but the count in the last byte is 0 or more than the bytes
    /// after the headers.
    BadPadding,
}

/// The header length (fixed header, CSRCs, extension) of a datagram of
/// `len` bytes whose first `min(len, CHECK_LEN)` bytes or more are `head`:
/// version, CSRC list and extension checked, padding not.
pub const fn header_len(head: &[u8], len: usize) -> Result<usize, HeaderError> {
    if len < FIXED_HEADER_LEN || head.len() < FIXED_HEADER_LEN {
        return Err(HeaderError::TooShort);
    }
    let flags = head[0];
    if flags >> 6 != RTP_VERSION {
        return Err(HeaderError::BadVersion);
    }
    let mut header = FIXED_HEADER_LEN + 4 * (flags & MASK_CSRC_COUNT) as usize;
    if header > len {
        return Err(HeaderError::CsrcOverrun);
    }
    if flags & FLAG_EXTENSION != 0 {
        if header + EXTENSION_HEADER_LEN > len || header + EXTENSION_HEADER_LEN > head.len() {
            return Err(HeaderError::ExtensionOverrun);
        }
        let words = u16::from_be_bytes([head[header + 2], head[header + 3]]) as usize;
        header += EXTENSION_HEADER_LEN + 4 * words;
        if header > len {
            return Err(HeaderError::ExtensionOverrun);
        }
    }
    Ok(header)
}

/// Whether the padding count `last` (the packet's last byte, P set) is
/// valid with `available` bytes after the headers: at least 1 (it counts
/// itself) and no more than those bytes.
pub const fn padding_ok(last: u8, available: usize) -> bool {
    last != 0 && last as usize <= available
}

/// Every rule: [`header_len`], then, with P set, [`padding_ok`] for the
/// packet's last byte `last`. Returns the header length.
pub const fn check(head: &[u8], len: usize, last: u8) -> Result<usize, HeaderError> {
    let header = match header_len(head, len) {
        Ok(h) => h,
        Err(e) => return Err(e),
    };
    if head[0] & FLAG_PADDING != 0 && !padding_ok(last, len - header) {
        return Err(HeaderError::BadPadding);
    }
    Ok(header)
}
