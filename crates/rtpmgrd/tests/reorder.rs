// SPDX-License-Identifier: MIT
//! The reorder buffer (`reorder_ms`) of the real rtpmgrd: reordered
//! packets leave in order, a packet later than the delay is counted late
//! and dropped, and a relay without it still forwards in arrival order.

mod common;
use common::*;
use std::net::UdpSocket;
use std::time::Duration;

const SSRC: u32 = 0x5eed;

fn config(dir: &TempDir, port: u16, dest: u16, reorder_ms: u32) -> String {
    relay_config(dir, &[("tv1", port, dest)])
        .replace("media_port = \"loopback\"\n", &format!("media_port = \"loopback\"\nreorder_ms = {reorder_ms}\n"))
}

#[test]
fn reordered_packets_leave_in_order_and_late_ones_are_counted() {
    let dir = TempDir::new("reorder");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &config(&dir, port, sink.port, 50));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(("127.0.0.1", port)).unwrap();
    // 5,000 packets with 40 neighbour swaps, 10 packets each sent 5
    // places later, and seq 3000 sent 200 ms late (after its gap was given
    // up); paced at about 10,000 packets per second.
    let mut order: Vec<u32> = Vec::new();
    let (mut swaps, mut moved) = (0u64, 0u64);
    let mut seq = 0u32;
    while seq < 5_000 {
        match seq % 500 {
            100 | 200 | 300 | 400 if seq != 3_000 => {
                order.extend([seq + 1, seq]);
                seq += 2;
                swaps += 1;
                continue;
            }
            250 => {
                order.extend([seq + 1, seq + 2, seq + 3, seq + 4, seq + 5, seq]);
                seq += 6;
                moved += 1;
                continue;
            }
            _ => order.push(seq),
        }
        seq += 1;
    }
    let late = order.iter().position(|&s| s == 3_000).unwrap();
    order.remove(late);
    for (i, &s) in order.iter().enumerate() {
        sock.send(&rtp_packet(SSRC, s)).unwrap();
        if order.get(i.wrapping_sub(1)) == Some(&3_004) {
            std::thread::sleep(Duration::from_millis(200));
            sock.send(&rtp_packet(SSRC, 3_000)).unwrap();
        }
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    sink.wait_for(4_999, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let got = sink.take();
    let want: Vec<Vec<u8>> = (0..5_000).filter(|&s| s != 3_000).map(|s| rtp_packet(SSRC, s)).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "every packet but the late one, in sequence order");

    let s = daemon.status().streams.remove(0);
    let r = s.reorder.clone().expect("a reorder report");
    assert_eq!((r.delay_ms, r.held, r.released), (50, 0, 4_999), "{r:?}");
    // Put back in order: the lower packet of each swap, each moved packet.
    assert_eq!(r.reordered, swaps + moved, "{r:?}");
    assert_eq!((r.late, r.skipped, r.duplicates, r.overflow_skipped), (1, 1, 0, 0), "{r:?}");
    // The input statistics see the late packet arrive: not lost.
    assert_eq!((s.packets, s.lost, s.reordered), (4_999, 0, swaps + moved + 1), "{s:?}");
    assert_eq!(s.sent_packets, 4_999);
    let out =
        std::process::Command::new(bin("rtpmgrctl")).arg("-s").arg(&daemon.socket).arg("status").output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("Reorder buffers (reorder_ms):"), "{table}");
    assert!(daemon.stop().success());
}

#[test]
fn a_lost_packet_costs_the_delay_once_and_the_stream_goes_on() {
    let dir = TempDir::new("reorder-loss");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &config(&dir, port, sink.port, 30));
    let sent: Vec<u32> = (0..3_000).filter(|s| s % 300 != 150).collect();
    let packets: Vec<Vec<u8>> = sent.iter().map(|&s| rtp_packet(SSRC, s)).collect();
    send_paced(port, &packets, 16, Duration::from_millis(2));
    sink.wait_for(packets.len() as u64, Duration::from_secs(20));
    assert_eq!(sink.take(), packets, "in order, the lost ones given up");
    let s = daemon.status().streams.remove(0);
    let r = s.reorder.clone().unwrap();
    assert_eq!((r.released, r.skipped, r.late, r.reordered), (2_990, 10, 0, 0), "{r:?}");
    assert_eq!(s.lost, 10);
    assert!(daemon.stop().success());
}

/// Held packets are not lost when rtpmgrd stops: they go out, the gap
/// given up.
#[test]
fn stopping_releases_what_is_held() {
    let dir = TempDir::new("reorder-stop");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &config(&dir, port, sink.port, 5_000));
    let packets: Vec<Vec<u8>> = [0u32, 1, 2, 4, 5, 6].iter().map(|&s| rtp_packet(SSRC, s)).collect();
    send_paced(port, &packets, 16, Duration::from_millis(1));
    sink.wait_for(3, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(daemon.status().streams[0].reorder.as_ref().unwrap().held, 3, "4, 5, 6 wait for 3");
    assert!(daemon.stop().success());
    sink.wait_for(6, Duration::from_secs(5));
    assert_eq!(sink.take(), packets);
}

/// `mode = "kernel"` with `reorder_ms`: the module has no reorder buffer,
/// so the stream runs in user space and says why.
#[test]
fn kernel_mode_with_reorder_falls_back_with_its_reason() {
    let dir = TempDir::new("reorder-kernel");
    let sink = Sink::start();
    let port = free_udp_port();
    let text = config(&dir, port, sink.port, 40).replace("reorder_ms = 40\n", "reorder_ms = 40\nmode = \"kernel\"\n");
    let daemon = Daemon::start(&dir, &text);
    let s = daemon.status().streams.remove(0);
    assert_eq!(s.mode, "user");
    assert!(s.fallback.as_deref().unwrap_or_default().contains("no reorder buffer (reorder_ms)"), "{s:?}");
    let packets: Vec<Vec<u8>> = [0u32, 2, 1, 3].iter().map(|&q| rtp_packet(SSRC, q)).collect();
    send_paced(port, &packets, 4, Duration::from_millis(1));
    sink.wait_for(4, Duration::from_secs(5));
    let want: Vec<Vec<u8>> = (0..4).map(|q| rtp_packet(SSRC, q)).collect();
    assert_eq!(sink.take(), want);
    assert!(daemon.stop().success());
}
