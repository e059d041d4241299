// SPDX-License-Identifier: MIT
//! The synthetic stream and MPEG-TS file input.

use std::io;
use std::path::Path;

pub const TS_PACKET: usize = 188;
/// TS packets per RTP packet (RFC 2250 practice: 7 fit a 1500-byte MTU).
pub const TS_PER_RTP: usize = 7;
pub const PAYLOAD: usize = TS_PACKET * TS_PER_RTP;
/// RTP payload type of MPEG-TS (RFC 3551): the `rtp` crate's.
pub use rtp::PT_MP2T;
/// The synthetic stream's PID.
pub const PID: u16 = 0x0100;

/// Synthetic payload for the RTP packet with sequence `seq` and timestamp
/// `ts`: seven TS packets on [`PID`] with a running continuity counter, and
/// a body derived from (seq, ts) so corruption anywhere is detectable.
pub fn synthetic_payload(seq: u16, ts: u32, out: &mut [u8; PAYLOAD]) {
    for k in 0..TS_PER_RTP {
        let p = &mut out[k * TS_PACKET..(k + 1) * TS_PACKET];
        let cc = ((seq as usize * TS_PER_RTP + k) & 0x0f) as u8;
        p[0] = 0x47;
        p[1] = (PID >> 8) as u8 & 0x1f;
        p[2] = PID as u8;
        p[3] = 0x10 | cc; // payload only, continuity counter
        let seed = (seq as u32).wrapping_mul(0x9e37_79b9) ^ ts ^ (k as u32) << 24;
        for (i, b) in p[4..].iter_mut().enumerate() {
            *b = (seed.wrapping_add(i as u32).wrapping_mul(2_654_435_761) >> 24) as u8;
        }
    }
}

/// An MPEG-TS file split into RTP payloads of up to seven TS packets.
pub struct TsFile {
    pub data: Vec<u8>,
    /// Bit rate measured from the file's PCRs, if it has at least two.
    pub pcr_bitrate: Option<f64>,
}

impl TsFile {
    pub fn load(path: &Path) -> io::Result<TsFile> {
        let data = std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if data.is_empty() || data.len() % TS_PACKET != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {} bytes is not a whole number of 188-byte TS packets", path.display(), data.len()),
            ));
        }
        if let Some(bad) = data.chunks(TS_PACKET).position(|p| p[0] != 0x47) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: TS packet {bad} has no 0x47 sync byte", path.display()),
            ));
        }
        let pcr_bitrate = pcr_bitrate(&data);
        Ok(TsFile { data, pcr_bitrate })
    }

    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        self.data.chunks(PAYLOAD)
    }
}

/// The PCR (27 MHz) of a TS packet, if its adaptation field carries one.
pub fn pcr(p: &[u8]) -> Option<(u16, u64)> {
    if p.len() < 12 || p[0] != 0x47 || p[3] & 0x20 == 0 || p[4] < 7 || p[5] & 0x10 == 0 {
        return None;
    }
    let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
    let base =
        (p[6] as u64) << 25 | (p[7] as u64) << 17 | (p[8] as u64) << 9 | (p[9] as u64) << 1 | (p[10] as u64) >> 7;
    let ext = ((p[10] as u64 & 1) << 8) | p[11] as u64;
    Some((pid, base * 300 + ext))
}

/// Bit rate from the first and last PCR of the first PCR PID: bytes between
/// them over the time between them (ISO/IEC 13818-1 2.4.2.2).
pub fn pcr_bitrate(data: &[u8]) -> Option<f64> {
    let mut first: Option<(u16, usize, u64)> = None;
    let mut last: Option<(usize, u64)> = None;
    for (i, p) in data.chunks(TS_PACKET).enumerate() {
        if let Some((pid, pcr)) = pcr(p) {
            match first {
                None => first = Some((pid, i, pcr)),
                Some((fpid, _, _)) if fpid == pid => last = Some((i, pcr)),
                _ => {}
            }
        }
    }
    let (_, i0, p0) = first?;
    let (i1, p1) = last?;
    // PCR wraps after 2^33 * 300 ticks (26.5 hours); take the forward delta.
    let ticks = p1.wrapping_sub(p0) % ((1u64 << 33) * 300);
    if ticks == 0 || i1 <= i0 {
        return None;
    }
    Some(((i1 - i0) * TS_PACKET * 8) as f64 * 27_000_000.0 / ticks as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcr_packet(pid: u16, pcr27: u64) -> [u8; TS_PACKET] {
        let mut p = [0xffu8; TS_PACKET];
        p[0] = 0x47;
        p[1] = (pid >> 8) as u8;
        p[2] = pid as u8;
        p[3] = 0x20; // adaptation field only
        p[4] = 183;
        p[5] = 0x10; // PCR flag
        let (base, ext) = (pcr27 / 300, pcr27 % 300);
        p[6] = (base >> 25) as u8;
        p[7] = (base >> 17) as u8;
        p[8] = (base >> 9) as u8;
        p[9] = (base >> 1) as u8;
        p[10] = ((base & 1) << 7) as u8 | 0x7e | (ext >> 8) as u8;
        p[11] = ext as u8;
        p
    }

    #[test]
    fn pcr_round_trip() {
        let p = pcr_packet(0x31, 123_456_789_012);
        assert_eq!(pcr(&p), Some((0x31, 123_456_789_012)));
    }

    #[test]
    fn bitrate_from_pcrs() {
        // 1000 packets between two PCRs 0.1 s apart: 188 * 8 * 1000 / 0.1
        // = 15.04 Mbit/s.
        let mut data = Vec::new();
        data.extend_from_slice(&pcr_packet(0x31, 27_000_000));
        for _ in 0..999 {
            let mut p = [0u8; TS_PACKET];
            p[0] = 0x47;
            p[3] = 0x10;
            data.extend_from_slice(&p);
        }
        data.extend_from_slice(&pcr_packet(0x31, 27_000_000 + 2_700_000));
        let rate = pcr_bitrate(&data).unwrap();
        assert!((rate - 15_040_000.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn synthetic_payload_is_valid_ts_and_depends_on_header() {
        let mut a = [0u8; PAYLOAD];
        let mut b = [0u8; PAYLOAD];
        synthetic_payload(7, 630, &mut a);
        synthetic_payload(8, 630, &mut b);
        assert!(a.chunks(TS_PACKET).all(|p| p[0] == 0x47 && p[1] == 0x01 && p[2] == 0x00));
        // Continuity counters run on across RTP packets.
        assert_eq!(a[3] & 0x0f, (7 * 7) & 0x0f);
        assert_eq!(b[3] & 0x0f, (8 * 7) & 0x0f);
        assert_ne!(a[4..188], b[4..188]);
    }
}
