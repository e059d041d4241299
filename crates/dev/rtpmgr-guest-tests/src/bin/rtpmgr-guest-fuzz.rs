// SPDX-License-Identifier: MIT
//! `rtpmgr-guest-fuzz [--seed N] [--ops N] [--procs N]`: a seeded,
//! reproducible fuzzer of `/dev/rtpmgr`, run in the booted guest by
//! `ci/fuzz-kernel`. Each of `--procs` processes (default 2) performs
//! `--ops` random operations (default 10,000) drawn from its own seed
//! (`seed + process number`):
//!
//! random and boundary ioctl arguments, unknown commands and bad pointers;
//! mmap and munmap at odd sizes, offsets and protections; hostile writes to
//! the ring indices, flags and slot headers while the kernel worker runs,
//! mixed with valid traffic; START/STOP/RESET/KICK/WAIT at random, also
//! while streaming; write()/read() with random buffers; close while another
//! thread waits in WAIT; fork with the mapping held; rmmod while the device
//! is open (must be refused); the `udp` port: START_NET_STREAM with valid
//! and hostile specs (addresses, families, flags, `forward_to` to any id,
//! the tap, multicast groups and sources, interfaces, reserved fields),
//! GET_NET_STATUS, and datagrams of random size and content (some RTP) sent
//! from the fuzzing process to the ports its streams bind, unicast and to
//! an IPv4 group, so the worker's receive, forwarding and tap paths run;
//! relays that take the softirq fast path, with bursts through them while
//! their target is disconnected or connected elsewhere, left running for
//! the other operations (STOP_STREAM, RESET, close) to meet.
//!
//! The kernel must answer every call with a result or an errno: a splat,
//! a hang (the host's timeout) or a refused-but-succeeded rmmod fails the
//! run. The seed is printed first so a failure can be replayed.

use rtpmgr_abi::{self as abi, IoctlArg, SlotHeader};
use rtpmgr_device::{net_stream_spec, udp_socket, Device};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rtpmgr_test_kit::Rng;

/// The fuzzer's draws on top of the shared generator.
trait Draw {
    fn pick<T: Copy>(&mut self, from: &[T]) -> T;
    fn u32_edgy(&mut self, edges: &[u32]) -> u32;
}

impl Draw for Rng {
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
    /// A boundary value half of the time, any u32 otherwise.
    fn u32_edgy(&mut self, edges: &[u32]) -> u32 {
        if self.below(2) == 0 {
            self.pick(edges)
        } else {
            self.next() as u32
        }
    }
}

const COUNTS: &[u32] = &[0, 1, 7, 8, 9, 64, 1000, 1024, 4096, 32_768, 32_769, u32::MAX];
const SIZES: &[u32] = &[0, 100, 255, 256, 512, 2048, 4096, 65_536, 65_537, u32::MAX];
const IDS: &[u32] = &[0, 1, 5, 63, 64, 65, u32::MAX - 1, u32::MAX];
/// `udp` streams bind (and datagrams go to) these few ports, so streams of
/// both processes collide (EADDRINUSE) and sent datagrams find them.
const NET_PORT: u16 = 20_000;
const NET_PORTS: u64 = 6;
/// Groups joined and sent to (fuzz-init gives `lo` multicast and routes).
const GROUPS: &[&str] = &["239.1.1.1", "239.1.1.2", "ff0e::1", "10.0.0.1", "224.0.0.1"];

/// The mapping of the current session, while it is mapped whole.
struct Mapping {
    base: *mut u8,
    len: usize,
    cfg: abi::BufferConfig,
}

struct Fuzzer {
    rng: Rng,
    dev: Option<Device>,
    map: Option<Mapping>,
    /// The geometry of the last CONFIGURE_BUFFER that succeeded.
    cfg: Option<abi::BufferConfig>,
    /// errno (0 = success) per operation name.
    results: BTreeMap<(&'static str, i32), u64>,
    buf: Vec<u8>,
    /// Sender sockets for `net_send` (IPv4, IPv6), made on first use.
    udp: Option<(UdpSocket, UdpSocket)>,
    /// Sockets passed to START_NET_STREAM and kept, to be passed again.
    held: Vec<OwnedFd>,
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

impl Fuzzer {
    fn note<T>(&mut self, op: &'static str, r: std::io::Result<T>) -> Option<T> {
        let code = match &r {
            Ok(_) => 0,
            Err(e) => errno(e),
        };
        *self.results.entry((op, code)).or_insert(0) += 1;
        r.ok()
    }

    fn unmap(&mut self) {
        if let Some(m) = self.map.take() {
            // SAFETY: `base..base+len` is a mapping this process created and
            // still holds whole; nothing refers to it after this.
            unsafe { libc::munmap(m.base.cast(), m.len) };
        }
    }

    fn step(&mut self) -> Result<(), String> {
        if self.dev.is_none() {
            let d = Device::open(Path::new("/dev/rtpmgr"));
            self.dev = self.note("open", d);
            return Ok(());
        }
        // Weights out of 51: sessions mostly stay open, configured and
        // mapped, so the ring and streaming paths get most of the work.
        match self.rng.below(51) {
            // Sessions live for about 80 operations.
            0 | 1 if self.rng.below(4) != 0 => {
                let r = self.dev.as_ref().unwrap().info();
                self.note("info", r);
            }
            0 => {
                // close (sometimes with the mapping still held)
                if self.rng.below(2) == 0 {
                    self.unmap();
                }
                self.dev = None;
                self.cfg = None;
                self.note("close", Ok(()));
            }
            1 => self.close_during_wait(),
            2..=5 => {
                let (count, size) = if self.rng.below(4) != 0 {
                    (self.rng.pick(&[8, 64, 256, 1024]), self.rng.pick(&[256, 2048, 4096]))
                } else {
                    (self.rng.u32_edgy(COUNTS), self.rng.u32_edgy(SIZES))
                };
                let r = self.dev.as_ref().unwrap().configure(count, size);
                if let Ok(c) = &r {
                    self.unmap();
                    self.cfg = Some(*c);
                }
                self.note("configure", r);
            }
            6..=9 => self.mmap_odd(),
            10..=15 => self.hostile_ring_write(),
            16..=19 => self.traffic(),
            20..=22 => {
                let (id, port, dir) = if self.rng.below(3) != 0 {
                    (self.rng.below(4) as u32, self.rng.pick(&[0, 0, 1, 2]), self.rng.below(3) as u32 + 1)
                } else {
                    (self.rng.u32_edgy(IDS), self.rng.pick(&[0, 1, 2, 3, 99]), self.rng.below(5) as u32)
                };
                let r = self.dev.as_ref().unwrap().start_stream(id, port, dir);
                self.note("start", r);
            }
            23 | 24 => {
                let id = if self.rng.below(2) == 0 { self.rng.below(4) as u32 } else { self.rng.u32_edgy(IDS) };
                let r = self.dev.as_ref().unwrap().stop_stream(id);
                self.note("stop", r);
            }
            25 => {
                let r = self.dev.as_ref().unwrap().reset();
                self.note("reset", r);
            }
            26 | 27 => {
                let r = self.dev.as_ref().unwrap().kick();
                self.note("kick", r);
            }
            28 | 29 => {
                let (flags, ms) = (self.rng.below(5) as u32, self.rng.pick(&[0, 1, 5, 60_001]));
                let r = self.dev.as_ref().unwrap().wait(flags, ms);
                self.note("wait", r);
            }
            30 | 31 => {
                let id = if self.rng.below(2) == 0 { self.rng.below(4) as u32 } else { self.rng.u32_edgy(IDS) };
                let r = self.dev.as_ref().unwrap().status(id);
                self.note("status", r);
            }
            32 | 33 => self.raw_ioctl(),
            34 | 35 => self.read_write(),
            36 => self.fork_with_mapping()?,
            37 => self.rmmod_refused()?,
            38 | 39 => {
                let r = self.dev.as_ref().unwrap().port(self.rng.u32_edgy(IDS));
                self.note("port", r);
            }
            40..=42 => self.net_start(),
            43 => {
                let id = if self.rng.below(2) == 0 { self.rng.below(4) as u32 } else { self.rng.u32_edgy(IDS) };
                let r = self.dev.as_ref().unwrap().net_status(id);
                // Shows in the summary that datagrams reached the streams.
                if let Ok(c) = &r {
                    if c.rx_packets + c.fwd_packets + c.malformed + c.oversize > 0 {
                        self.note("net-status-traffic", Ok(()));
                    }
                    // And that some took the softirq fast path.
                    if c.fwd_fast_packets > 0 {
                        self.note("net-status-fast", Ok(()));
                    }
                }
                self.note("net-status", r);
            }
            46 | 47 => self.poll_dev(),
            48 => self.close_during_poll(),
            49 | 50 => self.fast_relay(),
            _ => self.net_send(),
        }
        Ok(())
    }

    /// One of the fuzzing ports on the loopback address of either family.
    fn net_endpoint(&mut self, v6: bool) -> SocketAddr {
        let ip = if v6 { "::1" } else { "127.0.0.1" };
        let port = NET_PORT + self.rng.below(NET_PORTS) as u16;
        SocketAddr::new(ip.parse().expect("literal address"), port)
    }

    /// A socket for START_NET_STREAM (ABI version 2), made as rtpmgrd makes
    /// its own or as nobody should: UDP bound to a pool port (some joined
    /// to a group, any-source or SSM), UDP connected to one, UDP bound and
    /// connected, unbound UDP, TCP, a Unix socket, the device itself, a
    /// plain file, a socket a stream holds already.
    fn net_socket(&mut self, v6: bool, dir: u32) -> Option<OwnedFd> {
        let receives = dir & abi::DIR_FROM_DEVICE != 0;
        let sends = dir & abi::DIR_TO_DEVICE != 0;
        let kind = if self.rng.below(3) != 0 { 0 } else { self.rng.below(8) };
        let fd: std::io::Result<OwnedFd> = match kind {
            // The plausible one for the direction.
            0 => {
                let local = receives.then(|| self.net_endpoint(v6));
                let remote = (sends || self.rng.below(6) == 0).then(|| self.net_endpoint(v6));
                let r = udp_socket(local, remote);
                if let (Ok(sock), true, true) = (&r, receives, self.rng.below(5) == 0) {
                    // A group of the stream's family on lo (fuzz-init
                    // routes the groups there), any-source or SSM.
                    let (g, src) = if v6 { ("ff0e::1", "::1") } else { (self.rng.pick(&GROUPS[..2]), "127.0.0.1") };
                    let g: std::net::IpAddr = g.parse().expect("literal address");
                    let joined = match (g, self.rng.below(2) == 0) {
                        (std::net::IpAddr::V4(g4), false) => {
                            sock.join_multicast_v4(&g4, &std::net::Ipv4Addr::UNSPECIFIED)
                        }
                        (std::net::IpAddr::V6(g6), false) => sock.join_multicast_v6(&g6, 0),
                        (_, true) => {
                            rtpmgr_test_kit::mcast::join(sock, g, Some(src.parse().expect("literal address")), 0)
                        }
                    };
                    self.note("net-join", joined);
                }
                r.map(OwnedFd::from)
            }
            1 => udp_socket(None, None).map(OwnedFd::from),
            2 => std::net::TcpListener::bind("127.0.0.1:0").map(OwnedFd::from),
            3 => std::os::unix::net::UnixDatagram::unbound().map(OwnedFd::from),
            4 => self.dev.as_ref().unwrap().file().try_clone().map(OwnedFd::from),
            5 => std::fs::File::open("/proc/self/status").map(OwnedFd::from),
            6 => match self.held.pop() {
                Some(fd) => Ok(fd),
                None => return None,
            },
            _ => {
                let other = self.net_endpoint(!v6);
                udp_socket(Some(self.net_endpoint(v6)), Some(other)).map(OwnedFd::from)
            }
        };
        // EADDRINUSE between the two processes' pools is expected.
        self.note("net-socket", fd).map(Some).unwrap_or(None)
    }

    /// START_NET_STREAM, mostly plausible, often hostile in one or more
    /// fields; low ids so it meets the registry-port streams of `start`.
    /// The socket is closed right after, or kept (a few), so streams run
    /// on sockets user space closed and the same socket is passed twice.
    fn net_start(&mut self) {
        // Two thirds plausible, so streams run and datagrams reach them;
        // one third with one or more hostile fields.
        let hostile = self.rng.below(3) == 0;
        let v6 = self.rng.below(3) == 0;
        let id = if !hostile || self.rng.below(2) == 0 { self.rng.below(4) as u32 } else { self.rng.u32_edgy(IDS) };
        let dir = match (hostile, self.rng.below(4)) {
            (false, 0) => abi::DIR_TO_DEVICE,
            (false, _) => abi::DIR_FROM_DEVICE,
            (true, d) if d < 2 => self.rng.below(8) as u32,
            (true, _) => self.rng.pick(&[1, 2, 3]),
        };
        let sock = self.net_socket(v6, dir);
        let mut s = match &sock {
            Some(fd) => net_stream_spec(id, dir, fd.as_fd()),
            None => abi::NetStreamSpec {
                size: abi::NetStreamSpec::SIZE,
                stream_id: id,
                direction: dir,
                forward_to: abi::NET_NO_FORWARD,
                fd: -1,
                ..Default::default()
            },
        };
        s.flags = self.rng.pick(&[0, abi::NET_F_RTP, abi::NET_F_RTP, abi::NET_F_TS]);
        let receives = dir & abi::DIR_FROM_DEVICE != 0;
        let sends = dir & abi::DIR_TO_DEVICE != 0;
        if receives && !sends && self.rng.below(2) == 0 {
            // Forwarding to one of the low ids: a udp stream or a
            // registry-port stream (loopback, media0) if one runs there.
            s.forward_to = self.rng.below(4) as u32;
            if self.rng.below(2) == 0 {
                s.flags |= abi::NET_F_TAP;
            }
        }
        s.clock_rate = self.rng.pick(&[0, 1, 8000, 90_000, u32::MAX]);
        if hostile {
            self.net_spec_hostile(&mut s);
        }
        let r = self.dev.as_ref().unwrap().start_net_stream(&s);
        self.note(if hostile { "net-start-hostile" } else { "net-start" }, r);
        if let Some(fd) = sock {
            if self.rng.below(4) == 0 && self.held.len() < 8 {
                self.held.push(fd);
            }
        }
    }

    /// One to three hostile changes to a spec.
    fn net_spec_hostile(&mut self, s: &mut abi::NetStreamSpec) {
        for _ in 0..self.rng.below(3) + 1 {
            match self.rng.below(6) {
                0 => s.flags = self.rng.u32_edgy(&[abi::NET_F_TAP, abi::NET_F_RTP | abi::NET_F_TS, 8, 0x80, u32::MAX]),
                1 => s.forward_to = self.rng.u32_edgy(IDS),
                2 => s.fd = self.rng.pick(&[-1, 0, 1, 2, 1023, 999_999, i32::MIN, i32::MAX]),
                3 => s.reserved = self.rng.next() as u32,
                4 => s.size = self.rng.u32_edgy(&[0, abi::NetStreamSpec::SIZE - 4, abi::NetStreamSpec::SIZE + 4, 136]),
                _ => s.stream_id = self.rng.u32_edgy(IDS),
            }
        }
    }

    /// poll() on the device with random events and short timeouts, or
    /// while another thread closes it.
    fn poll_dev(&mut self) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let events = PollFlags::from_bits_truncate(self.rng.next() as i16) | PollFlags::POLLIN;
        let ms: u8 = self.rng.pick(&[0, 0, 1, 5]);
        let d = self.dev.as_ref().unwrap();
        let mut fds = [PollFd::new(d.file().as_fd(), events)];
        let r = poll(&mut fds, PollTimeout::from(ms)).map_err(|e| std::io::Error::from_raw_os_error(e as i32));
        self.note("poll", r);
    }

    /// A thread polls the descriptor while this one closes it.
    fn close_during_poll(&mut self) {
        self.unmap();
        self.cfg = None;
        let Some(dev) = self.dev.take() else { return };
        let fd = dev.file().as_raw_fd();
        let poller = std::thread::spawn(move || {
            let mut p = libc::pollfd { fd, events: libc::POLLIN | libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd; the descriptor may be closed
            // meanwhile, which poll reports (POLLNVAL) or ignores.
            unsafe { libc::poll(&mut p, 1, 20) }
        });
        std::thread::sleep(Duration::from_millis(self.rng.below(10)));
        drop(dev);
        let _ = poller.join();
        self.note("close-during-poll", Ok(()));
    }

    /// A few datagrams to the fuzzing ports (or an IPv4 group): random
    /// sizes up to beyond a slot, random bytes, half with an RTP header.
    /// The sender sockets, made on first use.
    fn senders(&mut self) -> bool {
        if self.udp.is_none() {
            let pair = UdpSocket::bind("127.0.0.1:0").and_then(|a| Ok((a, UdpSocket::bind("[::1]:0")?)));
            let Some((v4, v6)) = self.note("net-socket", pair) else { return false };
            // Group datagrams stay on this host: TTL 0, looped back.
            let _ = v4.set_multicast_ttl_v4(0);
            let _ = v4.set_nonblocking(true);
            let _ = v6.set_nonblocking(true);
            self.udp = Some((v4, v6));
        }
        true
    }

    /// A udp -> udp relay on two of the low ids that takes the softirq
    /// fast path (no tap, not NET_F_TS; either may be refused, an id
    /// running already), its target sending to a pool port; a burst of RTP
    /// datagrams through it, and sometimes the target disconnected
    /// (`connect(AF_UNSPEC)`) or connected elsewhere with another burst
    /// behind. The relay stays for the other operations to meet.
    fn fast_relay(&mut self) {
        if !self.senders() {
            return;
        }
        let v6 = self.rng.below(3) == 0;
        let any = SocketAddr::new(if v6 { "::1" } else { "127.0.0.1" }.parse().expect("literal address"), 0);
        let a = self.rng.below(4) as u32;
        let b = (a + 1 + self.rng.below(3) as u32) % 4;
        let sink = self.net_endpoint(v6);
        let made = udp_socket(None, Some(sink)).and_then(|out| Ok((out, udp_socket(Some(any), None)?)));
        let Some((out, inp)) = self.note("fast-relay-sockets", made) else { return };
        let Some(to) = self.note("fast-relay-addr", inp.local_addr()) else { return };
        let mut spec = net_stream_spec(a, abi::DIR_FROM_DEVICE, inp.as_fd());
        spec.flags = self.rng.pick(&[0, abi::NET_F_RTP]);
        spec.clock_rate = 90_000;
        spec.forward_to = b;
        let dev = self.dev.as_ref().unwrap();
        let (rb, ra) =
            (dev.start_net_stream(&net_stream_spec(b, abi::DIR_TO_DEVICE, out.as_fd())), dev.start_net_stream(&spec));
        self.note("fast-relay-start-target", rb);
        self.note("fast-relay-start", ra);
        self.rtp_burst(v6, to);
        match self.rng.below(4) {
            0 => {
                let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
                // SAFETY: a valid sockaddr of the size given, read during the call.
                let rc = unsafe {
                    libc::connect(out.as_raw_fd(), &unspec, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t)
                };
                self.note("fast-relay-disconnect", if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
                self.rtp_burst(v6, to);
            }
            1 => {
                let elsewhere = self.net_endpoint(v6);
                self.note("fast-relay-reconnect", out.connect(elsewhere));
                self.rtp_burst(v6, to);
            }
            _ => {}
        }
        if let Ok(c) = self.dev.as_ref().unwrap().net_status(a) {
            if c.fwd_fast_packets > 0 {
                self.note("fast-relay-fast", Ok(()));
            }
        }
    }

    /// 1 to 64 RTP datagrams of random sizes to `to`.
    fn rtp_burst(&mut self, v6: bool, to: SocketAddr) {
        for _ in 0..self.rng.below(64) + 1 {
            let len = 12 + self.rng.below(1400) as usize;
            let r = self.rng.next();
            rtp::RtpBuilder::new(33, (r >> 8) as u16, (r >> 24) as u32, 0x5eed)
                .write(&[], &mut self.buf[..12])
                .expect("a 12-byte header");
            let Some((s4, s6)) = &self.udp else { return };
            let _ = if v6 { s6 } else { s4 }.send_to(&self.buf[..len], to);
        }
    }

    fn net_send(&mut self) {
        if !self.senders() {
            return;
        }
        for _ in 0..self.rng.below(8) + 1 {
            let v6 = self.rng.below(3) == 0;
            let mut to = self.net_endpoint(v6);
            if !v6 && self.rng.below(5) == 0 {
                to.set_ip(self.rng.pick(&GROUPS[..2]).parse().expect("literal address"));
            }
            let len = self.rng.pick(&[0usize, 1, 11, 12, 13, 100, 188, 1316, 1400, 2016, 2017, 4000, 8836, 9000]);
            for b in self.buf.iter_mut().take(len) {
                *b = self.rng.next() as u8;
            }
            if len >= 12 && self.rng.below(2) == 0 {
                // Version 2, no padding, extension or CSRCs, the other
                // fields random: passes the header check, so it reaches
                // the ring or the forwarding.
                let r = self.rng.next();
                rtp::RtpBuilder::new((r & 0x7f) as u8, (r >> 8) as u16, (r >> 24) as u32, self.rng.next() as u32)
                    .marker(r & 0x80 != 0)
                    .write(&[], &mut self.buf[..12])
                    .expect("a 12-byte header");
            } else if len % 188 == 0 && self.rng.below(4) != 0 {
                // Sync bytes (mostly): raw MPEG-TS with random PIDs,
                // counters and adaptation fields for NET_F_TS streams.
                for p in self.buf[..len].chunks_exact_mut(188) {
                    p[0] = if self.rng.below(50) == 0 { 0x48 } else { 0x47 };
                }
            }
            let Some((s4, s6)) = &self.udp else { return };
            let sock = if v6 { s6 } else { s4 };
            // Errors (ECONNREFUSED from an earlier ICMP, a full buffer) are
            // the network's business, not the module's.
            let _ = sock.send_to(&self.buf[..len], to);
            self.note("net-send", Ok(()));
        }
    }

    fn mmap_odd(&mut self) {
        let valid = self.cfg;
        let size = valid.map(|c| c.mmap_size as usize).filter(|&s| s > 0).unwrap_or(1 << 20);
        // Half of the time the one mapping the kernel accepts (it maps a
        // session's region once at a time, so drop ours first).
        let exact = self.rng.below(2) == 0;
        if exact {
            self.unmap();
        }
        let len = match self.rng.below(6) {
            _ if exact => size,
            0 => 1,
            1 => 4095,
            2 => size.saturating_sub(4096).max(4096),
            3 => size + 4096,
            4 => (self.rng.below(64) as usize + 1) * 4096,
            _ => size,
        };
        let offset = if !exact && self.rng.below(4) == 0 { (self.rng.below(8) * 4096) as libc::off_t } else { 0 };
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let prot = if exact { rw } else { self.rng.pick(&[libc::PROT_READ, rw, libc::PROT_WRITE | libc::PROT_EXEC]) };
        let flags = if exact { libc::MAP_SHARED } else { self.rng.pick(&[libc::MAP_SHARED, libc::MAP_PRIVATE]) };
        let fd = self.dev.as_ref().unwrap().file().as_raw_fd();
        // SAFETY: a new mapping at an address the kernel picks; it replaces
        // nothing of ours.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, offset) };
        if p == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            self.note("mmap", Err::<(), _>(e));
            return;
        }
        self.note("mmap", Ok(()));
        let whole_rw = prot == libc::PROT_READ | libc::PROT_WRITE && flags == libc::MAP_SHARED && offset == 0;
        match (whole_rw, valid) {
            (true, Some(cfg)) if cfg.mmap_size as usize == len && self.rng.below(4) != 0 => {
                self.unmap();
                self.map = Some(Mapping { base: p.cast(), len, cfg });
            }
            _ => {
                // Odd munmap: a page from the middle first, then the rest.
                let pages = len.div_ceil(4096);
                if pages > 2 {
                    // SAFETY: unmapping part of the mapping just made, which
                    // nothing else refers to.
                    unsafe { libc::munmap(p.cast::<u8>().add(4096).cast(), 4096) };
                }
                // SAFETY: as above; unmapping a hole again is harmless.
                unsafe { libc::munmap(p, len) };
            }
        }
    }

    /// A random value into a ring index, flag word or slot header field.
    fn hostile_ring_write(&mut self) {
        let Some(m) = &self.map else { return };
        let geom_slots = m.cfg.slot_count.max(1);
        let word = match self.rng.below(3) {
            0 => {
                let ring = self.rng.pick(&[abi::TO_DEV_CTRL_OFFSET, abi::FROM_DEV_CTRL_OFFSET]);
                let field =
                    self.rng.pick(&[abi::RING_PRODUCER_OFFSET, abi::RING_CONSUMER_OFFSET, abi::RING_FLAGS_OFFSET]);
                (ring + field) as usize
            }
            _ => {
                let slot = self.rng.below(u64::from(geom_slots)) as usize;
                let ring_base =
                    if self.rng.below(2) == 0 { m.cfg.to_dev_slots_offset } else { m.cfg.from_dev_slots_offset };
                let ring_base = if ring_base == 0 { abi::HEADER_REGION_SIZE as u64 } else { ring_base };
                ring_base as usize + slot * m.cfg.slot_size as usize + self.rng.pick(&[0usize, 4, 8, 12, 16])
            }
        };
        if word + 4 > m.len {
            return;
        }
        let value = self.rng.u32_edgy(&[0, 1, 31, 32, 2016, 2017, 65_535, 0x8000_0000, u32::MAX]);
        // SAFETY: `word` is a 4-byte aligned offset inside the mapping we
        // hold whole (checked against its length); the kernel reads it as
        // hostile data, which is the point.
        unsafe { std::ptr::write_volatile(m.base.add(word).cast::<u32>(), value) };
        self.note("ring-write", Ok(()));
        if self.rng.below(2) == 0 {
            let r = self.dev.as_ref().unwrap().kick();
            self.note("kick", r);
        }
    }

    /// A few well-formed packets at whatever the producer index says.
    fn traffic(&mut self) {
        let Some(m) = &self.map else { return };
        if m.cfg.slot_count == 0 || m.cfg.slot_size < abi::MIN_SLOT_SIZE {
            return;
        }
        let off = m.cfg.to_dev_slots_offset.max(u64::from(abi::HEADER_REGION_SIZE)) as usize;
        let id = self.rng.below(3) as u32;
        for _ in 0..self.rng.below(8) + 1 {
            // SAFETY: the producer word lies in the header page of the
            // mapping we hold whole.
            let prod_ptr = unsafe { m.base.add((abi::TO_DEV_CTRL_OFFSET + abi::RING_PRODUCER_OFFSET) as usize) };
            // SAFETY: as above; aligned u32.
            let prod = unsafe { std::ptr::read_volatile(prod_ptr.cast::<u32>()) };
            let slot = (prod & (m.cfg.slot_count - 1)) as usize;
            let at = off + slot * m.cfg.slot_size as usize;
            if at + m.cfg.slot_size as usize > m.len {
                return;
            }
            let len = self.rng.below(u64::from(m.cfg.slot_size - abi::SLOT_HEADER_SIZE) + 1) as u32;
            let h = SlotHeader { len, stream_id: id, ..Default::default() };
            // SAFETY: the slot lies inside the mapping (checked above); the
            // header is plain old data written as the ABI lays it out.
            unsafe {
                std::ptr::write_volatile(m.base.add(at).cast::<SlotHeader>(), h);
                std::ptr::write_volatile(prod_ptr.cast::<u32>(), prod.wrapping_add(1));
            }
        }
        let r = self.dev.as_ref().unwrap().kick();
        self.note("traffic", r);
    }

    fn raw_ioctl(&mut self) {
        let known = [
            abi::RTPMGR_IOC_GET_INFO,
            abi::RTPMGR_IOC_CONFIGURE_BUFFER,
            abi::RTPMGR_IOC_START_STREAM,
            abi::RTPMGR_IOC_STOP_STREAM,
            abi::RTPMGR_IOC_GET_STATUS,
            abi::RTPMGR_IOC_RESET,
            abi::RTPMGR_IOC_KICK,
            abi::RTPMGR_IOC_WAIT,
            abi::RTPMGR_IOC_GET_PORT,
            abi::RTPMGR_IOC_START_NET_STREAM,
            abi::RTPMGR_IOC_GET_NET_STATUS,
        ];
        let cmd = match self.rng.below(3) {
            0 => self.rng.pick(&known),
            // Our type and a random nr, direction and size.
            1 => abi::ioc(
                self.rng.below(4) as u32,
                abi::RTPMGR_IOC_MAGIC,
                self.rng.below(16) as u32,
                self.rng.below(512) as usize,
            ),
            _ => self.rng.next() as u32 & 0x3fff_ffff,
        };
        // Only our own magic or never-used types: generic VFS ioctls could
        // change the descriptor in ways the rest of the run does not expect.
        if abi::ioc_type(cmd) != abi::RTPMGR_IOC_MAGIC && abi::ioc_type(cmd) < 0xB0 {
            return;
        }
        for b in self.buf.iter_mut().take(512) {
            *b = self.rng.next() as u8;
        }
        // A plausible size field for the structs that start with one.
        if self.rng.below(2) == 0 {
            self.buf[..4].copy_from_slice(&abi::ioc_size(cmd).to_ne_bytes());
        }
        let arg = match self.rng.below(4) {
            0 => self.rng.below(4096) as usize,
            _ => self.buf.as_mut_ptr() as usize,
        };
        // SAFETY: the argument is our 16 KiB buffer, larger than any size an
        // ioctl command can encode (14 bits), or an address in the never
        // mapped first page; either way the kernel cannot write outside it.
        let r = unsafe { self.dev.as_ref().unwrap().raw_ioctl(cmd, arg) };
        self.note("ioctl", r.map_err(|e| std::io::Error::from_raw_os_error(e as i32)));
    }

    fn read_write(&mut self) {
        let len = self.rng.pick(&[0usize, 1, 31, 32, 33, 100, 2048, 2049, 8192]);
        let mut f = self.dev.as_ref().unwrap().file();
        if self.rng.below(2) == 0 {
            for b in self.buf.iter_mut().take(len) {
                *b = self.rng.next() as u8;
            }
            if len >= 12 && self.rng.below(2) == 0 {
                // A header whose length matches, on a low stream id.
                let plen = (len as u32).saturating_sub(abi::SLOT_HEADER_SIZE);
                self.buf[..4].copy_from_slice(&plen.to_ne_bytes());
                self.buf[8..12].copy_from_slice(&(self.rng.below(3) as u32).to_ne_bytes());
            }
            let r = f.write(&self.buf[..len]);
            self.note("write", r);
        } else {
            let r = f.read(&mut self.buf[..len]);
            self.note("read", r);
        }
    }

    /// A thread waits in WAIT on the descriptor while this one closes it.
    fn close_during_wait(&mut self) {
        self.unmap();
        self.cfg = None;
        let Some(dev) = self.dev.take() else { return };
        let fd = dev.file().as_raw_fd();
        let waiter = std::thread::spawn(move || {
            let mut args = abi::WaitArgs {
                size: abi::WaitArgs::SIZE,
                flags: abi::WAIT_FROM_DEV_READY,
                timeout_ms: 50,
                ..Default::default()
            };
            // SAFETY: WAIT reads and writes a WaitArgs, which `args` is; the
            // descriptor may be closed meanwhile, then the call fails EBADF
            // or finishes on the file it started with.
            unsafe { libc::ioctl(fd, abi::RTPMGR_IOC_WAIT as _, &mut args as *mut abi::WaitArgs) }
        });
        std::thread::sleep(Duration::from_millis(self.rng.below(10)));
        drop(dev);
        let _ = waiter.join();
        self.note("close-during-wait", Ok(()));
    }

    /// fork with the mapping held: the child uses the inherited descriptor
    /// (its copy of the address space has no mapping: VM_DONTCOPY) and exits.
    fn fork_with_mapping(&mut self) -> Result<(), String> {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        let d = self.dev.as_ref().unwrap();
        // SAFETY: the child makes a few ioctls on an inherited descriptor and
        // leaves with _exit; the parent's other threads are all joined.
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                let _ = d.kick();
                let _ = d.status(abi::STATUS_SESSION_ONLY);
                let _ = d.wait(abi::WAIT_ALL, 1);
                // SAFETY: leaves the child at once, running nothing of the
                // parent's.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, 0)) => {
                    self.note("fork", Ok(()));
                    Ok(())
                }
                other => Err(format!("forked child: {other:?}")),
            },
        }
    }

    /// The module is in use (this process holds it open): rmmod must fail.
    fn rmmod_refused(&mut self) -> Result<(), String> {
        let out = std::process::Command::new("rmmod").arg("rtpmgr").output().map_err(|e| format!("rmmod: {e}"))?;
        if out.status.success() {
            return Err("rmmod succeeded while /dev/rtpmgr was open".into());
        }
        self.note("rmmod-refused", Ok(()));
        Ok(())
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn fuzz_process(seed: u64, ops: u64) -> Result<Fuzzer, String> {
    let mut f = Fuzzer {
        rng: Rng::new(seed),
        dev: None,
        map: None,
        cfg: None,
        results: BTreeMap::new(),
        buf: vec![0u8; 16384],
        udp: None,
        held: Vec::new(),
    };
    for i in 0..ops {
        f.step().map_err(|e| format!("seed {seed}, operation {i}: {e}"))?;
    }
    f.unmap();
    f.dev = None;
    Ok(f)
}

fn main() {
    let seed = arg("--seed", 1);
    let ops = arg("--ops", 10_000);
    let procs = arg("--procs", 2);
    println!("fuzz: seed {seed}, {ops} operations in each of {procs} processes");
    let mut children = Vec::new();
    for p in 0..procs {
        // SAFETY: single-threaded at this point; each child runs its own
        // fuzz loop and leaves with exit.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                let code = match fuzz_process(seed + p, ops) {
                    Ok(f) => {
                        let summary: Vec<String> =
                            f.results.iter().map(|((op, e), n)| format!("{op}:{e}={n}")).collect();
                        println!("fuzz: process {p} done: {}", summary.join(" "));
                        0
                    }
                    Err(e) => {
                        println!("fuzz: process {p} FAILED: {e}");
                        1
                    }
                };
                std::process::exit(code);
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => children.push(child),
            Err(e) => {
                println!("fuzz: fork: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut ok = true;
    for c in children {
        ok &= matches!(nix::sys::wait::waitpid(c, None), Ok(nix::sys::wait::WaitStatus::Exited(_, 0)));
    }
    println!("fuzz: {} (seed {seed}, {} operations)", if ok { "PASS" } else { "FAIL" }, ops * procs);
    std::process::exit(if ok { 0 } else { 1 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let (mut a, mut b, mut c) = (Rng::new(7), Rng::new(7), Rng::new(8));
        let va: Vec<u64> = (0..100).map(|_| a.next()).collect();
        let vb: Vec<u64> = (0..100).map(|_| b.next()).collect();
        let vc: Vec<u64> = (0..100).map(|_| c.next()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn below_stays_below_and_covers_the_range() {
        let mut r = Rng::new(1);
        let mut seen = [false; 20];
        for _ in 0..10_000 {
            let v = r.below(20);
            assert!(v < 20);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "every value gets drawn");
    }
}
