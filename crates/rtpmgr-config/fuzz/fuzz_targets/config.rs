// SPDX-License-Identifier: MIT
//! Arbitrary bytes as /etc/rtpmgr.toml. The loader must never panic; an
//! accepted configuration must satisfy every rule the validator promises
//! (so a rule that silently lets a value through shows up here); a refused
//! one must say where: an error naming a key carries a line (and column)
//! inside the text, and the printed form starts with `path:line:col`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtpmgr_config::{Config, ConfigError, Direction, RtcpMode, StreamFormat};
use std::path::Path;

const ORIGIN: &str = "/etc/rtpmgr.toml";

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 never reaches `parse` (`load` fails reading it as a
    // string); decode lossily so such inputs still exercise the parser.
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, Path::new(ORIGIN)) {
        Ok(config) => check_config(&config),
        Err(e) => check_error(&e, &text),
    }
});

fn check_error(e: &ConfigError, text: &str) {
    assert_eq!(e.path(), Path::new(ORIGIN));
    assert!(!e.message().trim().is_empty(), "empty message: {e:?}");
    if e.key().is_some() {
        assert!(e.line().is_some(), "error names a key but no line: {e:?}");
    }
    let shown = e.to_string();
    if let Some(line) = e.line() {
        // Lines are 1-based and inside the text (one past the last line
        // break at most: an error at the very end).
        let lines = text.matches('\n').count() + 1;
        assert!((1..=lines).contains(&line), "line {line} outside 1..={lines}: {e:?}");
        let col = e.column().expect("a line without a column");
        assert!(col >= 1, "column 0: {e:?}");
        assert!(shown.starts_with(&format!("{ORIGIN}:{line}:{col}: ")), "{shown:?} does not start with the place");
    } else {
        assert!(e.column().is_none(), "a column without a line: {e:?}");
        assert!(shown.starts_with(&format!("{ORIGIN}: ")), "{shown:?}");
    }
}

fn pow2_in(v: u32, lo: u32, hi: u32) -> bool {
    v.is_power_of_two() && (lo..=hi).contains(&v)
}

/// The rules of docs and validate.rs, restated on the accepted model.
fn check_config(c: &Config) {
    let d = &c.daemon;
    assert!(d.device.is_absolute() && d.control_socket.is_absolute(), "{d:?}");
    assert!(d.control_socket_mode <= 0o777, "{d:?}");
    assert!(d.status_interval_secs <= 86_400, "{d:?}");
    assert!((65_536..=268_435_456).contains(&d.socket_buffer_bytes), "{d:?}");
    let b = &c.buffer;
    assert!(pow2_in(b.slot_count, 8, 32_768) && pow2_in(b.slot_size, 256, 65_536), "{b:?}");
    for (i, s) in c.streams.iter().enumerate() {
        let name_ok = (1..=32).contains(&s.name.len())
            && s.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        assert!(name_ok, "{s:?}");
        assert!(std::ptr::eq(c.stream(&s.name).expect("stream by name"), s), "duplicate name {:?}", s.name);
        if s.direction != Direction::Egress {
            assert_ne!(s.bind.port(), 0, "{s:?}");
        }
        if let Some(g) = s.group {
            assert!(g.is_multicast() && g.is_ipv4() == s.bind.is_ipv4(), "{s:?}");
            assert_ne!(s.direction, Direction::Egress, "{s:?}");
            assert!(s.bind.ip().is_unspecified() || s.bind.ip() == g, "{s:?}");
        }
        if let Some(src) = s.source {
            assert!(s.group.is_some() && !src.is_multicast() && !src.is_unspecified(), "{s:?}");
            assert_eq!(src.is_ipv4(), s.bind.is_ipv4(), "{s:?}");
        }
        if let Some(ifname) = &s.interface {
            assert!(s.group.is_some() && (1..=15).contains(&ifname.len()), "{s:?}");
            assert!(!ifname.chars().any(|c| c == '/' || c.is_whitespace()), "{s:?}");
        }
        match (s.direction, s.destination) {
            (Direction::Ingress, dest) => assert!(dest.is_none(), "{s:?}"),
            (_, None) => panic!("sending stream without destination: {s:?}"),
            (_, Some(dest)) => {
                assert!(dest.port() != 0 && !dest.ip().is_unspecified(), "{s:?}");
                assert_eq!(dest.is_ipv4(), s.bind.is_ipv4(), "{s:?}");
            }
        }
        if let Some(ttl) = s.multicast_ttl {
            assert!(ttl >= 1 && s.destination.is_some_and(|d| d.ip().is_multicast()), "{s:?}");
        }
        assert!(s.payload_type.is_none_or(|pt| pt <= 127), "{s:?}");
        if s.format == StreamFormat::UdpTs {
            assert!(s.payload_type.is_none() && s.clock_rate.is_none(), "{s:?}");
        }
        assert!((100..=60_000).contains(&s.pid_timeout_ms), "{s:?}");
        assert!(s.reorder_ms <= 5_000, "{s:?}");
        if s.reorder_ms > 0 {
            assert!(s.format == StreamFormat::Rtp && s.direction != Direction::Egress, "{s:?}");
        }
        if s.nack {
            assert!(s.rtcp != RtcpMode::Off && s.reorder_ms > 0, "{s:?}");
        }
        if let Some(pt) = s.rtx_payload_type {
            assert!(s.nack && pt <= 127 && s.payload_type != Some(pt), "{s:?}");
        }
        if s.rtcp_peer.is_some() {
            assert_ne!(s.rtcp, RtcpMode::Off, "{s:?}");
        }
        if s.fec {
            assert!(s.reorder_ms > 0 && s.bind.port() <= u16::MAX - 4, "{s:?}");
        }
        if let Some(leg) = &s.leg2 {
            assert!(s.reorder_ms > 0 && leg.bind != s.bind && leg.bind.port() != 0, "{s:?}");
            assert_eq!(leg.bind.is_ipv4(), s.bind.is_ipv4(), "{s:?}");
        }
        assert!(s.clock_rate.is_none_or(|r| (1..=10_000_000).contains(&r)), "{s:?}");
        assert!((1..=10_000_000).contains(&s.effective_clock_rate()), "{s:?}");
        let port_ok = (1..=31).contains(&s.media_port.len())
            && s.media_port
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
        assert!(port_ok, "{s:?}");
        // No two streams on one socket.
        for o in &c.streams[..i] {
            let same_socket = s.bind.port() != 0
                && s.bind.port() == o.bind.port()
                && s.bind.is_ipv4() == o.bind.is_ipv4()
                && (s.bind.ip() == o.bind.ip() || s.bind.ip().is_unspecified() || o.bind.ip().is_unspecified());
            assert!(!same_socket, "{s:?} and {o:?} share a socket");
        }
    }
}
