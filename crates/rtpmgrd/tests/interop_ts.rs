// SPDX-License-Identifier: MIT
//! Raw UDP MPEG-TS between real programs, the way IPTV carries it: ffmpeg
//! encodes a real transport stream (MPEG-2 video, MPEG-1 layer II audio)
//! and sends it as `-f mpegts udp://…?pkt_size=1316` into an rtpmgrd
//! `format = "udp-ts"` relay; GStreamer's `udpsrc` receives what rtpmgrd
//! sends on. What ffmpeg sent (its tee muxer writes the same bytes to a
//! file) and what GStreamer received must be identical, TS packet for TS
//! packet, and decode with ffmpeg without an error.
//!
//! Needs ffmpeg and GStreamer (gstreamer1.0-tools, -plugins-good), which
//! `ci/test` installs; without them the test fails and says so.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn ffmpeg_sends_a_real_ts_through_rtpmgrd_and_gstreamer_receives_it_packet_for_packet() {
    let ffmpeg = tool("ffmpeg", "ffmpeg");
    let ffprobe = tool("ffprobe", "ffmpeg");
    let gst = tool("gst-launch-1.0", "gstreamer1.0-tools");
    let dir = TempDir::new("interop-ts");
    let (input, sent, received) = (dir.path("in.ts"), dir.path("sent.ts"), dir.path("received.ts"));

    // 5 s of 25 fps video and a 1 kHz tone, as a head-end's encoder makes.
    let out = Command::new(&ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=25", "-f", "lavfi", "-i", "sine=frequency=1000"])
        .args(["-t", "5", "-c:v", "mpeg2video", "-b:v", "3M", "-c:a", "mp2", "-b:a", "128k", "-f", "mpegts"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffmpeg encode: {}", String::from_utf8_lossy(&out.stderr));

    let port = free_udp_port();
    let dest = free_udp_port();
    let daemon = Daemon::start(&dir, &ts_relay_config(&dir, port, dest, ""));

    let mut recv = Command::new(&gst);
    recv.args(["-e", "udpsrc", "address=127.0.0.1", &format!("port={dest}"), "buffer-size=8388608", "!"])
        .arg("filesink")
        .arg(format!("location={}", received.display()));
    let receiver = Peer::spawn("gst-launch-1.0 (udpsrc)", recv, dir.path("gst.log"));
    receiver.wait_for_log("Setting pipeline to PLAYING", Duration::from_secs(20));

    // Real time (-re), stream copy: the tee writes the very bytes of the
    // UDP output to sent.ts as well.
    let out = Command::new(&ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&input)
        .args(["-map", "0", "-c", "copy", "-f", "tee"])
        .arg(format!("[f=mpegts]udp://127.0.0.1:{port}?pkt_size=1316|[f=mpegts]{}", sent.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "ffmpeg send: {}", String::from_utf8_lossy(&out.stderr));
    let sent_bytes = std::fs::read(&sent).unwrap();
    let ts_packets = sent_bytes.len() as u64 / 188;
    assert!(ts_packets > 1_000 && sent_bytes.len() % 188 == 0, "{} bytes sent", sent_bytes.len());

    // Everything relayed, then GStreamer stops (end of stream) and closes
    // its file.
    wait_until("rtpmgrd to relay every TS packet", Duration::from_secs(20), || {
        let s = daemon.status().streams.remove(0);
        s.ts.is_some_and(|t| t.ts_packets == ts_packets) && s.sent_packets == s.packets
    });
    std::thread::sleep(Duration::from_millis(300));
    let st = receiver.interrupt();
    assert!(st.success(), "gst-launch-1.0 exit: {st}");
    let got = std::fs::read(&received).unwrap();
    assert_eq!(got.len(), sent_bytes.len(), "bytes received by GStreamer vs sent by ffmpeg");
    if let Some(i) = got.chunks(188).zip(sent_bytes.chunks(188)).position(|(a, b)| a != b) {
        panic!("TS packet {i} of {ts_packets} differs");
    }

    // rtpmgrd's view: raw TS, nothing lost, malformed or unhealthy.
    let json = daemon.ctl_status_json();
    let s = &json["streams"][0];
    assert_eq!(s["format"], "udp-ts");
    assert_eq!((s["malformed"].as_u64(), s["lost"].as_i64(), s["reordered"].as_u64()), (Some(0), Some(0), Some(0)));
    assert_eq!(s["packets"], s["sent_packets"]);
    let ts = &s["ts"];
    assert_eq!(ts["ts_packets"].as_u64(), Some(ts_packets));
    for k in ["sync_loss", "sync_byte_error", "pat_error", "cc_error", "pmt_error", "pid_error", "crc_error"] {
        assert_eq!(ts[k].as_u64(), Some(0), "{k}: {ts}");
    }
    assert_eq!((ts["programs"].as_u64(), ts["es_pids"].as_u64()), (Some(1), Some(2)), "{ts}");
    assert!(daemon.stop().success());

    // A decoder agrees: every video frame there, nothing it complains of.
    let frames = |f: &std::path::Path| {
        let out = Command::new(&ffprobe)
            .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
            .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
            .arg(f)
            .output()
            .unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "ffprobe: {}", String::from_utf8_lossy(&out.stderr));
        // The stream's entry (ffprobe repeats it under the program).
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split(|c: char| !c.is_ascii_digit()).find(|w| !w.is_empty()).unwrap_or_default().to_string()
    };
    assert_eq!(frames(&received), "125");
    assert_eq!(frames(&received), frames(&input));
}
