// SPDX-License-Identifier: MIT
//! Repair against real senders from Debian, over a lossy link: GStreamer
//! streams a real MPEG-TS as RTP from namespace A to rtpmgrd in namespace
//! B; on the way in, B's firewall drops every 50th original media packet
//! (and every 10th RFC 4588 RTX packet, so NACKs must be repeated).
//! rtpmgrd repairs the stream, merges the repairs in order and relays it
//! to a socket of the test's in namespace B: consecutive sequence numbers,
//! and payloads that are the sender's TS byte for byte. (A GStreamer
//! receiver there lost whole packets under load on two busy cores, with
//! none dropped by its socket; the raw UDP TS interop test keeps one.)
//!
//! * `rtpbin` with `rtprtxsend` (RFC 4588 RTX, payload type 97): rtpmgrd
//!   asks with generic NACKs (RFC 4585);
//! * `ristsink`, the RIST simple profile (VSF TR-06-1): RTP and RTCP on
//!   port and port + 1, retransmissions with the SSRC's last bit set;
//! * `rtpst2022-1-fecenc`: SMPTE 2022-1 column FEC on port + 2 and row FEC
//!   on port + 4 (L = 10, D = 5), no feedback at all.
//!
//! The drops are `iptables-legacy -m statistic --mode nth` (deterministic;
//! the test kernel has no `sch_netem`). Needs root, iproute2, iptables,
//! ffmpeg and GStreamer (-good, -bad), which `ci/test` installs.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A 5 s, 5 Mbit/s constant-rate transport stream (MPEG-2 video, MP2
/// audio, null packets filling the rate), as a head-end sends it.
fn make_ts(dir: &TempDir) -> std::path::PathBuf {
    let input = dir.path("in.ts");
    let out = Command::new(tool("ffmpeg", "ffmpeg"))
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=25", "-f", "lavfi", "-i", "sine=frequency=1000"])
        .args(["-t", "5", "-c:v", "mpeg2video", "-b:v", "3M", "-c:a", "mp2", "-b:a", "128k", "-muxrate", "5M"])
        .args(["-f", "mpegts"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    input
}

/// Drop every 50th original RTP packet of payload type 33 arriving at
/// port 5004 in `ns`, and every 10th RTX packet (payload type 97); returns
/// the iptables tool. Original: u32 reads 4 bytes at an offset from the IP
/// header (20 bytes, then UDP's 8): at 28 the RTP header's first word (the
/// payload type in its second byte's low 7 bits), at 36 the SSRC, whose
/// last bit a RIST retransmission sets.
fn drop_on_the_way(ns: &Netns) -> std::path::PathBuf {
    let ipt = tool("iptables-legacy", "iptables");
    for (rule, every, first) in
        [("28&0x007F0000=0x00210000&&36&0x1=0x0", "50", "25"), ("28&0x007F0000=0x00610000", "10", "5")]
    {
        ns.run(
            &ipt,
            &["-A", "INPUT", "-p", "udp", "--dport", "5004", "-m", "u32", "--u32", rule]
                .into_iter()
                .chain(["-m", "statistic", "--mode", "nth", "--every", every, "--packet", first, "-j", "DROP"])
                .collect::<Vec<_>>(),
        );
    }
    ipt
}

/// Packets the two rules dropped: (media, RTX).
fn dropped(ns: &Netns, ipt: &Path) -> (u64, u64) {
    let out = ns.run(ipt, &["-L", "INPUT", "-v", "-x", "-n"]);
    let counts: Vec<u64> = out
        .lines()
        .filter(|l| l.contains("DROP"))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    (counts[0], counts[1])
}

struct Run {
    status: rtpmgr_control::StreamReport,
    drops: (u64, u64),
}

/// The sender's gst-launch arguments: `before` (elements outside the
/// chain, such as an rtpbin), then the TS file `input` through tsparse
/// into a tee whose one branch is `branch` (payloader to sinks) and whose
/// other writes what is sent to `sent`.
fn sender_args(input: &Path, sent: &Path, before: &[&str], branch: &[&str]) -> Vec<String> {
    let (from, to) = (format!("location={}", input.display()), format!("location={}", sent.display()));
    let mut a = before.to_vec();
    a.extend(["filesrc", &from, "!", "tsparse", "set-timestamps=true", "alignment=7", "!", "tee", "name=t", "!"]);
    a.extend(["queue", "!"]);
    a.extend(branch);
    a.extend(["t.", "!", "queue", "!", "filesink", "buffer-mode=unbuffered", &to]);
    a.into_iter().map(String::from).collect()
}

/// rtpmgrd in B relaying to a socket of the test's in B; the sender (a
/// gst-launch pipeline of [`sender_args`] that writes what it sends to
/// `sent.ts`) in A.
fn run(tag: &str, stream_keys: &str, before: &[&str], branch: &[&str]) -> Option<Run> {
    let gst = tool("gst-launch-1.0", "gstreamer1.0-tools");
    let pair = NetnsPair::create(tag)?;
    let dir = TempDir::new(tag);
    let input = make_ts(&dir);
    let ipt = drop_on_the_way(&pair.b);
    let config = format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\n\n\
         [[stream]]\nname = \"tv1\"\ndirection = \"relay\"\nbind = \"{}:5004\"\n\
         destination = \"127.0.0.1:6004\"\npayload_type = 33\n{stream_keys}",
        dir.path("control.sock").display(),
        NetnsPair::B
    );
    let daemon = Daemon::start_with(&dir, &config, |p| pair.b.cmd(p));
    let sent = dir.path("sent.ts");
    // What rtpmgrd sends on, caught in B datagram by datagram.
    let sink = Sink::on(pair.b.bind_udp("127.0.0.1:6004"));
    let mut send = pair.a.cmd(&gst);
    send.arg("-e").args(sender_args(&input, &sent, before, branch));
    let mut sender = Peer::spawn("gst-launch-1.0 (sender)", send, dir.path("send.log"));
    // The sender is done when it exits (rtpbin) or, as ristsink does not
    // end on end-of-stream, when it wrote the whole file and rtpmgrd has
    // had nothing new for a second.
    let input_len = std::fs::metadata(&input).unwrap().len();
    let mut last = (0u64, std::time::Instant::now());
    wait_until("the sender to finish", Duration::from_secs(60), || {
        if let Some(st) = sender.child.try_wait().unwrap() {
            assert!(st.success(), "sender: {}", sender.log_text());
            return true;
        }
        let packets = daemon.status().streams[0].packets;
        if packets != last.0 {
            last = (packets, std::time::Instant::now());
        }
        std::fs::metadata(&sent).is_ok_and(|m| m.len() >= input_len) && last.1.elapsed() > Duration::from_secs(1)
    });
    drop(sender);
    let want = std::fs::read(&sent).unwrap();
    let rtp_packets = want.len() as u64 / 1316;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = daemon.status().streams.remove(0);
        if s.reorder.as_ref().is_some_and(|r| r.held == 0 && r.released + r.skipped >= rtp_packets) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not every packet released: {rtp_packets} sent; {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = daemon.status().streams.remove(0);
    let got = sink.take();
    let drops = dropped(&pair.b, &ipt);
    eprintln!(
        "{tag}: {} RTP packets sent, dropped on the way: {} media, {} RTX; rtpmgrd: {:?}; {:?}; reorder: {:?}",
        rtp_packets, drops.0, drops.1, status.rtcp, status.fec, status.reorder
    );
    // Lossless: consecutive sequence numbers, one SSRC, and the payloads
    // are the sender's TS.
    let pkts: Vec<rtp::RtpPacket<'_>> = got.iter().map(|d| rtp::RtpPacket::parse(d).unwrap()).collect();
    for w in pkts.windows(2) {
        assert_eq!(w[1].sequence_number(), w[0].sequence_number().wrapping_add(1), "a gap or a reordering: {status:?}");
        assert_eq!(w[1].ssrc(), w[0].ssrc());
    }
    let ts: Vec<u8> = pkts.iter().flat_map(|p| p.payload().iter().copied()).collect();
    assert_eq!(ts.len(), want.len(), "TS bytes out of rtpmgrd vs bytes the sender sent");
    if let Some(i) = ts.chunks(188).zip(want.chunks(188)).position(|(a, b)| a != b) {
        panic!("TS packet {i} differs");
    }
    assert!(daemon.stop().success());
    Some(Run { status, drops })
}

#[test]
fn gstreamer_rtprtxsend_over_a_lossy_link_gives_a_lossless_output() {
    let Some(r) = run(
        "rtx",
        "reorder_ms = 400\nrtcp = \"port+1\"\nnack = true\nrtcp_peer = \"10.99.0.1:5007\"\nrtx_payload_type = 97\n",
        &["rtpbin", "name=rtp", "rtp-profile=avpf"],
        &[
            // An even SSRC: the drop rule takes it for an original.
            "rtpmp2tpay",
            "ssrc=287454020",
            "!",
            "rtprtxsend",
            "payload-type-map=application/x-rtp-pt-map,33=(uint)97",
            "max-size-time=2000",
            "!",
            "rtp.send_rtp_sink_0",
            "rtp.send_rtp_src_0",
            "!",
            "udpsink",
            "host=10.99.0.2",
            "port=5004",
            "sync=true",
            "rtp.send_rtcp_src_0",
            "!",
            "udpsink",
            "host=10.99.0.2",
            "port=5005",
            "sync=false",
            "async=false",
            "udpsrc",
            "port=5007",
            "!",
            "rtp.recv_rtcp_sink_0",
        ],
    ) else {
        return;
    };
    let (rtcp, reorder) = (r.status.rtcp.unwrap(), r.status.reorder.unwrap());
    assert!(r.drops.0 >= 40, "{:?}", r.drops);
    // Every media packet dropped was asked for and repaired; the RTX the
    // link dropped were asked for again.
    assert_eq!(rtcp.repaired, r.drops.0, "{rtcp:?}");
    // Each repair is one RTX received; each RTX the link dropped was
    // asked for again (a retry may also cross an RTX on its way).
    assert!(rtcp.rtx_received >= r.drops.0, "{rtcp:?}");
    assert!(rtcp.nack_requested >= r.drops.0 + r.drops.1, "{rtcp:?}");
    assert_eq!((reorder.skipped, reorder.late), (0, 0), "{reorder:?}");
    assert_eq!(r.status.lost, r.drops.0 as i64, "the input statistics show what the network lost");
    assert!(rtcp.sr_received > 0 && rtcp.rr_sent > 0, "{rtcp:?}");
}

#[test]
fn rist_simple_profile_sender_over_a_lossy_link_gives_a_lossless_output() {
    let Some(r) = run(
        "rist",
        "reorder_ms = 2000\nrtcp = \"port+1\"\nnack = true\n",
        &[],
        &["rtpmp2tpay", "!", "ristsink", "address=10.99.0.2", "port=5004", "sender-buffer=2000"],
    ) else {
        return;
    };
    let (rtcp, reorder) = (r.status.rtcp.unwrap(), r.status.reorder.unwrap());
    // Every original dropped is repaired by a retransmission.
    assert!(r.drops.0 >= 40, "{:?}", r.drops);
    assert_eq!(rtcp.repaired, r.drops.0, "{rtcp:?}");
    assert!(rtcp.rist_received >= r.drops.0, "{rtcp:?}");
    assert_eq!((reorder.skipped, reorder.late), (0, 0), "{reorder:?}");
    // RTCP goes where ristsink's RTCP comes from (learned, not configured).
    assert!(rtcp.peer.as_deref().is_some_and(|p| p.starts_with("10.99.0.1:")), "{rtcp:?}");
    assert!(rtcp.sr_received > 0 && rtcp.rr_sent > 0, "{rtcp:?}");
}

#[test]
fn gstreamer_smpte_2022_1_fec_over_a_lossy_link_gives_a_lossless_output() {
    let Some(r) = run(
        "fec",
        "reorder_ms = 300\nfec = true\n",
        &[],
        &[
            // GStreamer's 2022-1 encoder takes media with SSRC 0 only.
            "rtpmp2tpay",
            "ssrc=0",
            "!",
            "rtpst2022-1-fecenc",
            "name=fec",
            "columns=10",
            "rows=5",
            "!",
            "udpsink",
            "host=10.99.0.2",
            "port=5004",
            "sync=true",
            "fec.fec_0",
            "!",
            "udpsink",
            "host=10.99.0.2",
            "port=5006",
            "sync=false",
            "async=false",
            "fec.fec_1",
            "!",
            "udpsink",
            "host=10.99.0.2",
            "port=5008",
            "sync=false",
            "async=false",
        ],
    ) else {
        return;
    };
    let (fec, reorder) = (r.status.fec.unwrap(), r.status.reorder.unwrap());
    assert!(r.drops.0 >= 40, "{:?}", r.drops);
    // Single losses, one per row and column at most: every one rebuilt,
    // none taken for lost before its time.
    assert_eq!((fec.l, fec.d), (10, 5), "{fec:?}");
    // A packet rebuilt and then arriving after all (reordered on the way,
    // or late on a busy machine) is a duplicate the reorder buffer drops.
    assert_eq!((fec.recovered, fec.unrecoverable, fec.malformed), (r.drops.0 + reorder.duplicates, 0, 0), "{fec:?}");
    assert_eq!((reorder.skipped, reorder.late), (0, 0), "{reorder:?}");
    assert!(fec.columns > 0 && fec.rows > 0, "{fec:?}");
}
