// SPDX-License-Identifier: MIT
//! A running stream and the table the threads share.

use mpegts::tr101290::{Analyzer, AnalyzerConfig};
use nix::sys::socket::SockaddrStorage;
use rtp::reorder::ReorderBuffer;
use rtpmgr_abi as abi;
use rtpmgr_config::{Direction, StreamConfig, StreamFormat};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Most SSRCs tracked per stream; a stream normally has one, a few during a
/// head-end switch-over.
const MAX_SOURCES: usize = 8;

/// Counters of one stream, updated by the receiver and transmitter threads
/// once per batch.
pub struct StreamCounters {
    /// RFC 3550 receiver statistics of what arrives from the network.
    pub rtp: rtp::StreamStats,
    /// TR 101 290 analysis and continuity counters of the MPEG-TS that
    /// arrives: every `udp-ts` datagram, the payload of RTP packets that
    /// carry TS. `None` for streams that cannot carry TS (egress, RTP with
    /// another payload type than 33).
    pub ts: Option<Box<Analyzer>>,
    /// The reorder buffer of a stream with `reorder_ms`; its packets reach
    /// the ring through it.
    pub reorder: Option<ReorderBuffer>,
    /// RTCP of a stream with `rtcp` on.
    pub rtcp: Option<crate::rtcp::RtcpState>,
    /// SMPTE 2022-1 FEC decoder of a stream with `fec = true`.
    pub fec: Option<rtp::fec::FecDecoder>,
    /// The second leg of a SMPTE 2022-7 stream (`leg2`); the first leg's
    /// figures are the stream's own.
    pub leg2: Option<LegCounters>,
    /// RTP packets accepted into the to-device ring.
    pub packets: u64,
    pub bytes: u64,
    /// Not RTP (bad version, truncated header, padding or CSRC/extension
    /// running past the end).
    pub malformed: u64,
    /// RTP with another payload type than the configured one.
    pub wrong_payload_type: u64,
    /// Datagrams longer than a slot's payload capacity.
    pub oversize: u64,
    /// Datagrams read and discarded while the to-device ring was full,
    /// under `ring_full = "drop"`.
    pub ring_full_drops: u64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub send_errors: u64,
}

/// What arrived on the second leg of a SMPTE 2022-7 stream.
pub struct LegCounters {
    /// RFC 3550 statistics of the leg alone.
    pub rtp: rtp::StreamStats,
    pub packets: u64,
    pub bytes: u64,
    pub malformed: u64,
}

/// One configured stream: its device stream id, socket and counters.
pub struct Stream {
    pub id: u32,
    pub config: StreamConfig,
    /// Media-port index the stream was started on.
    pub port: u32,
    pub socket: UdpSocket,
    /// The RTCP socket of `rtcp = "port+1"`.
    pub rtcp_socket: Option<UdpSocket>,
    /// The column and row FEC sockets of `fec = true`.
    pub fec_sockets: Vec<UdpSocket>,
    /// The second leg's socket (`leg2`, SMPTE 2022-7).
    pub leg2_socket: Option<UdpSocket>,
    /// Interface index the group was joined on, per leg (0: by route, or
    /// no group): the controller joins again when the named interface
    /// comes back with another index.
    pub joined_ifindex: [AtomicU32; 2],
    /// Times a group was joined again.
    pub rejoins: AtomicU64,
    pub destination: Option<SockaddrStorage>,
    /// `socket` is connected to `destination` (an egress stream, see
    /// `net::open_stream_socket`): sends go without an address.
    pub connected: bool,
    counters: Mutex<StreamCounters>,
}

impl Stream {
    /// `max_packet` is the largest packet a ring slot takes (the size of a
    /// reorder buffer's entries).
    pub fn new(id: u32, config: StreamConfig, port: u32, socket: UdpSocket, max_packet: usize) -> Stream {
        let destination = config.destination.map(SockaddrStorage::from);
        let connected = destination.is_some() && socket.peer_addr().is_ok();
        let counters = StreamCounters {
            rtp: rtp::StreamStats::new(config.effective_clock_rate(), MAX_SOURCES),
            ts: analyses_ts(&config).then(|| {
                Box::new(Analyzer::new(AnalyzerConfig { pid_timeout_ns: u64::from(config.pid_timeout_ms) * 1_000_000 }))
            }),
            reorder: reorder_buffer(&config, max_packet),
            leg2: config.leg2.as_ref().map(|_| LegCounters {
                rtp: rtp::StreamStats::new(config.effective_clock_rate(), MAX_SOURCES),
                packets: 0,
                bytes: 0,
                malformed: 0,
            }),
            fec: (config.fec && config.reorder_ms > 0)
                .then(|| rtp::fec::FecDecoder::new(max_packet, u64::from(config.reorder_ms) * 1_000_000)),
            rtcp: (config.rtcp != rtpmgr_config::RtcpMode::Off)
                .then(|| crate::rtcp::RtcpState::new(&config, crate::monotonic_ns())),
            packets: 0,
            bytes: 0,
            malformed: 0,
            wrong_payload_type: 0,
            oversize: 0,
            ring_full_drops: 0,
            sent_packets: 0,
            sent_bytes: 0,
            send_errors: 0,
        };
        Stream {
            id,
            config,
            port,
            socket,
            rtcp_socket: None,
            fec_sockets: Vec::new(),
            leg2_socket: None,
            joined_ifindex: [AtomicU32::new(0), AtomicU32::new(0)],
            rejoins: AtomicU64::new(0),
            destination,
            connected,
            counters: Mutex::new(counters),
        }
    }

    pub fn counters(&self) -> MutexGuard<'_, StreamCounters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the stream's packets pass a reorder buffer.
    pub fn reorders(&self) -> bool {
        self.receives() && self.config.reorder_ms > 0
    }

    /// Whether the network side feeds the device (ingress, relay).
    pub fn receives(&self) -> bool {
        self.config.direction != Direction::Egress
    }

    /// Whether the device side feeds the network (egress, relay).
    pub fn sends(&self) -> bool {
        self.config.direction != Direction::Ingress
    }

    /// `START_STREAM` direction bits.
    pub fn device_direction(&self) -> u32 {
        direction_bits(self.config.direction)
    }
}

/// Whether the stream's datagrams are checked as MPEG-TS: every `udp-ts`
/// stream; RTP streams whose payload type is 33 (MP2T) or not configured
/// (then only payloads that are whole TS packets are checked).
pub fn analyses_ts(config: &StreamConfig) -> bool {
    config.direction != Direction::Egress
        && match config.format {
            StreamFormat::UdpTs => true,
            StreamFormat::Rtp => config.payload_type.is_none_or(|pt| pt == rtp::PT_MP2T),
        }
}

/// The reorder buffer `reorder_ms` asks for: a window of 4 packets per
/// millisecond of delay (a 40 Mbit/s MPEG-TS stream's rate), a power of two
/// in 64..=4096, with entries of `max_packet` bytes; `None` when off.
pub fn reorder_buffer(config: &StreamConfig, max_packet: usize) -> Option<ReorderBuffer> {
    (config.reorder_ms > 0 && config.direction != Direction::Egress).then(|| {
        let window = (config.reorder_ms as usize * 4).clamp(64, 4096);
        ReorderBuffer::new(
            window,
            crate::receiver::BATCH as usize,
            max_packet,
            u64::from(config.reorder_ms) * 1_000_000,
        )
    })
}

pub fn direction_bits(d: Direction) -> u32 {
    match d {
        Direction::Ingress => abi::DIR_TO_DEVICE,
        Direction::Egress => abi::DIR_FROM_DEVICE,
        Direction::Relay => abi::DIR_BOTH,
    }
}

/// The streams currently running. Writers (the controller) bump the
/// generation; the data threads re-read the table only when it changed.
#[derive(Default)]
pub struct StreamTable {
    streams: RwLock<Vec<Arc<Stream>>>,
    generation: AtomicU64,
}

impl StreamTable {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The streams and the generation they belong to.
    pub fn snapshot(&self) -> (u64, Vec<Arc<Stream>>) {
        let streams = self.streams.read().unwrap_or_else(|p| p.into_inner());
        (self.generation(), streams.clone())
    }

    pub fn insert(&self, stream: Arc<Stream>) {
        let mut streams = self.streams.write().unwrap_or_else(|p| p.into_inner());
        streams.push(stream);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Stream>> {
        let mut streams = self.streams.write().unwrap_or_else(|p| p.into_inner());
        let pos = streams.iter().position(|s| s.config.name == name)?;
        let s = streams.remove(pos);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Some(s)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.snapshot().1.into_iter().find(|s| s.config.name == name)
    }
}
