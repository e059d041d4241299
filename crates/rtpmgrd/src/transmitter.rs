// SPDX-License-Identifier: MIT
//! The transmitter thread: from-device ring → UDP.
//!
//! Consecutive slots of one stream go out in one `sendmmsg` straight from
//! the ring (no copy); the slots are released after the batch is sent.
//! With `udp_gso`, a run of one stream's packets of one size (the last may
//! be shorter) goes out as one `sendmsg` with `UDP_SEGMENT`: the kernel
//! walks the stack once for the run and cuts it into the datagrams at the
//! end (in the driver or NIC where it can). The thread sleeps in epoll on
//! the device's `poll` descriptor and its own waker, or in `WAIT` where the
//! device has no `poll`.
//!
//! An egress stream's socket is connected to its destination
//! (`net::open_stream_socket`): its sends carry no address, and the kernel
//! reuses the route it found at `connect` instead of looking it up for
//! every datagram. A connected socket also reports the ICMP errors of
//! earlier datagrams (port unreachable, ...) on a later send, which an
//! unconnected one ignores; a failed send on it is therefore tried once
//! more before it counts, so a stream sends and counts as it did unconnected.

use crate::stream::{Stream, StreamTable};
use crate::wait::{Poller, ThreadStats, Waker, IDLE_MS, WAKER_TOKEN};
use nix::errno::Errno;
use nix::sys::socket::{sendmmsg, sendmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
use rtpmgr_abi::{SlotHeader, WAIT_FROM_DEV_READY};
use rtpmgr_device::Backend;
use rtpmgr_ring::{Consumer, Region, RingId};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Slots handled per pass (and datagrams per `sendmmsg`).
pub const BATCH: u32 = 64;

/// The pause after a failed wait or a broken ring.
const WAIT_MS: u32 = 100;

/// The most datagrams in one GSO send (the kernel's `UDP_MAX_SEGMENTS`
/// is 64 on older kernels, 128 on newer ones).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// The most payload bytes in one GSO send: one IPv6 or IPv4 datagram's
/// worth, with room for the headers.
pub const GSO_MAX_BYTES: usize = 65_000;

/// The token of the device's poll descriptor in the transmitter's epoll set.
const DEVICE_TOKEN: u64 = 0;

/// How many of `lens` (the payload sizes of one stream's consecutive
/// packets) one GSO send takes: every segment but the last must be the
/// first one's size, the last may be shorter, within the kernel's limits.
/// Below 2 a GSO send gains nothing.
pub fn gso_group(lens: impl IntoIterator<Item = usize>) -> usize {
    let mut it = lens.into_iter();
    let Some(size) = it.next() else { return 0 };
    if size == 0 {
        return 1;
    }
    let (mut n, mut total) = (1usize, size);
    for len in it {
        if n == GSO_MAX_SEGMENTS || len == 0 || len > size || total + len > GSO_MAX_BYTES {
            break;
        }
        n += 1;
        total += len;
        if len < size {
            break; // a shorter one ends the group
        }
    }
    n
}

pub struct Transmitter {
    backend: Arc<dyn Backend>,
    table: Arc<StreamTable>,
    stop: Arc<AtomicBool>,
    consumer: Consumer,
    headers: MultiHeaders<SockaddrStorage>,
    /// The destination of each datagram of a `sendmmsg` (`None` on a
    /// connected socket), kept between calls.
    addrs: Vec<Option<SockaddrStorage>>,
    /// From-device slots that named no stream able to send (stopped
    /// meanwhile, or an ingress-only stream): counted, then released.
    unroutable: Arc<AtomicU64>,
    /// Send runs with `UDP_SEGMENT` (turned off when the kernel refuses).
    gso: bool,
    /// `Some` where the device answers `poll`: sleep in epoll.
    poller: Option<Poller>,
    waker: Arc<Waker>,
    stats: Arc<ThreadStats>,
    /// The stream table's generation `by_id` belongs to.
    generation: u64,
    /// The sending streams by id.
    by_id: Vec<Option<Arc<Stream>>>,
}

impl Transmitter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: Arc<dyn Backend>,
        region: &Arc<Region>,
        table: Arc<StreamTable>,
        stop: Arc<AtomicBool>,
        unroutable: Arc<AtomicU64>,
        gso: bool,
        waker: Arc<Waker>,
        stats: Arc<ThreadStats>,
    ) -> std::io::Result<Self> {
        let headers = MultiHeaders::preallocate(BATCH as usize, None);
        let addrs = Vec::with_capacity(BATCH as usize);
        let poller = match backend.poll_fd() {
            Some(fd) => {
                let p = Poller::new(2)?;
                p.add_raw(fd, DEVICE_TOKEN)?;
                p.add(&*waker, WAKER_TOKEN)?;
                Some(p)
            }
            None => None,
        };
        Ok(Transmitter {
            backend,
            table,
            stop,
            consumer: region.consumer(RingId::FromDevice),
            headers,
            addrs,
            unroutable,
            gso,
            poller,
            waker,
            stats,
            generation: u64::MAX,
            by_id: Vec::new(),
        })
    }

    pub fn run(mut self) {
        while !self.stop.load(Ordering::Acquire) {
            if self.pass() == 0 {
                self.sleep();
            }
        }
    }

    /// Whether from-device entries wait.
    pub fn pending(&mut self) -> bool {
        self.consumer.available().is_ok_and(|n| n > 0)
    }

    /// Send one batch of what the device published; the number of slots
    /// taken (0: nothing there).
    pub fn pass(&mut self) -> u32 {
        if self.table.generation() != self.generation {
            let (g, all) = self.table.snapshot();
            self.generation = g;
            let senders: Vec<Arc<Stream>> = all.into_iter().filter(|s| s.sends()).collect();
            let ids = senders.iter().map(|s| s.id as usize + 1).max().unwrap_or(0);
            self.by_id.clear();
            self.by_id.resize(ids, None);
            for s in senders {
                let id = s.id as usize;
                self.by_id[id] = Some(s);
            }
        }
        let n = match self.consumer.available() {
            Ok(n) => n.min(BATCH),
            Err(bad) => {
                // Only a broken device gets here; do not spin on it.
                log::error!("transmitter: device published impossible ring indices {bad:?}");
                std::thread::sleep(Duration::from_millis(WAIT_MS.into()));
                return 0;
            }
        };
        if n == 0 {
            return 0;
        }
        let mut headers = [SlotHeader::default(); BATCH as usize];
        for (i, h) in headers[..n as usize].iter_mut().enumerate() {
            *h = self.consumer.header(i as u32);
        }
        let by_id = std::mem::take(&mut self.by_id);
        let mut start = 0usize;
        while start < n as usize {
            let sid = headers[start].stream_id;
            let end = (start..n as usize).find(|&k| headers[k].stream_id != sid).unwrap_or(n as usize);
            match by_id.get(sid as usize).and_then(Option::as_ref) {
                Some(stream) => self.send_run(stream, start as u32, &headers[start..end]),
                None => {
                    self.unroutable.fetch_add((end - start) as u64, Ordering::Relaxed);
                }
            }
            start = end;
        }
        self.by_id = by_id;
        ThreadStats::add(&self.stats.batches, 1);
        ThreadStats::add(&self.stats.packets, u64::from(n));
        if self.consumer.release(n) {
            ThreadStats::add(&self.stats.syscalls, 1);
            if let Err(e) = self.backend.kick() {
                log::error!("transmitter: KICK failed: {e}");
            }
        }
        n
    }

    /// Nothing to send: sleep until the device publishes, the controller
    /// wakes us, or [`IDLE_MS`] passed.
    pub fn sleep(&mut self) {
        ThreadStats::add(&self.stats.syscalls, 1);
        let Some(poller) = self.poller.as_mut() else {
            // No poll on this device: WAIT (a stop is noticed within IDLE_MS).
            match self.backend.wait(WAIT_FROM_DEV_READY, IDLE_MS.into()) {
                Ok(_) => ThreadStats::add(&self.stats.wakeups, 1),
                Err(e) if e.raw_os_error().map(Errno::from_raw) == Some(Errno::ETIMEDOUT) => {
                    ThreadStats::add(&self.stats.timeouts, 1)
                }
                Err(e) if e.raw_os_error().map(Errno::from_raw) == Some(Errno::EINTR) => {}
                Err(e) => {
                    log::error!("transmitter: WAIT failed: {e}");
                    std::thread::sleep(Duration::from_millis(WAIT_MS.into()));
                }
            }
            return;
        };
        // Arm, then look again: an entry published in between is seen here
        // or wakes the poll.
        self.backend.arm_poll();
        if self.consumer.available().is_ok_and(|n| n > 0) {
            return;
        }
        match poller.wait(IDLE_MS) {
            Ok(0) => ThreadStats::add(&self.stats.timeouts, 1),
            Ok(_) => {
                ThreadStats::add(&self.stats.wakeups, 1);
                for t in poller.tokens() {
                    if t == WAKER_TOKEN {
                        self.waker.clear();
                    } else {
                        self.backend.clear_poll();
                    }
                }
            }
            Err(e) => {
                log::error!("transmitter: epoll_wait failed: {e}");
                std::thread::sleep(Duration::from_millis(WAIT_MS.into()));
            }
        }
    }

    /// Send slots `first..first + run.len()`, all of `stream`.
    fn send_run(&mut self, stream: &Stream, first: u32, run: &[SlotHeader]) {
        let Some(dest) = stream.destination else {
            self.unroutable.fetch_add(run.len() as u64, Ordering::Relaxed);
            return;
        };
        // A connected socket sends to its peer: no address per datagram.
        let to = (!stream.connected).then_some(dest);
        let fd = stream.socket.as_raw_fd();
        // The slot whose send failed once already on a connected socket.
        let mut retried = usize::MAX;
        let mut sent_packets = 0u64;
        let mut sent_bytes = 0u64;
        let mut errors = 0u64;
        let mut k = 0usize;
        while k < run.len() {
            // How far the next plain sendmmsg goes: to the end, or with GSO
            // to the next group worth a GSO send.
            let mut end = run.len();
            if self.gso {
                let g = gso_group(run[k..].iter().map(|h| h.len as usize));
                if g >= 2 {
                    match self.send_gso(fd, to.as_ref(), first + k as u32, &run[k..k + g]) {
                        Ok(bytes) => {
                            ThreadStats::add(&self.stats.gso_sends, 1);
                            sent_packets += g as u64;
                            sent_bytes += bytes as u64;
                            k += g;
                        }
                        Err(Errno::EINTR) => {}
                        Err(e @ (Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)) => {
                            log::warn!(
                                "stream {}: UDP GSO refused ({e}); sending datagram by datagram",
                                stream.config.name
                            );
                            self.gso = false;
                        }
                        Err(_) if stream.connected && retried != k => retried = k,
                        Err(e) => {
                            // As for a failed first datagram of a sendmmsg,
                            // but the whole group shares the one call.
                            log::debug!("stream {}: sendmsg (GSO): {e}", stream.config.name);
                            errors += g as u64;
                            k += g;
                        }
                    }
                    continue;
                }
                end = (k + 1..run.len())
                    .find(|&j| gso_group(run[j..].iter().map(|h| h.len as usize)) >= 2)
                    .unwrap_or(run.len());
            }
            // On the stack: no allocation per batch.
            let mut iovs: [[IoSlice<'_>; 1]; BATCH as usize] = [[IoSlice::new(&[])]; BATCH as usize];
            let count = end - k;
            for (j, (iov, h)) in iovs.iter_mut().zip(&run[k..end]).enumerate() {
                *iov = [IoSlice::new(self.consumer.payload(first + (k + j) as u32, h.len))];
            }
            self.addrs.clear();
            self.addrs.resize(count, to);
            let cmsgs: [ControlMessage<'_>; 0] = [];
            ThreadStats::add(&self.stats.syscalls, 1);
            match sendmmsg(fd, &mut self.headers, &iovs[..count], &self.addrs, cmsgs, MsgFlags::empty()) {
                Ok(results) => {
                    let mut n = 0usize;
                    for r in results {
                        sent_bytes += r.bytes as u64;
                        n += 1;
                    }
                    if n == 0 {
                        // Nothing went out and no error: count one as failed
                        // and skip it rather than loop forever.
                        errors += 1;
                        k += 1;
                    } else {
                        sent_packets += n as u64;
                        k += n;
                    }
                }
                Err(Errno::EINTR) => {}
                // Perhaps an earlier datagram's ICMP error, which a
                // connected socket reports (and forgets) here: once more.
                Err(_) if stream.connected && retried != k => retried = k,
                Err(e) => {
                    // The first datagram failed (unreachable network, no
                    // route, ...): count it and go on with the rest.
                    log::debug!("stream {}: sendmmsg: {e}", stream.config.name);
                    errors += 1;
                    k += 1;
                }
            }
        }
        let last_sent = if stream.config.rtcp != rtpmgr_config::RtcpMode::Off && sent_packets > 0 {
            // What a sender report extrapolates from.
            run.last().and_then(|h| {
                let last = first + run.len() as u32 - 1;
                rtp::RtpPacket::parse(self.consumer.payload(last, h.len)).ok().map(|p| crate::rtcp::LastSent {
                    ssrc: p.ssrc(),
                    rtp_ts: p.timestamp(),
                    at_ns: crate::monotonic_ns(),
                })
            })
        } else {
            None
        };
        let mut c = stream.counters();
        if let (Some(last), Some(rt)) = (last_sent, c.rtcp.as_mut()) {
            rt.last_sent = Some(last);
        }
        c.sent_packets += sent_packets;
        c.sent_bytes += sent_bytes;
        c.send_errors += errors;
    }

    /// One `sendmsg` of slots `first..first + run.len()` with
    /// `UDP_SEGMENT` of the first one's size; the bytes sent.
    /// `to`: `None` on a connected socket.
    fn send_gso(
        &mut self,
        fd: RawFd,
        to: Option<&SockaddrStorage>,
        first: u32,
        run: &[SlotHeader],
    ) -> Result<usize, Errno> {
        let mut iovs: [IoSlice<'_>; GSO_MAX_SEGMENTS] = [IoSlice::new(&[]); GSO_MAX_SEGMENTS];
        for (j, (iov, h)) in iovs.iter_mut().zip(run).enumerate() {
            *iov = IoSlice::new(self.consumer.payload(first + j as u32, h.len));
        }
        let segment = run[0].len as u16;
        let cmsgs = [ControlMessage::UdpGsoSegments(&segment)];
        ThreadStats::add(&self.stats.syscalls, 1);
        sendmsg(fd, &iovs[..run.len()], &cmsgs, MsgFlags::empty(), to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimBackend;
    use rtpmgr_abi::{DIR_BOTH, PORT_LOOPBACK};
    use std::net::UdpSocket;
    use std::path::Path;
    use std::time::Instant;

    /// Run packets of `lens` bytes (the `i`th filled with `i`) through an
    /// egress stream to `dest` on the simulator's loopback port (started in
    /// both directions there, so what is written to-device comes back
    /// from-device, as a peripheral's output would); the stream once the
    /// transmitter has taken them all.
    fn egress(gso: bool, lens: &[usize], dest: std::net::SocketAddr) -> Arc<Stream> {
        let text = format!(
            "[[stream]]\nname = \"e\"\ndirection = \"egress\"\nbind = \"127.0.0.1:0\"\ndestination = \"{dest}\"\nmedia_port = \"loopback\"\n"
        );
        let cfg = rtpmgr_config::Config::parse(&text, Path::new("t.toml")).unwrap().streams.remove(0);
        let socket = crate::net::open_stream_socket(&cfg, 1 << 20, false).unwrap();
        let sim: Arc<dyn Backend> = Arc::new(SimBackend::default());
        let region = sim.configure(64, 2048).unwrap();
        sim.start_stream(0, PORT_LOOPBACK, DIR_BOTH).unwrap();
        let stream = Arc::new(Stream::new(0, cfg, PORT_LOOPBACK, socket, 2016));
        assert!(stream.connected, "an egress socket is connected to its destination");
        assert_eq!(stream.socket.peer_addr().unwrap(), dest);
        let table = Arc::new(StreamTable::default());
        table.insert(Arc::clone(&stream));
        let mut tx = Transmitter::new(
            Arc::clone(&sim),
            &region,
            table,
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            gso,
            Arc::new(Waker::new().unwrap()),
            Arc::new(ThreadStats::default()),
        )
        .unwrap();
        let mut to_dev = region.producer(RingId::ToDevice);
        for (i, &len) in lens.iter().enumerate() {
            to_dev.payload_mut(i as u32)[..len].fill(i as u8);
            to_dev.set_header(i as u32, &SlotHeader { len: len as u32, stream_id: 0, ..Default::default() });
        }
        if to_dev.publish(lens.len() as u32) {
            sim.kick().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut taken = 0;
        while taken < lens.len() {
            assert!(Instant::now() < deadline, "the transmitter took {taken} of {}", lens.len());
            let n = tx.pass();
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            taken += n as usize;
        }
        stream
    }

    /// An egress stream's packets reach the destination through the
    /// connected socket, all counted as sent.
    fn egress_through_connected_socket(gso: bool, lens: &[usize]) {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let stream = egress(gso, lens, peer.local_addr().unwrap());
        let mut buf = [0u8; 2048];
        for (i, &len) in lens.iter().enumerate() {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((n, from), (len, stream.socket.local_addr().unwrap()), "datagram {i}");
            assert!(buf[..n].iter().all(|&b| b == i as u8), "datagram {i}'s bytes");
        }
        let c = stream.counters();
        assert_eq!((c.sent_packets, c.send_errors), (lens.len() as u64, 0));
        assert_eq!(c.sent_bytes, lens.iter().sum::<usize>() as u64);
    }

    #[test]
    fn an_egress_stream_sends_on_its_connected_socket_with_sendmmsg() {
        egress_through_connected_socket(false, &[1316, 1316, 200, 7, 1316]);
    }

    #[test]
    fn an_egress_stream_sends_on_its_connected_socket_with_gso() {
        // A GSO group of three, then datagrams one by one.
        egress_through_connected_socket(true, &[1316, 1316, 200, 1316, 7]);
    }

    /// Nobody listens at the destination: each datagram draws an ICMP port
    /// unreachable, which a connected socket (unlike an unconnected one)
    /// reports on its next send. Every datagram still goes out and none
    /// counts as an error, as before the socket was connected.
    #[test]
    fn a_connected_socket_sends_past_icmp_errors_of_earlier_datagrams() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // With GSO, each send is a group of three (one call) or a lone
        // datagram (a sendmmsg of one), so the error of the previous call's
        // datagrams is pending when the next call begins: both the GSO and
        // the sendmmsg path meet it. Without GSO, one sendmmsg meets them
        // between its datagrams, where the kernel ends the call early.
        let lens: Vec<usize> = [100, 100, 50, 7].repeat(5);
        for gso in [false, true] {
            let stream = egress(gso, &lens, closed);
            assert!(stream.connected);
            let c = stream.counters();
            assert_eq!((c.sent_packets, c.send_errors), (20, 0), "gso {gso}");
        }
    }

    #[test]
    fn gso_groups_follow_the_kernel_rules() {
        assert_eq!(gso_group([]), 0);
        assert_eq!(gso_group([1316]), 1);
        assert_eq!(gso_group([1316; 10]), 10);
        // A shorter one ends the group, and belongs to it.
        assert_eq!(gso_group([1316, 1316, 200, 1316]), 3);
        // A longer one cannot follow.
        assert_eq!(gso_group([200, 1316, 1316]), 1);
        // Empty datagrams are never segments.
        assert_eq!(gso_group([0, 0]), 1);
        assert_eq!(gso_group([172, 0, 172]), 1);
        // At most GSO_MAX_SEGMENTS and GSO_MAX_BYTES.
        assert_eq!(gso_group([172; 100]), GSO_MAX_SEGMENTS);
        assert_eq!(gso_group([1316; 64]), GSO_MAX_BYTES / 1316);
        assert_eq!(gso_group([8000; 64]), GSO_MAX_BYTES / 8000);
    }
}
