// SPDX-License-Identifier: MIT
//! Tests of the `udp` port (`START_NET_STREAM`): kernel UDP sockets that
//! feed the from-device ring and drain the to-device ring.

use super::{expect_errno, fail, open, TestResult};
use nix::errno::Errno;
use rtpmgr_abi::{self as abi, IoctlArg, SlotHeader};
use rtpmgr_device::{net_stream_spec, udp_socket, Device};
use rtpmgr_ring::{Consumer, Producer, RingId};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const V4: &str = "127.0.0.1";
const V6: &str = "::1";

/// A free UDP port on `ip` (bound and released; nothing else runs here).
pub(crate) fn free_port(ip: &str) -> Result<u16, String> {
    let s = UdpSocket::bind((ip, 0)).map_err(fail("bind"))?;
    Ok(s.local_addr().map_err(fail("local_addr"))?.port())
}

pub(crate) fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("literal address"), port)
}

/// A `udp` stream's socket, made in user space as rtpmgrd makes it (bound
/// to `local`, connected to `remote`), and its START_NET_STREAM argument.
/// Keep the socket until the stream started; the module holds it after.
pub(crate) fn net_spec(
    id: u32,
    direction: u32,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
) -> Result<(abi::NetStreamSpec, UdpSocket), String> {
    let s = udp_socket(local, remote).map_err(|e| format!("socket {local:?} -> {remote:?}: {e}"))?;
    Ok((net_stream_spec(id, direction, s.as_fd()), s))
}

/// Start a `udp` stream on a socket made as [`net_spec`] makes it.
pub(crate) fn start_net(
    dev: &Device,
    id: u32,
    direction: u32,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
) -> TestResult {
    let (spec, _sock) = net_spec(id, direction, local, remote)?;
    dev.start_net_stream(&spec).map_err(|e| format!("START_NET_STREAM {id}: {e}"))
}

/// Join `group` on interface `ifindex`, any-source or from `source` only
/// (SSM), as rtpmgrd's `net.rs` does (RFC 3678 options).
pub(crate) fn join(
    sock: &UdpSocket,
    group: std::net::IpAddr,
    source: Option<std::net::IpAddr>,
    ifindex: u32,
) -> TestResult {
    use std::os::fd::AsRawFd;
    fn storage(ip: std::net::IpAddr) -> libc::sockaddr_storage {
        // SAFETY: sockaddr_storage is plain old data; all zero is valid.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let sa = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(ip, 0));
        // SAFETY: `sa` holds a sockaddr of `len()` bytes, at most the size
        // of a sockaddr_storage.
        unsafe {
            std::ptr::copy_nonoverlapping(
                nix::sys::socket::SockaddrLike::as_ptr(&sa).cast::<u8>(),
                (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                nix::sys::socket::SockaddrLike::len(&sa) as usize,
            )
        };
        ss
    }
    let level = if group.is_ipv4() { libc::IPPROTO_IP } else { libc::IPPROTO_IPV6 };
    let rc = match source {
        None => {
            let req = libc::group_req { gr_interface: ifindex, gr_group: storage(group) };
            // SAFETY: a valid group_req and its size.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    level,
                    libc::MCAST_JOIN_GROUP,
                    (&req as *const libc::group_req).cast(),
                    std::mem::size_of::<libc::group_req>() as libc::socklen_t,
                )
            }
        }
        Some(src) => {
            let req =
                libc::group_source_req { gsr_interface: ifindex, gsr_group: storage(group), gsr_source: storage(src) };
            // SAFETY: a valid group_source_req and its size.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    level,
                    libc::MCAST_JOIN_SOURCE_GROUP,
                    (&req as *const libc::group_source_req).cast(),
                    std::mem::size_of::<libc::group_source_req>() as libc::socklen_t,
                )
            }
        }
    };
    ensure!(rc == 0, "join {group} (source {source:?}): {}", std::io::Error::last_os_error());
    Ok(())
}

/// RTP packet `seq`: version 2, sequence number, SSRC, and a payload of
/// 0..=400 bytes derived from `seq`.
pub(crate) fn rtp_packet(seq: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&(seq as u16).to_be_bytes());
    p.extend_from_slice(&seq.wrapping_mul(160).to_be_bytes());
    p.extend_from_slice(&0x5EED_0001u32.to_be_bytes());
    let len = (seq.wrapping_mul(2_654_435_761) % 401) as usize;
    p.extend((0..len).map(|j| (seq as u8).wrapping_mul(7).wrapping_add(j as u8)));
    p
}

/// Release `n` consumed from-device entries (kicking the worker when it
/// asks for it); when nothing was consumed, wait for more instead.
fn release_or_wait(dev: &Device, ring: &mut Consumer, n: u32) -> TestResult {
    if ring.release(n) {
        dev.kick().map_err(fail("KICK"))?;
    }
    if n == 0 {
        wait_from_device(dev)?;
    }
    Ok(())
}

/// `WAIT` up to a second for from-device entries; a timeout is no error.
fn wait_from_device(dev: &Device) -> TestResult {
    match dev.wait(abi::WAIT_FROM_DEV_READY, 1000) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Ok(()),
        Err(e) => Err(format!("WAIT: {e}")),
    }
}

/// Fill up to `want` free to-device slots with packets `first..` of
/// `stream` and publish them: how many, and whether the worker was kicked.
fn publish_packets(dev: &Device, tx: &mut Producer, first: u32, want: u32, stream: u32) -> Result<(u32, bool), String> {
    let free = tx.free(want).min(want);
    for i in 0..free {
        let p = rtp_packet(first + i);
        tx.payload_mut(i)[..p.len()].copy_from_slice(&p);
        tx.set_header(i, &SlotHeader { len: p.len() as u32, stream_id: stream, ..Default::default() });
    }
    let kicked = tx.publish(free);
    if kicked {
        dev.kick().map_err(fail("KICK"))?;
    }
    Ok((free, kicked))
}

/// A configured, mapped session.
pub(crate) fn session(slots: u32) -> Result<(Device, Arc<rtpmgr_ring::Region>), String> {
    let dev = open()?;
    let cfg = dev.configure(slots, 2048).map_err(fail("configure"))?;
    let region = dev.map(&cfg).map_err(fail("map"))?;
    Ok((dev, region))
}

/// N RTP packets (and some junk between them) sent from user space to the
/// bound port arrive in the from-device ring in order and intact, tagged
/// with the stream id; the junk is counted as malformed and dropped.
fn rx_intact(ip: &str) -> TestResult {
    const N: u32 = 3000;
    const STREAM: u32 = 9;
    let (dev, region) = session(256)?;
    let port = free_port(ip)?;
    let (mut spec, sock) = net_spec(STREAM, abi::DIR_FROM_DEVICE, Some(addr(ip, port)), None)?;
    spec.flags = abi::NET_F_RTP;
    dev.start_net_stream(&spec).map_err(fail("START_NET_STREAM"))?;
    // The module holds the socket now: ours may go.
    drop(sock);
    let tx = UdpSocket::bind((ip, 0)).map_err(fail("bind sender"))?;
    tx.connect(addr(ip, port)).map_err(fail("connect"))?;
    let mut rx = region.consumer(RingId::FromDevice);
    let (mut sent, mut got, mut junk) = (0u32, 0u32, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < N {
        ensure!(Instant::now() < deadline, "stalled: sent {sent}, received {got}");
        // Never more in flight than the ring holds: nothing may be dropped.
        while sent < N && sent - got < 64 {
            if sent % 97 == 50 {
                tx.send(b"not an RTP packet").map_err(fail("send junk"))?;
                junk += 1;
            }
            if sent == 1000 {
                // Larger than a slot's payload (2016 bytes): dropped, counted.
                let mut big = rtp_packet(sent);
                big.resize(3000, 0xAB);
                tx.send(&big).map_err(fail("send oversize"))?;
            }
            tx.send(&rtp_packet(sent)).map_err(fail("send"))?;
            sent += 1;
        }
        let n = rx.available().map_err(|e| format!("bad from-device indices {e:?}"))?;
        for i in 0..n {
            let h: SlotHeader = rx.header(i);
            ensure!(h.stream_id == STREAM, "slot stream id {}", h.stream_id);
            ensure!(h.timestamp_ns != 0, "no timestamp");
            let want = rtp_packet(got);
            ensure!(rx.payload(i, h.len) == &want[..], "packet {got}: {} bytes differ from {}", h.len, want.len());
            got += 1;
        }
        release_or_wait(&dev, &mut rx, n)?;
    }
    let c = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    ensure!(c.rx_packets == u64::from(N), "{c:?}");
    // The last junk datagram may still be queued behind the last packet.
    let t = Instant::now();
    let mut c = c;
    while c.malformed < junk && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        c = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    }
    ensure!(c.malformed == junk, "malformed {} != {junk}: {c:?}", c.malformed);
    ensure!(c.oversize == 1 && c.csum_errors == 0, "{c:?}");
    let st = dev.status(STREAM).map_err(fail("GET_STATUS"))?;
    ensure!(st.stream.from_dev_packets == u64::from(N) && st.stream.port == abi::PORT_UDP, "{:?}", st.stream);
    ensure!(c.socket_drops == 0, "drops with at most 64 in flight: {c:?}");

    // Nobody reads the ring: it fills, the datagrams wait in the socket,
    // whose (default) buffer overflows. Every datagram is then either
    // delivered once the ring drains or counted in `socket_drops`.
    const K: u32 = 3000;
    for i in 0..K {
        tx.send(&rtp_packet(N + i)).map_err(fail("send"))?;
    }
    let (mut more, mut last) = (0u64, Instant::now());
    while last.elapsed() < Duration::from_millis(500) {
        let n = rx.available().map_err(|e| format!("bad from-device indices {e:?}"))?;
        for i in 0..n {
            let h: SlotHeader = rx.header(i);
            let p = rx.payload(i, h.len);
            ensure!(p.len() >= 4, "a {}-byte slot", h.len);
            let seq = u32::from(u16::from_be_bytes([p[2], p[3]]));
            ensure!(p == &rtp_packet(seq)[..], "a slot that is no packet sent");
        }
        if n > 0 {
            more += u64::from(n);
            last = Instant::now();
        }
        if rx.release(n) {
            dev.kick().map_err(fail("KICK"))?;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let c2 = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    ensure!(c2.rx_packets - c.rx_packets == more, "{more} read, {c2:?}");
    ensure!(c2.socket_drops > 0 && more + c2.socket_drops == u64::from(K), "{more} delivered of {K}: {c2:?}");
    ensure!(c2.ring_full > 0, "the ring never filled: {c2:?}");
    dev.stop_stream(STREAM).map_err(fail("STOP_STREAM"))?;
    // The port is free again once the stream stopped: the module gave its
    // reference on the socket back.
    UdpSocket::bind(addr(ip, port)).map_err(fail("rebind after stop"))?;
    Ok(())
}

pub(crate) fn udp_rx_intact_v4() -> TestResult {
    rx_intact(V4)
}

pub(crate) fn udp_rx_intact_v6() -> TestResult {
    rx_intact(V6)
}

/// N packets published on the to-device ring for a `udp` stream reach a
/// user-space socket in order and intact, with no system call per packet.
fn tx_intact(ip: &str) -> TestResult {
    const N: u32 = 3000;
    const STREAM: u32 = 4;
    let (dev, region) = session(256)?;
    let sink = UdpSocket::bind((ip, 0)).map_err(fail("bind sink"))?;
    sink.set_read_timeout(Some(Duration::from_secs(5))).map_err(fail("timeout"))?;
    let to = sink.local_addr().map_err(fail("local_addr"))?;
    start_net(&dev, STREAM, abi::DIR_TO_DEVICE, None, Some(to))?;
    let mut tx = region.producer(RingId::ToDevice);
    let mut buf = vec![0u8; 2048];
    let (mut sent, mut got, mut kicks) = (0u32, 0u32, 0u32);
    while got < N {
        // At most 64 in flight: the sink's receive buffer never overflows.
        let want = (N - sent).min(64 - (sent - got));
        let (free, kicked) = publish_packets(&dev, &mut tx, sent, want, STREAM)?;
        sent += free;
        if kicked {
            kicks += 1;
        }
        while got < sent {
            let n = sink.recv(&mut buf).map_err(|e| format!("packet {got} of {sent} sent: {e}"))?;
            let want = rtp_packet(got);
            ensure!(buf[..n] == want[..], "packet {got}: {n} bytes differ from {}", want.len());
            got += 1;
        }
    }
    let c = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    ensure!(c.tx_packets == u64::from(N) && c.tx_errors == 0, "{c:?}");
    ensure!(kicks < N / 8, "{kicks} kicks for {N} packets");
    Ok(())
}

pub(crate) fn udp_tx_intact_v4() -> TestResult {
    tx_intact(V4)
}

pub(crate) fn udp_tx_intact_v6() -> TestResult {
    tx_intact(V6)
}

/// In-kernel relay: N RTP packets (junk between them) sent to stream A's
/// port leave through stream B's socket to a user-space sink, in order and
/// intact, with no user space in between; with `tap`, every forwarded
/// packet also appears in the from-device ring, tagged with A.
fn relay(ip: &str, tap: bool) -> TestResult {
    const N: u32 = 3000;
    const A: u32 = 6;
    const B: u32 = 5;
    let (dev, region) = session(256)?;
    let sink = UdpSocket::bind((ip, 0)).map_err(fail("bind sink"))?;
    sink.set_read_timeout(Some(Duration::from_secs(5))).map_err(fail("timeout"))?;
    let to = sink.local_addr().map_err(fail("local_addr"))?;
    start_net(&dev, B, abi::DIR_TO_DEVICE, None, Some(to))?;
    let port = free_port(ip)?;
    let (mut spec, _sock) = net_spec(A, abi::DIR_FROM_DEVICE, Some(addr(ip, port)), None)?;
    spec.flags = abi::NET_F_RTP | if tap { abi::NET_F_TAP } else { 0 };
    spec.forward_to = B;
    dev.start_net_stream(&spec).map_err(fail("start A"))?;
    let tx = UdpSocket::bind((ip, 0)).map_err(fail("bind sender"))?;
    tx.connect(addr(ip, port)).map_err(fail("connect"))?;
    let mut ring = region.consumer(RingId::FromDevice);
    let mut buf = vec![0u8; 2048];
    let (mut sent, mut got, mut tapped, mut junk, mut bytes) = (0u32, 0u32, 0u32, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < N || (tap && tapped < N) {
        ensure!(Instant::now() < deadline, "stalled: sent {sent}, relayed {got}, tapped {tapped}");
        // At most 32 in flight (and 32 tap copies unread): nothing drops.
        let done = if tap { got.min(tapped) } else { got };
        while sent < N && sent - done < 32 {
            if sent % 89 == 7 {
                tx.send(b"junk, not RTP").map_err(fail("send junk"))?;
                junk += 1;
            }
            let p = rtp_packet(sent);
            bytes += p.len() as u64;
            tx.send(&p).map_err(fail("send"))?;
            sent += 1;
        }
        if got < sent {
            let n = sink.recv(&mut buf).map_err(|e| format!("packet {got} of {sent} sent: {e}"))?;
            let want = rtp_packet(got);
            ensure!(buf[..n] == want[..], "relayed packet {got}: {n} bytes differ from {}", want.len());
            got += 1;
        } else {
            // The tap copies are published after the worker's batch.
            wait_from_device(&dev)?;
        }
        let avail = ring.available().map_err(|e| format!("bad from-device indices {e:?}"))?;
        ensure!(tap || avail == 0, "{avail} ring entries without the tap");
        for i in 0..avail {
            let h: SlotHeader = ring.header(i);
            ensure!(h.stream_id == A, "tap slot stream id {}", h.stream_id);
            let want = rtp_packet(tapped);
            ensure!(ring.payload(i, h.len) == &want[..], "tap copy {tapped}: {} bytes differ", h.len);
            tapped += 1;
        }
        if ring.release(avail) {
            dev.kick().map_err(fail("KICK"))?;
        }
    }
    let mut a = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    let t = Instant::now();
    while a.malformed < junk && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        a = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    }
    let b = dev.net_status(B).map_err(fail("GET_NET_STATUS B"))?;
    let n = u64::from(N);
    ensure!(a.fwd_packets == n && a.fwd_bytes == bytes && a.forward_drops == 0, "A: {a:?}");
    ensure!(a.malformed == junk && a.rx_packets == 0 && a.oversize == 0, "A: {a:?}");
    let want_tap = if tap { n } else { 0 };
    ensure!(a.tap_packets == want_tap && a.tap_drops == 0 && tapped as u64 == want_tap, "tap {tapped}: A: {a:?}");
    ensure!(b.tx_packets == n && b.tx_bytes == bytes && b.tx_errors == 0, "B: {b:?}");
    // The statistics area holds the same counters, without a system call.
    for (id, want) in [(A, &a), (B, &b)] {
        let r = region.stream_stats(id).ok_or_else(|| format!("record {id} kept changing"))?;
        ensure!(r.stream_id == id && r.flags == abi::STATS_RUNNING && r.updated_ns != 0, "record {id}: {r:?}");
        ensure!(r.counters == *want, "record {id}: {:?}, GET_NET_STATUS: {want:?}", r.counters);
    }
    // Nothing else came out of the sink.
    sink.set_read_timeout(Some(Duration::from_millis(200))).map_err(fail("timeout"))?;
    ensure!(sink.recv(&mut buf).is_err(), "an extra datagram reached the sink");

    // The tap never holds forwarding up: nobody reads the ring now.
    const M: u32 = 600;
    for i in 0..M {
        tx.send(&rtp_packet(i)).map_err(fail("send"))?;
        let n = sink.recv(&mut buf).map_err(|e| format!("packet {i} with a full tap: {e}"))?;
        ensure!(buf[..n] == rtp_packet(i)[..], "packet {i} with a full tap differs");
    }
    let a2 = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    ensure!(a2.fwd_packets == n + u64::from(M) && a2.forward_drops == 0, "A: {a2:?}");
    if tap {
        ensure!(a2.tap_packets - a.tap_packets == 256 && a2.tap_drops == u64::from(M) - 256, "full tap: {a2:?}");
    }

    // Target stopped while traffic flows: counted drops, A keeps running.
    dev.stop_stream(B).map_err(fail("stop B"))?;
    for i in 0..50 {
        tx.send(&rtp_packet(i)).map_err(fail("send"))?;
    }
    let t = Instant::now();
    let mut a3 = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    while a3.forward_drops < 50 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        a3 = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    }
    ensure!(a3.forward_drops == 50 && a3.fwd_packets == a2.fwd_packets, "target stopped: {a3:?}");
    // B's record keeps its last counters and says it stopped.
    let rb = region.stream_stats(B).ok_or("record B kept changing")?;
    ensure!(rb.flags & abi::STATS_RUNNING == 0 && rb.counters.tx_packets == n + u64::from(M), "record B: {rb:?}");
    let ra = region.stream_stats(A).ok_or("record A kept changing")?;
    ensure!(ra.flags == abi::STATS_RUNNING && ra.counters.forward_drops == 50, "record A: {ra:?}");
    ensure!(sink.recv(&mut buf).is_err(), "a datagram reached the sink after B stopped");
    dev.stop_stream(A).map_err(fail("stop A"))?;
    Ok(())
}

pub(crate) fn udp_relay_v4() -> TestResult {
    relay(V4, false)
}

pub(crate) fn udp_relay_tap_v4() -> TestResult {
    relay(V4, true)
}

pub(crate) fn udp_relay_tap_v6() -> TestResult {
    relay(V6, true)
}

/// Poll `GET_NET_STATUS` of `id` until `done` holds (at most 10 s).
pub(crate) fn net_status_until(
    dev: &Device,
    id: u32,
    done: impl Fn(&abi::NetCounters) -> bool,
) -> Result<abi::NetCounters, String> {
    let t = Instant::now();
    loop {
        let c = dev.net_status(id).map_err(fail("GET_NET_STATUS"))?;
        if done(&c) || t.elapsed() > Duration::from_secs(10) {
            return Ok(c);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The registry index of the port called `name`.
fn port_index(dev: &Device, name: &str) -> Result<u32, String> {
    let count = dev.info().map_err(fail("GET_INFO"))?.port_count;
    (0..count)
        .find(|&i| dev.port(i).ok().and_then(|p| p.name_str().map(|n| n == name)) == Some(true))
        .ok_or_else(|| format!("no port {name}"))
}

/// In-kernel forwarding into a media port that returns packets: udp stream
/// A forwards to stream P on `port_name` (DIR_BOTH), so every datagram A
/// receives goes through the port and comes back on the from-device ring
/// tagged with P, in order and intact, as P's own to-device slots would.
/// Then a full ring: forwarding goes on, only the returned copies that do
/// not fit are dropped and counted, and returns resume once there is room.
fn forward_to_port(port_name: &str) -> TestResult {
    const N: u32 = 3000;
    const A: u32 = 3;
    const P: u32 = 8;
    const SLOTS: u32 = 256;
    let (dev, region) = session(SLOTS)?;
    let port_idx = port_index(&dev, port_name)?;
    dev.start_stream(P, port_idx, abi::DIR_BOTH).map_err(fail("start P"))?;
    let port = free_port(V4)?;
    let (mut spec, _sock) = net_spec(A, abi::DIR_FROM_DEVICE, Some(addr(V4, port)), None)?;
    spec.flags = abi::NET_F_RTP;
    spec.forward_to = P;
    dev.start_net_stream(&spec).map_err(fail("start A"))?;
    let tx = UdpSocket::bind((V4, 0)).map_err(fail("bind sender"))?;
    tx.connect(addr(V4, port)).map_err(fail("connect"))?;
    let mut ring = region.consumer(RingId::FromDevice);
    let (mut sent, mut got, mut junk, mut bytes) = (0u32, 0u32, 0u64, 0u64);
    // One valid RTP datagram larger than a slot's payload (2016 bytes): the
    // port takes it, its returned copy cannot fit and is counted as a drop.
    let mut big = rtp_packet(77_777);
    big.resize(3000, 0xCD);
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < N {
        ensure!(Instant::now() < deadline, "stalled: sent {sent}, returned {got}");
        // At most 32 in flight: neither the socket nor the ring overflows.
        while sent < N && sent - got < 32 {
            if sent % 83 == 11 {
                tx.send(b"junk between RTP packets").map_err(fail("send junk"))?;
                junk += 1;
            }
            if sent == 1500 {
                tx.send(&big).map_err(fail("send oversize"))?;
            }
            let p = rtp_packet(sent);
            bytes += p.len() as u64;
            tx.send(&p).map_err(fail("send"))?;
            sent += 1;
        }
        let n = ring.available().map_err(|e| format!("bad from-device indices {e:?}"))?;
        for i in 0..n {
            let h: SlotHeader = ring.header(i);
            ensure!(h.stream_id == P, "returned packet {got}: stream id {}", h.stream_id);
            ensure!(h.timestamp_ns != 0, "returned packet {got}: no timestamp");
            let want = rtp_packet(got);
            ensure!(ring.payload(i, h.len) == &want[..], "returned packet {got}: {} bytes differ", h.len);
            got += 1;
        }
        release_or_wait(&dev, &mut ring, n)?;
    }
    let n = u64::from(N);
    let big_len = big.len() as u64;
    let a = net_status_until(&dev, A, |c| c.malformed >= junk)?;
    ensure!(a.fwd_packets == n + 1 && a.fwd_bytes == bytes + big_len && a.forward_drops == 0, "A: {a:?}");
    ensure!(a.malformed == junk && a.rx_packets == 0 && a.tap_packets == 0 && a.oversize == 0, "A: {a:?}");
    let st = dev.status(P).map_err(fail("GET_STATUS P"))?;
    let p = st.stream;
    ensure!(p.to_dev_packets == n + 1 && p.to_dev_bytes == bytes + big_len, "P: {p:?}");
    ensure!(p.from_dev_packets == n && p.from_dev_bytes == bytes && p.ring_full_drops == 1, "P: {p:?}");
    ensure!(st.session.from_dev_packets == n && st.session.ring_full_drops == 1, "session: {:?}", st.session);
    ensure!(st.session.invalid_slots == 0 && st.session.invalid_indices == 0, "session: {:?}", st.session);
    ensure!(ring.available() == Ok(0), "an extra packet came back");
    expect_errno("GET_NET_STATUS of the port stream", dev.net_status(P), Errno::ENOENT)?;

    // Nobody reads now: exactly the ring's worth comes back, the rest of
    // the returned copies are dropped, and forwarding loses nothing.
    const M: u32 = 600;
    for burst in (0..M).step_by(32) {
        let end = (burst + 32).min(M);
        for i in burst..end {
            tx.send(&rtp_packet(i)).map_err(fail("send"))?;
        }
        let want = a.fwd_packets + u64::from(end);
        let c = net_status_until(&dev, A, |c| c.fwd_packets >= want)?;
        ensure!(c.fwd_packets == want, "burst at {burst}: A {c:?}");
    }
    let a2 = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    ensure!(a2.forward_drops == 0, "A with a full ring: {a2:?}");
    let p2 = dev.status(P).map_err(fail("GET_STATUS P"))?.stream;
    let kept = u64::from(SLOTS);
    ensure!(p2.to_dev_packets - p.to_dev_packets == u64::from(M), "P with a full ring: {p2:?}");
    ensure!(p2.from_dev_packets - p.from_dev_packets == kept, "P with a full ring: {p2:?}");
    ensure!(p2.ring_full_drops - p.ring_full_drops == u64::from(M) - kept, "P with a full ring: {p2:?}");
    // The ring holds the first SLOTS of them, in order.
    let n = ring.available().map_err(|e| format!("{e:?}"))?;
    ensure!(n == SLOTS, "{n} entries in a full ring");
    for i in 0..n {
        let h: SlotHeader = ring.header(i);
        ensure!(h.stream_id == P && ring.payload(i, h.len) == &rtp_packet(i)[..], "full ring entry {i} differs");
    }
    if ring.release(n) {
        dev.kick().map_err(fail("KICK"))?;
    }
    // Room again: returns resume.
    for i in 0..10 {
        tx.send(&rtp_packet(5000 + i)).map_err(fail("send"))?;
    }
    let t = Instant::now();
    let mut k = 0;
    while k < 10 && t.elapsed() < Duration::from_secs(10) {
        let n = ring.available().map_err(|e| format!("{e:?}"))?;
        for i in 0..n {
            let h: SlotHeader = ring.header(i);
            ensure!(ring.payload(i, h.len) == &rtp_packet(5000 + k)[..], "packet {k} after the drain differs");
            k += 1;
        }
        if ring.release(n) {
            dev.kick().map_err(fail("KICK"))?;
        }
        if n == 0 {
            let _ = dev.wait(abi::WAIT_FROM_DEV_READY, 100);
        }
    }
    ensure!(k == 10, "{k} of 10 packets came back after the ring was drained");
    dev.stop_stream(A).map_err(fail("stop A"))?;
    dev.stop_stream(P).map_err(fail("stop P"))?;
    Ok(())
}

pub(crate) fn udp_forward_to_loopback() -> TestResult {
    forward_to_port("loopback")
}

/// The DT-bound DMA port: the model peripheral loops data back through
/// its coherent buffer.
pub(crate) fn udp_forward_to_media0() -> TestResult {
    forward_to_port("media0")
}

/// Send from `s` through interface `ifindex` to multicast groups (and, for
/// IPv4, TTL 0: the stack's own loopback copy is then the only one).
fn multicast_sender(s: &UdpSocket, v6: bool, ifindex: u32) -> TestResult {
    use std::os::fd::AsRawFd;
    let fd = s.as_raw_fd();
    let rc = if v6 {
        let idx = ifindex as libc::c_int;
        // SAFETY: a valid socket and a c_int option value of the given size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                (&idx as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    } else {
        let mr = libc::ip_mreqn {
            imr_multiaddr: libc::in_addr { s_addr: 0 },
            imr_address: libc::in_addr { s_addr: 0 },
            imr_ifindex: ifindex as libc::c_int,
        };
        // SAFETY: a valid socket and an ip_mreqn option value of its size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                (&mr as *const libc::ip_mreqn).cast(),
                std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
            )
        }
    };
    ensure!(rc == 0, "multicast interface: {}", std::io::Error::last_os_error());
    if !v6 {
        s.set_multicast_ttl_v4(0).map_err(fail("IP_MULTICAST_TTL"))?;
    }
    Ok(())
}

/// A stream that joined a group (on `lo`, which ci/guest/init gives the
/// multicast flag) receives what is sent to the group, in order and intact;
/// with `ssm` it joined for one source only, and datagrams from another
/// source sent to the same group and port never reach the ring.
fn mcast(v6: bool, ssm: bool) -> TestResult {
    const N: u32 = 600;
    const STREAM: u32 = 3;
    let (group, me, other, any) =
        if v6 { ("ff0e::5eed:1", V6, "fd00::2", "::") } else { ("239.7.7.7", V4, "127.0.0.2", "0.0.0.0") };
    // SAFETY: a NUL-terminated name.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    ensure!(lo != 0, "no lo");
    let (dev, region) = session(256)?;
    let port = free_port(any)?;
    // IPv4 binds the group (only its datagrams arrive), IPv6 the
    // unspecified address.
    let bind = if v6 { any } else { group };
    // The socket joins in user space, as rtpmgrd's do; the module only
    // receives what the stack then delivers to it.
    let (mut spec, sock) = net_spec(STREAM, abi::DIR_FROM_DEVICE, Some(addr(bind, port)), None)?;
    let source = ssm.then(|| me.parse().expect("literal address"));
    join(&sock, group.parse().expect("literal address"), source, lo)?;
    spec.flags = abi::NET_F_RTP;
    dev.start_net_stream(&spec).map_err(fail("START_NET_STREAM on a joined socket"))?;
    let to = addr(group, port);
    let tx = UdpSocket::bind((me, 0)).map_err(fail("bind sender"))?;
    multicast_sender(&tx, v6, lo)?;
    let intruder = if ssm {
        let s = UdpSocket::bind((other, 0)).map_err(|e| format!("bind {other} (ci/guest/init adds it to lo): {e}"))?;
        multicast_sender(&s, v6, lo)?;
        Some(s)
    } else {
        None
    };
    let mut rx = region.consumer(RingId::FromDevice);
    let (mut sent, mut got, mut foreign) = (0u32, 0u32, 0u32);
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < N {
        ensure!(Instant::now() < deadline, "stalled: sent {sent}, received {got}");
        while sent < N && sent - got < 64 {
            if let Some(s) = &intruder {
                if sent % 10 == 3 {
                    s.send_to(&rtp_packet(100_000 + sent), to).map_err(fail("send from the other source"))?;
                    foreign += 1;
                }
            }
            tx.send_to(&rtp_packet(sent), to).map_err(fail("send to the group"))?;
            sent += 1;
        }
        let n = rx.available().map_err(|e| format!("bad from-device indices {e:?}"))?;
        for i in 0..n {
            let h: SlotHeader = rx.header(i);
            ensure!(h.stream_id == STREAM, "slot stream id {}", h.stream_id);
            let want = rtp_packet(got);
            ensure!(rx.payload(i, h.len) == &want[..], "packet {got}: {} bytes differ", h.len);
            got += 1;
        }
        release_or_wait(&dev, &mut rx, n)?;
    }
    // Nothing more arrives (the other source's datagrams were filtered).
    std::thread::sleep(Duration::from_millis(200));
    let n = rx.available().map_err(|e| format!("{e:?}"))?;
    ensure!(n == 0, "{n} more datagrams arrived ({foreign} sent from {other})");
    let c = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    ensure!(c.rx_packets == u64::from(N) && c.malformed == 0, "{c:?}");
    ensure!(!ssm || foreign > 0, "no foreign datagrams sent");
    dev.stop_stream(STREAM).map_err(fail("STOP_STREAM"))?;
    Ok(())
}

pub(crate) fn udp_mcast_v4() -> TestResult {
    mcast(false, false)
}

pub(crate) fn udp_mcast_ssm_v4() -> TestResult {
    mcast(false, true)
}

pub(crate) fn udp_mcast_v6() -> TestResult {
    mcast(true, false)
}

pub(crate) fn udp_mcast_ssm_v6() -> TestResult {
    mcast(true, true)
}

/// An RTP packet with the given header fields and 20 payload bytes.
/// A `udp` stream sending to a multicast group with `mc_ttl` and
/// `ifindex` (lo): a member of the group on lo receives every packet,
/// intact, in order, with that TTL / hop limit in its IP header. On lo an
/// IPv4 datagram may arrive twice (the stack's multicast-loop copy and
/// lo's own), IPv6 exactly once (no loop copy on a loopback device).
fn mcast_tx(v6: bool) -> TestResult {
    use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage};
    use std::os::fd::AsFd;
    const N: u32 = 300;
    const STREAM: u32 = 5;
    const TTL: u32 = 7;
    let (group, any) = if v6 { ("ff0e::5eed:2", "::") } else { ("239.7.7.8", "0.0.0.0") };
    // SAFETY: a NUL-terminated name.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    ensure!(lo != 0, "no lo");
    let sink = UdpSocket::bind((any, 0)).map_err(fail("bind sink"))?;
    let port = sink.local_addr().map_err(fail("local_addr"))?.port();
    if v6 {
        sink.join_multicast_v6(&group.parse().expect("literal"), lo).map_err(fail("join v6"))?;
        setsockopt(&sink.as_fd(), sockopt::Ipv6RecvHopLimit, &true).map_err(fail("IPV6_RECVHOPLIMIT"))?;
    } else {
        sink.join_multicast_v4(&group.parse().expect("literal"), &"127.0.0.1".parse().expect("literal"))
            .map_err(fail("join v4"))?;
        setsockopt(&sink.as_fd(), sockopt::Ipv4RecvTtl, &true).map_err(fail("IP_RECVTTL"))?;
    }
    sink.set_read_timeout(Some(Duration::from_secs(5))).map_err(fail("timeout"))?;
    let (dev, region) = session(256)?;
    // TTL / hop limit and interface set in user space before connect, as
    // rtpmgrd does (the route, and the source address, depend on them).
    let sock = UdpSocket::bind((any, 0)).map_err(fail("bind"))?;
    if v6 {
        let hops = TTL as libc::c_int;
        let idx = lo as libc::c_int;
        for (opt, v) in [(libc::IPV6_MULTICAST_HOPS, hops), (libc::IPV6_MULTICAST_IF, idx)] {
            // SAFETY: a valid socket and a c_int option value of its size.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&sock),
                    libc::IPPROTO_IPV6,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            ensure!(rc == 0, "IPv6 multicast option {opt}: {}", std::io::Error::last_os_error());
        }
    } else {
        multicast_sender(&sock, false, lo)?;
        sock.set_multicast_ttl_v4(TTL).map_err(fail("IP_MULTICAST_TTL"))?;
    }
    sock.connect(addr(group, port)).map_err(fail("connect to the group"))?;
    let spec = net_stream_spec(STREAM, abi::DIR_TO_DEVICE, sock.as_fd());
    dev.start_net_stream(&spec).map_err(fail("START_NET_STREAM to a group"))?;
    drop(sock);
    // Copies of each packet allowed: see above.
    let max_copies = if v6 { 1 } else { 2 };
    let mut copies = vec![0u32; N as usize];
    let mut tx = region.producer(RingId::ToDevice);
    let mut buf = vec![0u8; 2048];
    let mut cmsg = nix::cmsg_space!(libc::c_int);
    // `seen`: packets that arrived at least once, which must be a prefix.
    let (mut sent, mut seen) = (0u32, 0u32);
    let mut recv_one = |buf: &mut [u8], copies: &mut [u32]| -> Result<Option<u32>, String> {
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let msg = match recvmsg::<SockaddrStorage>(
            std::os::fd::AsRawFd::as_raw_fd(&sink),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) {
            Ok(m) => m,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(format!("recvmsg: {e}")),
        };
        let ttl = msg.cmsgs().map_err(fail("cmsgs"))?.find_map(|c| match c {
            ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => Some(t),
            _ => None,
        });
        let n = msg.bytes;
        ensure!(n >= 4, "a {n}-byte datagram");
        let i = u32::from(u16::from_be_bytes([buf[2], buf[3]]));
        ensure!(i < N && buf[..n] == rtp_packet(i)[..], "a datagram that is no packet sent ({n} bytes, seq {i})");
        ensure!(ttl == Some(TTL as i32), "packet {i}: TTL {ttl:?}, want {TTL}");
        copies[i as usize] += 1;
        ensure!(copies[i as usize] <= max_copies, "packet {i} arrived {} times", copies[i as usize]);
        Ok(Some(i))
    };
    while seen < N {
        // At most 32 in flight: the sink's receive buffer never overflows.
        let want = (N - sent).min(32 - (sent - seen));
        let (free, _) = publish_packets(&dev, &mut tx, sent, want, STREAM)?;
        sent += free;
        while seen < sent {
            let Some(i) = recv_one(&mut buf, &mut copies)? else {
                return Err(format!("packet {seen} of {sent} sent did not arrive"));
            };
            if copies[i as usize] == 1 {
                ensure!(i == seen, "packet {i} arrived before packet {seen}");
                seen += 1;
            }
        }
    }
    // The rest of the second copies, then nothing.
    sink.set_read_timeout(Some(Duration::from_millis(300))).map_err(fail("timeout"))?;
    while recv_one(&mut buf, &mut copies)?.is_some() {}
    let total: u32 = copies.iter().sum();
    ensure!(!v6 || total == N, "IPv6 arrives once: {total} copies of {N}");
    let c = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    ensure!(c.tx_packets == u64::from(N) && c.tx_errors == 0, "{c:?}");
    Ok(())
}

pub(crate) fn udp_mcast_tx_v4() -> TestResult {
    mcast_tx(false)
}

pub(crate) fn udp_mcast_tx_v6() -> TestResult {
    mcast_tx(true)
}

fn rtp_with(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&u32::from(seq).wrapping_mul(160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[seq as u8; 20]);
    p
}

/// Per-stream RTP statistics in the kernel path: a trace with losses,
/// duplicates, reordering, a far jump and junk gives exactly the counters
/// the user-space `rtp` crate computes from the same trace (the same
/// source file is compiled into the module); a new SSRC restarts them.
pub(crate) fn udp_rtp_stats_v4() -> TestResult {
    const STREAM: u32 = 7;
    const SSRC: u32 = 0x1234_5678;
    let (dev, region) = session(256)?;
    let port = free_port(V4)?;
    let (mut spec, _sock) = net_spec(STREAM, abi::DIR_FROM_DEVICE, Some(addr(V4, port)), None)?;
    spec.flags = abi::NET_F_RTP;
    spec.clock_rate = 8000;
    dev.start_net_stream(&spec).map_err(fail("START_NET_STREAM"))?;
    // The trace: 65,500 + 3000 numbers so the sequence wraps; every 50th
    // lost, every 37th twice, every 61st swapped with the next one.
    let mut trace: Vec<u16> = Vec::new();
    let mut i = 65_000u32;
    while i < 65_536 + 2_500 {
        let seq = i as u16;
        if i % 61 == 0 {
            trace.push(seq.wrapping_add(1));
            trace.push(seq);
            i += 2;
            continue;
        }
        if i % 50 != 0 {
            trace.push(seq);
            if i % 37 == 0 {
                trace.push(seq);
            }
        }
        i += 1;
    }
    let mut want = rtp::SourceStats::new(SSRC, trace[0], 8000);
    for (k, &seq) in trace.iter().enumerate() {
        want.update(seq, u32::from(seq).wrapping_mul(160), k as u64 * 20_000_000);
    }
    let tx = UdpSocket::bind((V4, 0)).map_err(fail("bind sender"))?;
    tx.connect(addr(V4, port)).map_err(fail("connect"))?;
    let mut rx = region.consumer(RingId::FromDevice);
    let send_all = |pkts: &[Vec<u8>], rx: &mut rtpmgr_ring::Consumer| -> TestResult {
        let (mut sent, mut got) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < pkts.len() {
            ensure!(Instant::now() < deadline, "stalled: sent {sent}, received {got}");
            while sent < pkts.len() && sent - got < 64 {
                if sent % 500 == 9 {
                    tx.send(b"\x40 not RTP").map_err(fail("send junk"))?;
                }
                tx.send(&pkts[sent]).map_err(fail("send"))?;
                sent += 1;
            }
            let n = rx.available().map_err(|e| format!("{e:?}"))?;
            for j in 0..n {
                let h: SlotHeader = rx.header(j);
                ensure!(rx.payload(j, h.len) == &pkts[got][..], "packet {got} differs");
                got += 1;
            }
            if rx.release(n) {
                dev.kick().map_err(fail("KICK"))?;
            }
            if n == 0 {
                let _ = dev.wait(abi::WAIT_FROM_DEV_READY, 1000);
            }
        }
        Ok(())
    };
    let pkts: Vec<Vec<u8>> = trace.iter().map(|&q| rtp_with(q, SSRC)).collect();
    send_all(&pkts, &mut rx)?;
    let c = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    ensure!(c.ssrc == SSRC && c.rtp_flags == abi::NET_RTP_SOURCE && c.ssrc_changes == 0, "{c:?}");
    let got = (
        c.rtp_received,
        c.rtp_expected,
        c.rtp_lost,
        c.rtp_duplicates,
        c.rtp_reordered,
        c.rtp_resyncs,
        c.ext_highest_seq,
    );
    let exp = (
        want.received(),
        want.expected(),
        want.lost(),
        want.duplicates(),
        want.reordered(),
        want.resyncs(),
        want.extended_highest_seq(),
    );
    ensure!(got == exp, "kernel (received, expected, lost, dup, reord, resyncs, ext) {got:?} != rtp crate {exp:?}");
    ensure!(want.lost() > 0 && want.duplicates() > 0 && want.reordered() > 0, "trace too clean: {exp:?}");
    ensure!(c.rx_packets == trace.len() as u64, "{c:?}");
    // A new source restarts the statistics.
    let pkts: Vec<Vec<u8>> = (100..110u16).map(|q| rtp_with(q, 0xABCD)).collect();
    send_all(&pkts, &mut rx)?;
    let c = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    ensure!(c.ssrc == 0xABCD && c.ssrc_changes == 1 && c.rtp_received == 10 && c.rtp_lost == 0, "{c:?}");
    ensure!(c.ext_highest_seq == 109, "{c:?}");
    dev.stop_stream(STREAM).map_err(fail("STOP_STREAM"))?;
    Ok(())
}

/// Every bad argument and every socket the module must not take gets its
/// errno, and the kernel stays well (the console is checked for splats).
pub(crate) fn udp_hostile_args() -> TestResult {
    use std::os::fd::AsRawFd;
    let port = free_port(V4)?;
    let (good, good_sock) = net_spec(1, abi::DIR_FROM_DEVICE, Some(addr(V4, port)), None)?;
    // Before CONFIGURE_BUFFER.
    let dev = open()?;
    expect_errno("before configure", dev.start_net_stream(&good), Errno::ENOTCONN)?;
    let (dev, _region) = session(16)?;
    let bad = |what: &str, f: &dyn Fn(&mut abi::NetStreamSpec), want: Errno| -> TestResult {
        let mut s = good;
        f(&mut s);
        expect_errno(what, dev.start_net_stream(&s), want)
    };
    bad("bad size", &|s| s.size -= 4, Errno::EINVAL)?;
    bad("unknown flag", &|s| s.flags = 1 << 7, Errno::EINVAL)?;
    bad("reserved set", &|s| s.reserved = 1, Errno::EINVAL)?;
    bad("stream id 64", &|s| s.stream_id = abi::MAX_STREAMS, Errno::EINVAL)?;
    bad("no direction", &|s| s.direction = 0, Errno::EINVAL)?;
    bad("unknown direction", &|s| s.direction = 4, Errno::EINVAL)?;
    bad("forward to a stream not running", &|s| s.forward_to = 2, Errno::ENOENT)?;
    bad("forward to itself", &|s| s.forward_to = 1, Errno::EINVAL)?;
    bad("forward to id 64", &|s| s.forward_to = abi::MAX_STREAMS, Errno::EINVAL)?;
    bad("tap without forwarding", &|s| s.flags = abi::NET_F_TAP, Errno::EINVAL)?;
    bad(
        "forwarding on a sending stream",
        &|s| {
            s.direction = abi::DIR_BOTH;
            s.forward_to = 2;
        },
        Errno::EINVAL,
    )?;
    // Descriptors that are no UDP socket of ours to take.
    bad("fd -1", &|s| s.fd = -1, Errno::EBADF)?;
    bad("fd not open", &|s| s.fd = 999_999, Errno::EBADF)?;
    bad("the device itself", &|s| s.fd = dev.file().as_raw_fd(), Errno::ENOTSOCK)?;
    let file = std::fs::File::open("/proc/self/status").map_err(fail("open a file"))?;
    bad("a plain file", &|s| s.fd = file.as_raw_fd(), Errno::ENOTSOCK)?;
    let tcp = std::net::TcpListener::bind((V4, 0)).map_err(fail("tcp"))?;
    bad("a TCP socket", &|s| s.fd = tcp.as_raw_fd(), Errno::EPROTONOSUPPORT)?;
    let (unix, _peer) = std::os::unix::net::UnixDatagram::pair().map_err(fail("unix"))?;
    bad("a Unix datagram socket", &|s| s.fd = unix.as_raw_fd(), Errno::EAFNOSUPPORT)?;
    let raw = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        nix::sys::socket::SockProtocol::Icmp,
    );
    if let Ok(icmp) = raw {
        bad("an ICMP datagram socket", &|s| s.fd = icmp.as_raw_fd(), Errno::EPROTONOSUPPORT)?;
    }
    // A UDP socket in the wrong state for the direction.
    let unbound = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(fail("socket"))?;
    bad("receive on an unbound socket", &|s| s.fd = unbound.as_raw_fd(), Errno::EINVAL)?;
    bad(
        "send on an unconnected socket",
        &|s| {
            s.direction = abi::DIR_TO_DEVICE;
            s.fd = good_sock.as_raw_fd();
        },
        Errno::EDESTADDRREQ,
    )?;
    // Taken: one socket, one stream.
    dev.start_net_stream(&good).map_err(fail("START_NET_STREAM"))?;
    expect_errno("same id again", dev.start_net_stream(&good), Errno::EEXIST)?;
    bad("the same socket for another stream", &|s| s.stream_id = 2, Errno::EBUSY)?;
    let (other, _other_sock) = net_spec(3, abi::DIR_FROM_DEVICE, Some(addr(V4, free_port(V4)?)), None)?;
    let (dev2, _region2) = session(16)?;
    expect_errno(
        "the same socket in another session",
        dev2.start_net_stream(&abi::NetStreamSpec { stream_id: 1, ..good }),
        Errno::EBUSY,
    )?;
    // Closing our descriptor does not stop the stream: the module holds
    // the socket (its port stays taken) until STOP_STREAM.
    drop(good_sock);
    expect_errno("the port while the stream runs", UdpSocket::bind(addr(V4, port)).map(|_| ()), Errno::EADDRINUSE)?;
    dev.stop_stream(1).map_err(fail("STOP_STREAM"))?;
    UdpSocket::bind(addr(V4, port)).map_err(fail("rebind after the stream stopped"))?;
    dev.start_net_stream(&other).map_err(fail("another socket"))?;
    // GET_NET_STATUS: a stopped id, a bad id, padding set.
    expect_errno("net status of a stopped id", dev.net_status(2), Errno::ENOENT)?;
    expect_errno("net status of id 64", dev.net_status(abi::MAX_STREAMS), Errno::EINVAL)?;
    let mut st = abi::NetStatus { size: abi::NetStatus::SIZE, stream_id: 3, _pad: [1, 0], ..Default::default() };
    ensure!(super::raw_arg(&dev, abi::RTPMGR_IOC_GET_NET_STATUS, &mut st) == Err(Errno::EINVAL), "padding set");
    // A loopback stream is no udp stream.
    dev.start_stream(4, abi::PORT_LOOPBACK, abi::DIR_BOTH).map_err(fail("start loopback"))?;
    expect_errno("net status of a loopback stream", dev.net_status(4), Errno::ENOENT)?;
    // A forward target must send: stream 3 only receives.
    let (mut f, _f_sock) = net_spec(5, abi::DIR_FROM_DEVICE, Some(addr(V4, free_port(V4)?)), None)?;
    f.forward_to = 3;
    expect_errno("forward to a receiving stream", dev.start_net_stream(&f), Errno::EINVAL)?;
    // Bad user pointers.
    ensure!(super::raw_addr(&dev, abi::RTPMGR_IOC_START_NET_STREAM, 8) == Err(Errno::EFAULT), "bad pointer");
    // The version-1 argument (136 bytes) is another ioctl number now.
    let v1 = abi::ioc(abi::IOC_WRITE, abi::RTPMGR_IOC_MAGIC, 0x09, 136);
    ensure!(super::raw_addr(&dev, v1, 8) == Err(Errno::ENOTTY), "the version-1 START_NET_STREAM");
    let info = dev.info().map_err(fail("GET_INFO"))?;
    ensure!(info.features & abi::FEATURE_NET_STREAMS != 0, "features {:#x}", info.features);
    drop(file);
    Ok(())
}

/// Floods `to` from a thread until dropped.
pub(crate) struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Flood {
    pub(crate) fn new(to: SocketAddr) -> Result<Flood, String> {
        let s = UdpSocket::bind((to.ip(), 0)).map_err(fail("bind flood"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                // Errors (ICMP unreachable once nothing listens) are fine.
                let _ = s.send_to(&rtp_packet(n as u32), to);
                n += 1;
            }
            n
        });
        Ok(Flood { stop, thread: Some(thread) })
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Stop, restart, RESET and close while datagrams pour in, with a transmit
/// stream running beside the receive stream and nobody consuming the ring.
pub(crate) fn udp_stop_close_under_traffic() -> TestResult {
    let port = free_port(V4)?;
    let sink = UdpSocket::bind((V4, 0)).map_err(fail("bind sink"))?;
    let to = sink.local_addr().map_err(fail("local_addr"))?;
    let _flood = Flood::new(addr(V4, port))?;
    for round in 0..20 {
        let (dev, region) = session(64)?;
        // One receiving socket, passed again after every stop or RESET.
        let (rx, _rx_sock) = net_spec(1, abi::DIR_FROM_DEVICE, Some(addr(V4, port)), None)?;
        dev.start_net_stream(&rx).map_err(|e| format!("round {round}: start rx: {e}"))?;
        start_net(&dev, 2, abi::DIR_TO_DEVICE, None, Some(to))?;
        let mut tx = region.producer(RingId::ToDevice);
        let free = tx.free(32);
        for i in 0..free {
            tx.set_header(i, &SlotHeader { len: 100, stream_id: 2, ..Default::default() });
        }
        if tx.publish(free) {
            dev.kick().map_err(fail("KICK"))?;
        }
        std::thread::sleep(Duration::from_millis(20));
        match round % 4 {
            0 => {
                dev.stop_stream(1).map_err(fail("stop"))?;
                dev.start_net_stream(&rx).map_err(fail("restart"))?;
            }
            1 => {
                dev.reset().map_err(fail("RESET"))?;
                dev.start_net_stream(&rx).map_err(fail("start after RESET"))?;
            }
            2 => {
                // Consume some, so the worker refills under traffic.
                let mut c = region.consumer(RingId::FromDevice);
                let n = c.available().map_err(|e| format!("{e:?}"))?;
                if c.release(n) {
                    dev.kick().map_err(fail("KICK"))?;
                }
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(10));
        let c = dev.net_status(1).map_err(fail("GET_NET_STATUS"))?;
        if round == 3 {
            ensure!(c.rx_packets > 0, "nothing received under a flood: {c:?}");
        }
        // Close (drop) with both streams running and datagrams arriving.
        drop(region);
        drop(dev);
    }
    Ok(())
}

/// `rtpmgr-guest-tests --hold-udp PORT SECS`: receive on 127.0.0.1:PORT
/// through a `udp` stream for SECS seconds, consuming the ring, then close.
/// ci/guest/init floods the port meanwhile and checks that rmmod is refused
/// while this runs and works once it has closed, the flood going on.
///
/// `--hold-relay PORT SECS` (`relay`): the same stream forwards in the
/// kernel (`forward_to`, with the tap) to a second `udp` stream that sends
/// to a sink socket of this process. Every relayed datagram and every tap
/// copy of the flood (`rtpgen send`'s synthetic stream) is checked with
/// rtpgen's own verifier: none corrupt, reordered or duplicated (loss is
/// allowed: the flood is more than the guest can take), relaying still
/// going in the last second (after init's rmmod attempt), and no forward
/// or send error in the kernel's counters.
pub(crate) fn hold(port: u16, secs: u64, relay: bool) -> TestResult {
    use rtpmgr_tools::verify::{Expect, Verifier};
    const A: u32 = 1;
    const B: u32 = 2;
    let (dev, region) = session(64)?;
    let (mut spec, _sock) = net_spec(A, abi::DIR_FROM_DEVICE, Some(addr(V4, port)), None)?;
    let sink = if relay {
        let sink = UdpSocket::bind((V4, 0)).map_err(fail("bind sink"))?;
        sink.set_nonblocking(true).map_err(fail("nonblocking"))?;
        let to = sink.local_addr().map_err(fail("local_addr"))?;
        start_net(&dev, B, abi::DIR_TO_DEVICE, None, Some(to))?;
        spec.flags = abi::NET_F_RTP | abi::NET_F_TAP;
        spec.forward_to = B;
        Some(sink)
    } else {
        None
    };
    dev.start_net_stream(&spec).map_err(fail("START_NET_STREAM"))?;
    let mut rx = region.consumer(RingId::FromDevice);
    let (mut relayed, mut tapped) = (Verifier::new(Expect::Synthetic), Verifier::new(Expect::Synthetic));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let late = end - Duration::from_secs(1);
    let (mut got, mut relayed_late) = (0u64, 0u64);
    let mut buf = vec![0u8; 2048];
    while Instant::now() < end {
        let n = rx.available().map_err(|e| format!("{e:?}"))?;
        got += u64::from(n);
        if relay {
            for i in 0..n {
                let h: SlotHeader = rx.header(i);
                tapped.packet(rx.payload(i, h.len));
            }
        }
        if rx.release(n) {
            dev.kick().map_err(fail("KICK"))?;
        }
        if let Some(sink) = &sink {
            while let Ok(len) = sink.recv(&mut buf) {
                relayed.packet(&buf[..len]);
                if Instant::now() >= late {
                    relayed_late += 1;
                }
            }
        }
        if n == 0 {
            // Short: the sink is drained in this loop too.
            let _ = dev.wait(abi::WAIT_FROM_DEV_READY, if relay { 5 } else { 100 });
        }
    }
    println!("hold-udp: {got} datagrams through the ring in {secs} s");
    ensure!(got > 0, "nothing arrived");
    if relay {
        let secs = start.elapsed().as_secs_f64();
        let (r, t) = (relayed.summary(None, secs), tapped.summary(None, secs));
        // The flood goes on: A, B, A again brackets B's count between two
        // of A's (each forward to B and B's count move under one lock).
        let a0 = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
        let b = dev.net_status(B).map_err(fail("GET_NET_STATUS B"))?;
        let a = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
        println!(
            "hold-relay: {} relayed ({relayed_late} in the last second), {} tap copies; A fwd {} drops {} tap {}/{}; B tx {} errors {}",
            r.unique, t.unique, a.fwd_packets, a.forward_drops, a.tap_packets, a.tap_drops, b.tx_packets, b.tx_errors
        );
        for (what, s) in [("relayed", &r), ("tap", &t)] {
            ensure!(
                s.corrupt == 0 && s.reordered == 0 && s.duplicates == 0 && s.not_rtp == 0,
                "{what} datagrams damaged: {s:?}"
            );
        }
        ensure!(r.unique > 0 && relayed_late > 0, "relaying stopped: {relayed_late} in the last second");
        ensure!(a.forward_drops == 0 && b.tx_errors == 0, "A {a:?} B {b:?}");
        ensure!((a0.fwd_packets..=a.fwd_packets).contains(&b.tx_packets), "A {a0:?} then B {b:?} then A {a:?}");
        ensure!(a.tap_packets + a.tap_drops == a.fwd_packets && r.received <= a.fwd_packets, "A {a:?}");
    }
    Ok(())
}
