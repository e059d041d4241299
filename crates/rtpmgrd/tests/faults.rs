// SPDX-License-Identifier: MIT
//! Network faults never end a stream: inside a network namespace the test
//! creates, a relay whose destination has no route counts its send errors
//! and keeps receiving; when a route appears it sends; when the interface
//! goes down and comes back it fails and recovers the same way, without a
//! restart; a queue that drops everything (ENOBUFS inside the kernel) does
//! not end it either. Needs root, iproute2 and tc, as CI has.

mod common;
use common::*;
use std::time::Duration;

const DEST: &str = "10.77.0.2:5004";

#[test]
fn unreachable_destination_interface_down_and_up_and_enobufs_never_end_the_stream() {
    let Some(ns) = Netns::create("faults") else { return };
    // A veth pair (its peer up, so d0 has carrier once up): sends through
    // it succeed and go nowhere.
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d1", "up"]);
    let dir = TempDir::new("faults");
    // Datagram by datagram (udp_gso = false): the kernel counts a dropped
    // GSO send once in SndbufErrors however many datagrams it held, and
    // the count below is per datagram.
    let config = format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\nudp_gso = false\n\n\
         [[stream]]\nname = \"tv1\"\ndirection = \"relay\"\nbind = \"0.0.0.0:5004\"\n\
         destination = \"{DEST}\"\npayload_type = 33\n",
        dir.path("control.sock").display()
    );
    let daemon = Daemon::start_with(&dir, &config, |p| ns.cmd(p));
    let send = |count: u32, start: u32| {
        let (n, first) = (count.to_string(), start.to_string());
        let out =
            ns.rtpgen(&["send", "--to", "127.0.0.1:5004", "--count", &n, "--start-seq", &first, "--bitrate", "5M"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Until every packet received so far has been sent or failed.
        let want = u64::from(start) + u64::from(count);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = daemon.status().streams.remove(0);
            assert_eq!(s.state, "running", "the stream must keep running: {s:?}");
            if (s.packets == want && s.sent_packets + s.send_errors == want) || std::time::Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // No route to 10.77.0.0/24: every send fails (ENETUNREACH), counted.
    let s = send(200, 0);
    assert_eq!(s.packets, 200, "received while the destination is unreachable");
    assert_eq!((s.sent_packets, s.send_errors), (0, 200), "{s:?}");

    // A route appears: the same stream sends, no restart.
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "d0"]);
    let s = send(300, 200);
    assert_eq!((s.packets, s.sent_packets, s.send_errors), (500, 300, 200), "{s:?}");

    // The interface goes down (its routes with it), then comes back.
    ns.ip(&["link", "set", "d0", "down"]);
    let s = send(100, 500);
    assert_eq!((s.packets, s.sent_packets, s.send_errors), (600, 300, 300), "{s:?}");
    ns.ip(&["link", "set", "d0", "up"]);
    let s = send(100, 600);
    assert_eq!((s.packets, s.sent_packets, s.send_errors), (700, 400, 300), "{s:?}");

    // The interface's queue drops everything (a full qdisc: the kernel's
    // ENOBUFS). Linux tells a UDP socket only if it set IP_RECVERR, which
    // rtpmgrd does not (ICMP errors would then fail its next send): the
    // drops are the kernel's Udp SndbufErrors, and the stream goes on.
    let sndbuf_errors = || {
        let out = ns.cmd(std::path::Path::new("cat")).arg("/proc/net/snmp").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let rows: Vec<Vec<&str>> =
            text.lines().filter(|l| l.starts_with("Udp: ")).map(|l| l.split_whitespace().collect()).collect();
        let col = rows[0].iter().position(|h| *h == "SndbufErrors").unwrap();
        rows[1][col].parse::<u64>().unwrap()
    };
    ns.ip(&["neigh", "replace", "10.77.0.2", "lladdr", "02:00:00:00:00:02", "dev", "d0"]);
    let tc = |args: &[&str]| {
        let out = ns.cmd(std::path::Path::new("tc")).args(args).output().unwrap();
        assert!(out.status.success(), "tc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    tc(&["qdisc", "add", "dev", "d0", "root", "pfifo", "limit", "0"]);
    let before = sndbuf_errors();
    let s = send(100, 700);
    assert_eq!((s.packets, s.sent_packets, s.send_errors), (800, 500, 300), "{s:?}");
    assert_eq!(sndbuf_errors() - before, 100, "the kernel dropped them (ENOBUFS)");
    tc(&["qdisc", "del", "dev", "d0", "root"]);
    let s = send(100, 800);
    assert_eq!((s.packets, s.sent_packets, s.send_errors), (900, 600, 300), "{s:?}");
    assert_eq!(s.lost, 0);
    assert!(daemon.stop().success());
}
