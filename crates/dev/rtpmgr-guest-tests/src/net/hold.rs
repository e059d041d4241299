// SPDX-License-Identifier: MIT
//! `--hold-udp` and `--hold-relay`: a stream held open while
//! ci/guest/init floods it and tries rmmod.

use super::*;

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
