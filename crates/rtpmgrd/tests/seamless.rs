// SPDX-License-Identifier: MIT
//! SMPTE 2022-7 seamless protection by the real rtpmgrd: one stream fed
//! by two legs on two sockets, the second leg 20 packets behind the
//! first, each leg losing different packets (and, once, both the same):
//! the merged output is every packet once, in order.

mod common;
use common::*;
use std::net::UdpSocket;
use std::time::Duration;

const SSRC: u32 = 0x2022_0007;
const LAG: usize = 20;

#[test]
fn two_legs_with_different_losses_merge_into_a_lossless_stream() {
    let dir = TempDir::new("seamless");
    let sink = Sink::start();
    let (port, port2) = (free_udp_port(), free_udp_port());
    let config = relay_config(&dir, &[("tv1", port, sink.port)]).replace(
        "media_port = \"loopback\"\n",
        &format!("media_port = \"loopback\"\nreorder_ms = 200\nleg2 = {{ bind = \"127.0.0.1:{port2}\" }}\n"),
    );
    let daemon = Daemon::start(&dir, &config);
    let (a, b) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
    const N: usize = 5_000;
    let all: Vec<Vec<u8>> = (0..N as u32).map(|s| rtp_packet(SSRC, 30_000 + s)).collect();
    // Leg A loses 10, 110, ...; leg B 60, 160, ... and 77 burst of 5 at
    // 2,500; packet 4,242 is lost on both.
    let lost_a = |i: usize| i % 100 == 10 || i == 4_242;
    let lost_b = |i: usize| i % 100 == 60 || (2_500..2_505).contains(&i) || i == 4_242;
    for i in 0..N + LAG {
        if i < N && !lost_a(i) {
            a.send_to(&all[i], ("127.0.0.1", port)).unwrap();
        }
        if i >= LAG && !lost_b(i - LAG) {
            b.send_to(&all[i - LAG], ("127.0.0.1", port2)).unwrap();
        }
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let want: Vec<Vec<u8>> = all.iter().enumerate().filter(|(i, _)| *i != 4_242).map(|(_, p)| p.clone()).collect();
    wait_until("the merged stream", Duration::from_secs(20), || {
        sink.count.load(std::sync::atomic::Ordering::Acquire) >= want.len() as u64
            || daemon.status().streams[0]
                .reorder
                .as_ref()
                .is_some_and(|r| r.released + r.skipped >= N as u64 && r.held == 0)
    });
    std::thread::sleep(Duration::from_millis(300));
    let got = sink.take();
    if got != want {
        let first = got.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "{} of {} packets, first difference at {first:?}: {:?}",
            got.len(),
            want.len(),
            daemon.status().streams[0]
        );
    }
    let s = daemon.status().streams.remove(0);
    let (r, leg2) = (s.reorder.clone().unwrap(), s.leg2.clone().expect("a second-leg report"));
    let (na, nb) = ((0..N).filter(|&i| lost_a(i)).count(), (0..N).filter(|&i| lost_b(i)).count());
    assert_eq!((na, nb), (51, 56));
    assert_eq!((s.packets, s.lost), ((N - 1) as u64, na as i64), "leg 1 alone: {s:?}");
    assert_eq!((leg2.packets, leg2.lost, leg2.malformed), ((N - nb) as u64, nb as i64, 0), "{leg2:?}");
    // Every packet both legs brought is one duplicate; the one neither
    // brought is the only gap given up.
    assert_eq!(
        (r.released, r.duplicates, r.skipped, r.late),
        ((N - 1) as u64, (N - na - nb + 1) as u64, 1, 0),
        "{r:?}"
    );
    assert_eq!(leg2.bind, format!("127.0.0.1:{port2}"));
    assert!(daemon.stop().success());
}
