// SPDX-License-Identifier: MIT
//! Hostile use of the `udp` port: every bad argument and socket refused
//! with its errno, and stop, restart, RESET and close while datagrams
//! pour in.

use super::*;

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
    ensure!(crate::raw_arg(&dev, abi::RTPMGR_IOC_GET_NET_STATUS, &mut st) == Err(Errno::EINVAL), "padding set");
    // A loopback stream is no udp stream.
    dev.start_stream(4, abi::PORT_LOOPBACK, abi::DIR_BOTH).map_err(fail("start loopback"))?;
    expect_errno("net status of a loopback stream", dev.net_status(4), Errno::ENOENT)?;
    // A forward target must send: stream 3 only receives.
    let (mut f, _f_sock) = net_spec(5, abi::DIR_FROM_DEVICE, Some(addr(V4, free_port(V4)?)), None)?;
    f.forward_to = 3;
    expect_errno("forward to a receiving stream", dev.start_net_stream(&f), Errno::EINVAL)?;
    // Bad user pointers.
    ensure!(crate::raw_addr(&dev, abi::RTPMGR_IOC_START_NET_STREAM, 8) == Err(Errno::EFAULT), "bad pointer");
    // The version-1 argument (136 bytes) is another ioctl number now.
    let v1 = abi::ioc(abi::IOC_WRITE, abi::RTPMGR_IOC_MAGIC, 0x09, 136);
    ensure!(crate::raw_addr(&dev, v1, 8) == Err(Errno::ENOTTY), "the version-1 START_NET_STREAM");
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
                let _ = s.send_to(&numbered(n as u32), to);
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
