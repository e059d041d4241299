// SPDX-License-Identifier: MIT
use super::*;

#[test]
fn rr_sdes_nack_compound_round_trip() {
    let mut buf = [0u8; 512];
    let block = ReportBlock {
        ssrc: 0xdead_beef,
        fraction_lost: 12,
        cumulative_lost: -3,
        highest_seq: 0x0001_0010,
        jitter: 77,
        lsr: 0x1234_5678,
        dlsr: 65_536,
    };
    let mut n = write_rr(&mut buf, 0x1111, &[block]).unwrap();
    assert_eq!(n, 32);
    n += write_sdes_cname(&mut buf[n..], 0x1111, b"rtpmgrd@stb").unwrap();
    n += write_nack(&mut buf[n..], 0x1111, 0xdead_beef, &[100, 101, 103, 116, 117, 200]).unwrap();
    let pkts: Vec<RtcpPacket<'_>> = parse_compound(&buf[..n]).expect("valid compound").collect();
    assert_eq!(pkts.iter().map(|p| p.pt).collect::<Vec<_>>(), [PT_RR, PT_SDES, PT_RTPFB]);
    let (reporter, blocks) = report_blocks(&pkts[0]).unwrap();
    assert_eq!(reporter, 0x1111);
    assert_eq!(blocks.collect::<Vec<_>>(), [block]);
    // SDES: SSRC, CNAME item, null terminator, 32-bit aligned.
    assert_eq!(pkts[1].body.len() % 4, 0);
    assert_eq!(&pkts[1].body[4..6], &[1, 11]);
    assert_eq!(&pkts[1].body[6..17], b"rtpmgrd@stb");
    let (sender, media, seqs) = nack(&pkts[2]).unwrap();
    assert_eq!((sender, media), (0x1111, 0xdead_beef));
    assert_eq!(seqs.collect::<Vec<_>>(), [100, 101, 103, 116, 117, 200]);
    // Two FCI words: 100 with BLP bits for 101, 103, 116; 117 does not fit
    // 100's word (17 away), nor does 200.
    assert_eq!(pkts[2].body.len(), 8 + 3 * 4);
    assert_eq!(&pkts[2].body[8..12], &[0, 100, 0x80, 0x05]);
}

#[test]
fn nack_across_the_wrap_and_many_numbers() {
    let mut buf = [0u8; 512];
    let n = write_nack(&mut buf, 1, 2, &[65_534, 65_535, 0, 1]).unwrap();
    let p = RtcpPacket { count: buf[0] & 0x1f, pt: buf[1], body: &buf[4..n] };
    assert_eq!(nack(&p).unwrap().2.collect::<Vec<_>>(), [65_534, 65_535, 0, 1]);
    assert_eq!(n, 16, "one FCI word");
    let many: Vec<u16> = (0..2000).step_by(20).collect();
    let n = write_nack(&mut buf, 1, 2, &many).unwrap();
    assert_eq!(n, 12 + 64 * 4, "at most 64 words");
    assert!(write_nack(&mut buf[..20], 1, 2, &many).is_none());
}

#[test]
fn sr_round_trip_and_lsr() {
    let mut buf = [0u8; 64];
    let info = SenderInfo { ssrc: 9, ntp: 0x0102_0304_0506_0708, rtp_ts: 90_000, packets: 5, octets: 6_580 };
    let n = write_sr(&mut buf, &info, &[]).unwrap();
    assert_eq!(n, 28);
    let p = parse_compound(&buf[..n]).unwrap().next().unwrap();
    assert_eq!(sender_info(&p), Some(info));
    assert_eq!(info.lsr(), 0x0304_0506);
    assert_eq!(report_blocks(&p).unwrap().1.count(), 0);
}

#[test]
fn compound_validation() {
    let mut buf = [0u8; 64];
    let n = write_rr(&mut buf, 1, &[]).unwrap();
    assert!(parse_compound(&buf[..n]).is_some());
    assert!(parse_compound(&buf[..n - 1]).is_none(), "length past the end");
    let m = write_sdes_cname(&mut buf, 1, b"x").unwrap();
    assert!(parse_compound(&buf[..m]).is_none(), "must start with SR or RR");
    let mut bad = [0u8; 8];
    write_rr(&mut bad, 1, &[]).unwrap();
    bad[0] = 0x40 | (bad[0] & 0x3f);
    assert!(parse_compound(&bad).is_none(), "version 1");
    // Padding on the last packet is allowed and removed.
    let mut padded = [0u8; 12];
    write_rr(&mut padded, 1, &[]).unwrap();
    padded[0] |= 0x20;
    padded[2..4].copy_from_slice(&2u16.to_be_bytes());
    padded[11] = 4;
    let p = parse_compound(&padded).unwrap().next().unwrap();
    assert_eq!(p.body.len(), 4);
    padded[11] = 0;
    assert!(parse_compound(&padded).is_none(), "a zero padding count");
    assert!(parse_compound(&[]).is_some_and(|mut i| i.next().is_none()));
}

#[test]
fn rtp_and_rtcp_on_one_port() {
    let mut buf = [0u8; 64];
    let n = write_rr(&mut buf, 1, &[]).unwrap();
    assert!(is_rtcp(&buf[..n]));
    let rtp = crate::RtpBuilder::new(33, 1, 2, 3).to_vec(&[0; 20]);
    assert!(!is_rtcp(&rtp));
    let rtp_marker = crate::RtpBuilder::new(96, 1, 2, 3).marker(true).to_vec(&[0; 20]);
    assert!(!is_rtcp(&rtp_marker), "PT 96 with marker is 224");
}

#[test]
fn interval_follows_rfc3550() {
    // Two members, one sender, 10 Mbit/s session: 5% is 62,500 octets/s;
    // a 100-octet report is far below the minimum: 5 s (2.5 s first).
    assert_eq!(rtcp_interval(2, 1, 62_500.0, false, 100.0, false), 5.0);
    assert_eq!(rtcp_interval(2, 1, 62_500.0, false, 100.0, true), 2.5);
    // A low-bandwidth session: 1,000 receivers at 1 kbit/s of RTCP
    // (125 octets/s, 75% for receivers): 999 * 100 / 93.75 s.
    let t = rtcp_interval(1_000, 1, 125.0, false, 100.0, false);
    assert!((t - 999.0 * 100.0 / 93.75).abs() < 1e-9, "{t}");
    let r = randomise_interval(5.0, 0.5);
    assert!((r - 5.0 / (core::f64::consts::E - 1.5)).abs() < 1e-9);
    assert!(randomise_interval(5.0, 0.0) < randomise_interval(5.0, 0.999));
}

#[test]
fn ntp_time() {
    assert_eq!(ntp_from_unix_ns(0), NTP_UNIX_OFFSET << 32);
    assert_eq!(ntp_from_unix_ns(1_500_000_000) & 0xffff_ffff, 1 << 31);
}
