// SPDX-License-Identifier: MIT
//! The daemon's life: --check-config, SIGHUP reload (good and bad),
//! control-socket reload, SIGTERM.

mod common;
use common::*;
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::{Duration, Instant};

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conf/rtpmgr.toml");
    let out = Command::new(bin("rtpmgrd")).args(["--check-config", "--config", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK, "));
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = TempDir::new("check");
    let path = dir.path("bad.toml");
    write_config(&path, "[daemon]\nbackend = \"sim\"\n\n[buffer]\nslot_count = 1024\nslot_szie = 2048\n");
    let out = Command::new(bin("rtpmgrd")).arg("--check-config").arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:6:", path.display())), "file and line: {err}");
    assert!(err.contains("slot_szie"), "the key: {err}");

    let missing = dir.path("nope.toml");
    let out = Command::new(bin("rtpmgrd")).arg("--check-config").arg("-c").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&missing.display().to_string()));
}

#[test]
fn unknown_argument_is_a_usage_error() {
    let out = Command::new(bin("rtpmgrd")).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument \"--frobnicate\""));
}

/// SIGHUP adds a stream without disturbing the unchanged one; a broken
/// file is refused and the old configuration keeps running.
#[test]
fn sighup_reload_applies_changes_and_refuses_bad_files() {
    let dir = TempDir::new("reload");
    let sink_a = Sink::start();
    let sink_b = Sink::start();
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let daemon = Daemon::start(&dir, &relay_config(&dir, &[("a", port_a, sink_a.port)]));
    let first: Vec<_> = (0..500).map(|s| rtp_packet(1, s)).collect();
    send_windowed(port_a, &first, &sink_a, 64);
    sink_a.wait_for(500, Duration::from_secs(10));
    let id_a = daemon.status().streams[0].id;

    // Add stream b; a stays as it is.
    write_config(&daemon.config, &relay_config(&dir, &[("a", port_a, sink_a.port), ("b", port_b, sink_b.port)]));
    daemon.signal(Signal::SIGHUP);
    wait_until("stream b", || daemon.status().streams.len() == 2);
    let st = daemon.status();
    let a = st.streams.iter().find(|s| s.name == "a").unwrap();
    assert_eq!(a.id, id_a, "unchanged stream kept its device stream");
    assert_eq!(a.packets, 500, "unchanged stream kept its counters");

    let more: Vec<_> = (500..1000).map(|s| rtp_packet(1, s)).collect();
    send_windowed(port_a, &more, &sink_a, 64);
    let for_b: Vec<_> = (0..300).map(|s| rtp_packet(2, s)).collect();
    send_windowed(port_b, &for_b, &sink_b, 64);
    sink_a.wait_for(1000, Duration::from_secs(10));
    sink_b.wait_for(300, Duration::from_secs(10));
    let st = daemon.status();
    let a = st.streams.iter().find(|s| s.name == "a").unwrap();
    assert_eq!((a.packets, a.lost), (1000, 0), "a went on without a gap");

    // A broken file: refused, both streams keep running.
    write_config(&daemon.config, "[buffer]\nslot_count = 3\n");
    daemon.signal(Signal::SIGHUP);
    wait_until("the refusal in the log", || daemon.log_text().contains("reload refused"));
    assert!(daemon.log_text().contains(":2:"), "the error names the line:\n{}", daemon.log_text());
    assert_eq!(daemon.status().streams.len(), 2);

    // Reload through the control socket: remove a, change nothing of b.
    write_config(&daemon.config, &relay_config(&dir, &[("b", port_b, sink_b.port)]));
    let out = Command::new(bin("rtpmgrctl")).arg("-s").arg(&daemon.socket).arg("reload").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = daemon.status();
    assert_eq!(st.streams.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["b"]);
    assert_eq!(st.streams[0].packets, 300);

    // A bad file through rtpmgrctl: non-zero exit and the error text.
    write_config(&daemon.config, "[[stream]]\nname = \"x\"\n");
    let out = Command::new(bin("rtpmgrctl")).arg("-s").arg(&daemon.socket).arg("reload").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reload refused"));
    assert!(daemon.stop().success());
    drop((sink_a, sink_b));
}

#[test]
fn a_stream_that_cannot_start_is_reported_and_the_rest_run() {
    let dir = TempDir::new("failed");
    let sink = Sink::start();
    let port = free_udp_port();
    // Occupy the port of stream "busy" so its bind fails.
    let blocker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = blocker.local_addr().unwrap().port();
    let cfg = relay_config(&dir, &[("ok", port, sink.port), ("busy", busy, sink.port)]);
    let daemon = Daemon::start(&dir, &cfg);
    let st = daemon.status();
    let busy_s = st.streams.iter().find(|s| s.name == "busy").unwrap();
    assert_eq!(busy_s.state, "failed");
    assert!(busy_s.error.as_deref().unwrap().contains("bind 127.0.0.1"), "{:?}", busy_s.error);
    let packets: Vec<_> = (0..100).map(|s| rtp_packet(7, s)).collect();
    send_windowed(port, &packets, &sink, 32);
    sink.wait_for(100, Duration::from_secs(10));
    // rtpmgrctl's table exits 3 when a stream is not running.
    let out = Command::new(bin("rtpmgrctl")).arg("-s").arg(&daemon.socket).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("busy: bind 127.0.0.1"));
    // The port is freed: the failed stream is retried with backoff and
    // comes up by itself, without a reload.
    drop(blocker);
    wait_until("busy retried and running", || {
        daemon.status().streams.iter().any(|s| s.name == "busy" && s.state == "running")
    });
    // 100 into a 1024-slot ring: no flow control needed.
    let more: Vec<_> = (0..100).map(|s| rtp_packet(8, s)).collect();
    send_paced(busy, &more, 100, Duration::ZERO);
    sink.wait_for(200, Duration::from_secs(10));
    assert!(daemon.log_text().contains("stream busy: running again after"), "{}", daemon.log_text());
    assert!(daemon.stop().success());
}

#[test]
fn control_socket_mode_and_periodic_status_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("statusline");
    let sink = Sink::start();
    let port = free_udp_port();
    let cfg = relay_config(&dir, &[("tv1", port, sink.port)])
        .replace("status_interval_secs = 0", "status_interval_secs = 1\ncontrol_socket_mode = \"0640\"");
    let daemon = Daemon::start(&dir, &cfg);
    let mode = std::fs::metadata(&daemon.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let packets: Vec<_> = (0..50).map(|s| rtp_packet(3, s)).collect();
    send_windowed(port, &packets, &sink, 16);
    sink.wait_for(50, Duration::from_secs(10));
    wait_until("a status line", || daemon.log_text().contains("tv1 (user, rtp): rx 50 pkts"));
    let line = daemon.log_text().lines().find(|l| l.contains("tv1 (user, rtp): rx 50 pkts")).unwrap().to_owned();
    assert!(line.contains("lost 0") && line.contains("tx 50 pkts"), "{line}");
    assert!(daemon.stop().success());
}

#[test]
fn reload_restarts_only_the_changed_stream() {
    let dir = TempDir::new("changed");
    let (sink_a, sink_b, sink_c) = (Sink::start(), Sink::start(), Sink::start());
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let daemon = Daemon::start(&dir, &relay_config(&dir, &[("a", port_a, sink_a.port), ("b", port_b, sink_b.port)]));
    let packets: Vec<_> = (0..100).map(|s| rtp_packet(1, s)).collect();
    send_windowed(port_a, &packets, &sink_a, 32);
    send_windowed(port_b, &packets, &sink_b, 32);
    sink_a.wait_for(100, Duration::from_secs(10));
    sink_b.wait_for(100, Duration::from_secs(10));
    let before = daemon.status();
    // b now sends to another destination; a is unchanged.
    write_config(&daemon.config, &relay_config(&dir, &[("a", port_a, sink_a.port), ("b", port_b, sink_c.port)]));
    daemon.signal(Signal::SIGHUP);
    let dest_c = format!("127.0.0.1:{}", sink_c.port);
    wait_until("b restarted", || {
        daemon.status().streams.iter().any(|s| s.name == "b" && s.destination.as_deref() == Some(dest_c.as_str()))
    });
    let after = daemon.status();
    let find = |st: &rtpmgr_control::StatusReport, n: &str| st.streams.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(find(&after, "a").id, find(&before, "a").id);
    assert_eq!(find(&after, "a").packets, 100, "a untouched");
    assert_eq!(find(&after, "b").packets, 0, "b restarted with fresh counters");
    send_windowed(port_b, &packets, &sink_c, 32);
    sink_c.wait_for(100, Duration::from_secs(10));
    assert!(daemon.stop().success());
}

/// With the kernel backend and no device yet (module not loaded), rtpmgrd
/// waits with backoff instead of exiting, notices when the path appears,
/// and a SIGTERM while it waits ends it cleanly. (The guest test loads the
/// real module under a waiting daemon.)
#[test]
fn waits_for_a_missing_device_and_stops_cleanly_while_waiting() {
    let dir = TempDir::new("nodev");
    let device = dir.path("rtpmgr");
    let config = format!(
        "[daemon]\nbackend = \"kernel\"\ndevice = \"{}\"\ncontrol_socket = \"{}\"\n\n\
         [[stream]]\nname = \"a\"\ndirection = \"ingress\"\nbind = \"127.0.0.1:5999\"\n",
        device.display(),
        dir.path("control.sock").display(),
    );
    let run = |dir: &TempDir| {
        std::fs::write(dir.path("rtpmgr.toml"), &config).unwrap();
        Command::new(bin("rtpmgrd"))
            .arg("--config")
            .arg(dir.path("rtpmgr.toml"))
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(dir.path("log")).unwrap())
            .spawn()
            .unwrap()
    };
    let log = || std::fs::read_to_string(dir.path("log")).unwrap_or_default();
    let mut child = run(&dir);
    wait_until("the waiting line", || log().contains(&format!("waiting for {}", device.display())));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "rtpmgrd gave up: {}", log());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "{st:?}: {}", log());
    assert!(log().contains("stopped while waiting"), "{}", log());

    // The path appears (here a plain file, not the device): rtpmgrd opens
    // it on its next attempt and refuses it with a clear error.
    let mut child = run(&dir);
    wait_until("the waiting line", || log().contains("waiting for"));
    std::fs::write(&device, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "rtpmgrd did not retry: {}", log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(st.code(), Some(1), "{}", log());
    assert!(log().contains("is here") && log().contains("GET_INFO"), "{}", log());
}

/// The IPTV keys' misuses name file, line and key too.
#[test]
fn check_config_names_file_line_and_key_for_iptv_keys() {
    let dir = TempDir::new("check-iptv");
    let path = dir.path("iptv.toml");
    let stream =
        "[[stream]]\nname = \"tv1\"\ndirection = \"relay\"\nbind = \"0.0.0.0:5004\"\ndestination = \"10.0.0.2:5004\"\n";
    for (extra, line, key) in [
        ("format = \"udp-ts\"\npayload_type = 33\n", 7, "payload_type"),
        ("format = \"udp-ts\"\nreorder_ms = 50\n", 7, "reorder_ms"),
        ("nack = true\n", 6, "nack"),
        ("reorder_ms = 50\nfec = true\nrtx_payload_type = 97\n", 8, "rtx_payload_type"),
        ("leg2 = { bind = \"0.0.0.0:5014\" }\n", 6, "leg2"),
        ("rtcp = \"port+2\"\n", 6, "port+2"),
        ("pid_timeout_ms = 10\n", 6, "pid_timeout_ms"),
    ] {
        write_config(&path, &format!("{stream}{extra}"));
        let out = Command::new(bin("rtpmgrd")).arg("--check-config").arg("-c").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{extra}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{}:{line}:", path.display())), "file and line for {extra:?}: {err}");
        assert!(err.contains(key), "the key for {extra:?}: {err}");
    }
}
