// SPDX-License-Identifier: MIT
//! RTCP of one stream (`rtcp = "port+1" | "mux"`): receiver reports about
//! the RTP it receives, sender reports about the RTP it sends, generic
//! NACKs for the packets its reorder buffer misses (`nack = true`), and
//! what the peers' RTCP says. The packet formats, the interval and the
//! NACK timing are `rtp::rtcp` and `rtp::nack`; this is the bookkeeping,
//! run by the receiver thread.

use nix::sys::socket::{SockaddrLike, SockaddrStorage};
use rtp::nack::NackScheduler;
use rtp::rtcp::{self, ReportBlock, SenderInfo};
use rtpmgr_config::{Direction, RtcpMode, StreamConfig};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

/// Room for one compound packet.
pub const MAX_RTCP: usize = 1500;
/// Retransmission requests per missing packet, at least.
const NACK_TRIES: u8 = 4;

/// What a stream's RTCP did, for the status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpCounters {
    pub rr_sent: u64,
    pub sr_sent: u64,
    /// NACK packets sent, and the sequence numbers they asked for.
    pub nack_sent: u64,
    pub nack_requested: u64,
    pub received: u64,
    pub malformed: u64,
    pub sr_received: u64,
    pub rr_received: u64,
    /// NACKs from our own receivers (not served: rtpmgrd keeps no send
    /// history).
    pub nack_received: u64,
    /// RFC 4588 RTX packets, and RIST retransmissions, received.
    pub rtx_received: u64,
    pub rist_received: u64,
    /// Of those, the ones that filled a gap in time (released or held).
    pub repaired: u64,
    pub send_errors: u64,
}

/// The last packet the transmitter sent on the stream: what an SR
/// extrapolates its RTP timestamp from.
#[derive(Debug, Clone, Copy)]
pub struct LastSent {
    pub ssrc: u32,
    pub rtp_ts: u32,
    pub at_ns: u64,
}

pub struct RtcpState {
    pub ssrc: u32,
    cname: String,
    /// The address RTCP from the sender came from.
    learned: Option<SocketAddr>,
    /// The address the RTP came from.
    rtp_source: Option<SocketAddr>,
    /// Middle 32 bits of the last SR's NTP time, its sender, and when it
    /// arrived (monotonic).
    last_sr: Option<(u32, u32, u64)>,
    next_report_ns: u64,
    initial: bool,
    avg_size: f64,
    rng: u64,
    bytes_at_report: u64,
    report_at_ns: u64,
    pub nack: Option<NackScheduler>,
    pub counters: RtcpCounters,
    pub last_sent: Option<LastSent>,
    /// Payload type of the media, from the configuration or the packets.
    pub media_pt: Option<u8>,
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// A datagram's source, if it has one.
pub fn source(a: &SockaddrStorage) -> Option<SocketAddr> {
    (a.len() > 0).then(|| to_socket_addr(a)).flatten()
}

impl RtcpState {
    pub fn new(cfg: &StreamConfig, now_ns: u64) -> RtcpState {
        let mut rng = now_ns ^ 0x9e37_79b9_7f4a_7c15 ^ (cfg.name.len() as u64) << 40;
        for b in cfg.name.bytes() {
            rng = rng.rotate_left(5) ^ u64::from(b);
        }
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let mut s = RtcpState {
            ssrc: 0,
            cname: format!("rtpmgrd.{}@{}", cfg.name, if host.is_empty() { "localhost" } else { &host }),
            learned: None,
            rtp_source: None,
            last_sr: None,
            next_report_ns: 0,
            initial: true,
            avg_size: 100.0,
            rng,
            bytes_at_report: 0,
            report_at_ns: now_ns,
            nack: cfg.nack.then(|| {
                // Ask again every fifth of the wait the buffer allows (10 to
                // 200 ms), for as long as it allows (4 to 10 times).
                let retry_ms = (u64::from(cfg.reorder_ms) / 5).clamp(10, 200);
                let tries = (u64::from(cfg.reorder_ms) / retry_ms).clamp(u64::from(NACK_TRIES), 10) as u8;
                NackScheduler::new(retry_ms * 1_000_000, tries)
            }),
            counters: RtcpCounters::default(),
            last_sent: None,
            media_pt: cfg.payload_type,
        };
        s.ssrc = s.random() as u32 | 1 << 31;
        s.schedule(cfg, now_ns, 0);
        s
    }

    fn random(&mut self) -> u64 {
        // xorshift64*.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next regular report: RFC 3550's interval for a session of the
    /// sender and us, 5% of the stream's measured rate for RTCP.
    fn schedule(&mut self, cfg: &StreamConfig, now_ns: u64, bytes: u64) {
        let secs = (now_ns.saturating_sub(self.report_at_ns) as f64 / 1e9).max(0.001);
        // Until a rate is measured, a nominal 1 Mbit/s: any video stream's
        // RTCP share makes the interval RFC 3550's 5 s minimum anyway.
        let rate = (bytes.saturating_sub(self.bytes_at_report) as f64 / secs).max(125_000.0);
        let we_sent = cfg.direction != Direction::Ingress;
        let t = rtcp::rtcp_interval(2, 1, 0.05 * rate, we_sent, self.avg_size, self.initial);
        let unit = (self.random() >> 11) as f64 / (1u64 << 53) as f64;
        let t = rtcp::randomise_interval(t, unit);
        self.next_report_ns = now_ns.saturating_add((t * 1e9) as u64);
        self.bytes_at_report = bytes;
        self.report_at_ns = now_ns;
        self.initial = false;
    }

    pub fn next_report_ns(&self) -> u64 {
        self.next_report_ns
    }

    pub fn note_rtp_source(&mut self, from: Option<SocketAddr>) {
        if from.is_some() {
            self.rtp_source = from;
        }
    }

    /// Where RTCP about the received stream goes: `rtcp_peer`, else where
    /// the sender's RTCP comes from, else the RTP sender's address (its
    /// port + 1 unless muxed).
    pub fn upstream(&self, cfg: &StreamConfig) -> Option<SocketAddr> {
        cfg.rtcp_peer.or(self.learned).or_else(|| {
            let mut a = self.rtp_source?;
            if cfg.rtcp == RtcpMode::PortPlus1 {
                a.set_port(a.port().wrapping_add(1));
            }
            Some(a)
        })
    }

    /// Where RTCP about the sent stream (SR) goes: the destination's
    /// RTCP port.
    pub fn downstream(cfg: &StreamConfig) -> Option<SocketAddr> {
        let mut d = cfg.destination?;
        if cfg.rtcp == RtcpMode::PortPlus1 {
            d.set_port(d.port().wrapping_add(1));
        }
        Some(d)
    }

    /// A compound RTCP datagram from a peer, arrived at `now_ns`.
    pub fn on_rtcp(&mut self, data: &[u8], from: Option<SocketAddr>, now_ns: u64, media_ssrc: Option<u32>) {
        let Some(pkts) = rtcp::parse_compound(data) else {
            self.counters.malformed += 1;
            return;
        };
        self.counters.received += 1;
        let mut from_sender = false;
        for p in pkts {
            if let Some(info) = rtcp::sender_info(&p) {
                self.counters.sr_received += 1;
                self.last_sr = Some((info.lsr(), info.ssrc, now_ns));
                from_sender = media_ssrc.is_none_or(|m| m == info.ssrc);
            } else if p.pt == rtcp::PT_RR {
                self.counters.rr_received += 1;
            } else if rtcp::nack(&p).is_some() {
                self.counters.nack_received += 1;
            }
        }
        if from_sender && from.is_some() {
            self.learned = from;
        }
    }

    /// The report block about `src`, starting a new A.3 interval.
    fn block(&self, src: &mut rtp::SourceStats, now_ns: u64) -> ReportBlock {
        let interval = src.interval_report();
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, ssrc, at)) if ssrc == src.ssrc() => {
                (lsr, ((now_ns.saturating_sub(at) as u128 * 65_536) / 1_000_000_000) as u32)
            }
            _ => (0, 0),
        };
        ReportBlock {
            ssrc: src.ssrc(),
            fraction_lost: interval.fraction_lost,
            cumulative_lost: src.cumulative_lost_rtcp(),
            highest_seq: src.extended_highest_seq(),
            jitter: src.jitter_units(),
            lsr,
            dlsr,
        }
    }

    /// RR (with a block about the current source, if any) and SDES.
    fn write_rr(&self, block: Option<ReportBlock>, out: &mut [u8]) -> Option<usize> {
        let blocks = block.as_slice();
        let mut n = rtcp::write_rr(out, self.ssrc, blocks)?;
        n += rtcp::write_sdes_cname(out.get_mut(n..)?, self.ssrc, self.cname.as_bytes())?;
        Some(n)
    }

    /// Whether a regular report is due.
    pub fn report_due(&self, now_ns: u64) -> bool {
        now_ns >= self.next_report_ns
    }

    /// The regular receiver report (receiving streams), into `out`.
    pub fn receiver_report(&mut self, rtp: &mut rtp::StreamStats, now_ns: u64, out: &mut [u8]) -> Option<usize> {
        let current = rtp.current().map(|s| s.ssrc());
        let block = current.and_then(|ssrc| rtp.source_mut(ssrc)).map(|src| self.block(src, now_ns));
        let n = self.write_rr(block, out)?;
        self.avg_size += (n as f64 + 28.0 - self.avg_size) / 16.0;
        Some(n)
    }

    /// The sender report about what the stream sent (sending streams),
    /// into `out`; `None` before the first packet went out.
    pub fn sender_report(
        &mut self,
        clock_rate: u32,
        sent_packets: u64,
        sent_bytes: u64,
        now_ns: u64,
        unix_ns: u64,
        out: &mut [u8],
    ) -> Option<usize> {
        let last = self.last_sent?;
        let elapsed = now_ns.saturating_sub(last.at_ns);
        let ticks = (u128::from(elapsed) * u128::from(clock_rate) / 1_000_000_000) as u32;
        let info = SenderInfo {
            ssrc: last.ssrc,
            ntp: rtcp::ntp_from_unix_ns(unix_ns),
            rtp_ts: last.rtp_ts.wrapping_add(ticks),
            packets: sent_packets as u32,
            // Payload octets: a 12-byte header per packet taken off.
            octets: sent_bytes.saturating_sub(12 * sent_packets) as u32,
        };
        let mut n = rtcp::write_sr(out, &info, &[])?;
        n += rtcp::write_sdes_cname(out.get_mut(n..)?, last.ssrc, self.cname.as_bytes())?;
        Some(n)
    }

    /// After the regular reports went out.
    pub fn reported(&mut self, cfg: &StreamConfig, now_ns: u64, bytes: u64) {
        self.schedule(cfg, now_ns, bytes);
    }

    /// RR, SDES and a generic NACK for `seqs` of the current source.
    pub fn nack_packet(
        &mut self,
        rtp: &mut rtp::StreamStats,
        seqs: &[u16],
        now_ns: u64,
        out: &mut [u8],
    ) -> Option<usize> {
        let media = rtp.current().map(|s| s.ssrc())?;
        let block = rtp.source_mut(media).map(|src| self.block(src, now_ns));
        let mut n = self.write_rr(block, out)?;
        n += rtcp::write_nack(out.get_mut(n..)?, self.ssrc, media, seqs)?;
        Some(n)
    }
}
