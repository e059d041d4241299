// SPDX-License-Identifier: MIT
//! The kernel's udp -> udp fast path (issue 18): a `forward_to` between two
//! `udp` streams without the tap is done in softirq on the receiving CPU,
//! in the received socket buffer, without the session worker.

use super::net::{addr, free_port, net_spec, session, start_net, Flood};
use super::{fail, TestResult};
use rtpmgr_abi as abi;
use rtpmgr_test_kit::packet::numbered as rtp_packet;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const A: u32 = 3;
const B: u32 = 9;

/// N RTP packets (junk between them) sent to stream A leave through stream
/// B's socket intact and in order; every one went the fast path (no
/// worker wake-up, no copy), the junk was judged malformed and dropped
/// there, the RTP statistics saw every packet, and the statistics records
/// say what GET_NET_STATUS says. Then B stops under traffic (A's datagrams
/// take the worker path and are counted as forward drops) and A stops.
fn fast(ip: &str) -> TestResult {
    const N: u32 = 2000;
    let (dev, region) = session(64)?;
    let sink = UdpSocket::bind((ip, 0)).map_err(fail("bind sink"))?;
    sink.set_read_timeout(Some(Duration::from_secs(5))).map_err(fail("timeout"))?;
    let to = sink.local_addr().map_err(fail("local_addr"))?;
    start_net(&dev, B, abi::DIR_TO_DEVICE, None, Some(to))?;
    let port = free_port(ip)?;
    let (mut spec, _sock) = net_spec(A, abi::DIR_FROM_DEVICE, Some(addr(ip, port)), None)?;
    spec.flags = abi::NET_F_RTP;
    spec.clock_rate = 8000;
    spec.forward_to = B;
    dev.start_net_stream(&spec).map_err(fail("start A"))?;
    let tx = UdpSocket::bind((ip, 0)).map_err(fail("bind sender"))?;
    tx.connect(addr(ip, port)).map_err(fail("connect"))?;
    let mut buf = vec![0u8; 2048];
    let (mut sent, mut got, mut junk, mut bytes) = (0u32, 0u32, 0u64, 0u64);
    while got < N {
        // At most 32 in flight: nothing drops for want of buffer space.
        while sent < N && sent - got < 32 {
            if sent % 97 == 11 {
                // Not RTP: version 0, and a header longer than the datagram.
                tx.send(if junk % 2 == 0 { b"junk, not RTP" } else { b"\x8f\x60\x00\x01" })
                    .map_err(fail("send junk"))?;
                junk += 1;
            }
            let p = rtp_packet(sent);
            bytes += p.len() as u64;
            tx.send(&p).map_err(fail("send"))?;
            sent += 1;
        }
        let n = sink.recv(&mut buf).map_err(|e| format!("packet {got} of {sent} sent: {e}"))?;
        let want = rtp_packet(got);
        ensure!(buf[..n] == want[..], "packet {got}: {n} bytes differ from the {} sent", want.len());
        got += 1;
    }
    // Everything judged before it was sent: no waiting needed.
    let a = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    let b = dev.net_status(B).map_err(fail("GET_NET_STATUS B"))?;
    let n = u64::from(N);
    ensure!(a.fwd_packets == n && a.fwd_bytes == bytes && a.forward_drops == 0, "A: {a:?}");
    ensure!(a.fwd_fast_packets == n, "not all on the fast path: A: {a:?}");
    ensure!(a.fwd_copies == 0, "the fast path copied: A: {a:?}");
    ensure!(a.worker_wakeups == 0, "the worker was woken: A: {a:?}");
    ensure!(a.malformed == junk && junk > 0 && a.rx_packets == 0 && a.rx_errors == 0, "A: {a:?}");
    ensure!(a.rtp_flags & abi::NET_RTP_SOURCE != 0 && a.ssrc == 0x5EED_0001, "A's source: {a:?}");
    ensure!(a.ext_highest_seq == N - 1 && a.rtp_lost == 0 && a.rtp_duplicates == 0, "A's RTP statistics: {a:?}");
    ensure!(b.tx_packets == n && b.tx_bytes == bytes && b.tx_errors == 0, "B: {b:?}");
    for (id, want) in [(A, &a), (B, &b)] {
        let r = region.stream_stats(id).ok_or_else(|| format!("record {id} kept changing"))?;
        ensure!(r.stream_id == id && r.flags == abi::STATS_RUNNING, "record {id}: {r:?}");
        ensure!(r.counters == *want, "record {id}: {:?}, GET_NET_STATUS: {want:?}", r.counters);
    }
    // The record follows without a system call too (the worker refreshes
    // it a few times a second while the fast path forwards).
    for i in 0..10u32 {
        tx.send(&rtp_packet(N + i)).map_err(fail("send"))?;
        sink.recv(&mut buf).map_err(fail("recv"))?;
    }
    let t = Instant::now();
    loop {
        let r = region.stream_stats(A).ok_or("record A kept changing")?;
        if r.counters.fwd_fast_packets == n + 10 {
            break;
        }
        ensure!(t.elapsed() < Duration::from_secs(3), "record A not refreshed: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(sink.set_read_timeout(Some(Duration::from_millis(200))).is_ok(), "timeout");
    ensure!(sink.recv(&mut buf).is_err(), "an extra datagram reached the sink");

    // The target stops under traffic: no oops, A's datagrams are counted.
    let flood = Flood::new(addr(ip, port))?;
    std::thread::sleep(Duration::from_millis(100));
    dev.stop_stream(B).map_err(fail("stop B"))?;
    std::thread::sleep(Duration::from_millis(100));
    let a2 = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    std::thread::sleep(Duration::from_millis(100));
    let a3 = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    ensure!(a2.fwd_fast_packets > a.fwd_fast_packets, "the flood was not forwarded: {a2:?}");
    ensure!(
        a3.fwd_fast_packets == a2.fwd_fast_packets && a3.fwd_packets == a2.fwd_packets,
        "forwarded after B stopped: {a3:?}"
    );
    ensure!(a3.forward_drops > a2.forward_drops, "no drops counted without a target: {a3:?}");
    // A stops under traffic; then the session closes with a relay running.
    dev.stop_stream(A).map_err(fail("stop A"))?;
    start_net(&dev, B, abi::DIR_TO_DEVICE, None, Some(to))?;
    dev.start_net_stream(&spec).map_err(fail("restart A"))?;
    std::thread::sleep(Duration::from_millis(100));
    let a4 = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    // (Datagrams queued while A was stopped go first, through the worker,
    // so under a flood the restarted relay may stay on the worker path.)
    ensure!(a4.fwd_packets > 0, "the restarted relay forwarded nothing: {a4:?}");
    drop(region);
    drop(dev);
    std::thread::sleep(Duration::from_millis(100));
    drop(flood);
    Ok(())
}

/// Set (`Some`) or take away (`None`) a classic BPF filter on `sock`.
fn socket_filter(sock: &UdpSocket, prog: Option<&[libc::sock_filter]>) -> TestResult {
    let rc = match prog {
        Some(code) => {
            let fprog = libc::sock_fprog { len: code.len() as u16, filter: code.as_ptr().cast_mut() };
            // SAFETY: `fprog` points at `code`, alive for the call, which
            // copies the program; the size is the struct's.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_FILTER,
                    (&raw const fprog).cast(),
                    size_of::<libc::sock_fprog>() as libc::socklen_t,
                )
            }
        }
        // SO_DETACH_FILTER ignores its argument, but setsockopt wants at
        // least an int's worth of one (EINVAL otherwise).
        None => {
            let unused: libc::c_int = 0;
            // SAFETY: `unused` is an int alive for the call, of the size given.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_DETACH_FILTER,
                    (&raw const unused).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        }
    };
    ensure!(
        rc == 0,
        "{}: {}",
        if prog.is_some() { "SO_ATTACH_FILTER" } else { "SO_DETACH_FILTER" },
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// What the fast path must not skip: the receiving socket's own rules and
/// the target's connection. A socket filter on A that drops everything
/// (what a cgroup BPF program or an LSM refusing the peer would do too)
/// keeps every datagram from B: UDP drops and counts them, none is
/// forwarded. Without the filter they go the fast path. A target whose
/// socket user space disconnects (connect AF_UNSPEC) meanwhile has no peer:
/// nothing is sent anywhere, the datagrams leave the fast path; connected
/// again, to another address, it gets the fast path's datagrams there.
fn fast_guarded(ip: &str) -> TestResult {
    const N: u64 = 20;
    let (dev, _region) = session(64)?;
    let sink = UdpSocket::bind((ip, 0)).map_err(fail("bind sink"))?;
    sink.set_read_timeout(Some(Duration::from_millis(300))).map_err(fail("timeout"))?;
    let to = sink.local_addr().map_err(fail("local_addr"))?;
    let (b_spec, b_sock) = net_spec(B, abi::DIR_TO_DEVICE, None, Some(to))?;
    dev.start_net_stream(&b_spec).map_err(fail("start B"))?;
    let port = free_port(ip)?;
    let (mut spec, a_sock) = net_spec(A, abi::DIR_FROM_DEVICE, Some(addr(ip, port)), None)?;
    spec.flags = abi::NET_F_RTP;
    spec.forward_to = B;
    dev.start_net_stream(&spec).map_err(fail("start A"))?;
    let tx = UdpSocket::bind((ip, 0)).map_err(fail("bind sender"))?;
    tx.connect(addr(ip, port)).map_err(fail("connect"))?;
    let mut buf = vec![0u8; 2048];
    let status = |id| dev.net_status(id).map_err(fail("GET_NET_STATUS"));

    // "ret #0": drop every datagram.
    let drop_all = [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];
    socket_filter(&a_sock, Some(&drop_all))?;
    for seq in 0..N as u32 {
        tx.send(&rtp_packet(seq)).map_err(fail("send"))?;
    }
    ensure!(sink.recv(&mut buf).is_err(), "a datagram the socket filter drops was forwarded");
    let a = status(A)?;
    ensure!(a.fwd_packets == 0 && a.fwd_fast_packets == 0, "forwarded past the filter: {a:?}");
    ensure!(a.socket_drops >= N, "the filter's drops are not counted: {a:?}");

    socket_filter(&a_sock, None)?;
    for seq in N as u32..2 * N as u32 {
        tx.send(&rtp_packet(seq)).map_err(fail("send"))?;
        let n = sink.recv(&mut buf).map_err(|e| format!("packet {seq} without the filter: {e}"))?;
        ensure!(buf[..n] == rtp_packet(seq)[..], "packet {seq} differs");
    }
    let a = status(A)?;
    ensure!(a.fwd_fast_packets == N && a.fwd_copies == 0, "not on the fast path without the filter: {a:?}");

    // The target loses its peer: nothing may leave for 127.0.0.1 or a port 0.
    let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
    // SAFETY: a valid sockaddr of the size given, read during the call.
    let rc = unsafe { libc::connect(b_sock.as_raw_fd(), &unspec, size_of::<libc::sockaddr>() as libc::socklen_t) };
    ensure!(rc == 0, "connect(AF_UNSPEC): {}", std::io::Error::last_os_error());
    let b0 = status(B)?;
    for seq in 2 * N as u32..3 * N as u32 {
        tx.send(&rtp_packet(seq)).map_err(fail("send"))?;
    }
    ensure!(sink.recv(&mut buf).is_err(), "sent through a disconnected target");
    std::thread::sleep(Duration::from_millis(100));
    let (a2, b2) = (status(A)?, status(B)?);
    ensure!(a2.fwd_fast_packets == N, "the fast path sent through a disconnected target: {a2:?}");
    ensure!(b2.tx_packets == b0.tx_packets, "B sent without a peer: {b2:?}");
    ensure!(
        b2.tx_errors + a2.forward_drops >= b0.tx_errors + a.forward_drops + N,
        "the refused sends are not counted: A {a2:?}, B {b2:?}"
    );

    // Connected again, to another sink: the fast path follows it (the
    // route the socket caches is the new one), nothing reaches the old one.
    let sink2 = UdpSocket::bind((ip, 0)).map_err(fail("bind second sink"))?;
    sink2.set_read_timeout(Some(Duration::from_secs(5))).map_err(fail("timeout"))?;
    b_sock.connect(sink2.local_addr().map_err(fail("local_addr"))?).map_err(fail("connect B again"))?;
    for seq in 3 * N as u32..4 * N as u32 {
        tx.send(&rtp_packet(seq)).map_err(fail("send"))?;
        let n = sink2.recv(&mut buf).map_err(|e| format!("packet {seq} after B connected again: {e}"))?;
        ensure!(buf[..n] == rtp_packet(seq)[..], "packet {seq} differs");
    }
    ensure!(sink.recv(&mut buf).is_err(), "a datagram reached the old sink");
    let a3 = status(A)?;
    ensure!(a3.fwd_fast_packets == 2 * N, "not on the fast path after connecting again: {a3:?}");
    Ok(())
}

pub(crate) fn udp_fast_guarded_v4() -> TestResult {
    fast_guarded("127.0.0.1")
}

pub(crate) fn udp_fast_guarded_v6() -> TestResult {
    fast_guarded("::1")
}

pub(crate) fn udp_fast_v4() -> TestResult {
    fast("127.0.0.1")
}

pub(crate) fn udp_fast_v6() -> TestResult {
    fast("::1")
}
