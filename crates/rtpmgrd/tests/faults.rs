// SPDX-License-Identifier: MIT
//! Network faults never end a stream: inside a network namespace the test
//! creates, a relay whose destination has no route counts its send errors
//! and keeps receiving; when a route appears it sends; when the interface
//! goes down and comes back it fails and recovers the same way, without a
//! restart. Needs root and iproute2, as CI has.

mod common;
use common::*;
use std::time::Duration;

const DEST: &str = "10.77.0.2:5004";

#[test]
fn unreachable_destination_and_interface_down_and_up_never_end_the_stream() {
    let Some(ns) = Netns::create("faults") else { return };
    // A veth pair (its peer up, so d0 has carrier once up): sends through
    // it succeed and go nowhere.
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d1", "up"]);
    let dir = TempDir::new("faults");
    let config = format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\n\n\
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
    assert_eq!(s.lost, 0);
    assert!(daemon.stop().success());
}
