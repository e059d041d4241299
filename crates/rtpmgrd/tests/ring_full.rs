// SPDX-License-Identifier: MIT
//! The ring-full policy, with a real bottleneck: inside a network
//! namespace the test creates, a relay sends out through a veth whose
//! token-bucket qdisc lets 2 Mbit/s through while 20 Mbit/s come in. The
//! transmitter's blocking sends back up the from-device ring, the device
//! stops taking to-device slots, and the receiver finds its ring full.
//!
//! * `ring_full = "drop"`: the receiver discards at once and counts
//!   `ring_full_drops`;
//! * `ring_full = "wait"`: datagrams wait in the socket buffer, whose
//!   overflow the kernel counts (`socket_drops`); nothing is discarded by
//!   the daemon.
//!
//! Either way every datagram sent is accounted for: relayed, or counted in
//! exactly one drop counter. Needs root, iproute2 and tc, as CI has.

mod common;
use common::*;
use std::time::{Duration, Instant};

const BURST: u64 = 3000;
/// Sent slowly after the burst: they find room, so the stream is seen to
/// recover after the drops (counted by the socket, read with SO_MEMINFO).
const TAIL: u64 = 20;

fn run(policy: &str) -> Option<rtpmgr_control::StreamReport> {
    let ns = Netns::create(&format!("rf{policy}"))?;
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d1", "up"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["addr", "add", "10.78.0.1/24", "dev", "d0"]);
    // No one answers ARP on the far side: a static neighbour.
    ns.ip(&["neigh", "add", "10.78.0.2", "lladdr", "02:00:00:00:00:02", "dev", "d0"]);
    let tc = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.0, "tc", "qdisc", "add", "dev", "d0", "root", "tbf", "rate", "2mbit"])
        .args(["burst", "16kb", "limit", "64mb"])
        .output()
        .unwrap();
    assert!(tc.status.success(), "tc: {}", String::from_utf8_lossy(&tc.stderr));
    let dir = TempDir::new("ringfull");
    // A small ring and socket buffers, so that the bottleneck shows within
    // a second.
    let config = format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\n\
         socket_buffer_bytes = 65536\n\n[buffer]\nslot_count = 64\nslot_size = 2048\n\n\
         [[stream]]\nname = \"tv1\"\ndirection = \"relay\"\nbind = \"0.0.0.0:5004\"\n\
         destination = \"10.78.0.2:5004\"\npayload_type = 33\nring_full = \"{policy}\"\n",
        dir.path("control.sock").display()
    );
    let daemon = Daemon::start_with(&dir, &config, |p| ns.cmd(p));
    let send = |count: u64, start: u64, bitrate: &str| {
        let out = ns.rtpgen(&[
            "send",
            "--to",
            "127.0.0.1:5004",
            "--count",
            &count.to_string(),
            "--start-seq",
            &start.to_string(),
            "--bitrate",
            bitrate,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let accounted = |s: &rtpmgr_control::StreamReport| s.packets + s.socket_drops + s.ring_full_drops;
    send(BURST, 0, "20M");
    // Let the backlog drain through the 2 Mbit/s link: until the daemon
    // has taken everything from the socket and the ring has emptied.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (u64::MAX, 0);
    loop {
        let s = daemon.status();
        let now = (s.streams[0].packets, s.rings.to_device_fill);
        if now == last && now.1 == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the relay did not settle: {s:?}");
        last = now;
        std::thread::sleep(Duration::from_millis(500));
    }
    send(TAIL, BURST, "100k");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = daemon.status().streams.remove(0);
        if accounted(&s) >= BURST + TAIL || Instant::now() > deadline {
            assert_eq!(s.state, "running");
            assert!(daemon.stop().success());
            eprintln!("{policy}: {s:?}");
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn drop_policy_discards_at_once_and_counts_every_datagram() {
    let Some(s) = run("drop") else { return };
    assert_eq!(s.packets + s.socket_drops + s.ring_full_drops, BURST + TAIL, "every datagram accounted for: {s:?}");
    // 20 Mbit/s into a 2 Mbit/s link: most of the burst cannot fit.
    assert!(s.ring_full_drops > BURST / 2, "{s:?}");
    assert!(s.packets < BURST / 2, "{s:?}");
    // What the daemon took it relayed (or is still sending).
    assert!(s.sent_packets + s.send_errors <= s.packets);
}

#[test]
fn wait_policy_keeps_datagrams_in_the_socket_and_counts_its_overflow() {
    let Some(s) = run("wait") else { return };
    assert_eq!(s.ring_full_drops, 0, "the wait policy never discards: {s:?}");
    assert_eq!(s.packets + s.socket_drops, BURST + TAIL, "every datagram accounted for: {s:?}");
    assert!(s.socket_drops > BURST / 2, "the socket buffer overflowed: {s:?}");
}
