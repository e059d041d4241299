// SPDX-License-Identifier: MIT
//! Program-specific information (ISO/IEC 13818-1 2.4.4): sections
//! reassembled from transport packets, their CRC, and the two tables a
//! receiver needs to know which PIDs a stream should carry: the program
//! association table (PAT, PID 0) and the program map tables (PMT).
//!
//! ```text
//! section: table_id (8) | syntax (1) '0' (1) reserved (2) section_length (12)
//!          | [long form: id (16) | reserved (2) version (5) current_next (1)
//!             | section_number (8) | last_section_number (8)]
//!          | body ... | CRC_32 (32)
//! ```

/// PSI sections are at most 1024 bytes (section_length <= 1021).
pub const MAX_SECTION: usize = 1024;
/// table_id of the PAT.
pub const TABLE_PAT: u8 = 0x00;
/// table_id of a PMT.
pub const TABLE_PMT: u8 = 0x02;

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 { (c << 1) ^ 0x04c1_1db7 } else { c << 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// The MPEG-2 CRC-32 (13818-1 annex A: polynomial 0x04C11DB7, initial
/// value all ones, not reflected, no final inversion). Over a whole
/// section, its CRC_32 field included, it is 0 when the section is intact.
pub fn crc32_mpeg(data: &[u8]) -> u32 {
    data.iter().fold(0xffff_ffff, |c, &b| (c << 8) ^ CRC_TABLE[((c >> 24) as u8 ^ b) as usize])
}

/// Reassembles the sections of one PID from its packets' payloads, in a
/// fixed buffer.
#[derive(Clone)]
pub struct SectionAssembler {
    buf: [u8; MAX_SECTION],
    len: usize,
    /// Bytes the section in `buf` has in total, once its header is in.
    want: Option<usize>,
    /// A section is in progress.
    active: bool,
}

impl Default for SectionAssembler {
    fn default() -> Self {
        SectionAssembler::new()
    }
}

/// What the assembler passes on, besides whole sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionEvent<'a> {
    /// A complete section; its CRC is not checked yet.
    Section(&'a [u8]),
    /// section_length above 1021: the section is dropped.
    TooLong,
}

impl SectionAssembler {
    /// Nothing in progress.
    pub const fn new() -> Self {
        SectionAssembler { buf: [0; MAX_SECTION], len: 0, want: None, active: false }
    }

    /// Forget a section in progress (after a continuity error, its packets
    /// cannot be trusted to be consecutive).
    pub fn reset(&mut self) {
        self.len = 0;
        self.want = None;
        self.active = false;
    }

    /// Take one packet's payload; `pusi` is its payload_unit_start_indicator.
    /// Every section it completes is passed to `out`.
    pub fn push(&mut self, payload: &[u8], pusi: bool, out: &mut impl FnMut(SectionEvent<'_>)) {
        let mut rest = payload;
        if pusi {
            let Some((&pointer, after)) = rest.split_first() else { return };
            let pointer = pointer as usize;
            // The bytes before the pointed-to start end the previous section.
            let (tail, start) = after.split_at(pointer.min(after.len()));
            if self.active {
                self.feed(tail, out);
            }
            self.reset();
            if pointer > after.len() {
                return;
            }
            rest = start;
            self.active = true;
        } else if !self.active {
            return;
        }
        self.feed(rest, out);
    }

    /// Append bytes to the section in progress; sections packed back to
    /// back in one payload start one after the other; 0xFF where a
    /// table_id would be is stuffing up to the end of the packet.
    fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(SectionEvent<'_>)) {
        while self.active && !data.is_empty() {
            if self.len == 0 && data[0] == 0xff {
                self.reset();
                return;
            }
            let need = match self.want {
                Some(w) => w - self.len,
                None => 3 - self.len,
            };
            let take = need.min(data.len());
            self.buf[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            if self.want.is_none() {
                if self.len < 3 {
                    return;
                }
                let section_length = usize::from(u16::from_be_bytes([self.buf[1] & 0x0f, self.buf[2]]));
                if 3 + section_length > MAX_SECTION {
                    out(SectionEvent::TooLong);
                    self.reset();
                    return;
                }
                self.want = Some(3 + section_length);
                continue;
            }
            if Some(self.len) == self.want {
                out(SectionEvent::Section(&self.buf[..self.len]));
                // The next section of the same payload starts right after.
                self.len = 0;
                self.want = None;
            }
        }
    }
}

/// The fields of a long-form section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeader {
    /// table_id.
    pub table_id: u8,
    /// transport_stream_id (PAT) or program_number (PMT).
    pub id: u16,
    /// version_number.
    pub version: u8,
    /// current_next_indicator: the table applies now (else: next).
    pub current: bool,
    /// section_number.
    pub section_number: u8,
    /// last_section_number.
    pub last_section_number: u8,
}

/// Why a section is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionError {
    /// Shorter than its header and CRC, or section_syntax_indicator clear
    /// where the long form is required.
    Malformed,
    /// The CRC_32 does not match.
    Crc,
}

/// Check a long-form section (syntax indicator set, CRC at the end) and
/// return its header and the body between header and CRC.
pub fn long_section(s: &[u8]) -> Result<(LongHeader, &[u8]), SectionError> {
    if s.len() < 12 || s[1] & 0x80 == 0 {
        return Err(SectionError::Malformed);
    }
    if crc32_mpeg(s) != 0 {
        return Err(SectionError::Crc);
    }
    let h = LongHeader {
        table_id: s[0],
        id: u16::from_be_bytes([s[3], s[4]]),
        version: (s[5] >> 1) & 0x1f,
        current: s[5] & 1 != 0,
        section_number: s[6],
        last_section_number: s[7],
    };
    Ok((h, &s[8..s.len() - 4]))
}

/// The programs of a PAT body: (program_number, PID). Program 0 names the
/// network PID, not a PMT.
pub fn pat_programs(body: &[u8]) -> impl Iterator<Item = (u16, u16)> + '_ {
    body.chunks_exact(4).map(|e| (u16::from_be_bytes([e[0], e[1]]), u16::from_be_bytes([e[2] & 0x1f, e[3]])))
}

/// A PMT body: PCR_PID, and the elementary streams as (stream_type, PID).
/// Entries that run past the end are not returned.
pub struct Pmt<'a> {
    /// PCR_PID (0x1FFF: none).
    pub pcr_pid: u16,
    streams: &'a [u8],
}

impl<'a> Pmt<'a> {
    /// Split a PMT body; `None` when program_info runs past the end.
    pub fn parse(body: &'a [u8]) -> Option<Pmt<'a>> {
        if body.len() < 4 {
            return None;
        }
        let pcr_pid = u16::from_be_bytes([body[0] & 0x1f, body[1]]);
        let info = usize::from(u16::from_be_bytes([body[2] & 0x0f, body[3]]));
        Some(Pmt { pcr_pid, streams: body.get(4 + info..)? })
    }

    /// The elementary streams: (stream_type, elementary_PID).
    pub fn streams(&self) -> impl Iterator<Item = (u8, u16)> + 'a {
        let mut rest = self.streams;
        core::iter::from_fn(move || {
            if rest.len() < 5 {
                return None;
            }
            let stream_type = rest[0];
            let pid = u16::from_be_bytes([rest[1] & 0x1f, rest[2]]);
            let info = usize::from(u16::from_be_bytes([rest[3] & 0x0f, rest[4]]));
            rest = rest.get(5 + info..)?;
            Some((stream_type, pid))
        })
    }
}

/// Build a long-form section with its CRC (tests, fuzzing and tools).
pub fn build_section(table_id: u8, id: u16, version: u8, body: &[u8]) -> Vec<u8> {
    let section_length = 5 + body.len() + 4;
    let mut s = vec![
        table_id,
        0xb0 | (section_length >> 8) as u8 & 0x0f,
        section_length as u8,
        (id >> 8) as u8,
        id as u8,
        0xc1 | (version & 0x1f) << 1,
        0,
        0,
    ];
    s.extend_from_slice(body);
    let crc = crc32_mpeg(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// A PAT section for `programs` (program_number, PMT PID).
pub fn build_pat(ts_id: u16, version: u8, programs: &[(u16, u16)]) -> Vec<u8> {
    let mut body = Vec::new();
    for &(n, pid) in programs {
        body.extend_from_slice(&n.to_be_bytes());
        body.extend_from_slice(&(0xe000 | pid).to_be_bytes());
    }
    build_section(TABLE_PAT, ts_id, version, &body)
}

/// A PMT section: PCR PID and elementary streams (stream_type, PID).
pub fn build_pmt(program: u16, version: u8, pcr_pid: u16, streams: &[(u8, u16)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(0xe000 | pcr_pid).to_be_bytes());
    body.extend_from_slice(&0xf000u16.to_be_bytes());
    for &(t, pid) in streams {
        body.push(t);
        body.extend_from_slice(&(0xe000 | pid).to_be_bytes());
        body.extend_from_slice(&0xf000u16.to_be_bytes());
    }
    build_section(TABLE_PMT, program, version, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_a_known_pat() {
        // A PAT as ffmpeg writes it: one program 1 on PMT PID 0x1000.
        let pat = [0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00, 0x2a, 0xb1, 0x04, 0xb2];
        assert_eq!(crc32_mpeg(&pat), 0);
        assert_eq!(crc32_mpeg(&pat[..12]), 0x2ab1_04b2);
        let (h, body) = long_section(&pat).unwrap();
        assert_eq!((h.table_id, h.id, h.version, h.current), (0, 1, 0, true));
        assert_eq!(pat_programs(body).collect::<Vec<_>>(), [(1, 0x1000)]);
        assert_eq!(build_pat(1, 0, &[(1, 0x1000)]), pat);
        let mut bad = pat;
        bad[10] ^= 1;
        assert_eq!(long_section(&bad), Err(SectionError::Crc));
        assert_eq!(long_section(&pat[..8]), Err(SectionError::Malformed));
    }

    #[test]
    fn pmt_streams() {
        let s = build_pmt(1, 3, 0x100, &[(0x02, 0x100), (0x03, 0x101), (0x06, 0x102)]);
        let (h, body) = long_section(&s).unwrap();
        assert_eq!((h.table_id, h.id, h.version), (TABLE_PMT, 1, 3));
        let pmt = Pmt::parse(body).unwrap();
        assert_eq!(pmt.pcr_pid, 0x100);
        assert_eq!(pmt.streams().collect::<Vec<_>>(), [(2, 0x100), (3, 0x101), (6, 0x102)]);
        // ES_info running past the end: the entry is dropped.
        let mut b = body.to_vec();
        b[4 + 3] = 0xf0;
        b[4 + 4] = 0xff;
        assert_eq!(Pmt::parse(&b).unwrap().streams().count(), 0);
        assert!(Pmt::parse(&[0xe1, 0x00, 0xf0, 0x10]).is_none());
    }

    fn collect(asm: &mut SectionAssembler, payload: &[u8], pusi: bool) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        asm.push(payload, pusi, &mut |e| {
            if let SectionEvent::Section(s) = e {
                v.push(s.to_vec())
            }
        });
        v
    }

    #[test]
    fn sections_in_one_packet_across_packets_and_packed() {
        let pat = build_pat(1, 0, &[(1, 0x1000)]);
        let mut asm = SectionAssembler::new();
        // Pointer 0, the section, stuffing.
        let mut p = vec![0u8];
        p.extend_from_slice(&pat);
        p.resize(184, 0xff);
        assert_eq!(collect(&mut asm, &p, true), std::slice::from_ref(&pat));
        // A 300-byte section over two packets.
        let big = build_pmt(1, 0, 0x100, &(0..57).map(|i| (0x06, 0x200 + i)).collect::<Vec<_>>());
        assert!(big.len() > 184);
        let mut first = vec![0u8];
        first.extend_from_slice(&big[..183]);
        assert!(collect(&mut asm, &first, true).is_empty());
        let mut second = big[183..].to_vec();
        second.resize(184, 0xff);
        assert_eq!(collect(&mut asm, &second, false), std::slice::from_ref(&big));
        // Two sections packed in one payload.
        let mut p = vec![0u8];
        p.extend_from_slice(&pat);
        p.extend_from_slice(&pat);
        p.resize(184, 0xff);
        assert_eq!(collect(&mut asm, &p, true).len(), 2);
        // A continuation without a start is ignored; a pointer field ends
        // the previous section first.
        asm.reset();
        assert!(collect(&mut asm, &second, false).is_empty());
        let mut first = vec![0u8];
        first.extend_from_slice(&big[..183]);
        collect(&mut asm, &first, true);
        let rest = &big[183..];
        let mut p = vec![rest.len() as u8];
        p.extend_from_slice(rest);
        p.extend_from_slice(&pat);
        p.resize(184, 0xff);
        assert_eq!(collect(&mut asm, &p, true), [big, pat]);
        // A pointer past the end, an empty payload: nothing, no panic.
        assert!(collect(&mut asm, &[200, 1, 2], true).is_empty());
        assert!(collect(&mut asm, &[], true).is_empty());
    }

    #[test]
    fn too_long_sections_are_reported() {
        let mut asm = SectionAssembler::new();
        let mut events = 0;
        asm.push(&[0, 0x02, 0xbf, 0xff, 1, 2], true, &mut |e| {
            assert_eq!(e, SectionEvent::TooLong);
            events += 1;
        });
        assert_eq!(events, 1);
    }
}
