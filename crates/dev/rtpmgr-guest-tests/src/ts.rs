// SPDX-License-Identifier: MIT
//! Raw UDP MPEG-TS streams in the module (`NET_F_TS`, rtpmgrd's
//! `format = "udp-ts"` with `mode = "kernel"`).

use super::net::{addr, free_port, net_spec, session, start_net};
use super::{expect_errno, fail, TestResult};
use mpegts::tr101290::{Analyzer, AnalyzerConfig};
use nix::errno::Errno;
use rtpmgr_abi::{self as abi, SlotHeader};
use rtpmgr_ring::RingId;
use rtpmgr_test_kit::sender::Window;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const V4: &str = "127.0.0.1";
const VIDEO: u16 = 0x100;
const AUDIO: u16 = 0x101;

/// The datagrams of an SPTS as an encoder sends them: seven packets each
/// (five video, one audio, one null), each PID's continuity counter
/// stepping, payload bytes unique to the datagram. Datagram `jump_at`
/// carries an audio packet whose counter jumps by 7 with the
/// discontinuity_indicator set (no error).
fn spts(n: usize, jump_at: usize) -> Vec<Vec<u8>> {
    let (mut cc_v, mut cc_a) = (0u8, 0u8);
    (0..n)
        .map(|k| {
            let mut d = Vec::with_capacity(7 * 188);
            for j in 0..7 {
                let mut p = [0u8; 188];
                let (pid, cc, disc) = match j {
                    5 => {
                        let disc = k == jump_at;
                        if disc {
                            cc_a = cc_a.wrapping_add(7);
                        }
                        let c = cc_a;
                        cc_a = cc_a.wrapping_add(1);
                        (AUDIO, c, disc)
                    }
                    6 => (mpegts::PID_NULL, 0, false),
                    _ => {
                        let c = cc_v;
                        cc_v = cc_v.wrapping_add(1);
                        (VIDEO, c, false)
                    }
                };
                p[0] = mpegts::SYNC_BYTE;
                p[1] = (pid >> 8) as u8;
                p[2] = pid as u8;
                let mut body = 4;
                if disc {
                    // Adaptation field of one byte: discontinuity_indicator.
                    p[3] = 0x30 | (cc & 15);
                    p[4] = 1;
                    p[5] = 0x80;
                    body = 6;
                } else {
                    p[3] = 0x10 | (cc & 15);
                }
                for (i, b) in p[body..].iter_mut().enumerate() {
                    *b = (k as u8).wrapping_mul(31).wrapping_add((j * 188 + i) as u8);
                }
                d.extend_from_slice(&p);
            }
            d
        })
        .collect()
}

/// One datagram that is not raw MPEG-TS, by turns: not whole packets, a
/// bad sync byte in the fourth packet, empty, an RTP header in front.
fn junk(i: usize, good: &[u8]) -> Vec<u8> {
    match i % 4 {
        0 => good[..1000].to_vec(),
        1 => {
            let mut d = good.to_vec();
            d[3 * 188] = 0x48;
            d
        }
        2 => Vec::new(),
        _ => rtpmgr_test_kit::packet::packet(rtpmgr_test_kit::PT_MP2T, 1, 0, 1, good),
    }
}

/// Raw TS into the from-device ring: a trace with lost datagrams, a
/// swapped pair, a datagram the network delivered twice, a discontinuity
/// and junk. Every accepted datagram arrives intact and in order, the junk
/// is counted malformed, and the continuity figures are exactly what the
/// `mpegts` crate's analyser finds in the same datagrams (the module
/// compiles the same rules); the statistics record agrees. Then a relay
/// (`forward_to`) passes the good datagrams and nothing else, and
/// `NET_F_RTP | NET_F_TS` is refused.
pub(crate) fn udp_ts_v4() -> TestResult {
    const STREAM: u32 = 11;
    let sent_order: Vec<Vec<u8>> = {
        let all = spts(400, 200);
        let mut order = Vec::new();
        let mut k = 0;
        while k < all.len() {
            if k % 53 == 20 && k + 1 < all.len() {
                order.push(all[k + 1].clone());
                order.push(all[k].clone());
                k += 2;
                continue;
            }
            if k % 40 != 39 {
                order.push(all[k].clone());
                if k % 31 == 5 {
                    order.push(all[k].clone());
                }
            }
            k += 1;
        }
        order
    };
    // What the user-space analyser makes of the same datagrams.
    let mut want = Analyzer::new(AnalyzerConfig::default());
    let mut judged = 0u64;
    for (t, d) in sent_order.iter().enumerate() {
        if want.datagram(d, t as u64 * 1_000_000) {
            judged += 6;
        }
    }
    let cc = want.cc_counters();
    ensure!(cc.lost > 0 && cc.duplicates > 0 && cc.reordered > 0, "trace too clean: {cc:?}");

    let (dev, region) = session(256)?;
    let port = free_port(V4)?;
    let (mut spec, _sock) = net_spec(STREAM, abi::DIR_FROM_DEVICE, Some(addr(V4, port)), None)?;
    spec.flags = abi::NET_F_RTP | abi::NET_F_TS;
    expect_errno("NET_F_RTP | NET_F_TS", dev.start_net_stream(&spec), Errno::EINVAL)?;
    spec.flags = abi::NET_F_TS;
    dev.start_net_stream(&spec).map_err(fail("START_NET_STREAM"))?;
    let tx = UdpSocket::bind((V4, 0)).map_err(fail("bind sender"))?;
    tx.connect(addr(V4, port)).map_err(fail("connect"))?;
    let mut rx = region.consumer(RingId::FromDevice);
    let (mut window, mut got, mut junk_sent) = (Window::new(sent_order.len() as u32, 64), 0usize, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < sent_order.len() {
        ensure!(Instant::now() < deadline, "stalled: sent {}, received {got}", window.sent());
        let extra = |i| {
            if i % 25 == 3 {
                junk_sent += 1;
                vec![junk(junk_sent as usize - 1, &sent_order[i as usize])]
            } else {
                vec![]
            }
        };
        window.fill(&tx, got as u32, extra, |i| sent_order[i as usize].clone())?;
        let n = rx.available().map_err(|e| format!("{e:?}"))?;
        for j in 0..n {
            let h: SlotHeader = rx.header(j);
            ensure!(h.stream_id == STREAM, "slot of stream {}", h.stream_id);
            ensure!(rx.payload(j, h.len) == &sent_order[got][..], "datagram {got} differs ({} bytes)", h.len);
            got += 1;
        }
        if rx.release(n) {
            dev.kick().map_err(fail("KICK"))?;
        }
        if n == 0 {
            let _ = dev.wait(abi::WAIT_FROM_DEV_READY, 1000);
        }
    }
    let mut c = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    let t = Instant::now();
    while c.malformed < junk_sent && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        c = dev.net_status(STREAM).map_err(fail("GET_NET_STATUS"))?;
    }
    ensure!(c.malformed == junk_sent && c.rx_packets == sent_order.len() as u64, "junk {junk_sent}: {c:?}");
    ensure!(c.rtp_flags == abi::NET_TS_CONTINUITY && c.ssrc == 0, "{c:?}");
    ensure!(c.ts_packets == 7 * sent_order.len() as u64, "{c:?}");
    let got_cc = (c.rtp_received, c.rtp_lost, c.rtp_duplicates, c.rtp_reordered, c.ts_cc_errors);
    let want_cc = (judged, cc.lost as i64, cc.duplicates, cc.reordered, want.counters().cc_error);
    ensure!(got_cc == want_cc, "kernel (judged, lost, dup, late, cc_errors) {got_cc:?} != mpegts {want_cc:?}");
    ensure!(c.rtp_expected == judged + cc.lost, "{c:?}");
    let r = region.stream_stats(STREAM).ok_or("the statistics record kept changing")?;
    ensure!(r.counters == c, "record {:?}, GET_NET_STATUS {c:?}", r.counters);
    dev.stop_stream(STREAM).map_err(fail("STOP_STREAM"))?;

    // The relay: good datagrams forwarded intact, junk dropped.
    const A: u32 = 12;
    const B: u32 = 13;
    let sink = UdpSocket::bind((V4, 0)).map_err(fail("bind sink"))?;
    sink.set_read_timeout(Some(Duration::from_secs(5))).map_err(fail("timeout"))?;
    start_net(&dev, B, abi::DIR_TO_DEVICE, None, Some(sink.local_addr().map_err(fail("local_addr"))?))?;
    let port = free_port(V4)?;
    let (mut spec, _sock) = net_spec(A, abi::DIR_FROM_DEVICE, Some(addr(V4, port)), None)?;
    spec.flags = abi::NET_F_TS;
    spec.forward_to = B;
    dev.start_net_stream(&spec).map_err(fail("start A"))?;
    tx.connect(addr(V4, port)).map_err(fail("connect"))?;
    let good = spts(100, usize::MAX);
    let mut buf = vec![0u8; 2048];
    for (k, d) in good.iter().enumerate() {
        tx.send(&junk(k, d)).map_err(fail("send junk"))?;
        tx.send(d).map_err(fail("send"))?;
        let n = sink.recv(&mut buf).map_err(|e| format!("datagram {k}: {e}"))?;
        ensure!(buf[..n] == d[..], "relayed datagram {k} differs ({n} bytes)");
    }
    sink.set_read_timeout(Some(Duration::from_millis(200))).map_err(fail("timeout"))?;
    ensure!(sink.recv(&mut buf).is_err(), "junk reached the sink");
    let a = dev.net_status(A).map_err(fail("GET_NET_STATUS A"))?;
    ensure!(a.fwd_packets == 100 && a.malformed == 100 && a.ts_packets == 700, "A: {a:?}");
    ensure!(a.rtp_lost == 0 && a.ts_cc_errors == 0 && a.rtp_received == 600, "A: {a:?}");
    dev.stop_stream(A).map_err(fail("STOP_STREAM A"))?;
    dev.stop_stream(B).map_err(fail("STOP_STREAM B"))?;
    Ok(())
}
