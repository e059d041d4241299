// SPDX-License-Identifier: MIT
//! Unicast receive and transmit through `udp` streams: every packet
//! intact, in order and tagged with its stream, IPv4 and IPv6; junk and
//! oversize datagrams counted and dropped; a ring nobody reads fills and
//! the socket's overflow is counted, never lost silently.

use super::*;

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
    // Never more in flight than the ring holds: nothing may be dropped.
    let (mut window, mut got, mut junk) = (Window::new(N, 64), 0u32, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < N {
        ensure!(Instant::now() < deadline, "stalled: sent {}, received {got}", window.sent());
        let extra = |i| match i {
            _ if i % 97 == 50 => {
                junk += 1;
                vec![b"not an RTP packet".to_vec()]
            }
            1000 => {
                // Larger than a slot's payload (2016 bytes): dropped, counted.
                let mut big = numbered(i);
                big.resize(3000, 0xAB);
                vec![big]
            }
            _ => vec![],
        };
        window.fill(&tx, got, extra, numbered)?;
        let n = rx.available().map_err(|e| format!("bad from-device indices {e:?}"))?;
        for i in 0..n {
            let h: SlotHeader = rx.header(i);
            ensure!(h.stream_id == STREAM, "slot stream id {}", h.stream_id);
            ensure!(h.timestamp_ns != 0, "no timestamp");
            let want = numbered(got);
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
        tx.send(&numbered(N + i)).map_err(fail("send"))?;
    }
    let (mut more, mut last) = (0u64, Instant::now());
    while last.elapsed() < Duration::from_millis(500) {
        let n = rx.available().map_err(|e| format!("bad from-device indices {e:?}"))?;
        for i in 0..n {
            let h: SlotHeader = rx.header(i);
            let p = rx.payload(i, h.len);
            ensure!(p.len() >= 4, "a {}-byte slot", h.len);
            let seq = u32::from(u16::from_be_bytes([p[2], p[3]]));
            ensure!(p == &numbered(seq)[..], "a slot that is no packet sent");
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
            let want = numbered(got);
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
