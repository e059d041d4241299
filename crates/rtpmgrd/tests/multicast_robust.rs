// SPDX-License-Identifier: MIT
//! Multicast robustness: a group is joined again when its interface is
//! removed and comes back (with another index), and a receive buffer the
//! kernel caps is reported naming `net.core.rmem_max`. Inside network
//! namespaces the test creates; needs root and iproute2.

mod common;
use common::*;
use std::time::Duration;

/// A veth pair m0 (10.88.0.1, where rtpmgrd joins) and m1 (10.88.0.2, the
/// sender's way to the group), multicast on.
fn make_link(ns: &Netns) {
    ns.ip(&["link", "add", "m0", "type", "veth", "peer", "name", "m1"]);
    for (dev, addr) in [("m0", "10.88.0.1/24"), ("m1", "10.88.0.2/24")] {
        ns.ip(&["addr", "add", addr, "dev", dev]);
        ns.ip(&["link", "set", dev, "multicast", "on"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    ns.ip(&["route", "replace", "224.0.0.0/4", "dev", "m1"]);
    // m1's packets reach m0 with a source address of this namespace's:
    // accept them (accept_local), and no reverse-path filter.
    for knob in ["all/accept_local", "m0/accept_local", "all/rp_filter", "m0/rp_filter", "default/rp_filter"] {
        let value = if knob.ends_with("accept_local") { "1" } else { "0" };
        let out = ns
            .cmd(std::path::Path::new("sh"))
            .args(["-c", &format!("echo {value} > /proc/sys/net/ipv4/conf/{knob}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{knob}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn relay_intact(ns: &Netns, start: u32) -> bool {
    let recv = ns
        .cmd(&bin("rtpgen"))
        .args(["recv", "--listen", "127.0.0.1:7004", "--count", "500", "--timeout", "3"])
        .arg("--start-seq")
        .arg(start.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let s = start.to_string();
    let sent =
        ns.rtpgen(&["send", "--to", "239.9.9.9:5004", "--from", "10.88.0.2:0", "--count", "500", "--start-seq", &s]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let out = recv.wait_with_output().unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("INTACT")
}

#[test]
fn a_group_is_joined_again_when_its_interface_comes_back() {
    let Some(ns) = Netns::create("rejoin") else { return };
    make_link(&ns);
    let dir = TempDir::new("rejoin");
    let config = format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\n\n\
         [[stream]]\nname = \"tv1\"\ndirection = \"relay\"\nbind = \"0.0.0.0:5004\"\ngroup = \"239.9.9.9\"\n\
         interface = \"m0\"\ndestination = \"127.0.0.1:7004\"\npayload_type = 33\n",
        dir.path("control.sock").display()
    );
    let daemon = Daemon::start_with(&dir, &config, |p| ns.cmd(p));
    assert!(relay_intact(&ns, 0), "before: {}", daemon.log_text());

    // The link goes away (its membership with it) and is created again:
    // same names, new interface indices.
    ns.ip(&["link", "del", "m0"]);
    wait_until("rtpmgrd to notice", Duration::from_secs(5), || daemon.log_text().contains("interface m0 is gone"));
    make_link(&ns);
    wait_until("the re-join", Duration::from_secs(5), || daemon.status().streams[0].rejoins == 1);
    assert!(relay_intact(&ns, 500), "after the interface came back: {}", daemon.log_text());
    let s = daemon.status().streams.remove(0);
    assert_eq!((s.state.as_str(), s.packets, s.rejoins), ("running", 1_000, 1), "{s:?}");
    assert!(daemon.log_text().contains("stream tv1: joined 239.9.9.9 again on m0"), "{}", daemon.log_text());
    // Down and up keeps the index: the kernel keeps the membership.
    ns.ip(&["link", "set", "m0", "down"]);
    ns.ip(&["link", "set", "m0", "up"]);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(relay_intact(&ns, 1_000), "after down and up: {}", daemon.log_text());
    assert_eq!(daemon.status().streams[0].rejoins, 1);
    assert!(daemon.stop().success());
}

#[test]
fn a_capped_receive_buffer_is_reported_naming_rmem_max() {
    let Some(ns) = Netns::create("rmem") else { return };
    let setpriv = tool("setpriv", "util-linux");
    let rmem_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap().trim().parse::<u64>().unwrap();
    const WANT: u64 = 268_435_456;
    let dir = TempDir::new("rmem");
    let config = format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\nsocket_buffer_bytes = {WANT}\n\n\
         [[stream]]\nname = \"tv1\"\ndirection = \"relay\"\nbind = \"127.0.0.1:5004\"\n\
         destination = \"127.0.0.1:7004\"\n",
        dir.path("control.sock").display()
    );
    // Without CAP_NET_ADMIN, SO_RCVBUFFORCE fails and SO_RCVBUF is capped.
    let daemon = Daemon::start_with(&dir, &config, |p| {
        let mut c = ns.cmd(&setpriv);
        c.args(["--bounding-set=-net_admin", "--inh-caps=-net_admin"]).arg(p);
        c
    });
    let log = daemon.log_text();
    if rmem_max < WANT {
        assert!(
            log.contains(&format!("the kernel caps it at net.core.rmem_max = {rmem_max} without CAP_NET_ADMIN")),
            "{log}"
        );
        assert!(log.contains(&format!("sysctl -w net.core.rmem_max={WANT}")), "{log}");
    } else {
        assert!(!log.contains("net.core.rmem_max"), "{log}");
    }
    assert_eq!(daemon.status().streams[0].state, "running");
    assert!(daemon.stop().success());
    // With CAP_NET_ADMIN (root) the buffer is forced: no warning.
    let dir = TempDir::new("rmem-root");
    let root = format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\nsocket_buffer_bytes = 8388608\n\n\
         [[stream]]\nname = \"tv1\"\ndirection = \"relay\"\nbind = \"127.0.0.1:5004\"\n\
         destination = \"127.0.0.1:7004\"\n",
        dir.path("control.sock").display()
    );
    let daemon = Daemon::start_with(&dir, &root, |p| ns.cmd(p));
    assert!(!daemon.log_text().contains("net.core.rmem_max"), "{}", daemon.log_text());
    assert!(daemon.stop().success());
}
