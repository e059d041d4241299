// SPDX-License-Identifier: MIT
//! The kernel data plane: the same RTP traffic relayed three ways inside
//! the guest, on `lo`.
//!
//! * `kernel`: the in-kernel relay, a pair of `udp` streams per relayed
//!   stream (A receives at the stream's port with `NET_F_RTP` and
//!   `forward_to` B; B sends to the sink), no tap. A session has
//!   `MAX_STREAMS` ids, so 32 relayed streams per `/dev/rtpmgr` session and
//!   as many sessions as needed.
//! * `rtpmgrd`: the real daemon on the kernel backend, one `relay` stream
//!   per relayed stream through the module's `loopback` port (socket →
//!   to-device ring → port → from-device ring → socket). One daemon has one
//!   session, so at most 64 streams: more streams run more daemons.
//! * `bare`: `bare-relay` from rtpmgr-bench, one socket per stream under
//!   one epoll, `recvmmsg` → `sendmmsg` of the same buffers.
//!
//! The generator (a thread of this process) sends every stream's packets
//! to its port at a fixed, paced total rate; the sink (another thread)
//! receives every relayed packet on one socket and checks each: length,
//! RTP version and payload type, SSRC → stream, the 64-bit packet index in
//! the payload against the stream and its RTP sequence number, a check
//! byte; a bitmap of indices counts duplicates, and per-stream order counts
//! reordering. Loss is what was sent and never arrived.
//!
//! CPU per relayed packet: the run time of every task in the guest except
//! this process (so the relay's process(es), or the module's kworkers, and
//! ksoftirqd), over the measured window, divided by the packets that
//! reached the sink in it; see [`others_cpu_ticks`] for why not /proc/stat.
//! This process's own time (generator and sink) is left out, and with it
//! the loopback delivery into the relay's sockets that the generator's
//! `sendmmsg` performs (the same for all three relays); the relay's own
//! sends deliver into the sink's socket in the relay's context, so that
//! part counts. The relay's CPU with no traffic is measured first and
//! reported; "marginal" per-packet figures subtract it.
//!
//! That figure cannot see the in-kernel relay's fast path, which runs in
//! the softirq of the generator's own `sendmmsg`. So each repetition also
//! runs `direct`: no relay, the generator sending straight to the sink.
//! The whole guest's CPU per delivered packet (every task, this process
//! included) of a relay minus that of `direct` in the same repetition is
//! what the relay adds, wherever it runs: the figure the relays are
//! compared by (`relay_<profile>_added_cpu_kernel_vs_bare`).

use rtpmgr_abi as abi;
use rtpmgr_bench::mmsg::Mmsg;
use rtpmgr_bench::relay::{rtpmgrd_relay_config, Relay, RelayKind, RtpmgrdBackend};
use rtpmgr_device::{net_stream_spec, udp_socket, Device};
use rtpmgr_test_kit::packet::write_header;
use rtpmgr_test_kit::procfs;
use serde_json::{json, Map, Value};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, String>;

/// First input port: stream `i` is relayed from `IN_BASE + i`.
const IN_BASE: u16 = 20_000;
/// Where every relay delivers.
const SINK_PORT: u16 = 6_500;
/// SSRC of stream `i`: `SSRC_BASE + i`.
const SSRC_BASE: u32 = 0x5EED_0000;
const RTP_HEADER: usize = 12;
/// Packets per `sendmmsg` of the generator and per `recvmmsg` of the sink.
const BATCH: usize = 64;
/// The generator's pacing step: every wake-up costs the TCG guest about as
/// much as a datagram, so it wakes 100 times a second, not 1000 (a VoIP
/// stream's packets are 20 ms apart anyway).
const PACE: Duration = Duration::from_millis(10);
/// Socket buffers of the generator and the sink: neither must be where a
/// burst is lost.
const BENCH_SOCKET_BUFFER: usize = 8 << 20;
/// Relayed streams per `/dev/rtpmgr` session: two stream ids each.
const KERNEL_STREAMS_PER_SESSION: usize = (abi::MAX_STREAMS / 2) as usize;
/// Relay streams one rtpmgrd carries: its session's ids.
const RTPMGRD_STREAMS: usize = abi::MAX_STREAMS as usize;

/// One traffic profile.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub name: &'static str,
    pub streams: usize,
    /// Packets per second per stream.
    pub stream_pps: f64,
    /// RTP payload bytes (the datagram is 12 more).
    pub payload: usize,
    pub payload_type: u8,
    /// RTP timestamp step per packet.
    pub ts_step: u32,
}

impl Profile {
    pub fn datagram(&self) -> usize {
        RTP_HEADER + self.payload
    }
    pub fn offered_pps(&self) -> f64 {
        self.stream_pps * self.streams as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Kernel,
    Rtpmgrd,
    Bare,
    /// No relay: the generator sends to the sink (the baseline).
    Direct,
}

impl Kind {
    /// The relays, then the baseline (the in-kernel relay first: the
    /// comparisons below pair the others with it).
    pub const ALL: [Kind; 4] = [Kind::Kernel, Kind::Rtpmgrd, Kind::Bare, Kind::Direct];
    pub fn key(self) -> &'static str {
        match self {
            Kind::Kernel => "kernel",
            Kind::Rtpmgrd => "rtpmgrd",
            Kind::Bare => "bare",
            Kind::Direct => "direct",
        }
    }
}

/// Idle window, warm-up and measured window of one run.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// After the relay is set up, before anything is measured.
    pub settle: Duration,
    /// The relay set up, no traffic yet: its fixed CPU cost.
    pub idle: Duration,
    pub warmup: Duration,
    pub window: Duration,
}

/// Fill datagram `g` (global index) of `p` into `buf` (exactly
/// `p.datagram()` bytes): packet `g` belongs to stream `g % streams` and
/// is that stream's packet number `g / streams`.
pub fn make_packet(p: &Profile, g: u64, buf: &mut [u8]) {
    let streams = p.streams as u64;
    let (k, n) = (g % streams, g / streams);
    write_header(buf, p.payload_type, n as u16, (n as u32).wrapping_mul(p.ts_step), SSRC_BASE + k as u32);
    buf[12..20].copy_from_slice(&g.to_le_bytes());
    let last = buf.len() - 1;
    buf[last] = check_byte(g);
}

fn check_byte(g: u64) -> u8 {
    (g as u8) ^ ((g >> 8) as u8) ^ 0x5a
}

/// Why a datagram at the sink is not one the generator sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad {
    Length,
    Header,
    Ssrc,
    Index,
}

/// Check a datagram at the sink; `Ok((stream, index))`.
pub fn check_packet(p: &Profile, d: &[u8]) -> std::result::Result<(usize, u64), Bad> {
    if d.len() != p.datagram() {
        return Err(Bad::Length);
    }
    // Only the fixed header: version 2, no padding, extension or CSRC.
    let r = match rtp::RtpPacket::parse(d) {
        Ok(r) if !r.padding() && !r.extension() && r.csrc_count() == 0 && r.payload_type() == p.payload_type => r,
        _ => return Err(Bad::Header),
    };
    let k = r.ssrc().wrapping_sub(SSRC_BASE) as usize;
    if k >= p.streams {
        return Err(Bad::Ssrc);
    }
    let g = u64::from_le_bytes(d[12..20].try_into().expect("8 bytes"));
    let seq = r.sequence_number();
    if g % p.streams as u64 != k as u64 || (g / p.streams as u64) as u16 != seq || d[d.len() - 1] != check_byte(g) {
        return Err(Bad::Index);
    }
    Ok((k, g))
}

/// What the sink saw.
#[derive(Debug, Default)]
struct SinkCounts {
    unique: u64,
    duplicates: u64,
    reordered: u64,
    malformed: u64,
    /// Valid-looking indices the generator never sent (beyond its count).
    unknown: u64,
    /// The sink socket's own drops (read before it closes).
    socket_drops: u64,
}

/// Receives on `sock` until `stop`, checking every datagram; `unique`
/// counts distinct valid packets as they arrive (read by the main thread
/// for the window). `capacity`: the most packets the generator may send.
fn sink(p: Profile, sock: UdpSocket, capacity: u64, unique: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> SinkCounts {
    let mut seen = vec![0u64; capacity.div_ceil(64) as usize];
    let mut last = vec![None::<u64>; p.streams];
    let mut c = SinkCounts::default();
    let mut mm = Mmsg::new(BATCH, 2048);
    while !stop.load(Ordering::Relaxed) {
        // The socket has a read timeout, so the stop flag is seen.
        let Ok(n) = mm.recv(sock.as_fd(), libc::MSG_WAITFORONE) else { continue };
        for i in 0..n {
            match check_packet(&p, mm.received(i)) {
                Err(_) => c.malformed += 1,
                Ok((_, g)) if g >= capacity => c.unknown += 1,
                Ok((k, g)) => {
                    let (w, b) = ((g / 64) as usize, 1u64 << (g % 64));
                    if seen[w] & b != 0 {
                        c.duplicates += 1;
                        continue;
                    }
                    seen[w] |= b;
                    c.unique += 1;
                    if last[k].is_some_and(|l| g < l) {
                        c.reordered += 1;
                    } else {
                        last[k] = Some(g);
                    }
                }
            }
        }
        unique.store(c.unique, Ordering::Relaxed);
    }
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    c.socket_drops = procfs::parse_udp_drops_in(&table, SINK_PORT..=SINK_PORT).1;
    c
}

/// Datagrams waiting in the sockets bound to `ports` (the `rx_queue`
/// column of /proc/net/udp is bytes; this counts sockets with any).
fn sockets_with_backlog(table: &str, ports: std::ops::RangeInclusive<u16>) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 4
                && f[1]
                    .split_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    .is_some_and(|p| ports.contains(&p))
                && f[4].split_once(':').is_some_and(|(_, rx)| u64::from_str_radix(rx, 16).is_ok_and(|q| q > 0))
        })
        .count()
}

/// Sends `p`'s streams round robin (so each at `p.stream_pps`), paced to
/// the total rate in steps of [`PACE`], until `stop`; `sent`
/// counts as it goes. A generator that falls behind sends back to back to
/// catch up; the measured offered rate shows it.
/// `direct`: every stream to the sink instead of its relay port.
fn generator(p: Profile, sock: UdpSocket, direct: bool, sent: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> u64 {
    let len = p.datagram();
    let mut mm = Mmsg::new(BATCH, len);
    for i in 0..BATCH {
        // Filler once; make_packet sets header, index and check byte.
        mm.slot_mut(i).fill(0xa5);
    }
    let port = |k: usize| if direct { SINK_PORT } else { IN_BASE + k as u16 };
    let dests: Vec<SocketAddrV4> = (0..p.streams).map(|k| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port(k))).collect();
    let rate = p.offered_pps();
    let start = Instant::now();
    let mut g = 0u64;
    let mut failed = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (rate * start.elapsed().as_secs_f64()) as u64;
        if g >= due {
            std::thread::sleep(PACE);
            continue;
        }
        let n = ((due - g) as usize).min(BATCH);
        for i in 0..n {
            let gi = g + i as u64;
            make_packet(&p, gi, mm.slot_mut(i));
            mm.prepare_send(i, len, Some(dests[(gi % p.streams as u64) as usize]));
        }
        // A datagram the stack refuses still counts as sent: it is loss.
        failed += mm.send_all(sock.as_fd(), n).1 as u64;
        g += n as u64;
        sent.store(g, Ordering::Relaxed);
    }
    failed
}

/// CPU time (user + system, clock ticks) of every task in the guest but
/// `except` (this process), summed over /proc/<pid>/stat: the relay's
/// process(es), the module's kworkers, ksoftirqd. Each figure is the
/// task's exact run time (the kernel scales the tick-sampled utime/stime
/// to its `sum_exec_runtime`), so this is not fooled by the tick's
/// sampling, unlike /proc/stat's busy time: the generator's 10 ms pacing
/// runs in step with the 250 Hz tick, and /proc/stat showed 0 % for a
/// relay moving 300 pkt/s. Tasks that ended meanwhile are missed (none of
/// the relay's end during a window).
fn others_cpu_ticks(except: u32) -> Result<u64> {
    let mut sum = 0;
    for e in std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == except {
            continue;
        }
        // A task may end between read_dir and the read: skip it.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            sum += procfs::parse_stat_cpu_ticks(&stat).unwrap_or(0);
        }
    }
    Ok(sum)
}

/// A relay under test, stopped when dropped.
enum Running {
    /// The sessions; closing them stops the streams and their sockets.
    Kernel(Vec<(Device, usize)>),
    Daemons(Vec<Relay>),
    /// `direct`: nothing between generator and sink.
    Nothing,
}

fn kernel_relay(p: &Profile, sink: SocketAddr) -> Result<Running> {
    let mut sessions = Vec::new();
    for first in (0..p.streams).step_by(KERNEL_STREAMS_PER_SESSION) {
        let count = KERNEL_STREAMS_PER_SESSION.min(p.streams - first);
        let dev =
            Device::open(Path::new("/dev/rtpmgr")).map_err(|e| format!("open session {}: {e}", sessions.len()))?;
        // The smallest rings: without the tap nothing uses them.
        dev.configure(abi::MIN_SLOT_COUNT, 2048).map_err(|e| format!("CONFIGURE_BUFFER: {e}"))?;
        for j in 0..count {
            let (a, b) = (2 * j as u32, 2 * j as u32 + 1);
            let port = IN_BASE + (first + j) as u16;
            // The sockets are ours, as rtpmgrd's are, with the buffer
            // rtpmgrd and bare-relay are given too; the module keeps them.
            use nix::sys::socket::{setsockopt, sockopt};
            use std::os::fd::AsFd;
            let bytes = rtpmgr_bench::relay::RELAY_SOCKET_BUFFER;
            let txs = udp_socket(None, Some(sink)).map_err(|e| format!("socket to {sink}: {e}"))?;
            let _ = setsockopt(&txs.as_fd(), sockopt::SndBufForce, &bytes);
            let tx = net_stream_spec(b, abi::DIR_TO_DEVICE, txs.as_fd());
            dev.start_net_stream(&tx).map_err(|e| format!("START_NET_STREAM B {b} (stream {}): {e}", first + j))?;
            let local = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let rxs = udp_socket(Some(local), None).map_err(|e| format!("socket at {local}: {e}"))?;
            let _ = setsockopt(&rxs.as_fd(), sockopt::RcvBufForce, &bytes);
            let mut spec = net_stream_spec(a, abi::DIR_FROM_DEVICE, rxs.as_fd());
            spec.flags = abi::NET_F_RTP;
            spec.forward_to = b;
            dev.start_net_stream(&spec).map_err(|e| format!("START_NET_STREAM A {a} on port {port}: {e}"))?;
        }
        sessions.push((dev, count));
    }
    Ok(Running::Kernel(sessions))
}

/// Until every one of `ports` has a bound socket (/proc/net/udp), or fail.
fn wait_bound(ports: std::ops::RangeInclusive<u16>, relays: &mut [Relay]) -> Result<()> {
    let want = ports.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let table = std::fs::read_to_string("/proc/net/udp").map_err(|e| format!("/proc/net/udp: {e}"))?;
        if procfs::parse_udp_drops_in(&table, ports.clone()).0 >= want {
            return Ok(());
        }
        for r in relays.iter_mut() {
            r.check_alive()?;
        }
        if Instant::now() > deadline {
            return Err(format!("relay sockets on {ports:?} not all bound after 60 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rtpmgrd_relays(p: &Profile, sink: SocketAddrV4) -> Result<Running> {
    let mut relays = Vec::new();
    for first in (0..p.streams).step_by(RTPMGRD_STREAMS) {
        let ports: Vec<u16> = (first..p.streams.min(first + RTPMGRD_STREAMS)).map(|i| IN_BASE + i as u16).collect();
        let dir = Relay::new_dir().map_err(|e| format!("scratch dir: {e}"))?;
        let control = dir.join("control.sock");
        let conf = dir.join("rtpmgr.toml");
        let text = rtpmgrd_relay_config(RtpmgrdBackend::Kernel, &control, &ports, sink, p.payload_type);
        std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
        let mut cmd = Command::new("/bin/rtpmgrd");
        cmd.arg("--config").arg(&conf).env_remove("RUST_LOG");
        relays.push(Relay::spawn(RelayKind::Rtpmgrd, cmd, dir, control).map_err(|e| format!("rtpmgrd: {e}"))?);
    }
    // Ready when every daemon reports every stream running.
    let deadline = Instant::now() + Duration::from_secs(60);
    for r in relays.iter_mut() {
        loop {
            r.check_alive()?;
            if let Ok(st) = r.status() {
                if !st.streams.is_empty() && st.streams.iter().all(|s| s.state == "running") {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(format!("rtpmgrd not running all streams after 60 s: {}", r.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(Running::Daemons(relays))
}

fn bare_relay(p: &Profile, sink: SocketAddrV4) -> Result<Running> {
    let dir = Relay::new_dir().map_err(|e| format!("scratch dir: {e}"))?;
    let mut cmd = Command::new("/bin/bare-relay");
    cmd.args(["--listen", &format!("127.0.0.1:{IN_BASE}"), "--to", &sink.to_string()]);
    cmd.args(["--batch", "64", "--ports", &p.streams.to_string()]);
    cmd.args(["--buffer", &rtpmgr_bench::relay::RELAY_SOCKET_BUFFER.to_string()]);
    let control = dir.join("unused");
    let mut relays = vec![Relay::spawn(RelayKind::Bare, cmd, dir, control).map_err(|e| format!("bare-relay: {e}"))?];
    wait_bound(IN_BASE..=IN_BASE + p.streams as u16 - 1, &mut relays)?;
    Ok(Running::Daemons(relays))
}

/// One measured run of `kind` with `p`.
#[derive(Debug, Default)]
pub struct Run {
    pub offered_pps: f64,
    pub delivered_pps: f64,
    pub relay_cpu_us_per_pkt: f64,
    /// The relay's CPU as % of one CPU.
    pub relay_cpu_percent: f64,
    /// Generator and sink (this process), % of one CPU.
    pub bench_cpu_percent: f64,
    /// Every task's CPU (relay, generator and sink) per delivered packet.
    pub whole_us_per_pkt: f64,
    /// The relay's CPU with no traffic (before the generator starts).
    pub relay_idle_cpu_percent: f64,
    /// CPU per packet above the idle cost: (CPU - idle rate x window) /
    /// packets.
    pub relay_marginal_us_per_pkt: f64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub malformed: u64,
    pub send_failed: u64,
    /// Drops counted by the relay's input sockets (receive buffer full).
    pub input_socket_drops: u64,
    pub sink_socket_drops: u64,
    /// Input sockets still holding datagrams when the drain gave up.
    pub input_backlog: usize,
    /// The relay's own view: the kernel's `forward_drops`, rtpmgrd's
    /// ring-full and socket drops.
    pub relay_reported_drops: u64,
    /// The in-kernel relay's own counters over the whole run (ABI 4):
    /// datagrams forwarded, of them on the softirq fast path, of those
    /// with a header copy, and the worker wake-ups by arriving datagrams.
    pub kernel_fwd: [u64; 4],
    pub setup_s: f64,
}

impl Run {
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 * 100.0 / self.sent as f64
        }
    }
}

pub fn run_once(kind: Kind, p: &Profile, t: Timing) -> Result<Run> {
    let sink_addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, SINK_PORT);
    let sink_sock = UdpSocket::bind(sink_addr).map_err(|e| format!("bind sink {sink_addr}: {e}"))?;
    big_buffers(&sink_sock);
    sink_sock.set_read_timeout(Some(Duration::from_millis(50))).map_err(|e| format!("sink timeout: {e}"))?;
    let setup = Instant::now();
    let running = match kind {
        Kind::Kernel => kernel_relay(p, SocketAddr::V4(sink_addr))?,
        Kind::Rtpmgrd => rtpmgrd_relays(p, sink_addr)?,
        Kind::Bare => bare_relay(p, sink_addr)?,
        Kind::Direct => Running::Nothing,
    };
    let setup_s = setup.elapsed().as_secs_f64();

    // Enough bitmap for twice the planned packets plus slack: a generator
    // cannot send faster than it is paced.
    let total = t.warmup + t.window + Duration::from_secs(1);
    let capacity = (p.offered_pps() * total.as_secs_f64() * 2.0) as u64 + 10_000;
    let (unique, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (stop_gen, stop_sink) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let gen_sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind generator: {e}"))?;
    big_buffers(&gen_sock);
    let sink_thread = {
        let (p, u, s) = (*p, unique.clone(), stop_sink.clone());
        std::thread::spawn(move || sink(p, sink_sock, capacity, u, s))
    };
    let me = std::process::id();
    let ticks = procfs::clock_ticks_per_s() as f64;
    let own_cpu = || procfs::cpu_seconds(me).map_err(|e| e.to_string());
    // CPU of everything but this process (generator and sink) since mark.
    let relay_cpu = |mark: u64| -> Result<f64> { Ok((others_cpu_ticks(me)? - mark) as f64 / ticks) };
    // Let the relay finish starting (bare-relay's epoll registrations,
    // rtpmgrd's threads) so the idle window sees only its steady cost.
    std::thread::sleep(t.settle);
    // The relay's CPU with no traffic (timers, polling): its fixed cost,
    // subtracted for the marginal cost per packet.
    let (mark, i0) = (others_cpu_ticks(me)?, Instant::now());
    std::thread::sleep(t.idle);
    let idle_cpu_per_s = relay_cpu(mark)? / i0.elapsed().as_secs_f64();
    let gen_thread = {
        let (p, n, s) = (*p, sent.clone(), stop_gen.clone());
        let direct = kind == Kind::Direct;
        std::thread::spawn(move || generator(p, gen_sock, direct, n, s))
    };
    std::thread::sleep(t.warmup);
    let (mark, own0, sent0, got0, t0) = (
        others_cpu_ticks(me)?,
        own_cpu()?,
        sent.load(Ordering::Relaxed),
        unique.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(t.window);
    let relay_cpu_s = relay_cpu(mark)?;
    let bench_cpu_s = own_cpu()? - own0;
    let (sent1, got1, secs) =
        (sent.load(Ordering::Relaxed), unique.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    stop_gen.store(true, Ordering::Relaxed);
    let send_failed = gen_thread.join().map_err(|_| "generator panicked".to_string())?;
    let sent_total = sent.load(Ordering::Relaxed);
    // Drain: until everything arrived or nothing more for two seconds.
    let (mut last, mut since) = (unique.load(Ordering::Relaxed), Instant::now());
    while last < sent_total && since.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
        let now = unique.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let last_port = IN_BASE + p.streams as u16 - 1;
    let input_socket_drops = procfs::parse_udp_drops_in(&table, IN_BASE..=last_port).1;
    let input_backlog = sockets_with_backlog(&table, IN_BASE..=last_port);
    stop_sink.store(true, Ordering::Relaxed);
    let c = sink_thread.join().map_err(|_| "sink panicked".to_string())?;
    let sink_socket_drops = c.socket_drops;
    let mut kernel_fwd = [0u64; 4];
    let relay_reported_drops = match &running {
        Running::Kernel(sessions) => {
            let mut d = 0;
            for (dev, count) in sessions {
                for j in 0..*count {
                    let a = dev.net_status(2 * j as u32).map_err(|e| format!("GET_NET_STATUS: {e}"))?;
                    d += a.forward_drops + a.malformed + a.oversize;
                    for (k, v) in [a.fwd_packets, a.fwd_fast_packets, a.fwd_copies, a.worker_wakeups].iter().enumerate()
                    {
                        kernel_fwd[k] += v;
                    }
                }
            }
            d
        }
        Running::Daemons(relays) if kind == Kind::Rtpmgrd => {
            let mut d = 0;
            for r in relays {
                let st = r.status().map_err(|e| format!("rtpmgrd status: {e}"))?;
                d += st.streams.iter().map(|s| s.ring_full_drops + s.socket_drops + s.send_errors).sum::<u64>();
            }
            d
        }
        Running::Daemons(_) | Running::Nothing => 0,
    };
    if let Running::Daemons(mut relays) = running {
        for r in relays.iter_mut() {
            r.check_alive()?;
            r.stop();
        }
    }

    let relayed = got1 - got0;
    let per_pkt = |cpu_s: f64| if relayed > 0 { cpu_s * 1e6 / relayed as f64 } else { f64::NAN };
    Ok(Run {
        relay_idle_cpu_percent: idle_cpu_per_s * 100.0,
        relay_marginal_us_per_pkt: per_pkt((relay_cpu_s - idle_cpu_per_s * secs).max(0.0)),
        offered_pps: (sent1 - sent0) as f64 / secs,
        delivered_pps: relayed as f64 / secs,
        relay_cpu_us_per_pkt: per_pkt(relay_cpu_s),
        whole_us_per_pkt: per_pkt(relay_cpu_s + bench_cpu_s),
        relay_cpu_percent: relay_cpu_s * 100.0 / secs,
        bench_cpu_percent: bench_cpu_s * 100.0 / secs,
        sent: sent_total,
        received: c.unique,
        lost: sent_total.saturating_sub(c.unique),
        duplicates: c.duplicates,
        reordered: c.reordered,
        malformed: c.malformed + c.unknown,
        send_failed,
        input_socket_drops,
        sink_socket_drops,
        input_backlog,
        relay_reported_drops,
        kernel_fwd,
        setup_s,
    })
}

fn big_buffers(s: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    // Root in the guest: the forcing variants exceed rmem_max/wmem_max.
    let _ = setsockopt(s, sockopt::RcvBufForce, &BENCH_SOCKET_BUFFER);
    let _ = setsockopt(s, sockopt::SndBufForce, &BENCH_SOCKET_BUFFER);
}

/// median/min/max/samples of `samples` (NaN-free), as the guest figures are.
fn summary(unit: &str, samples: &[f64]) -> Value {
    match rtpmgr_bench::stats::Summary::of(samples) {
        Some(s) => json!({ "unit": unit, "median": s.median, "min": s.min, "max": s.max, "samples": s.samples }),
        None => json!({ "unit": unit, "error": "no valid sample", "samples": samples }),
    }
}

/// Runs every profile `reps` times, the three relays taking turns within a
/// repetition (so a disturbance of the shared host hits all three alike);
/// adds figures and ratios. Fails on a duplicate or a malformed packet at
/// the sink (a relay must never make one); loss is a figure, not a failure.
pub fn bench(
    profiles: &[Profile],
    reps: usize,
    t: Timing,
    figures: &mut Map<String, Value>,
    ratios: &mut Vec<Value>,
) -> Result<()> {
    for p in profiles {
        let mut runs: Vec<Vec<Run>> = Kind::ALL.iter().map(|_| Vec::new()).collect();
        for rep in 0..reps {
            for (ki, kind) in Kind::ALL.iter().enumerate() {
                let r = run_once(*kind, p, t).map_err(|e| format!("{} {} rep {rep}: {e}", p.name, kind.key()))?;
                eprintln!(
                    "relay {} {} rep {rep}: offered {:.0} delivered {:.0} pkt/s, lost {} of {} (backlog {}, \
                     drops in {} sink {} relay {}), generator+sink {:.0} %, relay cpu {:.1} us/pkt ({:.0} %, idle {:.0} %, marginal {:.1} us/pkt), \
                     kernel fwd/fast/copies/wakeups {:?}, setup {:.1} s",
                    p.name,
                    kind.key(),
                    r.offered_pps,
                    r.delivered_pps,
                    r.lost,
                    r.sent,
                    r.input_backlog,
                    r.input_socket_drops,
                    r.sink_socket_drops,
                    r.relay_reported_drops,
                    r.bench_cpu_percent,
                    r.relay_cpu_us_per_pkt,
                    r.relay_cpu_percent,
                    r.relay_idle_cpu_percent,
                    r.relay_marginal_us_per_pkt,
                    r.kernel_fwd,
                    r.setup_s
                );
                if r.duplicates > 0 || r.malformed > 0 {
                    return Err(format!("{} {} rep {rep}: the sink saw {r:?}", p.name, kind.key()));
                }
                runs[ki].push(r);
            }
        }
        let pre = format!("relay_{}", p.name);
        for (ki, kind) in Kind::ALL.iter().enumerate() {
            let rs = &runs[ki];
            let col = |f: fn(&Run) -> f64| rs.iter().map(f).collect::<Vec<_>>();
            let k = kind.key();
            figures.insert(format!("{pre}_{k}_pps"), summary("pkt/s delivered", &col(|r| r.delivered_pps)));
            figures.insert(format!("{pre}_{k}_loss_pct"), summary("% lost", &col(Run::loss_percent)));
            figures.insert(format!("{pre}_{k}_cpu_us_per_pkt"), summary("us/pkt", &col(|r| r.relay_cpu_us_per_pkt)));
            figures.insert(format!("{pre}_{k}_whole_us_per_pkt"), summary("us/pkt", &col(|r| r.whole_us_per_pkt)));
            figures.insert(format!("{pre}_{k}_cpu_pct"), summary("% of a CPU", &col(|r| r.relay_cpu_percent)));
            figures
                .insert(format!("{pre}_{k}_idle_cpu_pct"), summary("% of a CPU", &col(|r| r.relay_idle_cpu_percent)));
            figures.insert(
                format!("{pre}_{k}_marginal_us_per_pkt"),
                summary("us/pkt", &col(|r| r.relay_marginal_us_per_pkt)),
            );
            let sum = |f: fn(&Run) -> u64| rs.iter().map(f).sum::<u64>();
            figures.insert(
                format!("{pre}_{k}_check"),
                json!({
                    "unit": "packets, all repetitions",
                    "sent": sum(|r| r.sent), "received": sum(|r| r.received), "lost": sum(|r| r.lost),
                    "duplicates": sum(|r| r.duplicates), "reordered": sum(|r| r.reordered),
                    "malformed": sum(|r| r.malformed), "send_failed": sum(|r| r.send_failed),
                    "input_socket_drops": sum(|r| r.input_socket_drops),
                    "sink_socket_drops": sum(|r| r.sink_socket_drops),
                    "input_backlog_at_end": rs.iter().map(|r| r.input_backlog).sum::<usize>(),
                    "relay_reported_drops": sum(|r| r.relay_reported_drops),
                    "kernel_fwd_packets": sum(|r| r.kernel_fwd[0]),
                    "kernel_fwd_fast_packets": sum(|r| r.kernel_fwd[1]),
                    "kernel_fwd_copies": sum(|r| r.kernel_fwd[2]),
                    "kernel_worker_wakeups": sum(|r| r.kernel_fwd[3]),
                    "offered_pps_median": rtpmgr_bench::stats::Summary::of(&col(|r| r.offered_pps)).map(|s| s.median),
                }),
            );
        }
        figures.insert(
            pre.clone(),
            json!({
                "unit": "setup",
                "streams": p.streams, "stream_pps": p.stream_pps, "offered_pps": p.offered_pps(),
                "datagram_bytes": p.datagram(), "payload_type": p.payload_type,
                "kernel_sessions": p.streams.div_ceil(KERNEL_STREAMS_PER_SESSION),
                "rtpmgrd_instances": p.streams.div_ceil(RTPMGRD_STREAMS),
                "settle_s": t.settle.as_secs_f64(), "idle_s": t.idle.as_secs_f64(), "warmup_s": t.warmup.as_secs_f64(), "window_s": t.window.as_secs_f64(), "repetitions": reps,
            }),
        );
        // What each relay adds to the whole guest's CPU per packet over
        // `direct`, paired by repetition, and the in-kernel relay's share
        // of the bare loop's (the target: at most 0.35).
        let direct = &runs[Kind::ALL.len() - 1];
        let added: Vec<Vec<f64>> = runs
            .iter()
            .map(|rs| rs.iter().zip(direct).map(|(r, d)| r.whole_us_per_pkt - d.whole_us_per_pkt).collect())
            .collect();
        for (ki, kind) in Kind::ALL.iter().enumerate().take(3) {
            figures.insert(format!("{pre}_{}_added_us_per_pkt", kind.key()), summary("us/pkt", &added[ki]));
        }
        let share: Vec<f64> = added[0].iter().zip(&added[2]).map(|(k, b)| k / b).collect();
        let s = rtpmgr_bench::stats::Summary::of(&share);
        ratios.push(json!({
            "name": format!("{pre}_added_cpu_kernel_vs_bare"),
            "value": s.as_ref().map(|s| s.median), "min": s.as_ref().map(|s| s.min), "max": s.as_ref().map(|s| s.max),
            "target": "<= 0.35", "met": s.as_ref().map(|s| s.median <= 0.35),
        }));
        // What the in-kernel path saves per packet against each user-space
        // relay: paired by repetition (the same turn), median/min/max.
        let kernel = &runs[0];
        for (ki, kind) in Kind::ALL.iter().enumerate().take(3).skip(1) {
            let saved: Vec<f64> =
                runs[ki].iter().zip(kernel).map(|(u, k)| u.relay_cpu_us_per_pkt - k.relay_cpu_us_per_pkt).collect();
            figures.insert(format!("{pre}_kernel_saves_us_per_pkt_vs_{}", kind.key()), summary("us/pkt", &saved));
            let saved: Vec<f64> = runs[ki]
                .iter()
                .zip(kernel)
                .map(|(u, k)| u.relay_marginal_us_per_pkt - k.relay_marginal_us_per_pkt)
                .collect();
            figures
                .insert(format!("{pre}_kernel_saves_marginal_us_per_pkt_vs_{}", kind.key()), summary("us/pkt", &saved));
            let ratio: Vec<f64> =
                runs[ki].iter().zip(kernel).map(|(u, k)| u.relay_cpu_us_per_pkt / k.relay_cpu_us_per_pkt).collect();
            let s = rtpmgr_bench::stats::Summary::of(&ratio);
            ratios.push(json!({
                "name": format!("{pre}_cpu_per_pkt_{}_vs_kernel", kind.key()),
                "value": s.as_ref().map(|s| s.median), "min": s.as_ref().map(|s| s.min), "max": s.as_ref().map(|s| s.max),
                "target": Value::Null, "met": Value::Null,
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOIP: Profile =
        Profile { name: "voip", streams: 1000, stream_pps: 50.0, payload: 160, payload_type: 0, ts_step: 160 };

    #[test]
    fn packets_round_trip_through_the_check() {
        let mut buf = vec![0u8; VOIP.datagram()];
        for g in [0u64, 1, 999, 1000, 1001, 65_536_000 + 7, 123_456_789] {
            make_packet(&VOIP, g, &mut buf);
            assert_eq!(check_packet(&VOIP, &buf), Ok(((g % 1000) as usize, g)));
            // Valid RTP for rtpmgrd's parser and the module's header check.
            let r = rtp::RtpPacket::parse(&buf).unwrap();
            assert_eq!(r.payload_type(), 0);
            assert_eq!(r.sequence_number(), (g / 1000) as u16);
            assert_eq!(r.ssrc(), SSRC_BASE + (g % 1000) as u32);
        }
    }

    #[test]
    fn the_check_catches_damage() {
        let mut buf = vec![0u8; VOIP.datagram()];
        make_packet(&VOIP, 4242, &mut buf);
        assert_eq!(check_packet(&VOIP, &buf[..buf.len() - 1]), Err(Bad::Length));
        let mut b = buf.clone();
        b[1] = 8;
        assert_eq!(check_packet(&VOIP, &b), Err(Bad::Header));
        let mut b = buf.clone();
        b[11] = 0xff; // stream 255's SSRC on stream 242's packet
        assert_eq!(check_packet(&VOIP, &b), Err(Bad::Index));
        let mut b = buf.clone();
        b[8] = 0; // not our SSRC range
        assert_eq!(check_packet(&VOIP, &b), Err(Bad::Ssrc));
        let mut b = buf.clone();
        b[3] ^= 1; // sequence number does not match the index
        assert_eq!(check_packet(&VOIP, &b), Err(Bad::Index));
        let mut b = buf.clone();
        let last = b.len() - 1;
        b[last] ^= 0x10; // check byte
        assert_eq!(check_packet(&VOIP, &b), Err(Bad::Index));
    }

    #[test]
    fn profile_sizes() {
        assert_eq!(VOIP.datagram(), 172);
        assert_eq!(VOIP.offered_pps(), 50_000.0);
    }
}
