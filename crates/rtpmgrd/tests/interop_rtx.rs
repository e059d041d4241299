// SPDX-License-Identifier: MIT
//! Retransmission against real senders from Debian, over a lossy link:
//! GStreamer streams a real MPEG-TS as RTP from namespace A to rtpmgrd in
//! namespace B; on the way in, B's firewall drops every 50th media packet
//! (and every 10th RFC 4588 RTX packet, so NACKs must be repeated).
//! rtpmgrd asks for the missing packets with generic NACKs (RFC 4585),
//! merges the repairs in order and relays to a GStreamer receiver, whose
//! depayloaded output must be the sender's TS, byte for byte.
//!
//! * `rtpbin` with `rtprtxsend` (RFC 4588 RTX, payload type 97);
//! * `ristsink`, the RIST simple profile (VSF TR-06-1): RTP and RTCP on
//!   port and port + 1, retransmissions with the SSRC's last bit set.
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

/// Drop every 50th RTP packet of payload type 33 arriving at port 5004 in
/// `ns`, and every 10th of payload type 97; returns the iptables tool.
fn drop_on_the_way(ns: &Netns) -> std::path::PathBuf {
    let ipt = tool("iptables-legacy", "iptables");
    // u32: the byte after the UDP header's 8 (IP header 20 + 8 = 28) is
    // the RTP header's; its second byte's low 7 bits are the payload type.
    for (pt, every, first) in [("0x00210000", "50", "25"), ("0x00610000", "10", "5")] {
        ns.run(
            &ipt,
            &["-A", "INPUT", "-p", "udp", "--dport", "5004", "-m", "u32", "--u32", &format!("28&0x007F0000={pt}")]
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

/// rtpmgrd in B relaying to a GStreamer receiver in B; `sender` (a
/// gst-launch pipeline that writes what it sends to `sent.ts`) in A.
fn run(tag: &str, stream_keys: &str, sender: impl Fn(&Path, &Path) -> Vec<String>) -> Option<Run> {
    let gst = tool("gst-launch-1.0", "gstreamer1.0-tools");
    let pair = NetnsPair::create(tag)?;
    let dir = TempDir::new(tag);
    let input = make_ts(&dir);
    let ipt = drop_on_the_way(&pair.b);
    let config = format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\n\n\
         [[stream]]\nname = \"tv1\"\ndirection = \"relay\"\nbind = \"{}:5004\"\n\
         destination = \"127.0.0.1:6004\"\npayload_type = 33\nrtcp = \"port+1\"\nnack = true\n{stream_keys}",
        dir.path("control.sock").display(),
        NetnsPair::B
    );
    let daemon = Daemon::start_with(&dir, &config, |p| pair.b.cmd(p));
    let (sent, received) = (dir.path("sent.ts"), dir.path("received.ts"));
    // A real receiver: its socket buffer takes the bursts a repaired gap
    // releases at once.
    let mut recv = pair.b.cmd(&gst);
    recv.args(["-e", "udpsrc", "port=6004", "buffer-size=4194304"])
        .arg("caps=application/x-rtp,media=video,clock-rate=90000,encoding-name=MP2T,payload=33")
        .args(["!", "rtpmp2tdepay", "!", "filesink"])
        .arg(format!("location={}", received.display()));
    let receiver = Peer::spawn("gst-launch-1.0 (receiver)", recv, dir.path("recv.log"));
    receiver.wait_for_log("Setting pipeline to PLAYING", Duration::from_secs(20));
    let mut send = pair.a.cmd(&gst);
    send.arg("-e").args(sender(&input, &sent));
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
    wait_until("every packet released", Duration::from_secs(10), || {
        daemon.status().streams[0]
            .reorder
            .as_ref()
            .is_some_and(|r| r.held == 0 && r.released + r.skipped >= rtp_packets)
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = daemon.status().streams.remove(0);
    assert!(receiver.interrupt().success());
    let got = std::fs::read(&received).unwrap();
    let drops = dropped(&pair.b, &ipt);
    eprintln!(
        "{tag}: {} RTP packets sent, dropped on the way: {} media, {} RTX; rtpmgrd: {:?}; reorder: {:?}",
        rtp_packets, drops.0, drops.1, status.rtcp, status.reorder
    );
    assert_eq!(got.len(), want.len(), "bytes the receiver got vs bytes the sender sent");
    if let Some(i) = got.chunks(188).zip(want.chunks(188)).position(|(a, b)| a != b) {
        panic!("TS packet {i} differs");
    }
    assert!(daemon.stop().success());
    Some(Run { status, drops })
}

#[test]
fn gstreamer_rtprtxsend_over_a_lossy_link_gives_a_lossless_output() {
    let Some(r) =
        run("rtx", "reorder_ms = 400\nrtcp_peer = \"10.99.0.1:5007\"\nrtx_payload_type = 97\n", |input, sent| {
            [
                "rtpbin",
                "name=rtp",
                "rtp-profile=avpf",
                "filesrc",
                &format!("location={}", input.display()),
                "!",
                "tsparse",
                "set-timestamps=true",
                "alignment=7",
                "!",
                "tee",
                "name=t",
                "!",
                "queue",
                "!",
                "rtpmp2tpay",
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
                "t.",
                "!",
                "queue",
                "!",
                "filesink",
                "buffer-mode=unbuffered",
                &format!("location={}", sent.display()),
            ]
            .map(String::from)
            .to_vec()
        })
    else {
        return;
    };
    let (rtcp, reorder) = (r.status.rtcp.unwrap(), r.status.reorder.unwrap());
    assert!(r.drops.0 >= 40, "{:?}", r.drops);
    // Every media packet dropped was asked for and repaired; the RTX the
    // link dropped were asked for again.
    assert_eq!(rtcp.repaired, r.drops.0, "{rtcp:?}");
    assert_eq!(rtcp.rtx_received + r.drops.1, rtcp.nack_requested, "one RTX per sequence number asked for: {rtcp:?}");
    assert!(rtcp.nack_requested >= r.drops.0 + r.drops.1, "{rtcp:?}");
    assert_eq!((reorder.skipped, reorder.late), (0, 0), "{reorder:?}");
    assert_eq!(r.status.lost, r.drops.0 as i64, "the input statistics show what the network lost");
    assert!(rtcp.sr_received > 0 && rtcp.rr_sent > 0, "{rtcp:?}");
}

#[test]
fn rist_simple_profile_sender_over_a_lossy_link_gives_a_lossless_output() {
    let Some(r) = run("rist", "reorder_ms = 1000\n", |input, sent| {
        [
            "filesrc",
            &format!("location={}", input.display()),
            "!",
            "tsparse",
            "set-timestamps=true",
            "alignment=7",
            "!",
            "tee",
            "name=t",
            "!",
            "queue",
            "!",
            "rtpmp2tpay",
            "!",
            "ristsink",
            "address=10.99.0.2",
            "port=5004",
            "sender-buffer=1000",
            "t.",
            "!",
            "queue",
            "!",
            "filesink",
            "buffer-mode=unbuffered",
            &format!("location={}", sent.display()),
        ]
        .map(String::from)
        .to_vec()
    }) else {
        return;
    };
    let (rtcp, reorder) = (r.status.rtcp.unwrap(), r.status.reorder.unwrap());
    // RIST retransmits with the media payload type: the rule drops some
    // retransmissions too, which are asked for again.
    assert!(r.drops.0 >= 40, "{:?}", r.drops);
    assert!(rtcp.rist_received > 0 && rtcp.repaired > 0, "{rtcp:?}");
    assert_eq!((reorder.skipped, reorder.late), (0, 0), "{reorder:?}");
    // RTCP goes where ristsink's RTCP comes from (learned, not configured).
    assert!(rtcp.peer.as_deref().is_some_and(|p| p.starts_with("10.99.0.1:")), "{rtcp:?}");
    assert!(rtcp.sr_received > 0 && rtcp.rr_sent > 0, "{rtcp:?}");
}
