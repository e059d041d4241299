// SPDX-License-Identifier: MIT
//! The daemon's performance behaviour that can be asserted: UDP GSO output
//! arrives as the original datagrams, and an idle daemon sleeps.

mod common;
use common::*;
use std::time::Duration;

const SSRC: u32 = 0x0bad_cafe;

/// An RTP packet of `seq` with a payload of `len` bytes (payload type 33).
fn sized_packet(seq: u32, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (seq as u8).wrapping_mul(7) ^ i as u8).collect();
    rtp::RtpBuilder::new(rtp::PT_MP2T, seq as u16, seq.wrapping_mul(90), SSRC).to_vec(&payload)
}

/// Runs of equal sizes with shorter and longer packets between them: what
/// a GSO send may group and where a group must end.
fn mixed_packets(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = match i % 50 {
                0..=29 => 1316,
                30 => 400,
                31..=39 => 160,
                40 => 1400,
                _ => 1316,
            };
            sized_packet(i, len)
        })
        .collect()
}

fn relay_with(dir: &TempDir, port: u16, dest: u16, daemon_lines: &str) -> String {
    relay_config(dir, &[("gso", port, dest)]).replace("[buffer]", &format!("{daemon_lines}\n\n[buffer]"))
}

fn run_relay(gso: bool) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, rtpmgr_control::StatusReport) {
    run_relay_with(if gso { "gso-on" } else { "gso-off" }, &format!("udp_gso = {gso}"))
}

fn run_relay_with(name: &str, daemon_lines: &str) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, rtpmgr_control::StatusReport) {
    let dir = TempDir::new(name);
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &relay_with(&dir, port, sink.port, daemon_lines));
    const N: u32 = 20_000;
    let packets = mixed_packets(N);
    // Bursts, so that the ring holds runs of one stream for the transmitter.
    send_windowed(port, &packets, &sink, 512);
    sink.wait_for(N as u64, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    let status = daemon.status();
    assert!(daemon.stop().success());
    (packets, sink.take(), status)
}

/// With `udp_gso = true` the transmitter sends runs with `UDP_SEGMENT`,
/// and on loopback every datagram arrives on its own, with its own size
/// and content, in order; with `udp_gso = false` no GSO send is made.
#[test]
fn gso_output_arrives_as_individual_datagrams_of_the_right_sizes() {
    for gso in [true, false] {
        let (sent, got, status) = run_relay(gso);
        assert_eq!(got.len(), sent.len(), "gso {gso}: each datagram exactly once");
        for (i, (s, r)) in sent.iter().zip(&got).enumerate() {
            assert_eq!(s.len(), r.len(), "gso {gso}: datagram {i} has another size");
            assert!(s == r, "gso {gso}: datagram {i} differs or is out of order");
        }
        let tx = status.threads.iter().find(|t| t.name == "tx").expect("transmitter counters");
        assert_eq!(tx.packets, sent.len() as u64);
        if gso {
            assert!(tx.gso_sends > 0, "no GSO send: {tx:?}");
            // Fewer sends than datagrams: runs went out together.
            assert!(tx.syscalls < tx.packets, "{tx:?}");
        } else {
            assert_eq!(tx.gso_sends, 0, "{tx:?}");
        }
        assert_eq!(status.streams[0].send_errors, 0);
    }
}

/// Context switches of each thread of `pid` (voluntary + involuntary).
fn switches(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let p = e.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default().trim().to_string();
        let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
        let n: u64 = status
            .lines()
            .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        out.push((format!("{name}/{}", e.file_name().to_string_lossy()), n));
    }
    out
}

/// An idle daemon (a running stream, no traffic) wakes each of its threads
/// at most about once a second: over 3 s, at most 6 context switches per
/// thread (3 timeouts, the boundary, and slack for a preemption).
#[test]
fn an_idle_daemon_wakes_at_most_once_a_second() {
    let dir = TempDir::new("idle");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &relay_config(&dir, &[("idle", port, sink.port)]));
    // One packet through, so every thread has run, then quiet.
    send_windowed(port, &[sized_packet(0, 188)], &sink, 1);
    sink.wait_for(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let pid = daemon.child.id();
    let before = switches(pid);
    std::thread::sleep(Duration::from_secs(3));
    let after = switches(pid);
    assert!(after.len() >= 3, "expected the controller, receiver and transmitter: {after:?}");
    for (name, n) in &after {
        let Some((_, b)) = before.iter().find(|(k, _)| k == name) else { continue };
        let d = n - b;
        assert!(d <= 6, "thread {name} switched {d} times in 3 s of idleness (all: {before:?} -> {after:?})");
    }
    assert!(daemon.stop().success());
}

/// `layout = "run-to-completion"`: one data thread (`rtpmgr-rtc`) relays
/// everything intact and in order, and a graceful stop still drains.
#[test]
fn run_to_completion_relays_intact_on_one_thread() {
    let dir = TempDir::new("rtc");
    let sink = Sink::start();
    let port = free_udp_port();
    // A small ring that the bursts fill: the one thread must not wait for
    // to-device space that only its own transmitting makes.
    let config = relay_config(&dir, &[("rtc", port, sink.port)])
        .replace("[buffer]", "layout = \"run-to-completion\"\n\n[buffer]")
        .replace("slot_count = 1024", "slot_count = 64");
    let daemon = Daemon::start(&dir, &config);
    const N: u32 = 20_000;
    let packets = mixed_packets(N);
    send_windowed(port, &packets, &sink, 512);
    sink.wait_for(N as u64, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    let names: Vec<String> = switches(daemon.child.id()).into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n.starts_with("rtpmgr-rtc/")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("rtpmgr-rx/") || n.starts_with("rtpmgr-tx/")), "{names:?}");
    let status = daemon.status();
    assert_eq!(status.streams[0].sent_packets, N as u64);
    assert!(daemon.log_text().contains("run-to-completion"), "{}", daemon.log_text());
    // A last burst, then stop at once: what is in flight still goes out.
    let more: Vec<Vec<u8>> = (N..N + 500).map(|i| sized_packet(i, 1316)).collect();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for p in &more {
        tx.send_to(p, ("127.0.0.1", port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(daemon.stop().success());
    std::thread::sleep(Duration::from_millis(100));
    let got = sink.take();
    assert_eq!(got.len(), (N + 500) as usize, "every packet exactly once");
    for (i, (s, r)) in packets.iter().chain(&more).zip(&got).enumerate() {
        assert!(s == r, "packet {i} differs or is out of order");
    }
}

/// `rx_coalesce_us`: paced packets still all arrive, intact and in order,
/// and the receiver's wake-ups carry more than one packet each.
#[test]
fn interrupt_moderation_keeps_every_packet() {
    let dir = TempDir::new("coalesce");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &relay_with(&dir, port, sink.port, "rx_coalesce_us = 2000"));
    let packets = mixed_packets(2_000);
    // One packet every 200 µs: without moderation each wake-up finds one,
    // with a 2 ms pause about ten.
    send_paced(port, &packets, 1, Duration::from_micros(200));
    sink.wait_for(packets.len() as u64, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(100));
    let status = daemon.status();
    assert!(daemon.stop().success());
    let got = sink.take();
    assert_eq!(got.len(), packets.len());
    assert!(packets.iter().zip(&got).all(|(s, r)| s == r), "a packet differs or is out of order");
    let rx = status.threads.iter().find(|t| t.name == "rx").expect("receiver counters");
    assert_eq!(rx.packets, packets.len() as u64);
    assert!(rx.batches * 2 <= rx.packets, "moderation did not batch: {rx:?}");
}
