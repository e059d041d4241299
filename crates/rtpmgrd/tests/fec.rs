// SPDX-License-Identifier: MIT
//! SMPTE 2022-1 FEC decoding by the real rtpmgrd: a sender written here
//! sends RTP with column FEC to port + 2 and row FEC to port + 4 (an
//! L = 5 by D = 4 matrix), leaving out known media packets. What FEC can
//! rebuild comes out byte-identical and in order; what it cannot (a square
//! of four losses) is counted.

mod common;
use common::*;
use rtp::fec::{encode, Orientation};
use std::net::UdpSocket;
use std::time::Duration;

const SSRC: u32 = 0xfec0;
const L: usize = 5;
const D: usize = 4;

#[test]
fn column_and_row_fec_rebuild_lost_packets_and_count_what_they_cannot() {
    let dir = TempDir::new("fec");
    let sink = Sink::start();
    let port = free_udp_port();
    let config = relay_config(&dir, &[("tv1", port, sink.port)])
        .replace("media_port = \"loopback\"\n", "media_port = \"loopback\"\nreorder_ms = 150\nfec = true\n");
    let daemon = Daemon::start(&dir, &config);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    const MATRICES: usize = 60;
    let all: Vec<Vec<u8>> = (0..(MATRICES * L * D) as u32).map(|s| rtp_packet(SSRC, 40_000 + s)).collect();
    // Per matrix (index in it): 0: none lost; 1: one packet (column FEC
    // rebuilds it); 2: two in one column (rows rebuild them); 3: a square of
    // four (beyond 2-D parity: 4 lost for good).
    let lost_in = |m: usize| -> Vec<usize> {
        match m % 4 {
            0 => vec![],
            1 => vec![7],
            2 => vec![2, 12],
            _ => vec![0, 1, 5, 6],
        }
    };
    let (mut expect_recovered, mut expect_lost) = (0u64, Vec::new());
    let (mut fec_seq_c, mut fec_seq_r) = (0u16, 0u16);
    for m in 0..MATRICES {
        let base = m * L * D;
        let pkts: Vec<&[u8]> = (0..L * D).map(|i| all[base + i].as_slice()).collect();
        let lost = lost_in(m);
        if lost.len() == 4 {
            expect_lost.extend(lost.iter().map(|i| base + i));
        } else {
            expect_recovered += lost.len() as u64;
        }
        for (i, p) in pkts.iter().enumerate() {
            if !lost.contains(&i) {
                sock.send_to(p, ("127.0.0.1", port)).unwrap();
            }
            // Row FEC after each row, column FEC after the matrix: as a
            // 2022-1 sender interleaves them.
            if i % L == L - 1 {
                let r = i / L;
                let row: Vec<&[u8]> = (0..L).map(|c| pkts[r * L + c]).collect();
                fec_seq_r = fec_seq_r.wrapping_add(1);
                sock.send_to(&encode(&row, Orientation::Row, 1, fec_seq_r, 97, 0), ("127.0.0.1", port + 4)).unwrap();
            }
        }
        for c in 0..L {
            let col: Vec<&[u8]> = (0..D).map(|r| pkts[r * L + c]).collect();
            fec_seq_c = fec_seq_c.wrapping_add(1);
            sock.send_to(&encode(&col, Orientation::Column, L as u8, fec_seq_c, 96, 0), ("127.0.0.1", port + 2))
                .unwrap();
        }
        // About 1,000 media packets a second.
        std::thread::sleep(Duration::from_millis(20));
    }
    let want: Vec<Vec<u8>> =
        all.iter().enumerate().filter(|(i, _)| !expect_lost.contains(i)).map(|(_, p)| p.clone()).collect();
    sink.wait_for(want.len() as u64, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(400));
    assert!(sink.take() == want, "every packet but the square losses, byte-identical and in order");
    let s = daemon.status().streams.remove(0);
    let f = s.fec.clone().expect("a FEC report");
    let r = s.reorder.clone().unwrap();
    assert_eq!((expect_recovered, expect_lost.len()), (45, 60));
    assert_eq!((f.l, f.d), (L as u32, D as u32));
    assert_eq!((f.columns, f.rows), ((MATRICES * L) as u64, (MATRICES * D) as u64), "{f:?}");
    assert_eq!(f.recovered, expect_recovered, "{f:?}");
    // Each square leaves columns 0 and 1, rows 0 and 1 of its matrix with
    // two losses: 4 FEC packets that could not help.
    assert_eq!(f.unrecoverable, 15 * 4, "{f:?}");
    assert_eq!((r.skipped, r.late), (60, 0), "{r:?}");
    assert_eq!(s.lost, (45 + 60) as i64, "the input statistics keep what the network lost");
    assert!(daemon.stop().success());
}
