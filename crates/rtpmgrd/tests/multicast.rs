// SPDX-License-Identifier: MIT
//! Multicast joins, any-source and source-specific, inside a network
//! namespace the test creates (its loopback with multicast enabled), so
//! nothing leaves the machine. Needs root and iproute2, as CI has; without
//! them the test says so and does nothing.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn any_source_and_source_specific_joins() {
    let Some(ns) = Netns::create("mc") else { return };
    ns.ip(&["link", "set", "lo", "multicast", "on"]);
    ns.ip(&["route", "add", "224.0.0.0/4", "dev", "lo"]);
    let dir = TempDir::new("mcast");
    let config = format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\n\n\
         [[stream]]\nname = \"asm\"\ndirection = \"relay\"\nbind = \"0.0.0.0:5004\"\ngroup = \"239.1.1.1\"\n\
         interface = \"lo\"\ndestination = \"127.0.0.1:7004\"\npayload_type = 33\n\n\
         [[stream]]\nname = \"ssm\"\ndirection = \"relay\"\nbind = \"232.1.1.1:5006\"\ngroup = \"232.1.1.1\"\n\
         source = \"127.0.0.1\"\ninterface = \"lo\"\ndestination = \"127.0.0.1:7006\"\npayload_type = 33\n",
        dir.path("control.sock").display()
    );
    let daemon = Daemon::start_with(&dir, &config, |p| ns.cmd(p));
    for (group, sink) in [("239.1.1.1:5004", "127.0.0.1:7004"), ("232.1.1.1:5006", "127.0.0.1:7006")] {
        let recv = ns
            .cmd(&bin("rtpgen"))
            .args(["recv", "--listen", sink, "--count", "2000", "--timeout", "5"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let sent = ns.rtpgen(&["send", "--to", group, "--from", "127.0.0.1:0", "--count", "2000", "--bitrate", "40M"]);
        assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
        let out = recv.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("INTACT"), "via {group}: {text}");
    }
    // The SSM stream ignores the group from any other sender.
    let other =
        ns.rtpgen(&["send", "--to", "232.1.1.1:5006", "--from", "127.0.0.2:0", "--count", "300", "--bitrate", "40M"]);
    assert!(other.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let st = daemon.status();
    let get = |n: &str| st.streams.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!((get("asm").packets, get("asm").lost), (2000, 0));
    assert_eq!(get("ssm").packets, 2000, "packets from 127.0.0.2 must not pass the SSM join");
    assert!(daemon.stop().success());
}
