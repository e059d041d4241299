// SPDX-License-Identifier: MIT
//! Multicast `udp` streams on `lo`: any-source and source-specific
//! (SSM) joins that receive the group's datagrams and no other source's,
//! and sending to a group with a multicast TTL / hop limit.

use super::*;

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
    let g = group.parse().expect("literal address");
    mcast::join(&sock, g, source, lo).map_err(|e| format!("join {group} (source {source:?}): {e}"))?;
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
                    s.send_to(&numbered(100_000 + sent), to).map_err(fail("send from the other source"))?;
                    foreign += 1;
                }
            }
            tx.send_to(&numbered(sent), to).map_err(fail("send to the group"))?;
            sent += 1;
        }
        let n = rx.available().map_err(|e| format!("bad from-device indices {e:?}"))?;
        for i in 0..n {
            let h: SlotHeader = rx.header(i);
            ensure!(h.stream_id == STREAM, "slot stream id {}", h.stream_id);
            let want = numbered(got);
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
        ensure!(i < N && buf[..n] == numbered(i)[..], "a datagram that is no packet sent ({n} bytes, seq {i})");
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
