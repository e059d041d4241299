// SPDX-License-Identifier: MIT
//! `bare-relay --ports N`: every one of the N sockets relays, and what it
//! relays arrives intact at `--to` (the guest benchmark counts on both).

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn every_port_relays_to_the_destination() {
    const PORTS: u16 = 5;
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // A free block of ports: bind them, note the first, release them.
    let first = loop {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = probe.local_addr().unwrap().port();
        if p > 65_535 - PORTS {
            continue;
        }
        let rest: Vec<_> = (1..PORTS).filter_map(|i| UdpSocket::bind(("127.0.0.1", p + i)).ok()).collect();
        if rest.len() == usize::from(PORTS - 1) {
            break p;
        }
    };
    let mut relay = Command::new(env!("CARGO_BIN_EXE_bare-relay"))
        .args(["--listen", &format!("127.0.0.1:{first}"), "--ports", &PORTS.to_string()])
        .args(["--to", &sink.local_addr().unwrap().to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Until the last port relays (the relay binds them in order), probe it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    sink.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    loop {
        assert!(Instant::now() < deadline, "bare-relay never relayed port {}", first + PORTS - 1);
        tx.send_to(b"probe", ("127.0.0.1", first + PORTS - 1)).unwrap();
        if sink.recv(&mut buf).is_ok() {
            break;
        }
    }
    while sink.recv(&mut buf).is_ok() {}
    sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = Vec::new();
    for i in 0..PORTS {
        tx.send_to(&[i as u8; 40], ("127.0.0.1", first + i)).unwrap();
        let n = sink.recv(&mut buf).unwrap_or_else(|e| panic!("nothing relayed from port {}: {e}", first + i));
        got.push(buf[..n].to_vec());
    }
    relay.kill().unwrap();
    relay.wait().unwrap();
    got.sort();
    let want: Vec<Vec<u8>> = (0..PORTS).map(|i| vec![i as u8; 40]).collect();
    assert_eq!(got, want);
}

#[test]
fn ports_that_run_past_65535_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_bare-relay"))
        .args(["--listen", "127.0.0.1:65535", "--ports", "2", "--to", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ports"));
}
