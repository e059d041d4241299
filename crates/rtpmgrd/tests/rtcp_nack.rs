// SPDX-License-Identifier: MIT
//! RTCP, NACK and retransmission against a sender written here (loopback):
//! it leaves out packets, answers rtpmgrd's generic NACKs (RFC 4585) with
//! RFC 4588 RTX packets or RIST-style retransmissions, and reads the
//! receiver reports. The output must be lossless and in order.

mod common;
use common::*;
use rtp::rtcp;
use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SSRC: u32 = 0x1234_5670; // even: RIST's retransmission SSRC is SSRC | 1
const RTX_SSRC: u32 = 0x7777_0001;
const RTX_PT: u8 = 97;

fn config(dir: &TempDir, port: u16, dest: u16, extra: &str) -> String {
    relay_config(dir, &[("tv1", port, dest)]).replace(
        "media_port = \"loopback\"\n",
        &format!("media_port = \"loopback\"\nreorder_ms = 300\nnack = true\n{extra}"),
    )
}

/// What the sender's RTCP side saw.
#[derive(Default)]
struct Seen {
    nacked: Vec<u16>,
    rr_blocks: Vec<rtcp::ReportBlock>,
    rr_from: Vec<u32>,
    compound_without_sdes: u64,
}

/// The responder's state, shared with the test.
#[derive(Default)]
struct Shared {
    seen: Mutex<Seen>,
    stop: AtomicBool,
    retransmitted: AtomicU64,
}

/// Answers NACKs arriving on `rtcp_sock` by sending the packets asked for
/// (as RTX, or as RIST retransmissions) from `media_sock` to `to`.
fn answer_nacks(
    rtcp_sock: UdpSocket,
    media_sock: UdpSocket,
    to: u16,
    originals: Arc<HashMap<u16, Vec<u8>>>,
    rist: bool,
    shared: Arc<Shared>,
) -> std::thread::JoinHandle<()> {
    rtcp_sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut rtx_seq = 0u16;
        while !shared.stop.load(Ordering::Relaxed) {
            let Ok(n) = rtcp_sock.recv(&mut buf) else { continue };
            let Some(pkts) = rtcp::parse_compound(&buf[..n]) else { continue };
            let pkts: Vec<_> = pkts.collect();
            let mut s = shared.seen.lock().unwrap();
            if !pkts.iter().any(|p| p.pt == rtcp::PT_SDES) {
                s.compound_without_sdes += 1;
            }
            for p in &pkts {
                if let Some((from, blocks)) = rtcp::report_blocks(p) {
                    s.rr_from.push(from);
                    s.rr_blocks.extend(blocks);
                }
                let Some((_, media, seqs)) = rtcp::nack(p) else { continue };
                assert_eq!(media, SSRC, "the NACK names the media SSRC");
                for seq in seqs {
                    s.nacked.push(seq);
                    let Some(orig) = originals.get(&seq) else { continue };
                    let pkt = if rist {
                        let mut p = orig.clone();
                        p[11] |= 1;
                        p
                    } else {
                        let o = rtp::RtpPacket::parse(orig).unwrap();
                        let mut payload = seq.to_be_bytes().to_vec();
                        payload.extend_from_slice(o.payload());
                        rtx_seq = rtx_seq.wrapping_add(1);
                        rtp::RtpBuilder::new(RTX_PT, rtx_seq, o.timestamp(), RTX_SSRC).to_vec(&payload)
                    };
                    media_sock.send_to(&pkt, ("127.0.0.1", to)).unwrap();
                    shared.retransmitted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

fn sender_report(ntp: u64, packets: u32) -> Vec<u8> {
    let mut buf = [0u8; 128];
    let info = rtcp::SenderInfo { ssrc: SSRC, ntp, rtp_ts: 0, packets, octets: packets * 1316 };
    let mut n = rtcp::write_sr(&mut buf, &info, &[]).unwrap();
    n += rtcp::write_sdes_cname(&mut buf[n..], SSRC, b"test-sender").unwrap();
    buf[..n].to_vec()
}

/// Sends `n` packets paced (about 2,000/s), leaving out every one with
/// `seq % 100 == 37`, and an SR every 200 ms.
fn send_with_holes(media: &UdpSocket, rtcp_to: (&UdpSocket, u16), port: u16, all: &[Vec<u8>]) -> u64 {
    let mut left_out = 0;
    let t0 = Instant::now();
    for (i, p) in all.iter().enumerate() {
        if i % 100 == 37 {
            left_out += 1;
        } else {
            media.send_to(p, ("127.0.0.1", port)).unwrap();
        }
        if i % 400 == 0 {
            let ntp = 0x0000_1234_0000_0000u64 + ((i as u64) << 16);
            rtcp_to.0.send_to(&sender_report(ntp, i as u32), ("127.0.0.1", rtcp_to.1)).unwrap();
        }
        let due = t0 + Duration::from_micros(500 * i as u64);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
    }
    left_out
}

#[test]
fn nack_and_rfc4588_rtx_make_a_lossy_stream_lossless() {
    let dir = TempDir::new("nack-rtx");
    let sink = Sink::start();
    let port = free_udp_port();
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let fb = UdpSocket::bind("127.0.0.1:0").unwrap();
    let extra =
        format!("rtcp = \"port+1\"\nrtcp_peer = \"{}\"\nrtx_payload_type = {RTX_PT}\n", fb.local_addr().unwrap());
    let daemon = Daemon::start(&dir, &config(&dir, port, sink.port, &extra));
    const N: usize = 6_000;
    let all: Vec<Vec<u8>> = (0..N as u32).map(|s| rtp_packet(SSRC, 60_000 + s)).collect();
    let originals: Arc<HashMap<u16, Vec<u8>>> =
        Arc::new(all.iter().enumerate().map(|(i, p)| ((60_000 + i as u32) as u16, p.clone())).collect());
    let shared = Arc::new(Shared::default());
    let responder =
        answer_nacks(fb.try_clone().unwrap(), media.try_clone().unwrap(), port, originals, false, Arc::clone(&shared));
    let left_out = send_with_holes(&media, (&fb, port + 1), port, &all);
    sink.wait_for(N as u64, Duration::from_secs(20));
    // Long enough for a regular receiver report after the first one.
    std::thread::sleep(Duration::from_millis(300));
    let st = daemon.status().streams.remove(0);
    shared.stop.store(true, Ordering::Relaxed);
    responder.join().unwrap();
    let got = sink.take();
    assert_eq!(got.len(), N, "lossless");
    assert!(got == all, "every packet, in order, byte-identical (the RTX ones restored)");

    let r = st.rtcp.clone().expect("an RTCP report");
    let b = st.reorder.clone().unwrap();
    assert_eq!(left_out, 60);
    assert_eq!(r.repaired, left_out, "{r:?}");
    assert_eq!(r.rtx_received, shared.retransmitted.load(Ordering::Relaxed), "{r:?}");
    assert!(r.nack_sent >= 1 && r.nack_requested >= left_out, "{r:?}");
    assert_eq!((b.skipped, b.late, b.released), (0, 0, N as u64), "{b:?}");
    // The input statistics keep the network's loss; the RTX SSRC is no
    // source of its own.
    assert_eq!((st.lost, st.ssrc, st.ssrc_changes), (left_out as i64, Some(SSRC), 0), "{st:?}");
    assert!(r.sr_received >= 10, "{r:?}");
    assert_eq!(r.peer.as_deref(), Some(fb.local_addr().unwrap().to_string().as_str()));

    let s = shared.seen.lock().unwrap();
    assert_eq!(s.compound_without_sdes, 0, "every compound packet carries SDES CNAME");
    let mut nacked = s.nacked.clone();
    nacked.sort_unstable();
    nacked.dedup();
    let want: Vec<u16> = (0..N).filter(|i| i % 100 == 37).map(|i| (60_000 + i as u32) as u16).collect();
    let mut want_sorted = want.clone();
    want_sorted.sort_unstable();
    assert_eq!(nacked, want_sorted, "exactly the packets left out were asked for");
    // Receiver reports: from rtpmgrd's SSRC, about the media SSRC.
    assert!(s.rr_from.iter().all(|&f| f == r.ssrc));
    let last = s.rr_blocks.last().expect("receiver reports");
    assert_eq!(last.ssrc, SSRC);
    assert!(last.highest_seq > 60_000, "extended highest sequence number: {last:?}");
    assert!(last.lsr >> 16 == 0x1234 && last.lsr != 0, "LSR echoes the SR: {last:?}");
    drop(s);
    assert!(daemon.stop().success());
}

#[test]
fn rist_style_retransmissions_on_a_muxed_port() {
    let dir = TempDir::new("nack-rist");
    let sink = Sink::start();
    let port = free_udp_port();
    // One socket for RTP and RTCP (rtcp-mux): rtpmgrd answers to where the
    // RTP comes from.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let daemon = Daemon::start(&dir, &config(&dir, port, sink.port, "rtcp = \"mux\"\n"));
    const N: usize = 3_000;
    let all: Vec<Vec<u8>> = (0..N as u32).map(|s| rtp_packet(SSRC, s)).collect();
    let originals: Arc<HashMap<u16, Vec<u8>>> =
        Arc::new(all.iter().enumerate().map(|(i, p)| (i as u16, p.clone())).collect());
    let shared = Arc::new(Shared::default());
    let responder =
        answer_nacks(sock.try_clone().unwrap(), sock.try_clone().unwrap(), port, originals, true, Arc::clone(&shared));
    let left_out = send_with_holes(&sock, (&sock, port), port, &all);
    wait_until("every packet relayed", Duration::from_secs(20), || daemon.status().streams[0].sent_packets >= N as u64);
    std::thread::sleep(Duration::from_millis(100));
    let st = daemon.status().streams.remove(0);
    shared.stop.store(true, Ordering::Relaxed);
    responder.join().unwrap();
    // rtpmgrd's sender reports share the destination port (rtcp-mux).
    let (reports, got): (Vec<Vec<u8>>, Vec<Vec<u8>>) = sink.take().into_iter().partition(|d| rtcp::is_rtcp(d));
    assert!(reports
        .iter()
        .all(|r| rtcp::parse_compound(r).is_some_and(|mut p| p.next().is_some_and(|p| p.pt == rtcp::PT_SR))));
    if got != all {
        let first = got.iter().zip(&all).position(|(a, b)| a != b);
        panic!("not lossless/in order: {} of {N}, first difference at {first:?}; {st:?}", got.len());
    }
    let r = st.rtcp.clone().unwrap();
    assert_eq!((r.mode.as_str(), r.repaired, r.rtx_received), ("mux", left_out, 0), "{r:?}");
    assert_eq!(r.rist_received, shared.retransmitted.load(Ordering::Relaxed));
    assert!(r.sr_received >= 5, "SRs on the RTP port are RTCP, not malformed: {r:?}");
    assert_eq!((st.malformed, st.ssrc_changes), (0, 0), "{st:?}");
    assert!(daemon.stop().success());
}
