// SPDX-License-Identifier: MIT
//! Every rule, with the exact message a user sees.

use super::*;

const ORIGIN: &str = "/etc/rtpmgr.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(ORIGIN))
}

/// The error as printed.
fn err(text: &str) -> String {
    parse(text).expect_err("expected an error").to_string()
}

const RELAY: &str =
    "[[stream]]\nname = \"tv1\"\ndirection = \"relay\"\nbind = \"0.0.0.0:5004\"\ndestination = \"127.0.0.1:6000\"\n";

#[test]
fn qemuarm64_image_config_relays_the_slirp_port_through_media0() {
    let c = parse(include_str!("../../../conf/rtpmgr-qemuarm64.toml")).unwrap();
    assert_eq!(c.daemon.backend, BackendKind::Kernel);
    assert_eq!(c.streams.len(), 1);
    let tv1 = c.stream("tv1").unwrap();
    assert_eq!(tv1.direction, Direction::Relay);
    assert_eq!(tv1.bind, "0.0.0.0:5004".parse().unwrap());
    // qemu user networking shows the host as 10.0.2.2.
    assert_eq!(tv1.destination, Some("10.0.2.2:5006".parse().unwrap()));
    assert_eq!(tv1.media_port, "media0");
}

#[test]
fn shipped_example_parses_with_its_values() {
    let c = parse(include_str!("../../../conf/rtpmgr.toml")).unwrap();
    assert_eq!(c.daemon.backend, BackendKind::Kernel);
    assert_eq!(c.daemon.control_socket, PathBuf::from("/run/rtpmgr/control.sock"));
    assert_eq!(c.daemon.control_socket_mode, 0o660);
    assert_eq!(c.buffer, BufferConfig { slot_count: 1024, slot_size: 2048 });
    assert_eq!(c.streams.len(), 4);
    let tv1 = c.stream("tv1").unwrap();
    assert_eq!(tv1.direction, Direction::Relay);
    assert_eq!(tv1.group, Some("232.1.1.1".parse().unwrap()));
    assert_eq!(tv1.source, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(tv1.interface.as_deref(), Some("eth0"));
    assert_eq!(tv1.destination, Some("192.168.1.20:5004".parse().unwrap()));
    assert_eq!(tv1.effective_clock_rate(), 90_000);
    assert_eq!(tv1.ring_full, RingFullPolicy::Drop);
    assert_eq!(c.stream("feed2").unwrap().ring_full, RingFullPolicy::Wait);
    let out3 = c.stream("out3").unwrap();
    assert_eq!((out3.direction, out3.multicast_ttl, out3.payload_type), (Direction::Egress, Some(4), Some(96)));
    assert_eq!(c.stream("feed2").unwrap().media_port, "null");
    assert_eq!(tv1.format, StreamFormat::Rtp);
    let tv4 = c.stream("tv4").unwrap();
    assert_eq!((tv4.format, tv4.pid_timeout_ms, tv4.payload_type), (StreamFormat::UdpTs, 5_000, None));
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.daemon.socket_buffer_bytes, 4 << 20);
    assert_eq!(c.daemon.status_interval_secs, 10);
    assert_eq!(c.daemon.log_level, LevelFilter::Info);
    let s = &parse(RELAY).unwrap().streams[0];
    assert_eq!(s.media_port, "loopback");
    assert_eq!(s.effective_clock_rate(), 90_000);
}

#[test]
fn unknown_keys_name_line_key_and_table() {
    assert_eq!(
        err("[buffer]\nslot_count = 1024\nslot_szie = 2048\n"),
        "/etc/rtpmgr.toml:3:1: unknown field `slot_szie` in [buffer], expected `slot_count` or `slot_size`"
    );
    let e = parse("[buffer]\nslot_count = 1024\nslot_szie = 2048\n").unwrap_err();
    assert_eq!((e.line(), e.column(), e.key()), (Some(3), Some(1), Some("slot_szie")));
    let e = err("verbose = true\n");
    assert!(
        e.starts_with("/etc/rtpmgr.toml:1:1: unknown field `verbose`, expected one of `daemon`, `buffer`, `stream`"),
        "{e}"
    );
    let e = err("[daemon]\nbackend = \"sim\"\n  log = \"debug\"\n");
    assert!(e.starts_with("/etc/rtpmgr.toml:3:3: unknown field `log` in [daemon], expected one of"), "{e}");
    let e = err(&format!("{RELAY}multicast = true\n"));
    assert!(e.starts_with("/etc/rtpmgr.toml:6:1: unknown field `multicast` in [[stream]], expected one of"), "{e}");
}

#[test]
fn wrong_types_and_syntax() {
    let e = err("[buffer]\nslot_count = \"big\"\n");
    assert!(e.starts_with("/etc/rtpmgr.toml:2:14: invalid type: string \"big\", expected u32"), "{e}");
    let e = err("[buffer\nslot_count = 8\n");
    assert!(e.starts_with("/etc/rtpmgr.toml:1:"), "{e}");
    let e = err("[daemon]\nbackend = \"fpga\"\n");
    assert!(e.starts_with("/etc/rtpmgr.toml:2:11: unknown variant `fpga`, expected `kernel` or `sim`"), "{e}");
}

#[test]
fn buffer_geometry_rules() {
    assert_eq!(
        err("[buffer]\nslot_size = 3000\n"),
        "/etc/rtpmgr.toml:2:13: buffer.slot_size = 3000 is not a power of two (allowed: powers of two in 256..=65536)"
    );
    assert_eq!(
        err("[buffer]\nslot_count = 65536\n"),
        "/etc/rtpmgr.toml:2:14: buffer.slot_count = 65536 is out of range (allowed: powers of two in 8..=32768)"
    );
    assert_eq!(parse("[buffer]\nslot_count = 8\nslot_size = 65536\n").unwrap().buffer.slot_size, 65_536);
}

#[test]
fn daemon_rules() {
    assert_eq!(
        err("[daemon]\ncontrol_socket_mode = \"0999\"\n"),
        "/etc/rtpmgr.toml:2:23: daemon.control_socket_mode = \"0999\" is not an octal file mode such as \"0660\""
    );
    assert!(err("[daemon]\ncontrol_socket_mode = \"abc\"\n").contains("\"abc\" is not an octal file mode"));
    assert_eq!(parse("[daemon]\ncontrol_socket_mode = \"0600\"\n").unwrap().daemon.control_socket_mode, 0o600);
    assert_eq!(
        err("[daemon]\nlog_level = \"loud\"\n"),
        "/etc/rtpmgr.toml:2:13: daemon.log_level = \"loud\", expected one of off, error, warn, info, debug, trace"
    );
    assert!(err("[daemon]\nsocket_buffer_bytes = 1024\n")
        .contains("socket_buffer_bytes = 1024 is out of range 65536..=268435456"));
    assert!(err("[daemon]\ncontrol_socket = \"run/x.sock\"\n").contains("must be an absolute path"));
    assert_eq!(parse("[daemon]\nlog_level = \"DEBUG\"\n").unwrap().daemon.log_level, LevelFilter::Debug);
}

#[test]
fn data_path_settings() {
    let d = parse("").unwrap().daemon;
    assert_eq!((d.layout, d.udp_gso, d.receive_timestamps), (Layout::Threads, true, true));
    let d = parse("[daemon]\nlayout = \"run-to-completion\"\nudp_gso = false\nreceive_timestamps = false\n")
        .unwrap()
        .daemon;
    assert_eq!((d.layout, d.udp_gso, d.receive_timestamps), (Layout::RunToCompletion, false, false));
    assert_eq!(parse("[daemon]\nlayout = \"threads\"\n").unwrap().daemon.layout, Layout::Threads);
    assert!(err("[daemon]\nlayout = \"fibers\"\n").contains("fibers"), "{}", err("[daemon]\nlayout = \"fibers\"\n"));
    assert_eq!(d.rx_coalesce_us, 0);
    assert_eq!(parse("[daemon]\nrx_coalesce_us = 500\n").unwrap().daemon.rx_coalesce_us, 500);
    assert!(err("[daemon]\nrx_coalesce_us = 10001\n").contains("rx_coalesce_us = 10001 is more than 10000"));
}

fn stream(extra: &str) -> String {
    format!("[[stream]]\nname = \"tv1\"\n{extra}")
}

#[test]
fn required_stream_keys() {
    assert_eq!(
        err("[[stream]]\nname = \"tv1\"\nbind = \"0.0.0.0:5004\"\n"),
        "/etc/rtpmgr.toml:1:1: stream #1: missing required key `direction`"
    );
    assert_eq!(
        err(&format!("{RELAY}\n[[stream]]\ndirection = \"ingress\"\n")),
        "/etc/rtpmgr.toml:7:1: stream #2: missing required key `name`"
    );
    assert_eq!(
        err(&stream("direction = \"relay\"\nbind = \"0.0.0.0:5004\"\n")),
        "/etc/rtpmgr.toml:1:1: stream \"tv1\": missing required key `destination` for a relay stream"
    );
}

#[test]
fn addresses() {
    assert_eq!(
        err(&stream("direction = \"ingress\"\nbind = \"0.0.0.0:50o4\"\n")),
        "/etc/rtpmgr.toml:4:8: stream \"tv1\": bind = \"0.0.0.0:50o4\" is not an address:port such as \"0.0.0.0:5004\" or \"[::]:5004\""
    );
    assert_eq!(
        err(&stream("direction = \"ingress\"\nbind = \"0.0.0.0:0\"\n")),
        "/etc/rtpmgr.toml:4:8: stream \"tv1\": bind = \"0.0.0.0:0\" needs a port: an ingress stream receives on it"
    );
    assert!(parse(&stream("direction = \"egress\"\nbind = \"0.0.0.0:0\"\ndestination = \"10.0.0.2:5000\"\n")).is_ok());
    assert_eq!(
        err(&stream("direction = \"ingress\"\nbind = \"0.0.0.0:5004\"\ndestination = \"10.0.0.2:5000\"\n")),
        "/etc/rtpmgr.toml:5:15: stream \"tv1\": an ingress stream sends nothing; remove destination or use relay"
    );
    assert!(err(&stream("direction = \"relay\"\nbind = \"[::]:5004\"\ndestination = \"10.0.0.2:5000\"\n"))
        .contains("are different address families"));
}

#[test]
fn multicast_rules() {
    let base = "direction = \"ingress\"\nbind = \"0.0.0.0:5004\"\n";
    assert_eq!(
        err(&stream(&format!("{base}group = \"10.1.2.3\"\n"))),
        "/etc/rtpmgr.toml:5:9: stream \"tv1\": group = \"10.1.2.3\" is not a multicast address"
    );
    assert!(err(&stream(&format!("{base}group = \"ff3e::1\"\n"))).contains("are different address families"));
    assert_eq!(
        err(&stream(&format!("{base}source = \"10.0.0.1\"\n"))),
        "/etc/rtpmgr.toml:5:10: stream \"tv1\": source (SSM) needs a group"
    );
    assert!(err(&stream(&format!("{base}group = \"232.1.1.1\"\nsource = \"239.0.0.1\"\n")))
        .contains("source = \"239.0.0.1\" must be a unicast sender address"));
    assert!(err(&stream(&format!("{base}group = \"232.1.1.1\"\ninterface = \"a-very-long-ifname0\"\n")))
        .contains("is not an interface name (1 to 15 characters"));
    assert!(err(&stream(&format!("{base}interface = \"eth0\"\n"))).contains("set group too"));
    assert!(err(&stream("direction = \"ingress\"\nbind = \"10.0.0.5:5004\"\ngroup = \"239.1.1.1\"\n"))
        .contains("must use the unspecified address or the group 239.1.1.1"));
    let ok =
        parse(&stream(&format!("{base}group = \"232.1.1.1\"\nsource = \"10.0.0.1\"\ninterface = \"eth0\"\n"))).unwrap();
    assert_eq!(ok.streams[0].group, Some("232.1.1.1".parse().unwrap()));
    let v6 = parse(&stream(
        "direction = \"ingress\"\nbind = \"[::]:5004\"\ngroup = \"ff3e::8000:1\"\nsource = \"2001:db8::1\"\n",
    ));
    assert!(v6.is_ok(), "{v6:?}");
    assert_eq!(
        err(&stream(
            "direction = \"relay\"\nbind = \"0.0.0.0:5004\"\ndestination = \"10.0.0.2:5000\"\nmulticast_ttl = 4\n"
        )),
        "/etc/rtpmgr.toml:6:17: stream \"tv1\": multicast_ttl applies only to a multicast destination"
    );
    assert!(err(&stream(
        "direction = \"egress\"\nbind = \"0.0.0.0:0\"\ndestination = \"239.1.1.1:5000\"\nmulticast_ttl = 0\n"
    ))
    .contains("multicast_ttl = 0 is out of range 1..=255"));
}

#[test]
fn payload_type_and_clock_rate() {
    let base = "direction = \"ingress\"\nbind = \"0.0.0.0:5004\"\n";
    assert_eq!(
        err(&stream(&format!("{base}payload_type = 96\n"))),
        "/etc/rtpmgr.toml:5:16: stream \"tv1\": clock_rate is required for payload type 96, which has no static clock rate (RFC 3551)"
    );
    let c = parse(&stream(&format!("{base}payload_type = 96\nclock_rate = 48000\n"))).unwrap();
    assert_eq!(c.streams[0].effective_clock_rate(), 48_000);
    assert_eq!(
        parse(&stream(&format!("{base}payload_type = 33\n"))).unwrap().streams[0].effective_clock_rate(),
        90_000
    );
    assert_eq!(parse(&stream(&format!("{base}payload_type = 0\n"))).unwrap().streams[0].effective_clock_rate(), 8_000);
    assert!(err(&stream(&format!("{base}payload_type = 128\n"))).contains("payload_type = 128 is out of range 0..=127"));
    assert!(err(&stream(&format!("{base}clock_rate = 0\n"))).contains("clock_rate = 0 is out of range"));
    assert!(err(&stream(&format!("{base}media_port = \"Media 0\"\n"))).contains("is not a port name"));
    assert!(err("[[stream]]\nname = \"tv 1\"\n").contains("name = \"tv 1\" must be 1 to 32 characters"));
}

#[test]
fn streams_cannot_share_names_or_sockets() {
    let two = |a: &str, b: &str| {
        format!(
            "[[stream]]\nname = \"tv1\"\ndirection = \"ingress\"\nbind = \"{a}\"\n\n[[stream]]\nname = \"tv2\"\ndirection = \"ingress\"\nbind = \"{b}\"\n"
        )
    };
    assert_eq!(
        err(&two("0.0.0.0:5004", "127.0.0.1:5004")),
        "/etc/rtpmgr.toml:9:8: stream \"tv2\": bind = \"127.0.0.1:5004\" conflicts with stream \"tv1\" (line 4): two streams cannot share one socket"
    );
    assert!(parse(&two("0.0.0.0:5004", "0.0.0.0:5006")).is_ok());
    assert!(parse(&two("127.0.0.1:5004", "127.0.0.2:5004")).is_ok());
    assert!(parse(&two("0.0.0.0:5004", "[::]:5004")).is_ok(), "different families");
    let egress = |n: &str| {
        format!("[[stream]]\nname = \"{n}\"\ndirection = \"egress\"\nbind = \"0.0.0.0:0\"\ndestination = \"10.0.0.9:5000\"\n")
    };
    assert!(parse(&format!("{}\n{}", egress("a"), egress("b"))).is_ok(), "two port-0 egress streams");
    let dup = format!("{RELAY}\n{}", RELAY.replace("5004", "5006"));
    assert_eq!(err(&dup), "/etc/rtpmgr.toml:8:8: stream \"tv1\" is defined twice (first at line 1)");
}

#[test]
fn load_names_the_missing_file() {
    let e = Config::load(Path::new("/nonexistent/rtpmgr.toml")).unwrap_err();
    assert_eq!(e.path(), Path::new("/nonexistent/rtpmgr.toml"));
    assert!(e.to_string().starts_with("/nonexistent/rtpmgr.toml: cannot read the configuration: No such file"), "{e}");
    assert_eq!(e.line(), None);
}

#[test]
fn ring_full_policy_defaults_to_wait_and_takes_drop() {
    assert_eq!(parse(RELAY).unwrap().streams[0].ring_full, RingFullPolicy::Wait);
    let c = parse(&format!("{RELAY}ring_full = \"drop\"\n")).unwrap();
    assert_eq!(c.streams[0].ring_full, RingFullPolicy::Drop);
    let c = parse(&format!("{RELAY}ring_full = \"wait\"\n")).unwrap();
    assert_eq!(c.streams[0].ring_full, RingFullPolicy::Wait);
}

#[test]
fn ring_full_typo_names_the_key_line_and_choices() {
    let e = err(&format!("{RELAY}ring_full = \"dropp\"\n"));
    assert!(e.starts_with("/etc/rtpmgr.toml:6:13: unknown variant `dropp`, expected `wait` or `drop`"), "{e}");
}

#[test]
fn ring_full_drop_is_refused_on_an_egress_stream() {
    let e = err("[[stream]]\nname = \"o\"\ndirection = \"egress\"\nbind = \"0.0.0.0:0\"\n\
                 destination = \"127.0.0.1:6000\"\nring_full = \"drop\"\n");
    assert!(e.contains(":6:13: stream \"o\": ring_full applies to receiving streams"), "{e}");
}

#[test]
fn mode_defaults_to_user_and_takes_kernel() {
    assert_eq!(parse(RELAY).unwrap().streams[0].mode, DataPath::User);
    let c = parse(&format!("{RELAY}mode = \"kernel\"\n")).unwrap();
    assert_eq!(c.streams[0].mode, DataPath::Kernel);
    let c = parse(&format!("{RELAY}mode = \"user\"\n")).unwrap();
    assert_eq!(c.streams[0].mode, DataPath::User);
    // The user-space fallback still honours ring_full.
    let c = parse(&format!("{RELAY}mode = \"kernel\"\nring_full = \"drop\"\n")).unwrap();
    assert_eq!((c.streams[0].mode, c.streams[0].ring_full), (DataPath::Kernel, RingFullPolicy::Drop));
}

#[test]
fn mode_typo_names_the_key_line_and_choices() {
    let e = err(&format!("{RELAY}mode = \"kernal\"\n"));
    assert!(e.starts_with("/etc/rtpmgr.toml:6:8: unknown variant `kernal`, expected `user` or `kernel`"), "{e}");
}

#[test]
fn kernel_mode_is_refused_on_an_egress_stream() {
    let e = err("[[stream]]\nname = \"o\"\ndirection = \"egress\"\nbind = \"0.0.0.0:0\"\n\
                 destination = \"127.0.0.1:6000\"\nmode = \"kernel\"\n");
    assert!(e.contains(":6:8: stream \"o\": mode = \"kernel\" applies to ingress and relay streams"), "{e}");
}

#[test]
fn format_defaults_to_rtp_and_takes_udp_ts() {
    let c = parse(RELAY).unwrap();
    assert_eq!((c.streams[0].format, c.streams[0].pid_timeout_ms), (StreamFormat::Rtp, 5_000));
    let c = parse(&format!("{RELAY}format = \"udp-ts\"\npid_timeout_ms = 2000\n")).unwrap();
    assert_eq!((c.streams[0].format, c.streams[0].pid_timeout_ms), (StreamFormat::UdpTs, 2_000));
    assert_eq!(c.streams[0].format.as_str(), "udp-ts");
    assert_eq!(parse(&format!("{RELAY}format = \"rtp\"\n")).unwrap().streams[0].format, StreamFormat::Rtp);
    // The user-space fallback of a kernel stream takes udp-ts too.
    let c = parse(&format!("{RELAY}format = \"udp-ts\"\nmode = \"kernel\"\n")).unwrap();
    assert_eq!((c.streams[0].format, c.streams[0].mode), (StreamFormat::UdpTs, DataPath::Kernel));
}

#[test]
fn format_typo_names_the_key_line_and_choices() {
    let e = err(&format!("{RELAY}format = \"udp_ts\"\n"));
    assert!(e.starts_with("/etc/rtpmgr.toml:6:10: unknown variant `udp_ts`, expected `rtp` or `udp-ts`"), "{e}");
    let e = parse(&format!("{RELAY}format = \"ts\"\n")).unwrap_err();
    assert_eq!((e.line(), e.key()), (Some(6), Some("ts")), "serde names the value it did not know");
}

#[test]
fn udp_ts_refuses_rtp_settings() {
    assert_eq!(
        err(&format!("{RELAY}format = \"udp-ts\"\npayload_type = 33\n")),
        "/etc/rtpmgr.toml:7:16: stream \"tv1\": payload_type is an RTP setting; a format = \"udp-ts\" stream carries no RTP header"
    );
    let e = parse(&format!("{RELAY}clock_rate = 90000\nformat = \"udp-ts\"\n")).unwrap_err();
    assert_eq!((e.line(), e.key()), (Some(6), Some("clock_rate")));
}

#[test]
fn pid_timeout_rules() {
    assert_eq!(
        err(&format!("{RELAY}pid_timeout_ms = 50\n")),
        "/etc/rtpmgr.toml:6:18: stream \"tv1\": pid_timeout_ms = 50 is out of range 100..=60000"
    );
    let e = err("[[stream]]\nname = \"o\"\ndirection = \"egress\"\nbind = \"0.0.0.0:0\"\n\
                 destination = \"127.0.0.1:6000\"\npid_timeout_ms = 1000\n");
    assert!(e.contains(":6:18: stream \"o\": pid_timeout_ms applies to receiving streams"), "{e}");
}

#[test]
fn reorder_ms_rules() {
    assert_eq!(parse(RELAY).unwrap().streams[0].reorder_ms, 0);
    assert_eq!(parse(&format!("{RELAY}reorder_ms = 200\n")).unwrap().streams[0].reorder_ms, 200);
    assert_eq!(
        err(&format!("{RELAY}reorder_ms = 6000\n")),
        "/etc/rtpmgr.toml:6:14: stream \"tv1\": reorder_ms = 6000 is out of range 0..=5000"
    );
    assert_eq!(
        err(&format!("{RELAY}format = \"udp-ts\"\nreorder_ms = 100\n")),
        "/etc/rtpmgr.toml:7:14: stream \"tv1\": reorder_ms orders packets by RTP sequence number; a format = \"udp-ts\" stream has none"
    );
    // 0 is "off", allowed anywhere.
    assert!(parse(&format!("{RELAY}format = \"udp-ts\"\nreorder_ms = 0\n")).is_ok());
    let e = err("[[stream]]\nname = \"o\"\ndirection = \"egress\"\nbind = \"0.0.0.0:0\"\n\
                 destination = \"127.0.0.1:6000\"\nreorder_ms = 50\n");
    assert!(e.contains(":6:14: stream \"o\": reorder_ms applies to receiving streams"), "{e}");
}

#[test]
fn rtcp_nack_and_rtx_keys() {
    let c = parse(RELAY).unwrap();
    let s = &c.streams[0];
    assert_eq!(
        (s.rtcp, s.rtcp_peer, s.nack, s.rtx_payload_type, s.rtcp_port()),
        (RtcpMode::Off, None, false, None, None)
    );
    let full = format!(
        "{RELAY}payload_type = 33\nreorder_ms = 200\nrtcp = \"port+1\"\nrtcp_peer = \"10.0.0.1:5007\"\nnack = true\nrtx_payload_type = 97\n"
    );
    let s = parse(&full).unwrap().streams.remove(0);
    assert_eq!((s.rtcp, s.nack, s.rtx_payload_type, s.rtcp_port()), (RtcpMode::PortPlus1, true, Some(97), Some(5005)));
    assert_eq!(s.rtcp_peer, Some("10.0.0.1:5007".parse().unwrap()));
    assert_eq!(parse(&format!("{RELAY}rtcp = \"mux\"\n")).unwrap().streams[0].rtcp.as_str(), "mux");
}

#[test]
fn rtcp_misuse_names_line_and_key() {
    let e = err(&format!("{RELAY}rtcp = \"port+2\"\n"));
    assert!(
        e.starts_with("/etc/rtpmgr.toml:6:8: unknown variant `port+2`, expected one of `off`, `port+1`, `mux`"),
        "{e}"
    );
    assert_eq!(
        err(&format!("{RELAY}rtcp_peer = \"10.0.0.1:5007\"\n")),
        "/etc/rtpmgr.toml:6:13: stream \"tv1\": rtcp_peer needs rtcp = \"port+1\" or \"mux\""
    );
    assert!(err(&format!("{RELAY}rtcp = \"mux\"\nrtcp_peer = \"[::1]:5007\"\n")).contains(
        ":7:13: stream \"tv1\": rtcp_peer = \"[::1]:5007\" needs an address and a port of bind's address family"
    ));
    assert_eq!(
        err(&format!("{RELAY}nack = true\n")),
        "/etc/rtpmgr.toml:6:8: stream \"tv1\": nack = true sends RTCP feedback: set rtcp = \"port+1\" or \"mux\""
    );
    assert!(err(&format!("{RELAY}rtcp = \"mux\"\nnack = true\n")).contains(
        ":7:8: stream \"tv1\": nack = true merges retransmissions through the reorder buffer: set reorder_ms"
    ));
    assert_eq!(
        err(&format!("{RELAY}rtx_payload_type = 97\n")),
        "/etc/rtpmgr.toml:6:20: stream \"tv1\": rtx_payload_type needs nack = true"
    );
    let both = format!("{RELAY}payload_type = 97\nclock_rate = 90000\nrtcp = \"mux\"\nreorder_ms = 50\nnack = true\nrtx_payload_type = 97\n");
    assert!(
        err(&both).contains(":11:20: stream \"tv1\": rtx_payload_type = 97 is the media's payload_type"),
        "{}",
        err(&both)
    );
    let e = err("[[stream]]\nname = \"o\"\ndirection = \"egress\"\nbind = \"0.0.0.0:0\"\n\
                 destination = \"127.0.0.1:6000\"\nrtcp = \"port+1\"\n");
    assert!(e.contains(":6:8: stream \"o\": rtcp = \"port+1\" needs a bind port below 65535"), "{e}");
    // A separate RTCP socket takes bind port + 1: no other stream there.
    let two = format!("{RELAY}rtcp = \"port+1\"\n\n{}", RELAY.replace("tv1", "tv2").replace("5004", "5005"));
    assert!(err(&two).contains(":11:8: stream \"tv2\": bind = \"0.0.0.0:5005\" conflicts with stream \"tv1\" (line 4): one of them takes the other's port for RTCP"), "{}", err(&two));
}

#[test]
fn fec_rules() {
    let s = parse(&format!("{RELAY}reorder_ms = 100\nfec = true\n")).unwrap().streams.remove(0);
    assert_eq!((s.fec, s.fec_ports()), (true, Some([5006, 5008])));
    assert_eq!(
        err(&format!("{RELAY}fec = true\n")),
        "/etc/rtpmgr.toml:6:7: stream \"tv1\": fec = true merges rebuilt packets through the reorder buffer: set reorder_ms (the longest wait for FEC)"
    );
    let high = RELAY.replace("0.0.0.0:5004", "0.0.0.0:65533");
    assert!(err(&format!("{high}reorder_ms = 10\nfec = true\n"))
        .contains(":7:7: stream \"tv1\": fec = true needs bind port + 2 and + 4"));
    // Another stream on port + 4 of a FEC stream.
    let two = format!("{RELAY}reorder_ms = 10\nfec = true\n\n{}", RELAY.replace("tv1", "tv2").replace("5004", "5008"));
    assert!(
        err(&two).contains("stream \"tv2\": bind = \"0.0.0.0:5008\" conflicts with stream \"tv1\""),
        "{}",
        err(&two)
    );
}

#[test]
fn leg2_rules() {
    let text = format!(
        "{RELAY}reorder_ms = 50\nleg2 = {{ bind = \"0.0.0.0:6004\", group = \"239.2.2.2\", source = \"10.0.0.9\", interface = \"eth1\" }}\n"
    );
    let s = parse(&text).unwrap().streams.remove(0);
    let leg = s.leg2.clone().unwrap();
    assert_eq!(
        (leg.bind, leg.group, leg.interface.as_deref()),
        ("0.0.0.0:6004".parse().unwrap(), Some("239.2.2.2".parse().unwrap()), Some("eth1"))
    );
    let view = s.leg2_view().unwrap();
    assert_eq!((view.bind.port(), view.group, view.name.as_str(), view.reorder_ms), (6004, leg.group, "tv1", 50));
    assert_eq!(
        err(&format!("{RELAY}leg2 = {{ bind = \"0.0.0.0:6004\" }}\n")),
        "/etc/rtpmgr.toml:6:8: stream \"tv1\": leg2 (SMPTE 2022-7) merges two legs of a received stream through the reorder buffer: it needs a receiving stream and reorder_ms (the most one leg may lag the other)"
    );
    let e = parse(&format!("{RELAY}reorder_ms = 5\nleg2 = {{ bind = \"0.0.0.0:5004\" }}\n")).unwrap_err();
    assert_eq!((e.line(), e.key()), (Some(7), Some("leg2.bind")), "{e}");
    assert!(e.to_string().contains("is the first leg's socket"), "{e}");
    let e = err(&format!("{RELAY}reorder_ms = 5\nleg2 = {{ bind = \"0.0.0.0:6004\", grup = \"239.1.1.1\" }}\n"));
    assert!(e.contains(":7:") && e.contains("unknown field `grup`"), "{e}");
    let e = parse(&format!("{RELAY}reorder_ms = 5\nleg2 = {{ group = \"239.1.1.1\" }}\n")).unwrap_err();
    assert_eq!(e.key(), Some("leg2.bind"));
    assert!(err(&format!("{RELAY}reorder_ms = 5\nleg2 = {{ bind = \"0.0.0.0:6004\", group = \"10.1.1.1\" }}\n"))
        .contains("leg2.group = \"10.1.1.1\" is not a multicast address"));
    // Another stream on leg 2's port.
    let two = format!(
        "{RELAY}reorder_ms = 5\nleg2 = {{ bind = \"0.0.0.0:6004\" }}\n\n{}",
        RELAY.replace("tv1", "tv2").replace("5004", "6004")
    );
    assert!(
        err(&two).contains("stream \"tv2\": bind = \"0.0.0.0:6004\" conflicts with stream \"tv1\""),
        "{}",
        err(&two)
    );
}
