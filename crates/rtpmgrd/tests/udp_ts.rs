// SPDX-License-Identifier: MIT
//! `format = "udp-ts"`: raw MPEG-TS over UDP relayed by the real rtpmgrd
//! (sim backend, loopback), with loss and reordering from the continuity
//! counters and the TR 101 290 indicators in `rtpmgrctl status`.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// `n` datagrams of a program stream: every tenth starts with a PAT and a
/// PMT, the rest is video and audio, seven packets per datagram.
fn program_datagrams(mux: &mut TsMux, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut pkts = Vec::with_capacity(7);
            if i % 10 == 0 {
                pkts.push(mux.pat());
                pkts.push(mux.pmt());
            }
            while pkts.len() < 7 {
                let pid = if pkts.len() % 3 == 2 { TS_AUDIO } else { TS_VIDEO };
                pkts.push(mux.es(pid));
            }
            ts_datagram(&pkts)
        })
        .collect()
}

#[test]
fn relays_raw_udp_ts_byte_identical_and_reports_the_format() {
    let dir = TempDir::new("udpts");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &ts_relay_config(&dir, port, sink.port, ""));
    const N: usize = 20_000;
    let sent = program_datagrams(&mut TsMux::default(), N);
    send_windowed(port, &sent, &sink, 256);
    sink.wait_for(N as u64, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(100));
    let got = sink.take();
    assert_eq!(got.len(), N, "each datagram exactly once");
    assert!(got == sent, "the relay forwards raw TS unchanged and in order");

    let json = daemon.ctl_status_json();
    let s = &json["streams"][0];
    assert_eq!(
        (s["name"].as_str(), s["format"].as_str(), s["state"].as_str()),
        (Some("iptv"), Some("udp-ts"), Some("running"))
    );
    assert_eq!(
        (s["packets"].as_u64(), s["malformed"].as_u64(), s["sent_packets"].as_u64()),
        (Some(N as u64), Some(0), Some(N as u64))
    );
    assert_eq!((s["lost"].as_i64(), s["duplicates"].as_u64(), s["reordered"].as_u64()), (Some(0), Some(0), Some(0)));
    assert!(s["ssrc"].is_null(), "no RTP, no SSRC");
    let ts = &s["ts"];
    assert_eq!(ts["ts_packets"].as_u64(), Some(7 * N as u64));
    for k in ["sync_loss", "sync_byte_error", "pat_error", "cc_error", "pmt_error", "pid_error", "crc_error"] {
        assert_eq!(ts[k].as_u64(), Some(0), "{k}: {ts}");
    }
    assert_eq!((ts["programs"].as_u64(), ts["es_pids"].as_u64()), (Some(1), Some(2)));

    // The table shows the format and the TS health.
    let out =
        std::process::Command::new(bin("rtpmgrctl")).arg("-s").arg(&daemon.socket).arg("status").output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let row = table.lines().find(|l| l.starts_with("iptv ")).expect("a row for iptv");
    assert!(row.split_whitespace().any(|c| c == "udp-ts"), "{table}");
    assert!(table.contains("MPEG-TS health (ETSI TR 101 290"), "{table}");
    assert!(daemon.stop().success());
}

/// Whole datagrams dropped, duplicated and swapped on the way: the
/// relay passes what it gets, and the continuity counters say exactly
/// how many TS packets were lost, repeated and late.
#[test]
fn loss_duplicates_and_reordering_from_continuity_counters() {
    let dir = TempDir::new("udpts-cc");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &ts_relay_config(&dir, port, sink.port, ""));
    // Video only, seven packets per datagram: a lost datagram is seven
    // lost TS packets of one PID, within the 15 the counter can tell.
    let mut mux = TsMux::default();
    let all: Vec<Vec<u8>> =
        (0..3_000).map(|_| ts_datagram(&(0..7).map(|_| mux.es(TS_VIDEO)).collect::<Vec<_>>())).collect();
    let mut order = Vec::new();
    let (mut lost, mut dups, mut late) = (0u64, 0u64, 0u64);
    let mut i = 0;
    while i < all.len() {
        match i % 500 {
            100 => lost += 7, // dropped
            200 => {
                order.push(i);
                order.push(i);
                dups += 7; // each packet twice: the one allowed copy
            }
            300 => {
                order.push(i + 1);
                order.push(i);
                i += 1;
                late += 7;
            }
            _ => order.push(i),
        }
        i += 1;
    }
    let sent: Vec<Vec<u8>> = order.iter().map(|&k| all[k].clone()).collect();
    send_windowed(port, &sent, &sink, 128);
    sink.wait_for(sent.len() as u64, Duration::from_secs(30));
    assert_eq!(sink.take(), sent);
    let s = daemon.status().streams.remove(0);
    assert_eq!((lost, dups, late), (42, 42, 42));
    assert_eq!((s.lost, s.duplicates, s.reordered), (42, 42, 42), "{s:?}");
    let ts = s.ts.expect("TS health");
    // Each drop is one jump; each swap a jump and seven late packets.
    assert_eq!(ts.cc_error, 6 + 6 * 8, "{ts:?}");
    assert!(daemon.stop().success());
}

/// What is not raw TS is counted and dropped, and bad sync bytes show
/// in TR 101 290's Sync_byte_error.
#[test]
fn datagrams_that_are_not_whole_ts_packets_are_malformed() {
    let dir = TempDir::new("udpts-bad");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &ts_relay_config(&dir, port, sink.port, ""));
    let mut mux = TsMux::default();
    let good = program_datagrams(&mut mux, 500);
    let mut rtp = rtp_packet(1, 7); // RTP/MP2T: 12 bytes too many for raw TS
    rtp.truncate(12 + 188 * 7);
    let mut bad_sync = good[3].clone();
    bad_sync[188 * 4] = 0x46;
    bad_sync[188 * 5] = 0x00;
    let bad = [vec![], good[0][..1000].to_vec(), rtp, bad_sync];
    let mut sent = Vec::new();
    for (i, g) in good.iter().enumerate() {
        sent.push(g.clone());
        if i % 50 == 25 {
            sent.push(bad[(i / 50) % bad.len()].clone());
        }
    }
    send_paced(port, &sent, 16, Duration::from_millis(1));
    sink.wait_for(good.len() as u64, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sink.take(), good, "only whole TS datagrams pass");
    let s = daemon.status().streams.remove(0);
    assert_eq!((s.malformed, s.packets), (10, 500), "{s:?}");
    let ts = s.ts.unwrap();
    // Of the 10 bad datagrams only the two with corrupted sync bytes are
    // whole TS packets and analysed: 2 bad bytes in a row each, a sync
    // loss each. The rest (empty, 1000 bytes, RTP) is not TS at all.
    assert_eq!((ts.sync_byte_error, ts.sync_loss, ts.ts_packets), (2 * 2, 2, 500 * 7 + 2 * 7), "{ts:?}");
    assert!(daemon.stop().success());
}

/// `mode = "kernel"` with `udp-ts` on a device without in-kernel network
/// streams (the simulator): the stream runs in user space, relays the TS
/// intact and says why. (The module's own `udp-ts` path is tested in the
/// guest: `udp_ts_v4` and the rtpmgrd kernel-mode step of ci/guest/init.)
#[test]
fn kernel_mode_udp_ts_falls_back_on_a_device_without_net_streams() {
    let dir = TempDir::new("udpts-kernel");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &ts_relay_config(&dir, port, sink.port, "mode = \"kernel\"\n"));
    let sent = program_datagrams(&mut TsMux::default(), 1_000);
    send_windowed(port, &sent, &sink, 128);
    sink.wait_for(1_000, Duration::from_secs(20));
    assert_eq!(sink.take(), sent);
    let s = daemon.status().streams.remove(0);
    assert_eq!((s.mode.as_str(), s.format.as_str(), s.packets), ("user", "udp-ts", 1_000));
    let why = s.fallback.expect("a fallback reason");
    assert!(why.contains("FEATURE_NET_STREAMS"), "{why}");
    assert!(!s.ts.expect("TS health").continuity_only);
    assert!(
        daemon
            .log_text()
            .contains("stream iptv: mode = \"kernel\" is not available: the device has no in-kernel network streams"),
        "{}",
        daemon.log_text()
    );
    assert!(daemon.stop().success());
}

/// A crafted stream with known TR 101 290 errors, sent in real time:
/// `rtpmgrctl status --json` counts each indicator exactly.
#[test]
fn tr101290_priority_one_counts_through_the_daemon() {
    let dir = TempDir::new("udpts-tr");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &ts_relay_config(&dir, port, sink.port, "pid_timeout_ms = 1000\n"));
    // One datagram every 10 ms for 6 s: PAT and PMT every 100 ms, video
    // and audio in each datagram.
    //  * PAT missing 1.0 .. 2.75 s: errors 0.5 s after 0.9 s and every
    //    0.5 s after: 1.4, 1.9, 2.4 -> 3 PAT errors;
    //  * PMT missing 3.0 .. 4.2 s: 3.4, 3.9 -> 2 PMT errors;
    //  * audio missing 1.0 .. 3.5 s with a 1 s timeout: last seen 0.99 s,
    //    errors at 1.99, 2.99 -> 2 PID errors;
    //  * video: 3 continuity jumps (a packet left out) -> 3 CC errors;
    //  * at 5.0 s a datagram with 2 consecutive bad sync bytes (sync loss
    //    1, sync byte errors 2: dropped as malformed, its video packets
    //    then count as a CC jump), and one with a single bad byte at 5.5 s
    //    (sync byte error 1, no loss; also dropped, another jump).
    let mut mux = TsMux::default();
    let mut sched: Vec<(u64, Vec<u8>)> = Vec::new();
    for ms in (0..6_000u64).step_by(10) {
        let mut pkts = Vec::new();
        if ms % 100 == 0 && !(1_000..2_750).contains(&ms) {
            pkts.push(mux.pat());
        }
        if ms % 100 == 0 && !(3_000..4_200).contains(&ms) {
            pkts.push(mux.pmt());
        }
        if [700, 2_300, 4_600].contains(&ms) {
            mux.es(TS_VIDEO); // made and never sent: a jump
        }
        pkts.push(mux.es(TS_VIDEO));
        pkts.push(mux.es(TS_VIDEO));
        if !(1_000..3_500).contains(&ms) {
            pkts.push(mux.es(TS_AUDIO));
        }
        let mut d = ts_datagram(&pkts);
        let first_video = d.len() - if (1_000..3_500).contains(&ms) { 2 } else { 3 } * 188;
        if ms == 5_000 {
            d[first_video] = 0x00;
            d[first_video + 188] = 0x00;
        }
        if ms == 5_500 {
            d[first_video] = 0x48;
        }
        sched.push((ms, d));
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let t0 = Instant::now();
    for (ms, d) in &sched {
        let at = t0 + Duration::from_millis(*ms);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sock.send_to(d, ("127.0.0.1", port)).unwrap();
    }
    sink.wait_for(sched.len() as u64 - 2, Duration::from_secs(10));
    let json = daemon.ctl_status_json();
    let s = &json["streams"][0];
    let ts = &s["ts"];
    let get = |k: &str| ts[k].as_u64().unwrap_or(u64::MAX);
    assert_eq!(get("pat_error"), 3, "{ts}");
    assert_eq!(get("pmt_error"), 2, "{ts}");
    assert_eq!(get("pid_error"), 2, "{ts}");
    assert_eq!((get("sync_loss"), get("sync_byte_error")), (1, 3), "{ts}");
    // 3 left out, and one jump behind each datagram with bad sync bytes:
    // the packets behind them are not judged (the good packets of those
    // dropped datagrams are: TS health describes the input).
    assert_eq!(get("cc_error"), 3 + 2, "{ts}");
    assert_eq!((get("crc_error"), get("transport_error")), (0, 0), "{ts}");
    assert_eq!(s["malformed"].as_u64(), Some(2));
    assert_eq!(get("ts_packets"), sched.iter().map(|(_, d)| d.len() as u64 / 188).sum::<u64>());
    assert!(daemon.stop().success());
}

/// RTP/MP2T streams get the same TS health: continuity errors inside an
/// otherwise perfect RTP sequence.
#[test]
fn rtp_streams_carrying_ts_are_analysed_too() {
    let dir = TempDir::new("rtp-ts");
    let sink = Sink::start();
    let port = free_udp_port();
    let daemon = Daemon::start(&dir, &relay_config(&dir, &[("tv1", port, sink.port)]));
    let mut mux = TsMux::default();
    let mut packets = Vec::new();
    for seq in 0..2_000u32 {
        if seq % 400 == 200 {
            mux.es(TS_VIDEO); // the encoder lost one: RTP cannot tell
        }
        let payload = ts_datagram(&(0..7).map(|_| mux.es(TS_VIDEO)).collect::<Vec<_>>());
        packets.push(rtp::RtpBuilder::new(rtp::PT_MP2T, seq as u16, seq * 90, 7).to_vec(&payload));
    }
    send_windowed(port, &packets, &sink, 128);
    sink.wait_for(2_000, Duration::from_secs(20));
    assert_eq!(sink.take(), packets);
    let s = daemon.status().streams.remove(0);
    assert_eq!((s.format.as_str(), s.lost), ("rtp", 0));
    let ts = s.ts.expect("RTP/MP2T is analysed");
    assert_eq!((ts.ts_packets, ts.cc_error, ts.cc_lost), (14_000, 5, 5), "{ts:?}");
    assert!(daemon.stop().success());
}
