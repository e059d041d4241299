// SPDX-License-Identifier: MIT
//! End to end on the host: the real `rtpmgrd` binary, sim backend, a relay
//! stream on 127.0.0.1 through the loopback media port.

mod common;
use common::*;
use std::time::Duration;

const SSRC: u32 = 0x1234_5678;

/// 100,000 RTP/MP2T packets relayed: every one arrives once, in order,
/// byte-identical, and `rtpmgrctl status --json` agrees with zero loss.
#[test]
fn relays_100k_packets_intact_and_status_agrees() {
    let dir = TempDir::new("relay");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &relay_config(&dir, &[("tv1", port, sink.port)]));
    const N: u32 = 100_000;
    // Start near the 16-bit wrap so the sequence wraps during the run.
    let packets: Vec<Vec<u8>> = (0..N).map(|i| rtp_packet(SSRC, 65_000 + i)).collect();
    send_windowed(port, &packets, &sink, 256);
    sink.wait_for(N as u64, Duration::from_secs(30));
    // Linger a moment: nothing extra (no duplicate) may show up.
    std::thread::sleep(Duration::from_millis(200));
    let got = sink.take();
    assert_eq!(got.len(), N as usize, "each packet exactly once");
    for (i, (sent, recv)) in packets.iter().zip(&got).enumerate() {
        assert!(sent == recv, "packet {i} differs or is out of order");
    }

    let json = daemon.ctl_status_json();
    let s = &json["streams"][0];
    assert_eq!(s["name"], "tv1");
    assert_eq!(s["state"], "running");
    assert_eq!(s["packets"], N);
    assert_eq!(s["bytes"], packets.iter().map(|p| p.len() as u64).sum::<u64>());
    assert_eq!(s["lost"], 0);
    assert_eq!(s["duplicates"], 0);
    assert_eq!(s["reordered"], 0);
    assert_eq!(s["malformed"], 0);
    assert_eq!(s["socket_drops"], 0);
    assert_eq!(s["ring_full_drops"], 0);
    assert_eq!(s["sent_packets"], N);
    assert_eq!(s["send_errors"], 0);
    assert_eq!(s["ssrc"], SSRC);
    assert_eq!(s["device_to_packets"], N);
    assert_eq!(s["device_from_packets"], N);
    assert_eq!(json["session"]["invalid_slots"], 0);
    assert!(s["jitter_ms"].as_f64().unwrap() >= 0.0);

    // The table form names the stream and its packet count.
    let out =
        std::process::Command::new(bin("rtpmgrctl")).arg("-s").arg(&daemon.socket).arg("status").output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    let row = table.lines().find(|l| l.starts_with("tv1 ")).expect("a row for tv1");
    assert!(row.split_whitespace().any(|c| c == "100000"), "{table}");

    let status = daemon.stop();
    assert!(status.success(), "graceful stop exits 0: {status}");
    assert!(!dir.path("control.sock").exists(), "control socket removed on exit");
}

/// Known loss, duplicates and reordering are reported exactly.
#[test]
fn reports_injected_loss_duplicates_and_reordering() {
    let dir = TempDir::new("impair");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &relay_config(&dir, &[("tv1", port, sink.port)]));
    let mut order: Vec<u32> = Vec::new();
    let mut seq = 0u32;
    let (mut lost, mut dups, mut swaps) = (0u64, 0u64, 0u64);
    while seq < 20_000 {
        match seq % 1000 {
            // 7 losses per thousand: a burst of 5 and two singles.
            100..=104 | 300 | 700 => {
                lost += 1;
            }
            // 3 duplicates per thousand (sent twice in a row).
            200 | 500 | 800 => {
                order.push(seq);
                order.push(seq);
                dups += 1;
            }
            // 4 neighbour swaps per thousand: seq+1 goes before seq.
            400 | 600 | 900 | 950 => {
                order.push(seq + 1);
                order.push(seq);
                seq += 1;
                swaps += 1;
            }
            _ => order.push(seq),
        }
        seq += 1;
    }
    let packets: Vec<Vec<u8>> = order.iter().map(|&s| rtp_packet(SSRC, s)).collect();
    send_windowed(port, &packets, &sink, 128);
    sink.wait_for(packets.len() as u64, Duration::from_secs(30));
    let got = sink.take();
    assert_eq!(got, packets, "the relay forwards exactly what it received, in order");
    let s = daemon.status().streams.remove(0);
    assert_eq!((lost, dups, swaps), (140, 60, 80));
    assert_eq!(s.lost, lost as i64, "lost");
    assert_eq!(s.duplicates, dups, "duplicates");
    assert_eq!(s.reordered, swaps, "reordered");
    assert_eq!(s.packets, packets.len() as u64);
    assert!(daemon.stop().success());
}

/// Malformed datagrams are counted and dropped; the stream goes on.
#[test]
fn malformed_packets_are_counted_and_the_stream_goes_on() {
    let dir = TempDir::new("malformed");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &relay_config(&dir, &[("tv1", port, sink.port)]));
    let good = |s: u32| rtp_packet(SSRC, s);
    // 6 bytes: no full header.
    let truncated = rtp::RtpBuilder::new(rtp::PT_MP2T, 1, 0, 0).to_vec(&[])[..6].to_vec();
    let mut v1 = good(9_999);
    v1[0] = 0x40 | (v1[0] & 0x3f); // version 1
    let mut pad = good(9_998);
    pad[0] |= 0x20; // P bit
    *pad.last_mut().unwrap() = 0; // a padding count of 0 cannot be (it counts itself)
    let mut pad_tiny = rtp::RtpBuilder::new(rtp::PT_MP2T, 9_997, 0, SSRC).to_vec(&[1, 2, 3]);
    pad_tiny[0] |= 0x20;
    *pad_tiny.last_mut().unwrap() = 200; // 200 padding bytes in a 15-byte packet
    let mut csrc = rtp::RtpBuilder::new(rtp::PT_MP2T, 9_996, 0, SSRC).to_vec(&[0; 8]);
    csrc[0] |= 0x0f; // CC = 15: 60 bytes of CSRC in a 20-byte packet
    let bad = [truncated, v1, pad, pad_tiny, csrc];
    let mut packets = Vec::new();
    let mut expected = Vec::new();
    for s in 0..2_000u32 {
        packets.push(good(s));
        expected.push(good(s));
        if s % 100 == 50 {
            packets.push(bad[(s / 100) as usize % bad.len()].clone());
        }
    }
    let mut wrong_pt = rtp::RtpBuilder::new(96, 4_000, 0, SSRC).to_vec(&[0; 100]);
    packets.push(std::mem::take(&mut wrong_pt));
    for s in 2_000..2_100u32 {
        packets.push(good(s));
        expected.push(good(s));
    }
    send_paced(port, &packets, 32, Duration::from_millis(1));
    sink.wait_for(expected.len() as u64, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sink.take(), expected, "every good packet relayed, no bad one");
    let s = daemon.status().streams.remove(0);
    assert_eq!(s.malformed, 20, "20 malformed datagrams, 4 of each kind");
    assert_eq!(s.wrong_payload_type, 1);
    assert_eq!(s.packets, 2_100);
    assert_eq!(s.lost, 0);
    assert!(daemon.stop().success());
}

/// `mode = "kernel"` on a device without in-kernel network streams (the
/// simulator): the stream runs in user space, says why in the log and in
/// the status, and relays every packet intact.
#[test]
fn kernel_mode_falls_back_to_user_space_with_a_log_line() {
    let dir = TempDir::new("fallback");
    let sink = Sink::start();
    let port = free_udp_port();
    let config = relay_config(&dir, &[("tv1", port, sink.port)])
        .replace("direction = \"relay\"", "direction = \"relay\"\nmode = \"kernel\"");
    assert!(config.contains("mode = \"kernel\""), "{config}");
    let daemon = Daemon::start(&dir, &config);
    const N: u32 = 2_000;
    let packets: Vec<Vec<u8>> = (0..N).map(|i| rtp_packet(SSRC, i)).collect();
    send_windowed(port, &packets, &sink, 256);
    sink.wait_for(N as u64, Duration::from_secs(30));
    let got = sink.take();
    assert!(got == packets, "{} of {N} packets arrived, or some differ", got.len());

    let s = &daemon.status().streams[0];
    assert_eq!((s.name.as_str(), s.state.as_str(), s.mode.as_str()), ("tv1", "running", "user"));
    let why = s.fallback.as_deref().expect("a fallback reason in the status");
    assert!(why.contains("FEATURE_NET_STREAMS"), "{why}");
    assert_eq!((s.packets, s.sent_packets, s.lost), (N as u64, N as u64, 0));
    let log = daemon.log_text();
    assert!(
        log.contains("stream tv1: mode = \"kernel\" is not available: the device has no in-kernel network streams"),
        "{log}"
    );
    assert!(daemon.stop().success());
}
