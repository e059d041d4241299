// SPDX-License-Identifier: MIT
//! Packet vectors written out byte by byte.

use super::*;

/// V=2 P=0 X=0 CC=0 | M=1 PT=33 (MP2T) | seq 0x1234 | ts 0x01020304 |
/// SSRC 0xdeadbeef | payload "TS".
const SIMPLE: [u8; 14] = [
    0x80, 0xa1, 0x12, 0x34, // 10 0 0 0000 | 1 0100001 | seq
    0x01, 0x02, 0x03, 0x04, // timestamp
    0xde, 0xad, 0xbe, 0xef, // SSRC
    b'T', b'S', // payload
];

/// V=2 P=1 X=1 CC=2 | M=0 PT=96 | seq 1 | ts 9 | SSRC 7 | CSRCs 0x11, 0x22 |
/// extension 0xBEDE, 1 word: one-byte element id 1 len 1 (0x10 0xaa) and
/// two bytes of element padding | payload 1 2 3 | padding 0 0 0 4.
const FULL: [u8; 35] = [
    0xb2, 0x60, 0x00, 0x01, // 10 1 1 0010 | 0 1100000 | seq
    0x00, 0x00, 0x00, 0x09, // timestamp
    0x00, 0x00, 0x00, 0x07, // SSRC
    0x00, 0x00, 0x00, 0x11, // CSRC 1
    0x00, 0x00, 0x00, 0x22, // CSRC 2
    0xbe, 0xde, 0x00, 0x01, // extension profile, length 1 word
    0x10, 0xaa, 0x00, 0x00, // extension body
    0x01, 0x02, 0x03, // payload
    0x00, 0x00, 0x00, 0x04, // padding, count 4
];

#[test]
fn parses_a_known_packet() {
    let p = RtpPacket::parse(&SIMPLE).unwrap();
    assert_eq!(p.version(), 2);
    assert!(!p.padding());
    assert!(!p.extension());
    assert!(p.marker());
    assert_eq!(p.payload_type(), 33);
    assert_eq!(p.sequence_number(), 0x1234);
    assert_eq!(p.timestamp(), 0x0102_0304);
    assert_eq!(p.ssrc(), 0xdead_beef);
    assert_eq!(p.csrc_count(), 0);
    assert_eq!(p.csrcs().count(), 0);
    assert_eq!(p.extension_header(), None);
    assert_eq!(p.header_len(), 12);
    assert_eq!(p.payload(), b"TS");
    assert_eq!(p.padding_len(), 0);
    assert_eq!(p.as_bytes(), &SIMPLE[..]);
}

#[test]
fn parses_csrcs_extension_and_padding() {
    let p = RtpPacket::parse(&FULL).unwrap();
    assert!(p.padding());
    assert!(p.extension());
    assert!(!p.marker());
    assert_eq!(p.payload_type(), 96);
    assert_eq!((p.sequence_number(), p.timestamp(), p.ssrc()), (1, 9, 7));
    assert_eq!(p.csrc_count(), 2);
    assert_eq!(p.csrcs().collect::<Vec<_>>(), [0x11, 0x22]);
    assert_eq!(p.extension_header(), Some((0xbede, &[0x10, 0xaa, 0x00, 0x00][..])));
    assert_eq!(p.header_len(), 12 + 2 * 4 + 4 + 4);
    assert_eq!(p.payload(), [1, 2, 3]);
    assert_eq!(p.padding_len(), 4);
}

#[test]
fn extension_with_empty_body() {
    // X=1, extension 0x1000 (two-byte elements) with length 0, payload 0x55.
    let b = [0x90, 0x21, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0x00, 0x00, 0x00, 0x55];
    let p = RtpPacket::parse(&b).unwrap();
    assert_eq!(p.extension_header(), Some((0x1000, &[][..])));
    assert_eq!(p.header_len(), 16);
    assert_eq!(p.payload(), [0x55]);
}

#[test]
fn too_short_and_bad_version() {
    assert_eq!(RtpPacket::parse(&[]), Err(ParseError::TooShort { len: 0 }));
    assert_eq!(RtpPacket::parse(&SIMPLE[..11]), Err(ParseError::TooShort { len: 11 }));
    // Exactly 12 bytes is a packet with an empty payload.
    assert_eq!(RtpPacket::parse(&SIMPLE[..12]).unwrap().payload(), b"");
    for (byte0, version) in [(0x00, 0), (0x40, 1), (0xc0, 3)] {
        let mut b = SIMPLE;
        b[0] = byte0;
        assert_eq!(RtpPacket::parse(&b), Err(ParseError::BadVersion { version }));
    }
}

#[test]
fn csrc_overrun() {
    let mut b = SIMPLE;
    b[0] = 0x81; // one CSRC needs 16 bytes, have 14
    assert_eq!(RtpPacket::parse(&b), Err(ParseError::CsrcOverrun { csrc_count: 1, len: 14 }));
    b[0] = 0x8f; // 15 CSRCs need 72
    assert_eq!(RtpPacket::parse(&b), Err(ParseError::CsrcOverrun { csrc_count: 15, len: 14 }));
    // A CSRC list that exactly fills the packet is fine.
    let mut exact = [0u8; 16];
    exact[0] = 0x81;
    exact[12..].copy_from_slice(&[0, 0, 0, 9]);
    let p = RtpPacket::parse(&exact).unwrap();
    assert_eq!(p.csrcs().collect::<Vec<_>>(), [9]);
    assert_eq!((p.header_len(), p.payload().len()), (16, 0));
}

#[test]
fn extension_overrun() {
    // X=1 with 2 bytes after the fixed header: no room for the 4-byte
    // extension header.
    let mut b = SIMPLE;
    b[0] = 0x90;
    assert_eq!(RtpPacket::parse(&b), Err(ParseError::ExtensionOverrun { len: 14 }));
    // Header present ("TS" becomes the profile, length 2 words) but the
    // 8-byte body is missing.
    let mut b = SIMPLE.to_vec();
    b[0] = 0x90;
    b.extend_from_slice(&[0, 2, 1, 2, 3, 4]);
    assert_eq!(RtpPacket::parse(&b), Err(ParseError::ExtensionOverrun { len: 20 }));
    // Four more bytes complete the body: valid, empty payload.
    b.extend_from_slice(&[5, 6, 7, 8]);
    let p = RtpPacket::parse(&b).unwrap();
    assert_eq!(p.extension_header(), Some((0x5453, &[1, 2, 3, 4, 5, 6, 7, 8][..])));
    assert_eq!(p.payload(), b"");
    // The CSRC list comes first, and pushes the extension past the end.
    let mut b = FULL;
    b[0] = 0xb5; // CC=5: CSRCs end at byte 32, extension header needs 36
    assert_eq!(RtpPacket::parse(&b), Err(ParseError::ExtensionOverrun { len: 35 }));
}

#[test]
fn padding_validation() {
    let mut b = SIMPLE;
    b[0] = 0xa0; // P=1; the last byte ('S') is the count
    b[13] = 0;
    assert_eq!(RtpPacket::parse(&b), Err(ParseError::BadPadding { pad_len: 0, available: 2 }));
    b[13] = 3; // 3 bytes of padding, only 2 after the header
    assert_eq!(RtpPacket::parse(&b), Err(ParseError::BadPadding { pad_len: 3, available: 2 }));
    b[13] = 2; // everything after the header is padding
    let p = RtpPacket::parse(&b).unwrap();
    assert_eq!((p.payload(), p.padding_len(), p.header_len()), (&b""[..], 2, 12));
    b[13] = 1; // only the count byte
    let p = RtpPacket::parse(&b).unwrap();
    assert_eq!((p.payload(), p.padding_len()), (&b"T"[..], 1));
    // P set on a bare 12-byte header: the count would be the SSRC's last
    // byte (0xef) with nothing after the header.
    let mut bare = [0u8; 12];
    bare.copy_from_slice(&SIMPLE[..12]);
    bare[0] = 0xa0;
    assert_eq!(RtpPacket::parse(&bare), Err(ParseError::BadPadding { pad_len: 0xef, available: 0 }));
    // Padding is measured after the extension, not after the fixed header:
    // FULL has 7 bytes after its headers, so a count of 8 is invalid.
    let mut full = FULL;
    full[34] = 8;
    assert_eq!(RtpPacket::parse(&full), Err(ParseError::BadPadding { pad_len: 8, available: 7 }));
    full[34] = 7;
    assert_eq!(RtpPacket::parse(&full).unwrap().payload(), b"");
}

#[test]
fn parse_error_messages() {
    assert_eq!(ParseError::TooShort { len: 3 }.to_string(), "3 bytes is shorter than the 12-byte RTP header");
    assert_eq!(ParseError::BadVersion { version: 1 }.to_string(), "RTP version 1, expected 2");
    assert_eq!(ParseError::CsrcOverrun { csrc_count: 2, len: 14 }.to_string(), "2 CSRCs need 20 bytes, packet has 14");
    assert_eq!(
        ParseError::ExtensionOverrun { len: 14 }.to_string(),
        "header extension runs past the end of a 14-byte packet"
    );
    assert_eq!(
        ParseError::BadPadding { pad_len: 0, available: 2 }.to_string(),
        "padding count 0 with 2 bytes after the headers"
    );
}

#[test]
fn builder_writes_the_known_packets() {
    assert_eq!(RtpBuilder::new(33, 0x1234, 0x0102_0304, 0xdead_beef).marker(true).to_vec(b"TS"), SIMPLE);
    let full = RtpBuilder::new(96, 1, 9, 7)
        .csrc(0x11)
        .csrc(0x22)
        .extension(0xbede, &[0x10, 0xaa, 0, 0])
        .padding(4)
        .to_vec(&[1, 2, 3]);
    assert_eq!(full, FULL);
}

#[test]
fn builder_round_trip() {
    let b = RtpBuilder::new(127, 65_535, 4_000_000_000, 42)
        .marker(true)
        .csrc(7)
        .csrc(0xffff_ffff)
        .extension(0x1000, &[1, 2, 3, 4, 5, 6, 7, 8])
        .padding(3);
    // 12 fixed + 8 CSRCs + 4 extension header + 8 body + 5 payload + 3 pad.
    assert_eq!(b.len(5), 40);
    let bytes = b.to_vec(b"hello");
    assert_eq!(bytes.len(), 40);
    assert_eq!(bytes[..2], [0xb2, 0xff]); // V=2 P X CC=2 | M PT=127
    assert_eq!(bytes[37..], [0, 0, 3]);
    let p = RtpPacket::parse(&bytes).unwrap();
    assert_eq!((p.payload_type(), p.sequence_number(), p.timestamp(), p.ssrc()), (127, 65_535, 4_000_000_000, 42));
    assert!(p.marker());
    assert_eq!(p.csrcs().collect::<Vec<_>>(), [7, 0xffff_ffff]);
    assert_eq!(p.extension_header(), Some((0x1000, &[1, 2, 3, 4, 5, 6, 7, 8][..])));
    assert_eq!(p.payload(), b"hello");
    assert_eq!((p.header_len(), p.padding_len()), (32, 3));

    // Fifteen CSRCs, the most CC can say.
    let b = (1..=15).fold(RtpBuilder::new(0, 0, 0, 0), |b, c| b.csrc(c));
    let bytes = b.to_vec(&[]);
    assert_eq!(bytes.len(), 12 + 60);
    let p = RtpPacket::parse(&bytes).unwrap();
    assert_eq!(p.csrc_count(), 15);
    assert_eq!(p.csrcs().collect::<Vec<_>>(), (1..=15).collect::<Vec<u32>>());
}

#[test]
fn builder_pads_to_a_block_size() {
    // 12 + 5 = 17 bytes; to a multiple of 4 needs 3 bytes of padding.
    let b = RtpBuilder::new(33, 1, 2, 3).pad_to_multiple(4);
    let bytes = b.to_vec(b"abcde");
    assert_eq!(bytes.len(), 20);
    assert_eq!(bytes[0], 0xa0);
    assert_eq!(bytes[17..], [0, 0, 3]);
    assert_eq!(RtpPacket::parse(&bytes).unwrap().payload(), b"abcde");
    // 12 + 8 = 20 is already a multiple: no padding, P stays clear.
    let bytes = b.to_vec(b"abcdefgh");
    assert_eq!((bytes.len(), bytes[0]), (20, 0x80));
    // 12 + 4 (extension) + 0 = 16 to a multiple of 16: none; of 24: 8.
    let ext = RtpBuilder::new(33, 1, 2, 3).extension(0xbede, &[]);
    assert_eq!(ext.clone().pad_to_multiple(16).len(0), 16);
    assert_eq!(ext.clone().pad_to_multiple(24).len(0), 24);
    assert_eq!(ext.pad_to_multiple(1).len(0), 16);
    // The later padding setter wins.
    assert_eq!(RtpBuilder::new(0, 0, 0, 0).pad_to_multiple(16).padding(2).len(1), 15);
    assert_eq!(RtpBuilder::new(0, 0, 0, 0).padding(2).pad_to_multiple(16).len(1), 16);
}

#[test]
fn builder_writes_into_a_larger_buffer() {
    let mut out = [0xeeu8; 20];
    let n = RtpBuilder::new(33, 0x1234, 0x0102_0304, 0xdead_beef).marker(true).write(b"TS", &mut out).unwrap();
    assert_eq!(n, 14);
    assert_eq!(out[..14], SIMPLE);
    assert_eq!(out[14..], [0xee; 6], "bytes past the packet are left alone");
}

#[test]
fn builder_errors() {
    let mut small = [0u8; 13];
    assert_eq!(RtpBuilder::new(0, 0, 0, 0).write(b"ab", &mut small), Err(BuildError::BufferTooSmall { needed: 14 }));
    let mut buf = [0u8; 200];
    assert_eq!(
        RtpBuilder::new(0, 0, 0, 0).padding(200).write(b"", &mut buf),
        Err(BuildError::BufferTooSmall { needed: 212 })
    );
    assert_eq!(RtpBuilder::new(128, 0, 0, 0).write(b"", &mut buf), Err(BuildError::InvalidPayloadType(128)));
    let many = (0..16).fold(RtpBuilder::new(0, 0, 0, 0), |b, c| b.csrc(c));
    assert_eq!(many.write(b"", &mut buf), Err(BuildError::TooManyCsrcs { count: 16 }));
    assert_eq!(
        RtpBuilder::new(0, 0, 0, 0).extension(1, &[1, 2, 3]).write(b"", &mut buf),
        Err(BuildError::ExtensionNotWordAligned { len: 3 })
    );
    let huge = vec![0u8; 4 * 65_536];
    assert_eq!(
        RtpBuilder::new(0, 0, 0, 0).extension(1, &huge).try_to_vec(b""),
        Err(BuildError::ExtensionTooLong { len: 262_144 })
    );
    // The largest extension that fits the length field is fine.
    let bytes = RtpBuilder::new(0, 0, 0, 0).extension(1, &huge[4..]).to_vec(b"");
    assert_eq!(bytes[14..16], [0xff, 0xff]);
    assert_eq!(RtpPacket::parse(&bytes).unwrap().extension_header().map(|(_, b)| b.len()), Some(262_140));
    assert_eq!(BuildError::TooManyCsrcs { count: 16 }.to_string(), "16 CSRCs, at most 15 fit");
}

#[test]
#[should_panic(expected = "RtpBuilder misuse: payload type 200 does not fit 7 bits")]
fn to_vec_panics_on_misuse() {
    RtpBuilder::new(200, 0, 0, 0).to_vec(b"");
}
