// SPDX-License-Identifier: MIT
//! In-kernel forwarding (`forward_to`): a relay from one `udp` stream's
//! socket to another's, with and without the tap into the from-device
//! ring, and forwarding into a media port (loopback, the DT-bound DMA
//! port) whose returned packets come back on the ring.

use super::*;

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
    // At most 32 in flight (and 32 tap copies unread): nothing drops.
    let (mut window, mut got, mut tapped, mut junk) = (Window::new(N, 32), 0u32, 0u32, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < N || (tap && tapped < N) {
        let sent = window.sent();
        ensure!(Instant::now() < deadline, "stalled: sent {sent}, relayed {got}, tapped {tapped}");
        let done = if tap { got.min(tapped) } else { got };
        let extra = |i| {
            if i % 89 == 7 {
                junk += 1;
                vec![b"junk, not RTP".to_vec()]
            } else {
                vec![]
            }
        };
        window.fill(&tx, done, extra, numbered)?;
        let sent = window.sent();
        if got < sent {
            let n = sink.recv(&mut buf).map_err(|e| format!("packet {got} of {sent} sent: {e}"))?;
            let want = numbered(got);
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
            let want = numbered(tapped);
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
    let bytes = window.bytes();
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
        tx.send(&numbered(i)).map_err(fail("send"))?;
        let n = sink.recv(&mut buf).map_err(|e| format!("packet {i} with a full tap: {e}"))?;
        ensure!(buf[..n] == numbered(i)[..], "packet {i} with a full tap differs");
    }
    let a2 = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    ensure!(a2.fwd_packets == n + u64::from(M) && a2.forward_drops == 0, "A: {a2:?}");
    if tap {
        ensure!(a2.tap_packets - a.tap_packets == 256 && a2.tap_drops == u64::from(M) - 256, "full tap: {a2:?}");
    }

    // Target stopped while traffic flows: counted drops, A keeps running.
    dev.stop_stream(B).map_err(fail("stop B"))?;
    for i in 0..50 {
        tx.send(&numbered(i)).map_err(fail("send"))?;
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
    // At most 32 in flight: neither the socket nor the ring overflows.
    let (mut window, mut got, mut junk) = (Window::new(N, 32), 0u32, 0u64);
    // One valid RTP datagram larger than a slot's payload (2016 bytes): the
    // port takes it, its returned copy cannot fit and is counted as a drop.
    let mut big = numbered(77_777);
    big.resize(3000, 0xCD);
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < N {
        ensure!(Instant::now() < deadline, "stalled: sent {}, returned {got}", window.sent());
        let extra = |i| match i {
            _ if i % 83 == 11 => {
                junk += 1;
                vec![b"junk between RTP packets".to_vec()]
            }
            1500 => vec![big.clone()],
            _ => vec![],
        };
        window.fill(&tx, got, extra, numbered)?;
        let n = ring.available().map_err(|e| format!("bad from-device indices {e:?}"))?;
        for i in 0..n {
            let h: SlotHeader = ring.header(i);
            ensure!(h.stream_id == P, "returned packet {got}: stream id {}", h.stream_id);
            ensure!(h.timestamp_ns != 0, "returned packet {got}: no timestamp");
            let want = numbered(got);
            ensure!(ring.payload(i, h.len) == &want[..], "returned packet {got}: {} bytes differ", h.len);
            got += 1;
        }
        release_or_wait(&dev, &mut ring, n)?;
    }
    let n = u64::from(N);
    let big_len = big.len() as u64;
    let bytes = window.bytes();
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
            tx.send(&numbered(i)).map_err(fail("send"))?;
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
        ensure!(h.stream_id == P && ring.payload(i, h.len) == &numbered(i)[..], "full ring entry {i} differs");
    }
    if ring.release(n) {
        dev.kick().map_err(fail("KICK"))?;
    }
    // Room again: returns resume.
    for i in 0..10 {
        tx.send(&numbered(5000 + i)).map_err(fail("send"))?;
    }
    let t = Instant::now();
    let mut k = 0;
    while k < 10 && t.elapsed() < Duration::from_secs(10) {
        let n = ring.available().map_err(|e| format!("{e:?}"))?;
        for i in 0..n {
            let h: SlotHeader = ring.header(i);
            ensure!(ring.payload(i, h.len) == &numbered(5000 + k)[..], "packet {k} after the drain differs");
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
