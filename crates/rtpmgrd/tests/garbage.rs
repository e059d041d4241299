// SPDX-License-Identifier: MIT
//! A stream half made of garbage does not slow the valid stream beside it:
//! while one socket receives a datagram that is not RTP for every good
//! one, every good packet of both streams is relayed intact and in order,
//! and every bad one is counted and dropped.

mod common;
use common::*;
use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const PACKETS: u32 = 3000;

/// Datagrams that are not RTP, of every kind the receiver must refuse:
/// wrong version, shorter than a header, CSRCs or an extension running
/// past the end, padding longer than the packet.
fn garbage(i: u32) -> Vec<u8> {
    let good = rtp_packet(99, i);
    match i % 5 {
        0 => {
            let mut p = good;
            p[0] = (p[0] & 0x3f) | (1 << 6); // version 1
            p
        }
        1 => good[..(i % 12) as usize].to_vec(),
        2 => {
            let mut p = good[..16].to_vec();
            p[0] = (p[0] & 0xf0) | 0x0f; // 15 CSRCs in 4 bytes
            p
        }
        3 => {
            let mut p = good[..14].to_vec();
            p[0] |= 0x10; // extension header cut short
            p
        }
        _ => {
            let mut p = good[..100].to_vec();
            p[0] |= 0x20; // padding ...
            p[99] = 0xff; // ... of 255 bytes in an 88-byte payload
            p
        }
    }
}

#[test]
fn a_stream_half_garbage_does_not_disturb_its_neighbour() {
    let dir = TempDir::new("garbage");
    let (sink_a, sink_b) = (Sink::start(), Sink::start());
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let daemon =
        Daemon::start(&dir, &relay_config(&dir, &[("dirty", port_a, sink_a.port), ("clean", port_b, sink_b.port)]));
    let send = |port: u16, sink: &Sink, ssrc: u32, with_garbage: bool| {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(("127.0.0.1", port)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..PACKETS {
            // At most 64 good packets in flight, as a paced source.
            while u64::from(i).saturating_sub(sink.count.load(Ordering::Acquire)) >= 64 {
                assert!(Instant::now() < deadline, "relay stalled at packet {i}");
                std::thread::yield_now();
            }
            if with_garbage {
                sock.send(&garbage(i)).unwrap();
            }
            sock.send(&rtp_packet(ssrc, i)).unwrap();
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| send(port_a, &sink_a, 1, true));
        s.spawn(|| send(port_b, &sink_b, 2, false));
    });
    sink_a.wait_for(u64::from(PACKETS), Duration::from_secs(20));
    sink_b.wait_for(u64::from(PACKETS), Duration::from_secs(20));
    let st = daemon.status();
    let find = |n: &str| st.streams.iter().find(|s| s.name == n).unwrap().clone();
    let (dirty, clean) = (find("dirty"), find("clean"));
    assert_eq!(dirty.malformed, u64::from(PACKETS), "{dirty:?}");
    assert_eq!((dirty.packets, dirty.lost, dirty.reordered), (u64::from(PACKETS), 0, 0), "{dirty:?}");
    assert_eq!((clean.packets, clean.malformed, clean.lost), (u64::from(PACKETS), 0, 0), "{clean:?}");
    assert!(daemon.stop().success());
    for (sink, ssrc) in [(sink_a, 1), (sink_b, 2)] {
        let got = sink.take();
        assert_eq!(got.len(), PACKETS as usize);
        for (i, p) in got.iter().enumerate() {
            assert!(*p == rtp_packet(ssrc, i as u32), "ssrc {ssrc}: packet {i} differs from what was sent");
        }
    }
}
