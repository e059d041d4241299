// SPDX-License-Identifier: MIT
//! Raw → model, with every semantic rule and its message.

use crate::raw::{
    RawBackend, RawConfig, RawDirection, RawFormat, RawLayout, RawLeg, RawMode, RawRingFull, RawRtcp, RawStream,
};
use crate::{
    line_col, BackendKind, BufferConfig, Config, ConfigError, DaemonConfig, DataPath, Direction, Layout, Leg,
    LevelFilter, RingFullPolicy, RtcpMode, StreamConfig, StreamFormat, DEFAULT_PID_TIMEOUT_MS,
};
use rtpmgr_abi as abi;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The ring geometry the ABI allows (one source: `rtpmgr-abi`).
pub const SLOT_COUNT: (u32, u32) = (abi::MIN_SLOT_COUNT, abi::MAX_SLOT_COUNT);
pub const SLOT_SIZE: (u32, u32) = (abi::MIN_SLOT_SIZE, abi::MAX_SLOT_SIZE);
pub const SOCKET_BUFFER: (u32, u32) = (65_536, 268_435_456);
pub const MAX_STATUS_INTERVAL: u32 = 86_400;
pub const MAX_CLOCK_RATE: u32 = 10_000_000;
pub const PID_TIMEOUT_MS: (u32, u32) = (100, 60_000);
pub const MAX_REORDER_MS: u32 = 5_000;
/// IFNAMSIZ - 1.
pub const MAX_IFNAME: usize = 15;

struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn err<T>(&self, span: std::ops::Range<usize>, key: &str, message: String) -> Result<T, ConfigError> {
        Err(ConfigError::new(self.path, Some(line_col(self.text, span.start)), Some(key.to_owned()), message))
    }
}

fn power_of_two_in(ctx: &Ctx<'_>, v: &Spanned<u32>, key: &str, (lo, hi): (u32, u32)) -> Result<u32, ConfigError> {
    let n = *v.get_ref();
    if !n.is_power_of_two() {
        return ctx.err(
            v.span(),
            key,
            format!("{key} = {n} is not a power of two (allowed: powers of two in {lo}..={hi})"),
        );
    }
    if !(lo..=hi).contains(&n) {
        return ctx.err(v.span(), key, format!("{key} = {n} is out of range (allowed: powers of two in {lo}..={hi})"));
    }
    Ok(n)
}

pub fn validate(raw: RawConfig, text: &str, path: &Path) -> Result<Config, ConfigError> {
    let ctx = Ctx { text, path };
    let mut daemon = DaemonConfig::default();
    if let Some(d) = raw.daemon {
        if let Some(b) = d.backend {
            daemon.backend = match b {
                RawBackend::Kernel => BackendKind::Kernel,
                RawBackend::Sim => BackendKind::Sim,
            };
        }
        if let Some(p) = d.device {
            daemon.device = non_empty_path(&ctx, p, "daemon.device")?;
        }
        if let Some(p) = d.control_socket {
            daemon.control_socket = non_empty_path(&ctx, p, "daemon.control_socket")?;
        }
        if let Some(m) = d.control_socket_mode {
            let s = m.get_ref();
            daemon.control_socket_mode = match u32::from_str_radix(s, 8) {
                Ok(mode) if mode <= 0o777 && !s.is_empty() && s.len() <= 4 => mode,
                _ => {
                    return ctx.err(
                        m.span(),
                        "control_socket_mode",
                        format!("daemon.control_socket_mode = {s:?} is not an octal file mode such as \"0660\""),
                    )
                }
            };
        }
        if let Some(l) = d.log_level {
            daemon.log_level = match l.get_ref().to_ascii_lowercase().as_str() {
                "off" => LevelFilter::Off,
                "error" => LevelFilter::Error,
                "warn" => LevelFilter::Warn,
                "info" => LevelFilter::Info,
                "debug" => LevelFilter::Debug,
                "trace" => LevelFilter::Trace,
                other => {
                    return ctx.err(
                        l.span(),
                        "log_level",
                        format!("daemon.log_level = {other:?}, expected one of off, error, warn, info, debug, trace"),
                    )
                }
            };
        }
        if let Some(i) = d.status_interval_secs {
            if *i.get_ref() > MAX_STATUS_INTERVAL {
                return ctx.err(
                    i.span(),
                    "status_interval_secs",
                    format!("daemon.status_interval_secs = {} is more than a day ({MAX_STATUS_INTERVAL})", i.get_ref()),
                );
            }
            daemon.status_interval_secs = *i.get_ref();
        }
        if let Some(b) = d.socket_buffer_bytes {
            let (lo, hi) = SOCKET_BUFFER;
            if !(lo..=hi).contains(b.get_ref()) {
                return ctx.err(
                    b.span(),
                    "socket_buffer_bytes",
                    format!("daemon.socket_buffer_bytes = {} is out of range {lo}..={hi}", b.get_ref()),
                );
            }
            daemon.socket_buffer_bytes = *b.get_ref();
        }
        if let Some(l) = d.layout {
            daemon.layout = match l {
                RawLayout::Threads => Layout::Threads,
                RawLayout::RunToCompletion => Layout::RunToCompletion,
            };
        }
        if let Some(g) = d.udp_gso {
            daemon.udp_gso = g;
        }
        if let Some(t) = d.receive_timestamps {
            daemon.receive_timestamps = t;
        }
        if let Some(c) = d.rx_coalesce_us {
            if *c.get_ref() > crate::MAX_RX_COALESCE_US {
                return ctx.err(
                    c.span(),
                    "rx_coalesce_us",
                    format!("daemon.rx_coalesce_us = {} is more than {}", c.get_ref(), crate::MAX_RX_COALESCE_US),
                );
            }
            daemon.rx_coalesce_us = *c.get_ref();
        }
    }
    let mut buffer = BufferConfig::default();
    if let Some(b) = raw.buffer {
        if let Some(c) = b.slot_count {
            buffer.slot_count = power_of_two_in(&ctx, &c, "slot_count", SLOT_COUNT).map_err(prefix("buffer."))?;
        }
        if let Some(s) = b.slot_size {
            buffer.slot_size = power_of_two_in(&ctx, &s, "slot_size", SLOT_SIZE).map_err(prefix("buffer."))?;
        }
    }
    let mut streams: Vec<Located> = Vec::new();
    for (i, s) in raw.streams.into_iter().enumerate() {
        // toml spans an array-of-tables entry by its `[[stream]]` header.
        let header_line = line_col(text, s.span().start).0;
        let raw = s.into_inner();
        let at = |v: &Option<Spanned<String>>| v.as_ref().map_or((header_line, 1), |v| line_col(text, v.span().start));
        let (name_at, bind_at) = (at(&raw.name), at(&raw.bind));
        let stream = validate_stream(&ctx, i + 1, header_line, raw)?;
        let located = Located { stream, header_line, name_at, bind_at };
        check_conflicts(&ctx, &streams, &located)?;
        streams.push(located);
    }
    Ok(Config { daemon, buffer, streams: streams.into_iter().map(|l| l.stream).collect() })
}

/// Prefix a message with its table (`buffer.`), keeping the location.
fn prefix(table: &'static str) -> impl Fn(ConfigError) -> ConfigError {
    move |mut e| {
        e.message.insert_str(0, table);
        e
    }
}

fn non_empty_path(ctx: &Ctx<'_>, p: Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
    if !p.get_ref().starts_with('/') {
        let short = key.rsplit('.').next().unwrap_or(key);
        return ctx.err(p.span(), short, format!("{key} = {:?} must be an absolute path", p.get_ref()));
    }
    Ok(PathBuf::from(p.into_inner()))
}

fn validate_stream(ctx: &Ctx<'_>, index: usize, header_line: usize, s: RawStream) -> Result<StreamConfig, ConfigError> {
    let missing = |key: &str| {
        Err(ConfigError::new(
            ctx.path,
            Some((header_line, 1)),
            Some(key.to_owned()),
            format!("stream #{index}: missing required key `{key}`"),
        ))
    };
    let Some(name_s) = s.name else { return missing("name") };
    let name = name_s.get_ref().clone();
    let name_ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !name_ok {
        return ctx.err(
            name_s.span(),
            "name",
            format!("stream #{index}: name = {name:?} must be 1 to 32 characters of A-Z a-z 0-9 _ . -"),
        );
    }
    let what = format!("stream {name:?}");
    let Some(direction_s) = s.direction else { return missing("direction") };
    let direction = match direction_s.get_ref() {
        RawDirection::Ingress => Direction::Ingress,
        RawDirection::Egress => Direction::Egress,
        RawDirection::Relay => Direction::Relay,
    };
    let Some(bind_s) = s.bind else { return missing("bind") };
    let bind: SocketAddr = match bind_s.get_ref().parse() {
        Ok(a) => a,
        Err(_) => {
            return ctx.err(
                bind_s.span(),
                "bind",
                format!(
                    "{what}: bind = {:?} is not an address:port such as \"0.0.0.0:5004\" or \"[::]:5004\"",
                    bind_s.get_ref()
                ),
            )
        }
    };
    if bind.port() == 0 && direction != Direction::Egress {
        return ctx.err(
            bind_s.span(),
            "bind",
            format!("{what}: bind = \"{bind}\" needs a port: an {} stream receives on it", dir_name(direction)),
        );
    }
    let ip = |v: &Spanned<String>, key: &str| -> Result<IpAddr, ConfigError> {
        v.get_ref()
            .parse()
            .or_else(|_| ctx.err(v.span(), key, format!("{what}: {key} = {:?} is not an IP address", v.get_ref())))
    };
    let group = match &s.group {
        None => None,
        Some(g) => {
            let addr = ip(g, "group")?;
            if direction == Direction::Egress {
                return ctx.err(
                    g.span(),
                    "group",
                    format!("{what}: group is for receiving streams; an egress stream sends to `destination`"),
                );
            }
            if !addr.is_multicast() {
                return ctx.err(g.span(), "group", format!("{what}: group = \"{addr}\" is not a multicast address"));
            }
            if addr.is_ipv4() != bind.is_ipv4() {
                return ctx.err(
                    g.span(),
                    "group",
                    format!("{what}: group = \"{addr}\" and bind = \"{bind}\" are different address families"),
                );
            }
            if !bind.ip().is_unspecified() && bind.ip() != addr {
                return ctx.err(
                    bind_s.span(),
                    "bind",
                    format!(
                        "{what}: bind = \"{bind}\" must use the unspecified address or the group {addr} to receive it"
                    ),
                );
            }
            Some(addr)
        }
    };
    let source = match &s.source {
        None => None,
        Some(src) => {
            let addr = ip(src, "source")?;
            if group.is_none() {
                return ctx.err(src.span(), "source", format!("{what}: source (SSM) needs a group"));
            }
            if addr.is_multicast() || addr.is_unspecified() {
                return ctx.err(
                    src.span(),
                    "source",
                    format!("{what}: source = \"{addr}\" must be a unicast sender address"),
                );
            }
            if addr.is_ipv4() != bind.is_ipv4() {
                return ctx.err(
                    src.span(),
                    "source",
                    format!("{what}: source = \"{addr}\" is not in the group's address family"),
                );
            }
            Some(addr)
        }
    };
    let interface = match &s.interface {
        None => None,
        Some(i) => {
            let n = i.get_ref();
            if group.is_none() {
                return ctx.err(
                    i.span(),
                    "interface",
                    format!("{what}: interface names where to join the group; set group too"),
                );
            }
            if n.is_empty() || n.len() > MAX_IFNAME || n.chars().any(|c| c == '/' || c.is_whitespace()) {
                return ctx.err(
                    i.span(),
                    "interface",
                    format!("{what}: interface = {n:?} is not an interface name (1 to {MAX_IFNAME} characters, no '/' or spaces)"),
                );
            }
            Some(n.clone())
        }
    };
    let destination = match (&s.destination, direction) {
        (None, Direction::Egress | Direction::Relay) => {
            return Err(ConfigError::new(
                ctx.path,
                Some((header_line, 1)),
                Some("destination".into()),
                format!("{what}: missing required key `destination` for a {} stream", dir_name(direction)),
            ))
        }
        (None, Direction::Ingress) => None,
        (Some(d), Direction::Ingress) => {
            return ctx.err(
                d.span(),
                "destination",
                format!("{what}: an ingress stream sends nothing; remove destination or use relay"),
            )
        }
        (Some(d), _) => {
            let addr: SocketAddr = d.get_ref().parse().or_else(|_| {
                ctx.err(
                    d.span(),
                    "destination",
                    format!("{what}: destination = {:?} is not an address:port", d.get_ref()),
                )
            })?;
            if addr.port() == 0 || addr.ip().is_unspecified() {
                return ctx.err(
                    d.span(),
                    "destination",
                    format!("{what}: destination = \"{addr}\" needs an address and a port"),
                );
            }
            if addr.is_ipv4() != bind.is_ipv4() {
                return ctx.err(
                    d.span(),
                    "destination",
                    format!("{what}: destination = \"{addr}\" and bind = \"{bind}\" are different address families"),
                );
            }
            Some(addr)
        }
    };
    let multicast_ttl = match &s.multicast_ttl {
        None => None,
        Some(t) => {
            if !destination.is_some_and(|d| d.ip().is_multicast()) {
                return ctx.err(
                    t.span(),
                    "multicast_ttl",
                    format!("{what}: multicast_ttl applies only to a multicast destination"),
                );
            }
            match u8::try_from(*t.get_ref()) {
                Ok(v) if v >= 1 => Some(v),
                _ => {
                    return ctx.err(
                        t.span(),
                        "multicast_ttl",
                        format!("{what}: multicast_ttl = {} is out of range 1..=255", t.get_ref()),
                    )
                }
            }
        }
    };
    let payload_type = match &s.payload_type {
        None => None,
        Some(p) => match u8::try_from(*p.get_ref()) {
            Ok(v) if v <= 127 => Some(v),
            _ => {
                return ctx.err(
                    p.span(),
                    "payload_type",
                    format!("{what}: payload_type = {} is out of range 0..=127", p.get_ref()),
                )
            }
        },
    };
    let clock_rate = match &s.clock_rate {
        None => None,
        Some(c) => {
            let v = *c.get_ref();
            if v == 0 || v > MAX_CLOCK_RATE {
                return ctx.err(
                    c.span(),
                    "clock_rate",
                    format!("{what}: clock_rate = {v} is out of range 1..={MAX_CLOCK_RATE}"),
                );
            }
            Some(v)
        }
    };
    if let (Some(pt), None, Some(p)) = (payload_type, clock_rate, &s.payload_type) {
        if rtp::payload::static_clock_rate(pt).is_none() {
            return ctx.err(
                p.span(),
                "clock_rate",
                format!(
                    "{what}: clock_rate is required for payload type {pt}, which has no static clock rate (RFC 3551)"
                ),
            );
        }
    }
    let media_port = match &s.media_port {
        None => "loopback".to_string(),
        Some(m) => {
            let n = m.get_ref();
            let ok = !n.is_empty()
                && n.len() <= 31
                && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return ctx.err(
                    m.span(),
                    "media_port",
                    format!("{what}: media_port = {n:?} is not a port name (1 to 31 characters of a-z 0-9 _ . -)"),
                );
            }
            n.clone()
        }
    };
    let ring_full = match s.ring_full.as_ref().map(|r| (*r.get_ref(), r.span())) {
        None => RingFullPolicy::Wait,
        Some((RawRingFull::Wait, _)) => RingFullPolicy::Wait,
        Some((RawRingFull::Drop, span)) => {
            if direction == Direction::Egress {
                return ctx.err(
                    span,
                    "ring_full",
                    format!("{what}: ring_full applies to receiving streams; an egress stream fills no ring"),
                );
            }
            RingFullPolicy::Drop
        }
    };
    let mode = match s.mode.as_ref().map(|m| (*m.get_ref(), m.span())) {
        None | Some((RawMode::User, _)) => DataPath::User,
        Some((RawMode::Kernel, span)) => {
            if direction == Direction::Egress {
                return ctx.err(
                    span,
                    "mode",
                    format!(
                        "{what}: mode = \"kernel\" applies to ingress and relay streams; \
                         the module has no in-kernel path from a media port to the network"
                    ),
                );
            }
            DataPath::Kernel
        }
    };
    let format = match s.format.as_ref().map(|f| *f.get_ref()) {
        None | Some(RawFormat::Rtp) => StreamFormat::Rtp,
        Some(RawFormat::UdpTs) => StreamFormat::UdpTs,
    };
    if format == StreamFormat::UdpTs {
        // The RTP header fields have nothing to apply to.
        for (key, span) in [
            ("payload_type", s.payload_type.as_ref().map(|v| v.span())),
            ("clock_rate", s.clock_rate.as_ref().map(|v| v.span())),
        ] {
            if let Some(span) = span {
                return ctx.err(
                    span,
                    key,
                    format!("{what}: {key} is an RTP setting; a format = \"udp-ts\" stream carries no RTP header"),
                );
            }
        }
    }
    let pid_timeout_ms = match &s.pid_timeout_ms {
        None => DEFAULT_PID_TIMEOUT_MS,
        Some(t) => {
            let v = *t.get_ref();
            let (lo, hi) = PID_TIMEOUT_MS;
            if direction == Direction::Egress {
                return ctx.err(
                    t.span(),
                    "pid_timeout_ms",
                    format!("{what}: pid_timeout_ms applies to receiving streams (TS health is measured on arrival)"),
                );
            }
            if !(lo..=hi).contains(&v) {
                return ctx.err(
                    t.span(),
                    "pid_timeout_ms",
                    format!("{what}: pid_timeout_ms = {v} is out of range {lo}..={hi}"),
                );
            }
            v
        }
    };
    let reorder_ms = match &s.reorder_ms {
        None => 0,
        Some(r) => {
            let v = *r.get_ref();
            if v > MAX_REORDER_MS {
                return ctx.err(
                    r.span(),
                    "reorder_ms",
                    format!("{what}: reorder_ms = {v} is out of range 0..={MAX_REORDER_MS}"),
                );
            }
            if v > 0 && direction == Direction::Egress {
                return ctx.err(
                    r.span(),
                    "reorder_ms",
                    format!(
                        "{what}: reorder_ms applies to receiving streams; an egress stream sends what the device gives"
                    ),
                );
            }
            if v > 0 && format == StreamFormat::UdpTs {
                return ctx.err(
                    r.span(),
                    "reorder_ms",
                    format!(
                        "{what}: reorder_ms orders packets by RTP sequence number; a format = \"udp-ts\" stream has none"
                    ),
                );
            }
            v
        }
    };
    let rtcp = match s.rtcp.as_ref().map(|r| (*r.get_ref(), r.span())) {
        None | Some((RawRtcp::Off, _)) => RtcpMode::Off,
        Some((RawRtcp::Mux, _)) => RtcpMode::Mux,
        Some((RawRtcp::PortPlus1, span)) => {
            if bind.port() == 0 || bind.port() == u16::MAX {
                return ctx.err(
                    span,
                    "rtcp",
                    format!(
                        "{what}: rtcp = \"port+1\" needs a bind port below 65535 (bind = \"{bind}\"); use \"mux\" to share the RTP port"
                    ),
                );
            }
            RtcpMode::PortPlus1
        }
    };
    let rtcp_peer = match &s.rtcp_peer {
        None => None,
        Some(p) => {
            if rtcp == RtcpMode::Off {
                return ctx.err(p.span(), "rtcp_peer", format!("{what}: rtcp_peer needs rtcp = \"port+1\" or \"mux\""));
            }
            let addr: SocketAddr = p.get_ref().parse().or_else(|_| {
                ctx.err(p.span(), "rtcp_peer", format!("{what}: rtcp_peer = {:?} is not an address:port", p.get_ref()))
            })?;
            if addr.port() == 0 || addr.ip().is_unspecified() || addr.is_ipv4() != bind.is_ipv4() {
                return ctx.err(
                    p.span(),
                    "rtcp_peer",
                    format!("{what}: rtcp_peer = \"{addr}\" needs an address and a port of bind's address family"),
                );
            }
            Some(addr)
        }
    };
    let nack = match &s.nack {
        None => false,
        Some(n) if !*n.get_ref() => false,
        Some(n) => {
            let why = if direction == Direction::Egress {
                Some("applies to receiving streams".to_string())
            } else if rtcp == RtcpMode::Off {
                Some("sends RTCP feedback: set rtcp = \"port+1\" or \"mux\"".to_string())
            } else if reorder_ms == 0 {
                Some(
                    "merges retransmissions through the reorder buffer: set reorder_ms (the longest wait for a repair)"
                        .to_string(),
                )
            } else {
                None
            };
            if let Some(why) = why {
                return ctx.err(n.span(), "nack", format!("{what}: nack = true {why}"));
            }
            true
        }
    };
    let rtx_payload_type = match &s.rtx_payload_type {
        None => None,
        Some(p) => {
            let v = match u8::try_from(*p.get_ref()) {
                Ok(v) if v <= 127 => v,
                _ => {
                    return ctx.err(
                        p.span(),
                        "rtx_payload_type",
                        format!("{what}: rtx_payload_type = {} is out of range 0..=127", p.get_ref()),
                    )
                }
            };
            if !nack {
                return ctx.err(p.span(), "rtx_payload_type", format!("{what}: rtx_payload_type needs nack = true"));
            }
            if payload_type == Some(v) {
                return ctx.err(
                    p.span(),
                    "rtx_payload_type",
                    format!("{what}: rtx_payload_type = {v} is the media's payload_type; RTX needs its own"),
                );
            }
            Some(v)
        }
    };
    let fec = match &s.fec {
        None => false,
        Some(f) if !*f.get_ref() => false,
        Some(f) => {
            let why = if direction == Direction::Egress {
                Some("applies to receiving streams".to_string())
            } else if reorder_ms == 0 {
                Some(
                    "merges rebuilt packets through the reorder buffer: set reorder_ms (the longest wait for FEC)"
                        .to_string(),
                )
            } else if bind.port() > u16::MAX - 4 {
                Some(format!("needs bind port + 2 and + 4 for the FEC streams (bind = \"{bind}\")"))
            } else {
                None
            };
            if let Some(why) = why {
                return ctx.err(f.span(), "fec", format!("{what}: fec = true {why}"));
            }
            true
        }
    };
    let leg2 = match s.leg2 {
        None => None,
        Some(l) => {
            let span = l.span();
            if direction == Direction::Egress || reorder_ms == 0 {
                return ctx.err(
                    span,
                    "leg2",
                    format!(
                        "{what}: leg2 (SMPTE 2022-7) merges two legs of a received stream through the reorder buffer: \
                         it needs a receiving stream and reorder_ms (the most one leg may lag the other)"
                    ),
                );
            }
            Some(validate_leg(ctx, &what, l.into_inner(), span, bind)?)
        }
    };
    Ok(StreamConfig {
        name,
        direction,
        bind,
        group,
        source,
        interface,
        destination,
        multicast_ttl,
        payload_type,
        clock_rate,
        media_port,
        ring_full,
        mode,
        format,
        pid_timeout_ms,
        reorder_ms,
        rtcp,
        rtcp_peer,
        nack,
        rtx_payload_type,
        fec,
        leg2,
    })
}

/// The second leg: its own bind (same family as the first), optionally a
/// group, a source and an interface, with the rules of the first leg's.
fn validate_leg(
    ctx: &Ctx<'_>,
    what: &str,
    l: RawLeg,
    span: std::ops::Range<usize>,
    first: SocketAddr,
) -> Result<Leg, ConfigError> {
    let Some(b) = l.bind else {
        return ctx.err(span, "leg2.bind", format!("{what}: leg2 needs a bind = \"address:port\""));
    };
    let bind: SocketAddr = b.get_ref().parse().or_else(|_| {
        ctx.err(b.span(), "leg2.bind", format!("{what}: leg2.bind = {:?} is not an address:port", b.get_ref()))
    })?;
    if bind.port() == 0 || bind.is_ipv4() != first.is_ipv4() {
        return ctx.err(
            b.span(),
            "leg2.bind",
            format!("{what}: leg2.bind = \"{bind}\" needs a port and the address family of bind = \"{first}\""),
        );
    }
    if bind == first || (bind.port() == first.port() && (bind.ip().is_unspecified() || first.ip().is_unspecified())) {
        return ctx.err(b.span(), "leg2.bind", format!("{what}: leg2.bind = \"{bind}\" is the first leg's socket"));
    }
    let ip = |v: &Spanned<String>, key: &str| -> Result<IpAddr, ConfigError> {
        v.get_ref()
            .parse()
            .or_else(|_| ctx.err(v.span(), key, format!("{what}: {key} = {:?} is not an IP address", v.get_ref())))
    };
    let group = match &l.group {
        None => None,
        Some(g) => {
            let a = ip(g, "leg2.group")?;
            if !a.is_multicast() || a.is_ipv4() != bind.is_ipv4() {
                return ctx.err(
                    g.span(),
                    "leg2.group",
                    format!("{what}: leg2.group = \"{a}\" is not a multicast address of bind's family"),
                );
            }
            if !bind.ip().is_unspecified() && bind.ip() != a {
                return ctx.err(
                    b.span(),
                    "leg2.bind",
                    format!("{what}: leg2.bind = \"{bind}\" must use the unspecified address or the group {a}"),
                );
            }
            Some(a)
        }
    };
    let source = match &l.source {
        None => None,
        Some(src) => {
            let a = ip(src, "leg2.source")?;
            if group.is_none() || a.is_multicast() || a.is_unspecified() || a.is_ipv4() != bind.is_ipv4() {
                return ctx.err(
                    src.span(),
                    "leg2.source",
                    format!(
                        "{what}: leg2.source = \"{a}\" needs leg2.group and must be a unicast sender of its family"
                    ),
                );
            }
            Some(a)
        }
    };
    let interface = match &l.interface {
        None => None,
        Some(i) => {
            let n = i.get_ref();
            if group.is_none()
                || n.is_empty()
                || n.len() > MAX_IFNAME
                || n.chars().any(|c| c == '/' || c.is_whitespace())
            {
                return ctx.err(i.span(), "leg2.interface", format!("{what}: leg2.interface = {n:?} needs leg2.group and an interface name (1 to {MAX_IFNAME} characters)"));
            }
            Some(n.clone())
        }
    };
    Ok(Leg { bind, group, source, interface })
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
        Direction::Relay => "relay",
    }
}

/// A validated stream and where its keys are, for conflict messages.
struct Located {
    stream: StreamConfig,
    header_line: usize,
    name_at: (usize, usize),
    bind_at: (usize, usize),
}

/// No duplicate names, and no two streams on one socket.
fn check_conflicts(ctx: &Ctx<'_>, earlier: &[Located], new: &Located) -> Result<(), ConfigError> {
    let s = &new.stream;
    for other in earlier {
        let o = &other.stream;
        if o.name == s.name {
            return Err(ConfigError::new(
                ctx.path,
                Some(new.name_at),
                Some("name".into()),
                format!("stream {:?} is defined twice (first at line {})", s.name, other.header_line),
            ));
        }
        let overlap = s.bind.is_ipv4() == o.bind.is_ipv4()
            && (s.bind.ip() == o.bind.ip() || s.bind.ip().is_unspecified() || o.bind.ip().is_unspecified());
        let same_socket = overlap && s.bind.port() != 0 && s.bind.port() == o.bind.port();
        // A separate RTCP socket takes the port after the RTP port, FEC
        // the ports 2 and 4 after it.
        let extra = |c: &StreamConfig| -> Vec<u16> {
            c.rtcp_port()
                .into_iter()
                .chain(c.fec_ports().into_iter().flatten())
                .chain(c.leg2.as_ref().map(|l| l.bind.port()))
                .collect()
        };
        let (mine, theirs) = (extra(s), extra(o));
        let rtcp_clash = overlap
            && (mine.iter().any(|p| *p == o.bind.port() || theirs.contains(p)) || theirs.contains(&s.bind.port()));
        if rtcp_clash && !same_socket {
            return Err(ConfigError::new(
                ctx.path,
                Some(new.bind_at),
                Some("bind".into()),
                format!(
                    "stream {:?}: bind = \"{}\" conflicts with stream {:?} (line {}): one of them takes the other's port for RTCP (rtcp = \"port+1\") or FEC (fec = true: port + 2 and + 4) or its second leg (leg2)",
                    s.name, s.bind, o.name, other.bind_at.0
                ),
            ));
        }
        if same_socket {
            return Err(ConfigError::new(
                ctx.path,
                Some(new.bind_at),
                Some("bind".into()),
                format!(
                    "stream {:?}: bind = \"{}\" conflicts with stream {:?} (line {}): two streams cannot share one socket",
                    s.name, s.bind, o.name, other.bind_at.0
                ),
            ));
        }
    }
    Ok(())
}
