// SPDX-License-Identifier: MIT
//! RTCP (RFC 3550 section 6) as a receiver needs it: a validating view of
//! compound packets, writers for sender and receiver reports, SDES CNAME
//! and generic NACK feedback (RFC 4585 6.2.1), the transmission interval
//! (RFC 3550 6.3, A.7) and RTP/RTCP demultiplexing on one port (RFC 5761).
//!
//! ```text
//! common header: V=2 (2) P (1) count/FMT (5) | PT (8) | length (16, words - 1)
//! SR  200: SSRC | NTP (64) | RTP ts | packets | octets | report blocks
//! RR  201: SSRC | report blocks
//! SDES 202, BYE 203, APP 204
//! RTPFB 205 FMT 1 (generic NACK): sender SSRC | media SSRC | (PID, BLP)*
//! report block: SSRC | fraction (8) cumulative lost (24) | ext. highest seq
//!               | jitter | LSR | DLSR
//! ```
//!
//! The writers fill caller memory and never allocate; they return the
//! bytes written, or `None` when the buffer is too small.

/// Sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;
/// Goodbye.
pub const PT_BYE: u8 = 203;
/// Application-defined.
pub const PT_APP: u8 = 204;
/// Transport-layer feedback (RFC 4585).
pub const PT_RTPFB: u8 = 205;
/// Payload-specific feedback (RFC 4585).
pub const PT_PSFB: u8 = 206;
/// RTPFB format of the generic NACK.
pub const FMT_NACK: u8 = 1;
/// Seconds from 1900 (NTP) to 1970 (Unix).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// One RTCP packet of a compound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpPacket<'a> {
    /// The count (SR, RR, SDES, BYE) or FMT (feedback) field.
    pub count: u8,
    /// The packet type.
    pub pt: u8,
    /// Everything after the 4-byte header, padding removed.
    pub body: &'a [u8],
}

/// Whether a datagram on a port carrying both RTP and RTCP is RTCP (RFC
/// 5761 4: version 2, and a second byte in 192..=223, where RTP payload
/// types with the marker bit do not go in practice).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// The packets of a compound RTCP datagram; `None` when it is not one
/// (RFC 3550 A.2: version 2, the first an SR or RR, lengths that add up to
/// the datagram, padding only on the last).
pub fn parse_compound(buf: &[u8]) -> Option<impl Iterator<Item = RtcpPacket<'_>> + '_> {
    let mut rest = buf;
    let mut first = true;
    // Validate the whole datagram first, so the iterator cannot fail.
    while !rest.is_empty() {
        let h = rest.get(..4)?;
        if h[0] >> 6 != 2 {
            return None;
        }
        let len = (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
        let pkt = rest.get(..len)?;
        if first && !matches!(pkt[1], PT_SR | PT_RR) {
            return None;
        }
        if pkt[0] & 0x20 != 0 {
            // Padding: only the last packet may have it.
            let pad = usize::from(*pkt.last()?);
            if len != rest.len() || pad == 0 || pad > len - 4 {
                return None;
            }
        }
        first = false;
        rest = &rest[len..];
    }
    let mut rest = buf;
    Some(core::iter::from_fn(move || {
        let h = rest.get(..4)?;
        let len = (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
        let pkt = rest.get(..len)?;
        rest = rest.get(len..)?;
        let pad = if pkt[0] & 0x20 != 0 { usize::from(pkt[len - 1]) } else { 0 };
        Some(RtcpPacket { count: pkt[0] & 0x1f, pt: pkt[1], body: pkt.get(4..len - pad)? })
    }))
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// A reception report block (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (signed 24 bits).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter, timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR from the source.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    fn parse(b: &[u8]) -> ReportBlock {
        let lost = be32(b, 4) & 0x00ff_ffff;
        ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: b.get(4).copied().unwrap_or(0),
            cumulative_lost: ((lost << 8) as i32) >> 8,
            highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            lsr: be32(b, 16),
            dlsr: be32(b, 20),
        }
    }

    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        let lost = (self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
        out[4..8].copy_from_slice(&(u32::from(self.fraction_lost) << 24 | lost).to_be_bytes());
        out[8..12].copy_from_slice(&self.highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.lsr.to_be_bytes());
        out[20..24].copy_from_slice(&self.dlsr.to_be_bytes());
    }
}

/// The sender info of an SR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// The sender's SSRC.
    pub ssrc: u32,
    /// NTP timestamp (seconds since 1900, 32.32 fixed point).
    pub ntp: u64,
    /// The same instant in RTP timestamp units.
    pub rtp_ts: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

impl SenderInfo {
    /// The middle 32 bits of the NTP timestamp: what an RR's LSR echoes.
    pub fn lsr(&self) -> u32 {
        (self.ntp >> 16) as u32
    }
}

/// An SR's sender info, if `p` is a well-formed SR.
pub fn sender_info(p: &RtcpPacket<'_>) -> Option<SenderInfo> {
    if p.pt != PT_SR || p.body.len() < 24 {
        return None;
    }
    let b = p.body;
    Some(SenderInfo {
        ssrc: be32(b, 0),
        ntp: u64::from(be32(b, 4)) << 32 | u64::from(be32(b, 8)),
        rtp_ts: be32(b, 12),
        packets: be32(b, 16),
        octets: be32(b, 20),
    })
}

/// The report blocks of an SR or RR, and the reporter's SSRC.
pub fn report_blocks<'a>(p: &RtcpPacket<'a>) -> Option<(u32, impl Iterator<Item = ReportBlock> + 'a)> {
    let skip = match p.pt {
        PT_SR => 24,
        PT_RR => 4,
        _ => return None,
    };
    let blocks = p.body.get(skip..)?;
    let n = usize::from(p.count).min(blocks.len() / 24);
    Some((be32(p.body, 0), blocks.chunks_exact(24).take(n).map(ReportBlock::parse)))
}

/// A generic NACK's SSRCs and the sequence numbers it asks for, if `p` is
/// one.
pub fn nack<'a>(p: &RtcpPacket<'a>) -> Option<(u32, u32, impl Iterator<Item = u16> + 'a)> {
    if p.pt != PT_RTPFB || p.count != FMT_NACK || p.body.len() < 8 {
        return None;
    }
    let fci = p.body.get(8..)?;
    let seqs = fci.chunks_exact(4).flat_map(|f| {
        let pid = u16::from_be_bytes([f[0], f[1]]);
        let blp = u16::from_be_bytes([f[2], f[3]]);
        core::iter::once(pid)
            .chain((0..16u16).filter(move |i| blp & (1 << i) != 0).map(move |i| pid.wrapping_add(i + 1)))
    });
    Some((be32(p.body, 0), be32(p.body, 4), seqs))
}

fn header(out: &mut [u8], count: u8, pt: u8, len: usize) {
    out[0] = 0x80 | (count & 0x1f);
    out[1] = pt;
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
}

/// Write an RR from `ssrc` with up to 31 `blocks`.
pub fn write_rr(out: &mut [u8], ssrc: u32, blocks: &[ReportBlock]) -> Option<usize> {
    let blocks = &blocks[..blocks.len().min(31)];
    let len = 8 + 24 * blocks.len();
    let out = out.get_mut(..len)?;
    header(out, blocks.len() as u8, PT_RR, len);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    for (b, o) in blocks.iter().zip(out[8..].chunks_exact_mut(24)) {
        b.write(o);
    }
    Some(len)
}

/// Write an SR with up to 31 `blocks`.
pub fn write_sr(out: &mut [u8], info: &SenderInfo, blocks: &[ReportBlock]) -> Option<usize> {
    let blocks = &blocks[..blocks.len().min(31)];
    let len = 28 + 24 * blocks.len();
    let out = out.get_mut(..len)?;
    header(out, blocks.len() as u8, PT_SR, len);
    out[4..8].copy_from_slice(&info.ssrc.to_be_bytes());
    out[8..16].copy_from_slice(&info.ntp.to_be_bytes());
    out[16..20].copy_from_slice(&info.rtp_ts.to_be_bytes());
    out[20..24].copy_from_slice(&info.packets.to_be_bytes());
    out[24..28].copy_from_slice(&info.octets.to_be_bytes());
    for (b, o) in blocks.iter().zip(out[28..].chunks_exact_mut(24)) {
        b.write(o);
    }
    Some(len)
}

/// Write an SDES packet with one chunk: `ssrc` and its CNAME (at most 255
/// bytes), as every compound packet must carry (RFC 3550 6.1).
pub fn write_sdes_cname(out: &mut [u8], ssrc: u32, cname: &[u8]) -> Option<usize> {
    let cname = &cname[..cname.len().min(255)];
    // SSRC, item type and length, the text, then at least one null octet
    // ending the item list, up to a 32-bit boundary.
    let items = 2 + cname.len() + 1;
    let len = 4 + (4 + items).div_ceil(4) * 4;
    let out = out.get_mut(..len)?;
    header(out, 1, PT_SDES, len);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    out[8] = 1; // CNAME
    out[9] = cname.len() as u8;
    out[10..10 + cname.len()].copy_from_slice(cname);
    out[10 + cname.len()..].fill(0);
    Some(len)
}

/// Write a generic NACK from `sender` about `media` for `seqs` (any order;
/// numbers within 16 of a packet's PID share its BLP word). At most 64
/// FCI words are written; the sequence numbers beyond them are left out.
pub fn write_nack(out: &mut [u8], sender: u32, media: u32, seqs: &[u16]) -> Option<usize> {
    let mut fci = [(0u16, 0u16); 64];
    let mut n = 0;
    for &s in seqs {
        if fci[..n].iter_mut().any(|(pid, blp)| {
            let d = s.wrapping_sub(*pid);
            if d == 0 {
                return true;
            }
            if (1..=16).contains(&d) {
                *blp |= 1 << (d - 1);
                return true;
            }
            false
        }) {
            continue;
        }
        if n == fci.len() {
            break;
        }
        fci[n] = (s, 0);
        n += 1;
    }
    let len = 12 + 4 * n;
    let out = out.get_mut(..len)?;
    header(out, FMT_NACK, PT_RTPFB, len);
    out[4..8].copy_from_slice(&sender.to_be_bytes());
    out[8..12].copy_from_slice(&media.to_be_bytes());
    for ((pid, blp), o) in fci[..n].iter().zip(out[12..].chunks_exact_mut(4)) {
        o[0..2].copy_from_slice(&pid.to_be_bytes());
        o[2..4].copy_from_slice(&blp.to_be_bytes());
    }
    Some(len)
}

/// An NTP timestamp (32.32) from Unix time in nanoseconds.
pub fn ntp_from_unix_ns(ns: u64) -> u64 {
    let secs = ns / 1_000_000_000 + NTP_UNIX_OFFSET;
    let frac = ((ns % 1_000_000_000) << 32) / 1_000_000_000;
    secs << 32 | frac
}

/// RFC 3550 6.3.1 / A.7: the deterministic RTCP interval in seconds,
/// before randomisation: `members` in the session, `senders` of them,
/// `rtcp_bw` the RTCP bandwidth in octets per second (5% of the session's),
/// `we_sent` whether we sent data recently, `avg_rtcp_size` the average
/// compound packet in octets, `initial` before our first report.
pub fn rtcp_interval(
    members: u32,
    senders: u32,
    rtcp_bw: f64,
    we_sent: bool,
    avg_rtcp_size: f64,
    initial: bool,
) -> f64 {
    const RTCP_MIN_TIME: f64 = 5.0;
    const SENDER_FRACTION: f64 = 0.25;
    let t_min = if initial { RTCP_MIN_TIME / 2.0 } else { RTCP_MIN_TIME };
    let (mut n, mut bw) = (f64::from(members.max(1)), rtcp_bw.max(1.0));
    let senders = f64::from(senders);
    if senders <= n * SENDER_FRACTION {
        if we_sent {
            bw *= SENDER_FRACTION;
            n = senders.max(1.0);
        } else {
            bw *= 1.0 - SENDER_FRACTION;
            n -= senders;
        }
    }
    (avg_rtcp_size * n / bw).max(t_min)
}

/// A.7's randomisation of the deterministic interval `t`: uniform in
/// [0.5 t, 1.5 t], divided by e - 3/2 to compensate for timer
/// reconsideration. `unit` is a random number in [0, 1).
pub fn randomise_interval(t: f64, unit: f64) -> f64 {
    const COMPENSATION: f64 = core::f64::consts::E - 1.5;
    t * (0.5 + unit.clamp(0.0, 1.0)) / COMPENSATION
}

#[cfg(test)]
mod tests;
