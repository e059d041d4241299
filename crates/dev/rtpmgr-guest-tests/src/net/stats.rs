// SPDX-License-Identifier: MIT
//! The module's per-stream RFC 3550 statistics (`NET_F_RTP`), checked
//! against the user-space `rtp` crate over the same trace.

use super::*;

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
        let (mut window, mut got) = (Window::new(pkts.len() as u32, 64), 0usize);
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < pkts.len() {
            ensure!(Instant::now() < deadline, "stalled: sent {}, received {got}", window.sent());
            let extra = |i| if i % 500 == 9 { vec![b"\x40 not RTP".to_vec()] } else { vec![] };
            window.fill(&tx, got as u32, extra, |i| pkts[i as usize].clone())?;
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
    let pkts: Vec<Vec<u8>> = trace.iter().map(|&q| with_ssrc(q, SSRC)).collect();
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
    let pkts: Vec<Vec<u8>> = (100..110u16).map(|q| with_ssrc(q, 0xABCD)).collect();
    send_all(&pkts, &mut rx)?;
    let c = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    ensure!(c.ssrc == 0xABCD && c.ssrc_changes == 1 && c.rtp_received == 10 && c.rtp_lost == 0, "{c:?}");
    ensure!(c.ext_highest_seq == 109, "{c:?}");
    dev.stop_stream(STREAM).map_err(fail("STOP_STREAM"))?;
    Ok(())
}

/// A statistics record is written when its stream's counters change, not
/// on every worker pass: while another stream of the session keeps the
/// worker busy, an idle stream's record stays as it was, `updated_ns` and
/// its seqcount included; its first datagram moves it.
pub(crate) fn udp_stats_idle_record_v4() -> TestResult {
    const BUSY: u32 = 3;
    const IDLE: u32 = 4;
    const N: u64 = 200;
    let (dev, region) = session(256)?;
    let (busy_port, idle_port) = (free_port(V4)?, free_port(V4)?);
    start_net(&dev, BUSY, abi::DIR_FROM_DEVICE, Some(addr(V4, busy_port)), None)?;
    start_net(&dev, IDLE, abi::DIR_FROM_DEVICE, Some(addr(V4, idle_port)), None)?;
    let record = |id| region.stream_stats(id).ok_or_else(|| format!("record {id} kept changing"));
    let idle0 = record(IDLE)?;
    let busy0 = record(BUSY)?;
    ensure!(idle0.flags == abi::STATS_RUNNING && idle0.stream_id == IDLE, "record {IDLE} at start: {idle0:?}");
    let tx = UdpSocket::bind((V4, 0)).map_err(fail("bind sender"))?;
    // In bursts with pauses, so the worker runs (and publishes) many times.
    for burst in 0..N / 10 {
        for i in 0..10 {
            tx.send_to(&numbered((burst * 10 + i) as u32), addr(V4, busy_port)).map_err(fail("send"))?;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let b = net_status_until(&dev, BUSY, |c| c.rx_packets >= N)?;
    ensure!(b.rx_packets == N, "stream {BUSY} received {} of {N}", b.rx_packets);
    let busy1 = record(BUSY)?;
    ensure!(busy1.counters == b && busy1.updated_ns > busy0.updated_ns, "record {BUSY}: {busy1:?}");
    let idle1 = record(IDLE)?;
    ensure!(idle1 == idle0, "the idle stream's record was rewritten: {idle0:?} then {idle1:?}");
    tx.send_to(&numbered(0), addr(V4, idle_port)).map_err(fail("send"))?;
    let i = net_status_until(&dev, IDLE, |c| c.rx_packets >= 1)?;
    let idle2 = record(IDLE)?;
    ensure!(
        i.rx_packets == 1 && idle2.counters == i && idle2.updated_ns > idle0.updated_ns && idle2.seq != idle0.seq,
        "record {IDLE} after its datagram: {idle2:?}"
    );
    Ok(())
}
