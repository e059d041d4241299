// SPDX-License-Identifier: MIT
//! SMPTE 2022-1 (Pro-MPEG) FEC decoding: XOR parity over a matrix of L
//! columns and D rows of media packets, column FEC packets on the media
//! port + 2 and row FEC packets on port + 4.
//!
//! ```text
//! FEC packet: RTP header (P, X, CC, M recovered by the protection op)
//! | SNBase low bits (16) | Length recovery (16)
//! | E=1 (1) PT recovery (7) | Mask (24) = 0
//! | TS recovery (32)
//! | X (1) D (1) type (3) index (3) | Offset (8) | NA (8) | SNBase ext (8)
//! | XOR of the protected packets after their 12-byte fixed header
//! ```
//!
//! Column FEC (D = 0) protects `NA` = D packets `Offset` = L apart; row
//! FEC (D = 1) protects `NA` = L consecutive packets (Offset 1). Each FEC
//! packet lets exactly one missing packet of its group be rebuilt: the XOR
//! of the FEC packet and the group's other packets. Rebuilt packets count
//! as received, so a row repair can enable a column repair and the other
//! way round (2-D recovery).
//!
//! The decoder keeps a copy of the recent media packets (it needs them to
//! XOR) in a pool allocated once, and the FEC packets it could not use yet
//! (two or more of their group missing) until they expire.

use crate::header::RtpPacket;

/// Length of the SMPTE 2022-1 FEC header after the RTP header.
pub const FEC_HEADER_LEN: usize = 16;

/// Which FEC stream a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// The first FEC stream (D bit 0): one FEC packet per column.
    Column,
    /// The second FEC stream (D bit 1): one FEC packet per row.
    Row,
}

/// A parsed FEC packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecPacket<'a> {
    /// First protected sequence number.
    pub sn_base: u16,
    /// XOR of the protected packets' lengths after the fixed header.
    pub length_recovery: u16,
    /// XOR of their payload types.
    pub pt_recovery: u8,
    /// XOR of their timestamps.
    pub ts_recovery: u32,
    /// Column or row.
    pub orientation: Orientation,
    /// Distance between protected sequence numbers (L, or 1 for rows).
    pub offset: u8,
    /// Number of protected packets (D for columns, L for rows).
    pub na: u8,
    /// P, X, CC bits and the M bit of the FEC packet's own RTP header,
    /// which carry their XOR over the protected packets.
    pub flags_recovery: u8,
    /// Marker recovery (the FEC header's M bit).
    pub marker_recovery: bool,
    /// The XOR of the protected packets' bytes after their fixed header.
    pub payload: &'a [u8],
}

/// Why a datagram is not a usable SMPTE 2022-1 FEC packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FecError {
    /// Not RTP.
    NotRtp,
    /// Shorter than the FEC header.
    TooShort,
    /// Not the XOR code 2022-1 uses (E = 0, a mask, type or index not 0,
    /// NA or Offset 0).
    Unsupported,
}

/// Parse a datagram from a FEC port.
pub fn parse_fec(buf: &[u8]) -> Result<FecPacket<'_>, FecError> {
    let p = RtpPacket::parse(buf).map_err(|_| FecError::NotRtp)?;
    let h = p.payload();
    if h.len() < FEC_HEADER_LEN {
        return Err(FecError::TooShort);
    }
    let e = h[4] & 0x80 != 0;
    let mask = u32::from_be_bytes([0, h[5], h[6], h[7]]);
    let d = h[12] & 0x40 != 0;
    let typ = (h[12] >> 3) & 7;
    let index = h[12] & 7;
    let (offset, na) = (h[13], h[14]);
    if !e || mask != 0 || typ != 0 || index != 0 || offset == 0 || na == 0 {
        return Err(FecError::Unsupported);
    }
    Ok(FecPacket {
        sn_base: u16::from_be_bytes([h[0], h[1]]),
        length_recovery: u16::from_be_bytes([h[2], h[3]]),
        pt_recovery: h[4] & 0x7f,
        ts_recovery: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        orientation: if d { Orientation::Row } else { Orientation::Column },
        offset,
        na,
        flags_recovery: buf[0] & 0x3f,
        marker_recovery: buf[1] & 0x80 != 0,
        payload: &h[FEC_HEADER_LEN..],
    })
}

impl FecPacket<'_> {
    /// The protected sequence numbers.
    pub fn members(&self) -> impl Iterator<Item = u16> + '_ {
        (0..u16::from(self.na)).map(move |i| self.sn_base.wrapping_add(i.wrapping_mul(u16::from(self.offset))))
    }
}

/// Build a FEC packet over `packets` (whole RTP packets, protected in the
/// order given, `offset` apart in sequence numbers): for tests and tools.
pub fn encode(packets: &[&[u8]], orientation: Orientation, offset: u8, fec_seq: u16, pt: u8, ssrc: u32) -> Vec<u8> {
    let body = packets.iter().map(|p| p.len().saturating_sub(12)).max().unwrap_or(0);
    let mut xor = vec![0u8; body];
    let (mut len, mut ptr, mut ts, mut flags, mut marker) = (0u16, 0u8, 0u32, 0u8, false);
    for p in packets {
        for (x, b) in xor.iter_mut().zip(p.get(12..).unwrap_or_default()) {
            *x ^= b;
        }
        len ^= p.len().saturating_sub(12) as u16;
        ptr ^= p.get(1).copied().unwrap_or(0) & 0x7f;
        marker ^= p.get(1).is_some_and(|b| b & 0x80 != 0);
        flags ^= p.first().copied().unwrap_or(0) & 0x3f;
        ts ^= p.get(4..8).map_or(0, |t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]));
    }
    let sn_base = packets.first().and_then(|p| p.get(2..4)).map_or(0, |s| u16::from_be_bytes([s[0], s[1]]));
    let mut out = vec![0x80 | flags, if marker { 0x80 } else { 0 } | (pt & 0x7f)];
    out.extend_from_slice(&fec_seq.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&sn_base.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.push(0x80 | ptr);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&ts.to_be_bytes());
    out.push(if orientation == Orientation::Row { 0x40 } else { 0 });
    out.push(offset);
    out.push(packets.len() as u8);
    out.push(0);
    out.extend_from_slice(&xor);
    out
}

/// Counters of a decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FecStats {
    /// Column FEC packets received.
    pub columns: u64,
    /// Row FEC packets received.
    pub rows: u64,
    /// FEC packets that were not SMPTE 2022-1 XOR parity.
    pub malformed: u64,
    /// Media packets rebuilt.
    pub recovered: u64,
    /// FEC packets that expired with two or more of their group missing:
    /// what FEC could not recover.
    pub unrecoverable: u64,
    /// FEC packets dropped because too many waited.
    pub overflow: u64,
    /// The L of the last FEC packets (0 until seen).
    pub l: u8,
    /// The D of the last column FEC packets (0 until seen).
    pub d: u8,
}

#[derive(Clone, Copy)]
struct Stored {
    seq: u16,
    len: u32,
    valid: bool,
}

#[derive(Clone, Copy)]
struct Waiting {
    used: bool,
    len: u32,
    since_ns: u64,
}

/// SMPTE 2022-1 decoder of one stream.
pub struct FecDecoder {
    entry_len: usize,
    /// Recent media packets, slot `seq % history`.
    media: Vec<u8>,
    media_meta: Vec<Stored>,
    /// FEC packets waiting for a second chance.
    fec: Vec<u8>,
    fec_meta: Vec<Waiting>,
    wait_ns: u64,
    /// The highest media sequence number kept so far.
    highest: Option<u16>,
    stats: FecStats,
}

const HISTORY: usize = 1024;
const WAITING: usize = 64;

impl FecDecoder {
    /// A decoder for packets of up to `entry_len` bytes whose unusable FEC
    /// packets wait up to `wait_ns` for another repair to make them usable.
    pub fn new(entry_len: usize, wait_ns: u64) -> Self {
        FecDecoder {
            entry_len,
            media: vec![0; HISTORY * entry_len],
            media_meta: vec![Stored { seq: 0, len: 0, valid: false }; HISTORY],
            fec: vec![0; WAITING * entry_len],
            fec_meta: vec![Waiting { used: false, len: 0, since_ns: 0 }; WAITING],
            wait_ns,
            highest: None,
            stats: FecStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FecStats {
        self.stats
    }

    fn slot(seq: u16) -> usize {
        usize::from(seq) % HISTORY
    }

    fn stored(&self, seq: u16) -> Option<&[u8]> {
        let i = Self::slot(seq);
        let m = self.media_meta[i];
        (m.valid && m.seq == seq).then(|| &self.media[i * self.entry_len..i * self.entry_len + m.len as usize])
    }

    /// Keep a media packet (received, or repaired otherwise) for the XOR.
    pub fn on_media(&mut self, seq: u16, packet: &[u8]) {
        if packet.len() > self.entry_len {
            return;
        }
        let i = Self::slot(seq);
        self.media[i * self.entry_len..i * self.entry_len + packet.len()].copy_from_slice(packet);
        self.media_meta[i] = Stored { seq, len: packet.len() as u32, valid: true };
        if self.highest.is_none_or(|h| (seq.wrapping_sub(h) as i16) > 0) {
            self.highest = Some(seq);
        }
    }

    /// Whether a missing `seq` is lost rather than not here yet: a later
    /// packet arrived. (A row's FEC packet follows its last packet at once
    /// and may be read first.)
    fn overdue(&self, seq: u16) -> bool {
        self.highest.is_some_and(|h| (h.wrapping_sub(seq) as i16) > 0)
    }

    /// Whether FEC packets wait for a second chance.
    pub fn waiting(&self) -> bool {
        self.fec_meta.iter().any(|w| w.used)
    }

    /// A FEC packet arrived at `now_ns`; each media packet it (or a waiting
    /// FEC packet it makes usable) rebuilds is passed to `out` with its
    /// sequence number. `ssrc` is the media SSRC the rebuilt packets get.
    pub fn on_fec(&mut self, buf: &[u8], ssrc: u32, now_ns: u64, out: &mut impl FnMut(u16, &[u8])) {
        let fec = match parse_fec(buf) {
            Ok(f) => f,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        match fec.orientation {
            Orientation::Column => {
                self.stats.columns += 1;
                (self.stats.l, self.stats.d) = (fec.offset, fec.na);
            }
            Orientation::Row => {
                self.stats.rows += 1;
                self.stats.l = fec.na;
            }
        }
        if !self.try_repair(buf, ssrc, out) {
            self.park(buf, now_ns);
        }
        // What arrived or was rebuilt since may make a waiting one usable.
        self.retry(ssrc, out);
    }

    /// Repair with the FEC packet in `buf` if exactly one of its group is
    /// missing. True when it is done with (repaired, or nothing missing).
    fn try_repair(&mut self, buf: &[u8], ssrc: u32, out: &mut impl FnMut(u16, &[u8])) -> bool {
        let Ok(fec) = parse_fec(buf) else { return true };
        let mut missing = None;
        for seq in fec.members() {
            if self.stored(seq).is_none() {
                if missing.is_some() {
                    return false;
                }
                missing = Some(seq);
            }
        }
        let Some(lost) = missing else { return true };
        if !self.overdue(lost) {
            return false; // perhaps still on its way: wait
        }
        // The rebuilt packet: the FEC payload XOR the others, after a
        // fixed header from the recovery fields.
        let mut pkt = [0u8; 2048];
        let body_max = pkt.len() - 12;
        let body = &mut pkt[12..];
        let n = fec.payload.len().min(body_max);
        body[..n].copy_from_slice(&fec.payload[..n]);
        let (mut len, mut pt, mut ts, mut flags, mut marker) =
            (fec.length_recovery, fec.pt_recovery, fec.ts_recovery, fec.flags_recovery, fec.marker_recovery);
        for seq in fec.members().filter(|&s| s != lost) {
            let Some(p) = self.stored(seq) else { continue };
            for (x, b) in body.iter_mut().zip(p.get(12..).unwrap_or_default()) {
                *x ^= b;
            }
            len ^= p.len().saturating_sub(12) as u16;
            pt ^= p[1] & 0x7f;
            marker ^= p[1] & 0x80 != 0;
            flags ^= p[0] & 0x3f;
            ts ^= u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        }
        let total = 12 + usize::from(len);
        if total > pkt.len() || total > self.entry_len || total > 12 + fec.payload.len() {
            return true; // inconsistent: nothing to rebuild
        }
        pkt[0] = 0x80 | flags;
        pkt[1] = if marker { 0x80 } else { 0 } | pt;
        pkt[2..4].copy_from_slice(&lost.to_be_bytes());
        pkt[4..8].copy_from_slice(&ts.to_be_bytes());
        pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
        self.stats.recovered += 1;
        self.on_media(lost, &pkt[..total]);
        out(lost, &pkt[..total]);
        true
    }

    fn park(&mut self, buf: &[u8], now_ns: u64) {
        if buf.len() > self.entry_len {
            return;
        }
        let Some(i) = self.fec_meta.iter().position(|w| !w.used) else {
            self.stats.overflow += 1;
            return;
        };
        self.fec[i * self.entry_len..i * self.entry_len + buf.len()].copy_from_slice(buf);
        self.fec_meta[i] = Waiting { used: true, len: buf.len() as u32, since_ns: now_ns };
    }

    /// Try the waiting FEC packets again until none helps any more.
    fn retry_waiting(&mut self, ssrc: u32, out: &mut impl FnMut(u16, &[u8])) {
        let mut progress = true;
        let mut scratch = [0u8; 2048];
        while progress {
            progress = false;
            for i in 0..WAITING {
                let w = self.fec_meta[i];
                if !w.used {
                    continue;
                }
                let len = w.len as usize;
                scratch[..len].copy_from_slice(&self.fec[i * self.entry_len..i * self.entry_len + len]);
                let before = self.stats.recovered;
                if self.try_repair(&scratch[..len], ssrc, out) {
                    self.fec_meta[i].used = false;
                    progress |= self.stats.recovered > before;
                }
            }
        }
    }

    /// A media packet arrived late or was repaired otherwise: a waiting FEC
    /// packet may now be usable.
    pub fn retry(&mut self, ssrc: u32, out: &mut impl FnMut(u16, &[u8])) {
        if self.waiting() {
            self.retry_waiting(ssrc, out);
        }
    }

    /// Drop the waiting FEC packets older than the wait: what they protect
    /// is lost for good.
    pub fn tick(&mut self, now_ns: u64) {
        for w in self.fec_meta.iter_mut().filter(|w| w.used) {
            if now_ns.saturating_sub(w.since_ns) >= self.wait_ns {
                w.used = false;
                self.stats.unrecoverable += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
