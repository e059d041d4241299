// SPDX-License-Identifier: MIT
//! The load generator (one or many RTP streams, paced or flat out) and the
//! receiver that counts what a relay delivered and how late.

use crate::mmsg::Mmsg;
use crate::packet::{self, Head, Shape, HEAD, IPTV, PACKET, TAG_DATA, TAG_PROBE};
use nix::sys::socket::{setsockopt, sockopt};
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// SSRC of stream `i` is `SSRC_BASE + i`.
pub const SSRC_BASE: u32 = 0x5242_0000;
/// Datagrams per `sendmmsg`/`recvmmsg` of generator and receiver.
pub const BATCH: usize = 64;
/// Datagrams per UDP GSO buffer of [`Generator::blast`] (at most 64 KiB).
pub const GSO_SEGMENTS: usize = 32;
/// GSO buffers per `sendmmsg` of [`Generator::blast`].
pub const BLAST_MSGS: usize = 2;
/// Socket buffers of generator and receiver.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Open a UDP socket on 127.0.0.1 (`port` 0: any) with big buffers
/// (SO_RCVBUFFORCE/SO_SNDBUFFORCE where permitted, else capped by the
/// sysctls).
pub fn bind_loopback(port: u16, buffer: usize) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(("127.0.0.1", port))?;
    if setsockopt(&s, sockopt::RcvBufForce, &buffer).is_err() {
        let _ = setsockopt(&s, sockopt::RcvBuf, &buffer);
    }
    if setsockopt(&s, sockopt::SndBufForce, &buffer).is_err() {
        let _ = setsockopt(&s, sockopt::SndBuf, &buffer);
    }
    Ok(s)
}

pub fn local_v4(s: &UdpSocket) -> io::Result<SocketAddrV4> {
    match s.local_addr()? {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(io::Error::other(format!("{a} is not IPv4"))),
    }
}

/// `n` consecutive free UDP ports on 127.0.0.1 (bound together, so free
/// at that moment, then released for a relay to bind): a block, because
/// `bare-relay --ports N` listens on consecutive ports.
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let n16 = u16::try_from(n).map_err(|_| io::Error::other("too many ports"))?;
    // Below the kernel's ephemeral range (32768..), which the generator's
    // and receiver's own sockets take from; a few tries from a varying base.
    let seed = std::process::id() as usize + packet::now_ns() as usize;
    for attempt in 0..64usize {
        let span = 30_000 - usize::from(n16);
        let first = 2_000 + ((seed.wrapping_mul(2_654_435_761).wrapping_add(attempt * 7_919)) % span) as u16;
        let socks: Vec<UdpSocket> = (0..n16).map_while(|i| UdpSocket::bind(("127.0.0.1", first + i)).ok()).collect();
        if socks.len() == n {
            return Ok((first..first + n16).collect());
        }
    }
    Err(io::Error::other(format!("no block of {n} free UDP ports below 32000")))
}

/// What the receiver thread and the rest share while it runs.
pub struct RxShared {
    pub stop: AtomicBool,
    probed: Vec<AtomicBool>,
    probed_count: AtomicUsize,
    /// Data packets arriving in [window_start, window_end) (receive time,
    /// [`packet::now_ns`]) are counted in `RxReport::in_window`.
    pub window_start: AtomicU64,
    pub window_end: AtomicU64,
    /// Data packets sent in [latency_from, latency_to) (send time) give a
    /// latency sample.
    pub latency_from: AtomicU64,
    pub latency_to: AtomicU64,
}

impl RxShared {
    pub fn new(streams: usize) -> Arc<RxShared> {
        Arc::new(RxShared {
            stop: AtomicBool::new(false),
            probed: (0..streams).map(|_| AtomicBool::new(false)).collect(),
            probed_count: AtomicUsize::new(0),
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            latency_from: AtomicU64::new(u64::MAX),
            latency_to: AtomicU64::new(u64::MAX),
        })
    }

    pub fn streams(&self) -> usize {
        self.probed.len()
    }

    pub fn is_probed(&self, i: usize) -> bool {
        self.probed[i].load(Relaxed)
    }

    pub fn all_probed(&self) -> bool {
        self.probed_count.load(Relaxed) == self.probed.len()
    }
}

/// What the receiver saw of data packets (probes excluded).
#[derive(Debug, Default)]
pub struct RxReport {
    /// Per stream, all data packets received.
    pub per_stream: Vec<u64>,
    pub data: u64,
    pub in_window: u64,
    /// Receive time minus send time, ns, of the packets in the latency
    /// window (unsorted).
    pub latencies_ns: Vec<u64>,
    /// Datagrams that were not ours or named an unknown stream.
    pub foreign: u64,
}

/// The receiving end: one socket on 127.0.0.1, every stream's destination.
pub struct Receiver {
    sock: UdpSocket,
    shape: Shape,
}

impl Receiver {
    pub fn bind() -> io::Result<Receiver> {
        Receiver::bind_shape(IPTV)
    }

    /// A receiver of datagrams of `shape` (others count as foreign).
    pub fn bind_shape(shape: Shape) -> io::Result<Receiver> {
        let sock = bind_loopback(0, SOCKET_BUFFER)?;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        Ok(Receiver { sock, shape })
    }

    pub fn addr(&self) -> io::Result<SocketAddrV4> {
        local_v4(&self.sock)
    }

    /// Run on a thread until `shared.stop`.
    pub fn spawn(self, shared: Arc<RxShared>, latency: bool) -> JoinHandle<RxReport> {
        std::thread::Builder::new()
            .name("bench-rx".into())
            .spawn(move || self.run(&shared, latency))
            .expect("spawn receiver thread")
    }

    fn run(self, sh: &RxShared, latency: bool) -> RxReport {
        let streams = sh.streams();
        let mut r = RxReport { per_stream: vec![0; streams], ..Default::default() };
        // Only the head of each datagram is copied out; MSG_TRUNC makes the
        // kernel report the full length all the same.
        let mut mm = Mmsg::new(BATCH, HEAD);
        while !sh.stop.load(Relaxed) {
            let n = match mm.recv(self.sock.as_fd(), libc::MSG_WAITFORONE | libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
                Err(e) => panic!("receiver: recvmmsg: {e}"),
            };
            let now = packet::now_ns();
            let in_window = now >= sh.window_start.load(Relaxed) && now < sh.window_end.load(Relaxed);
            let (lat_from, lat_to) = (sh.latency_from.load(Relaxed), sh.latency_to.load(Relaxed));
            for i in 0..n {
                let head = if mm.received_len(i) == self.shape.len { packet::parse(mm.received(i)) } else { None };
                let Some(Head { ssrc, send_ns, probe, .. }) = head else {
                    r.foreign += 1;
                    continue;
                };
                let idx = ssrc.wrapping_sub(SSRC_BASE) as usize;
                if idx >= streams {
                    r.foreign += 1;
                    continue;
                }
                if probe {
                    if !sh.probed[idx].swap(true, Relaxed) {
                        sh.probed_count.fetch_add(1, Relaxed);
                    }
                    continue;
                }
                r.per_stream[idx] += 1;
                r.data += 1;
                r.in_window += u64::from(in_window);
                if latency && send_ns >= lat_from && send_ns < lat_to {
                    r.latencies_ns.push(now.saturating_sub(send_ns));
                }
            }
        }
        r
    }
}

/// Ask the kernel to wake sleeping threads of this thread on time (the
/// default timer slack is 50 µs).
fn tight_timers() {
    let _ = nix::sys::prctl::set_timerslack(1_000);
}

/// Sends RTP streams, one per target, from one unconnected socket.
pub struct Generator {
    sock: UdpSocket,
    targets: Vec<SocketAddrV4>,
    seq: Vec<u16>,
    /// Data packets sent per stream.
    pub sent: Vec<u64>,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    mm: Mmsg,
    /// Which stream the packet in each slot belongs to (slots are
    /// initialised per stream lazily).
    slot_stream: Vec<usize>,
    start_ns: u64,
    shape: Shape,
}

impl Generator {
    pub fn new(targets: Vec<SocketAddrV4>) -> io::Result<Generator> {
        Generator::with_shape(targets, IPTV)
    }

    /// A generator of datagrams of `shape`.
    pub fn with_shape(targets: Vec<SocketAddrV4>, shape: Shape) -> io::Result<Generator> {
        let sock = bind_loopback(0, SOCKET_BUFFER)?;
        let n = targets.len();
        Ok(Generator {
            sock,
            targets,
            seq: vec![0; n],
            sent: vec![0; n],
            send_errors: 0,
            mm: Mmsg::new(BATCH, shape.len),
            slot_stream: vec![usize::MAX; BATCH],
            start_ns: packet::now_ns(),
            shape,
        })
    }

    /// Put the next packet of stream `s` in slot `k`.
    fn fill(&mut self, k: usize, s: usize, tag: [u8; 4], now: u64) {
        if self.slot_stream[k] != s {
            packet::init_shape(self.mm.slot_mut(k), SSRC_BASE + s as u32, self.shape);
            self.slot_stream[k] = s;
        }
        let seq = self.seq[s];
        self.seq[s] = seq.wrapping_add(1);
        packet::stamp(self.mm.slot_mut(k), seq, packet::rtp_ts(now - self.start_ns), now, tag);
        self.mm.prepare_send(k, self.shape.len, Some(self.targets[s]));
    }

    /// Send a probe on every stream that has not come through yet, every
    /// 10 ms, until all have or `timeout` passes.
    pub fn probe(
        &mut self,
        rx: &RxShared,
        timeout: Duration,
        alive: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<(), String> {
        let deadline = packet::now_ns() + timeout.as_nanos() as u64;
        loop {
            if rx.all_probed() {
                // Let probes still in flight arrive before data is counted.
                std::thread::sleep(Duration::from_millis(20));
                return Ok(());
            }
            alive()?;
            if packet::now_ns() > deadline {
                let missing = (0..self.targets.len()).filter(|&i| !rx.is_probed(i)).count();
                return Err(format!(
                    "{missing} of {} streams did not come through within {timeout:?}",
                    self.targets.len()
                ));
            }
            let pending: Vec<usize> = (0..self.targets.len()).filter(|&i| !rx.is_probed(i)).collect();
            for chunk in pending.chunks(BATCH) {
                let now = packet::now_ns();
                for (k, &s) in chunk.iter().enumerate() {
                    self.fill(k, s, TAG_PROBE, now);
                }
                self.mm.send_all(self.sock.as_fd(), chunk.len());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stream 0 as fast as the socket takes it, until `stop`; `sent`
    /// counts as it goes.
    ///
    /// `gso` false (the default of the benchmarks): plain `sendmmsg`
    /// batches of [`BATCH`] single datagrams, so the relay's socket gets
    /// single skbs, as from a network.
    ///
    /// `gso` true: UDP GSO (UDP_SEGMENT, Linux 4.18+); each `sendmmsg`
    /// carries [`BLAST_MSGS`] buffers of [`GSO_SEGMENTS`] datagrams that
    /// the kernel splits: one pass down the stack per buffer instead of per
    /// datagram. On loopback the 32-segment skb reaches the relay's socket
    /// whole, where a socket without UDP_GRO has it segmented but one with
    /// UDP_GRO would take it in one read: a relay with GRO would win for
    /// free, so this is only for reference runs.
    pub fn blast(&mut self, stop: &AtomicBool, sent: &AtomicU64, gso: bool) {
        if !gso || setsockopt(&self.sock, sockopt::UdpGsoSegment, &(PACKET as i32)).is_err() {
            return self.blast_plain(stop, sent);
        }
        let dest = self.targets[0];
        let mut mm = Mmsg::new(BLAST_MSGS, GSO_SEGMENTS * PACKET);
        for m in 0..BLAST_MSGS {
            for seg in mm.slot_mut(m).chunks_mut(PACKET) {
                packet::init(seg, SSRC_BASE);
            }
            mm.prepare_send(m, GSO_SEGMENTS * PACKET, Some(dest));
        }
        while !stop.load(Relaxed) {
            let now = packet::now_ns();
            let ts = packet::rtp_ts(now - self.start_ns);
            for m in 0..BLAST_MSGS {
                for seg in mm.slot_mut(m).chunks_mut(PACKET) {
                    packet::stamp(seg, self.seq[0], ts, now, TAG_DATA);
                    self.seq[0] = self.seq[0].wrapping_add(1);
                }
            }
            let (ok, failed) = mm.send_all(self.sock.as_fd(), BLAST_MSGS);
            let n = (ok * GSO_SEGMENTS) as u64;
            self.sent[0] += n;
            self.send_errors += (failed * GSO_SEGMENTS) as u64;
            sent.fetch_add(n, Relaxed);
            if failed > 0 && ok == 0 {
                // ENOBUFS and the like: let the stack breathe.
                std::thread::yield_now();
            }
        }
    }

    fn blast_plain(&mut self, stop: &AtomicBool, sent: &AtomicU64) {
        while !stop.load(Relaxed) {
            let now = packet::now_ns();
            for k in 0..BATCH {
                self.fill(k, 0, TAG_DATA, now);
            }
            let (ok, failed) = self.mm.send_all(self.sock.as_fd(), BATCH);
            self.sent[0] += ok as u64;
            self.send_errors += failed as u64;
            sent.fetch_add(ok as u64, Relaxed);
        }
    }

    /// All streams round robin at `total_pps` packets per second together
    /// (each stream `total_pps / streams`, the streams evenly staggered)
    /// for `duration`. Packet j is due `j / total_pps` after the start;
    /// whatever is due goes out in one `sendmmsg`, then the thread sleeps
    /// until the next is due. Returns the worst lateness against that
    /// schedule, ns.
    pub fn paced(&mut self, total_pps: f64, duration: Duration) -> u64 {
        self.paced_counting(total_pps, duration, &AtomicU64::new(0))
    }

    /// [`Generator::paced`], adding every packet sent to `sent` as it goes.
    pub fn paced_counting(&mut self, total_pps: f64, duration: Duration, sent: &AtomicU64) -> u64 {
        tight_timers();
        let n = self.targets.len();
        let start = packet::now_ns();
        let end = start + duration.as_nanos() as u64;
        let due = |j: u64| start + (j as f64 * 1e9 / total_pps) as u64;
        let mut j = 0u64;
        let mut worst = 0u64;
        loop {
            let now = packet::now_ns();
            let next = due(j);
            if next >= end {
                return worst;
            }
            if next > now {
                std::thread::sleep(Duration::from_nanos(next - now));
                continue;
            }
            worst = worst.max(now - next);
            let mut k = 0;
            while k < BATCH && due(j) <= now && due(j) < end {
                let s = (j % n as u64) as usize;
                self.fill(k, s, TAG_DATA, now);
                k += 1;
                j += 1;
            }
            let (_, failed) = self.mm.send_all(self.sock.as_fd(), k);
            self.send_errors += failed as u64;
            // Count per stream (a refused datagram is rare; it counts as
            // sent and then shows up as lost, which fails the run as it
            // should).
            for slot in &self.slot_stream[..k] {
                self.sent[*slot] += 1;
            }
            sent.fetch_add(k as u64, Relaxed);
        }
    }
}
