// SPDX-License-Identifier: MIT
//! `/etc/rtpmgr.toml`: the configuration model of rtpmgrd, its parser and
//! its validation.
//!
//! Every error names the file, the line and column, and the key:
//! `/etc/rtpmgr.toml:12:1: unknown field `slot_szie` in [buffer], expected
//! `slot_count` or `slot_size``. Parsing happens in two passes: serde
//! deserialises into raw structures whose checked fields keep their source
//! span (`toml::Spanned`), then [`validate`] turns them into the clean public
//! model, reporting semantic errors at the span of the offending value.

mod raw;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use log::LevelFilter;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub buffer: BufferConfig,
    pub streams: Vec<StreamConfig>,
}

/// Which device implementation the daemon drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// `/dev/rtpmgr`, the kernel module.
    #[default]
    Kernel,
    /// The in-process simulator (tests, demos, hosts without the module).
    Sim,
}

/// How rtpmgrd lays its data path out on threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// A receiver thread (sockets → to-device ring) and a transmitter
    /// thread (from-device ring → sockets).
    #[default]
    Threads,
    /// One thread does both, waiting for the sockets and the device in one
    /// epoll: no hand-off between threads on the way through.
    RunToCompletion,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    pub backend: BackendKind,
    pub device: PathBuf,
    pub control_socket: PathBuf,
    pub control_socket_mode: u32,
    pub log_level: LevelFilter,
    /// Seconds between status log lines; 0 disables them.
    pub status_interval_secs: u32,
    /// SO_RCVBUF/SO_SNDBUF requested for each stream socket.
    pub socket_buffer_bytes: u32,
    /// Threads of the data path.
    pub layout: Layout,
    /// Send runs of one stream's equal-sized packets as one UDP GSO
    /// buffer (`UDP_SEGMENT`), where the kernel supports it.
    pub udp_gso: bool,
    /// Take each datagram's kernel arrival time (`SO_TIMESTAMPNS`) for the
    /// jitter and TR 101 290 timers; off, the time the batch was read is
    /// used (cheaper, slightly noisier jitter).
    pub receive_timestamps: bool,
    /// Interrupt moderation: after a wake-up that brought less than a
    /// batch, the receiver waits this long before it sleeps again, so that
    /// the next wake-up carries more packets (fewer system calls and
    /// context switches per packet at paced rates, at up to this much
    /// added latency). 0: off.
    pub rx_coalesce_us: u32,
}

/// The most `rx_coalesce_us` allows (10 ms).
pub const MAX_RX_COALESCE_US: u32 = 10_000;

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            backend: BackendKind::Kernel,
            device: PathBuf::from("/dev/rtpmgr"),
            control_socket: PathBuf::from("/run/rtpmgr/control.sock"),
            control_socket_mode: 0o660,
            log_level: LevelFilter::Info,
            status_interval_secs: 10,
            socket_buffer_bytes: 4 << 20,
            layout: Layout::Threads,
            udp_gso: true,
            receive_timestamps: true,
            rx_coalesce_us: 0,
        }
    }
}

/// `[buffer]`: the geometry of the shared rings (`CONFIGURE_BUFFER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferConfig {
    /// Slots per ring: a power of two, 8..=32768.
    pub slot_count: u32,
    /// Bytes per slot including the 32-byte slot header: a power of two,
    /// 256..=65536. The largest packet is `slot_size - 32`.
    pub slot_size: u32,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig { slot_count: 1024, slot_size: 2048 }
    }
}

/// Which way a stream flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Network → device.
    Ingress,
    /// Device → network.
    Egress,
    /// Network → device → network, through a port that loops back.
    Relay,
}

/// One `[[stream]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    pub name: String,
    pub direction: Direction,
    pub bind: SocketAddr,
    pub group: Option<IpAddr>,
    pub source: Option<IpAddr>,
    pub interface: Option<String>,
    pub destination: Option<SocketAddr>,
    pub multicast_ttl: Option<u8>,
    pub payload_type: Option<u8>,
    pub clock_rate: Option<u32>,
    pub media_port: String,
    pub ring_full: RingFullPolicy,
    pub mode: DataPath,
    /// What a datagram carries (`format`).
    pub format: StreamFormat,
    /// TR 101 290 PID_error: how long an elementary PID a PMT names may be
    /// absent (`pid_timeout_ms`).
    pub pid_timeout_ms: u32,
    /// Reorder buffer: how long a packet waits for earlier missing ones,
    /// in milliseconds; 0 (default) relays in arrival order.
    pub reorder_ms: u32,
    /// Where RTCP goes (`rtcp`).
    pub rtcp: RtcpMode,
    /// Where to send RTCP about the received stream (`rtcp_peer`); by
    /// default the address RTCP from the sender comes from, else the RTP
    /// sender's address (its port + 1 unless muxed).
    pub rtcp_peer: Option<SocketAddr>,
    /// Ask for lost packets with generic NACKs (RFC 4585) and merge the
    /// retransmissions back in order (`nack`).
    pub nack: bool,
    /// Payload type of RFC 4588 RTX packets on the stream's port
    /// (`rtx_payload_type`); without it only retransmissions of the
    /// original packet (RIST's, or a sender's plain resend) are merged.
    pub rtx_payload_type: Option<u8>,
    /// SMPTE 2022-1 FEC decoding: column FEC on the bind port + 2, row FEC
    /// on port + 4 (`fec`).
    pub fec: bool,
    /// SMPTE 2022-7: the second leg feeding the same stream (`leg2`).
    pub leg2: Option<Leg>,
}

/// Where a leg of a SMPTE 2022-7 stream arrives: its own socket, group and
/// interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub bind: SocketAddr,
    pub group: Option<IpAddr>,
    pub source: Option<IpAddr>,
    pub interface: Option<String>,
}

/// Where a stream's RTCP goes (`rtcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RtcpMode {
    /// No RTCP: a pure relay.
    #[default]
    Off,
    /// On the port after the RTP port (RFC 3550 11).
    PortPlus1,
    /// On the RTP port itself (RFC 5761).
    Mux,
}

impl RtcpMode {
    /// The name the configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RtcpMode::Off => "off",
            RtcpMode::PortPlus1 => "port+1",
            RtcpMode::Mux => "mux",
        }
    }
}

/// What the datagrams of a stream carry (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamFormat {
    /// RTP (RFC 3550), any payload; loss and reordering from its sequence
    /// numbers. An MPEG-TS payload (RFC 2250) is also checked as TS.
    #[default]
    Rtp,
    /// Raw MPEG-TS over UDP: a whole number of 188-byte packets each
    /// starting with 0x47; loss and reordering from the TS continuity
    /// counters per PID.
    UdpTs,
}

impl StreamFormat {
    /// The name the configuration and the status use.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamFormat::Rtp => "rtp",
            StreamFormat::UdpTs => "udp-ts",
        }
    }
}

/// Default of `pid_timeout_ms`.
pub const DEFAULT_PID_TIMEOUT_MS: u32 = 5_000;

/// Where a stream's packets are handled (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPath {
    /// rtpmgrd's receiver and transmitter threads move every packet
    /// between their sockets and the rings.
    #[default]
    User,
    /// The module's own `udp` port receives (and, for a relay, sends)
    /// without a syscall per packet; rtpmgrd only sets it up and reads the
    /// counters. An ingress stream is forwarded into its media port, a
    /// relay straight to its destination. Where the device cannot (no
    /// in-kernel network streams, an option the module lacks) rtpmgrd
    /// falls back to `User` and logs why.
    Kernel,
}

/// What the receiver does with a stream's datagrams while the to-device
/// ring has no free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingFullPolicy {
    /// Leave them in the socket buffer until the device frees slots: a
    /// burst is absorbed up to `socket_buffer_bytes`, latency grows with
    /// it, and what overflows the buffer is dropped by the socket (the
    /// stream's `socket_drops`).
    #[default]
    Wait,
    /// Read and discard them at once (the stream's `ring_full_drops`):
    /// latency stays bounded by the ring, as live video wants.
    Drop,
}

/// The video clock MPEG-TS over RTP uses, the default when neither a
/// payload type nor a clock rate is configured.
pub const DEFAULT_CLOCK_RATE: u32 = 90_000;

impl StreamConfig {
    /// The stream's configuration as its second leg would receive it:
    /// the same, but bind, group, source and interface of `leg2`.
    pub fn leg2_view(&self) -> Option<StreamConfig> {
        let leg = self.leg2.as_ref()?;
        Some(StreamConfig {
            bind: leg.bind,
            group: leg.group,
            source: leg.source,
            interface: leg.interface.clone(),
            rtcp: RtcpMode::Off,
            fec: false,
            leg2: None,
            ..self.clone()
        })
    }

    /// The local ports of the column and row FEC sockets (`fec = true`).
    pub fn fec_ports(&self) -> Option<[u16; 2]> {
        self.fec.then(|| [self.bind.port().wrapping_add(2), self.bind.port().wrapping_add(4)])
    }

    /// The local port of the stream's separate RTCP socket, if it has one.
    pub fn rtcp_port(&self) -> Option<u16> {
        (self.rtcp == RtcpMode::PortPlus1).then(|| self.bind.port().wrapping_add(1))
    }

    /// The configured clock rate, else the static payload type's (RFC 3551),
    /// else 90 kHz. Validation guarantees dynamic types have one configured.
    pub fn effective_clock_rate(&self) -> u32 {
        self.clock_rate
            .or_else(|| self.payload_type.and_then(rtp::payload::static_clock_rate))
            .unwrap_or(DEFAULT_CLOCK_RATE)
    }
}

impl Config {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, None, None, format!("cannot read the configuration: {e}")))?;
        Config::parse(&text, path)
    }

    /// Validate configuration text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::from_toml(&e, text, origin))?;
        validate::validate(raw, text, origin)
    }

    pub fn stream(&self, name: &str) -> Option<&StreamConfig> {
        self.streams.iter().find(|s| s.name == name)
    }
}

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    path: PathBuf,
    line: Option<usize>,
    column: Option<usize>,
    key: Option<String>,
    message: String,
}

impl ConfigError {
    fn new(path: &Path, at: Option<(usize, usize)>, key: Option<String>, message: String) -> Self {
        ConfigError { path: path.to_owned(), line: at.map(|a| a.0), column: at.map(|a| a.1), key, message }
    }

    fn from_toml(e: &toml::de::Error, text: &str, path: &Path) -> Self {
        let mut message = e.message().trim().to_string();
        let at = e.span().map(|s| line_col(text, s.start));
        // serde names the offending field in backticks; toml's span points at
        // it. Name the table too, which serde does not.
        let key = message.split('`').nth(1).map(str::to_owned);
        if let Some(section) = e.span().and_then(|s| section_at(text, s.start)) {
            if message.starts_with("unknown field") || message.starts_with("missing field") {
                if let Some(comma) = message.find(", expected") {
                    message.insert_str(comma, &format!(" in {section}"));
                } else {
                    message.push_str(&format!(" in {section}"));
                }
            }
        }
        ConfigError::new(path, at, key, message)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// 1-based line, when the error has a place in the file.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
    /// 1-based column (in characters).
    pub fn column(&self) -> Option<usize> {
        self.column
    }
    /// The key the error is about, e.g. `slot_size` or `group`.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The table header (`[buffer]`, `[[stream]]`) that `offset` falls under.
pub(crate) fn section_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset.min(text.len()))?;
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.split('#').next().unwrap_or(l).trim().to_string())
}

#[cfg(test)]
mod tests;
