// SPDX-License-Identifier: MIT
//! Where an element's stream comes from or goes to, from its properties and
//! `/etc/rtpmgr.toml`, and the UDP sockets it hands to the module.
//!
//! How a player shares a stream rtpmgrd receives (docs/ARCHITECTURE.md,
//! "GStreamer elements"): rtpmgrsrc opens a session of its own and a `udp`
//! stream in it on a socket of its own, so the module writes every datagram
//! into the player's from-device ring, as it does into rtpmgrd's. Which
//! socket, for `stream = NAME`:
//!
//! * the stream's `destination`, when it is on this host (a loopback
//!   address) or a multicast group: what rtpmgrd delivers, after its
//!   reorder buffer and repairs (or the module's in-kernel relay);
//! * else its multicast `group` (and `source`, `interface`, port): the same
//!   datagrams rtpmgrd receives, a copy from the network stack, which
//!   delivers a multicast datagram to every member socket;
//! * a unicast stream that rtpmgrd receives and sends elsewhere cannot be
//!   shared (a second socket on its port would take datagrams from
//!   rtpmgrd's): refused with a message that says so.

use rtpmgr_config::{Config, StreamConfig, StreamFormat};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// The caps both elements' pads take: RTP, or raw 188-byte MPEG-TS (what a
/// `format = "udp-ts"` stream carries).
pub fn template_caps() -> gst::Caps {
    let mut caps = gst::Caps::new_empty_simple("application/x-rtp");
    caps.get_mut()
        .expect("new caps")
        .append(gst::Caps::builder("video/mpegts").field("systemstream", true).field("packetsize", 188i32).build());
    caps
}

/// What the packets of a stream are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// RTP; the payload type and clock rate when the configuration has them.
    Rtp { payload_type: Option<u8>, clock_rate: u32 },
    /// Raw MPEG-TS over UDP (`format = "udp-ts"`): whole 188-byte packets.
    UdpTs,
}

impl Default for Format {
    fn default() -> Self {
        Format::Rtp { payload_type: Some(rtp::PT_MP2T), clock_rate: 90_000 }
    }
}

impl Format {
    /// The caps a source announces when its `caps` property is unset: MP2T
    /// over RTP (IPTV's payload type 33) unless the configuration says
    /// otherwise.
    pub fn default_caps(&self) -> gst::Caps {
        match self {
            Format::UdpTs => {
                gst::Caps::builder("video/mpegts").field("systemstream", true).field("packetsize", 188i32).build()
            }
            Format::Rtp { payload_type: None | Some(rtp::PT_MP2T), clock_rate: 90_000 } => {
                gst::Caps::builder("application/x-rtp")
                    .field("media", "video")
                    .field("clock-rate", 90_000i32)
                    .field("encoding-name", "MP2T")
                    .field("payload", i32::from(rtp::PT_MP2T))
                    .build()
            }
            Format::Rtp { payload_type, clock_rate } => {
                let mut b = gst::Caps::builder("application/x-rtp").field("clock-rate", *clock_rate as i32);
                if let Some(pt) = payload_type {
                    b = b.field("payload", *pt as i32);
                }
                b.build()
            }
        }
    }

    /// Check caps given in the `caps` property against the stream.
    pub fn check_caps(&self, caps: &gst::Caps) -> Result<(), String> {
        let name = caps.structure(0).map(|s| s.name().to_string());
        let want = match self {
            Format::UdpTs => "video/mpegts",
            Format::Rtp { .. } => "application/x-rtp",
        };
        match name.as_deref() {
            Some(n) if n == want && caps.size() == 1 => Ok(()),
            Some("application/x-rtp") | Some("video/mpegts") if caps.size() == 1 => Err(format!(
                "caps {caps} do not fit the stream, which carries {}: use {want} caps",
                if *self == Format::UdpTs { "raw MPEG-TS (format = \"udp-ts\")" } else { "RTP" }
            )),
            _ => Err(format!("caps {caps} are neither RTP (application/x-rtp) nor MPEG-TS (video/mpegts)")),
        }
    }
}

/// Where a source's packets come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RxEndpoint {
    /// A UDP socket bound to `bind`, member of `group` (from `source`,
    /// on `interface`) when given.
    Udp { bind: SocketAddr, group: Option<IpAddr>, source: Option<IpAddr>, interface: Option<String> },
    /// A media port that produces packets.
    Port(String),
}

/// A source's plan: the endpoint, the format and why (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxPlan {
    pub endpoint: RxEndpoint,
    pub format: Format,
    pub why: String,
}

/// The source's properties that choose its endpoint.
#[derive(Clone, Debug, Default)]
pub struct RxSettings {
    pub config: String,
    pub stream: Option<String>,
    pub address: Option<String>,
    pub multicast_iface: Option<String>,
    pub media_port: Option<String>,
}

fn settings_error(msg: String) -> gst::ErrorMessage {
    gst::error_msg!(gst::ResourceError::Settings, ("{msg}"))
}

fn load_stream(config: &str, name: &str) -> Result<StreamConfig, gst::ErrorMessage> {
    let cfg = Config::load(Path::new(config)).map_err(|e| {
        if e.line().is_none() && !Path::new(config).exists() {
            gst::error_msg!(
                gst::ResourceError::NotFound,
                ("No rtpmgr configuration {config} to look stream {name:?} up in"),
                ["{e}"]
            )
        } else {
            gst::error_msg!(gst::ResourceError::Settings, ("{e}"))
        }
    })?;
    let names: Vec<&str> = cfg.streams.iter().map(|s| s.name.as_str()).collect();
    cfg.stream(name).cloned().ok_or_else(|| {
        gst::error_msg!(
            gst::ResourceError::NotFound,
            (
                "No stream {name:?} in {config}; it has: {}",
                if names.is_empty() { "none".into() } else { names.join(", ") }
            )
        )
    })
}

fn format_of(s: &StreamConfig) -> Format {
    match s.format {
        StreamFormat::UdpTs => Format::UdpTs,
        _ => Format::Rtp { payload_type: s.payload_type, clock_rate: s.effective_clock_rate() },
    }
}

/// Parse `HOST:PORT` (IPv6 in brackets).
pub fn parse_addr(what: &str, text: &str) -> Result<SocketAddr, gst::ErrorMessage> {
    text.parse().map_err(|_| settings_error(format!("{what} {text:?} is not an address: IP:PORT or [IPv6]:PORT")))
}

/// Decide a source's endpoint (nothing is opened yet).
pub fn resolve_rx(s: &RxSettings) -> Result<RxPlan, gst::ErrorMessage> {
    let stream = match &s.stream {
        Some(name) => Some(load_stream(&s.config, name)?),
        None => None,
    };
    let format = stream.as_ref().map(format_of).unwrap_or_default();
    if let Some(port) = &s.media_port {
        return Ok(RxPlan { endpoint: RxEndpoint::Port(port.clone()), format, why: format!("media port {port}") });
    }
    if let Some(a) = &s.address {
        let addr = parse_addr("address", a)?;
        let group = addr.ip().is_multicast().then_some(addr.ip());
        return Ok(RxPlan {
            endpoint: RxEndpoint::Udp { bind: addr, group, source: None, interface: s.multicast_iface.clone() },
            format,
            why: format!("address {addr}"),
        });
    }
    let Some(st) = stream else {
        return Err(settings_error(
            "Nothing to receive: set stream (a stream of the rtpmgr configuration), address or media-port".into(),
        ));
    };
    let name = &st.name;
    if let Some(d) = st.destination {
        if d.ip().is_loopback() {
            return Ok(RxPlan {
                endpoint: RxEndpoint::Udp { bind: d, group: None, source: None, interface: None },
                format,
                why: format!("stream {name}: what rtpmgrd delivers to {d}"),
            });
        }
        if d.ip().is_multicast() {
            return Ok(RxPlan {
                endpoint: RxEndpoint::Udp {
                    bind: d,
                    group: Some(d.ip()),
                    source: None,
                    interface: s.multicast_iface.clone(),
                },
                format,
                why: format!("stream {name}: what rtpmgrd sends to group {d}"),
            });
        }
    }
    if let Some(g) = st.group {
        return Ok(RxPlan {
            endpoint: RxEndpoint::Udp {
                bind: SocketAddr::new(g, st.bind.port()),
                group: Some(g),
                source: st.source,
                interface: s.multicast_iface.clone().or_else(|| st.interface.clone()),
            },
            format,
            why: format!("stream {name}: a copy of group {g} port {} as rtpmgrd receives it", st.bind.port()),
        });
    }
    Err(settings_error(format!(
        "Stream {name} of {} is unicast to rtpmgrd ({}){}: a second socket on its port would take datagrams \
         from rtpmgrd's, so it cannot be shared; relay it to a loopback destination, or set address",
        s.config,
        st.bind,
        st.destination.map(|d| format!(" and sent on to {d}")).unwrap_or_default()
    )))
}

/// Where a sink's packets go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxEndpoint {
    Port(String),
    Udp(SocketAddr),
}

/// The sink's properties that choose its endpoint.
#[derive(Clone, Debug, Default)]
pub struct TxSettings {
    pub config: String,
    pub stream: Option<String>,
    pub media_port: Option<String>,
    pub destination: Option<String>,
}

/// The media port a sink writes to when nothing else is said: the first
/// device-tree-bound port.
pub const DEFAULT_MEDIA_PORT: &str = "media0";

/// Decide a sink's endpoint: `destination`, else `media-port`, else the
/// media port of the configuration's `stream`, else `media0`.
pub fn resolve_tx(s: &TxSettings) -> Result<(TxEndpoint, String), gst::ErrorMessage> {
    if let Some(d) = &s.destination {
        let addr = parse_addr("destination", d)?;
        return Ok((TxEndpoint::Udp(addr), format!("UDP to {addr} through the module")));
    }
    if let Some(p) = &s.media_port {
        return Ok((TxEndpoint::Port(p.clone()), format!("media port {p}")));
    }
    if let Some(name) = &s.stream {
        let st = load_stream(&s.config, name)?;
        return Ok((TxEndpoint::Port(st.media_port.clone()), format!("stream {name}: media port {}", st.media_port)));
    }
    Ok((TxEndpoint::Port(DEFAULT_MEDIA_PORT.into()), format!("media port {DEFAULT_MEDIA_PORT}")))
}

fn io_err(context: impl std::fmt::Display, e: nix::errno::Errno) -> io::Error {
    let e = io::Error::from_raw_os_error(e as i32);
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

/// The receiving socket of a source. A multicast socket shares its port
/// (`SO_REUSEADDR`, as rtpmgrd's): every member gets each datagram. A
/// unicast one does not: a second receiver would split the stream, so it
/// gets `EADDRINUSE` instead.
pub fn rx_socket(
    bind: SocketAddr,
    group: Option<IpAddr>,
    source: Option<IpAddr>,
    interface: Option<&str>,
    rcvbuf: u32,
) -> io::Result<UdpSocket> {
    use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let family = if bind.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd: OwnedFd =
        sock::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(|e| io_err("socket", e))?;
    if group.is_some() {
        sock::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| io_err("SO_REUSEADDR", e))?;
    }
    if rcvbuf > 0 {
        let want = rcvbuf as usize;
        if sock::setsockopt(&fd, sockopt::RcvBufForce, &want).is_err() {
            sock::setsockopt(&fd, sockopt::RcvBuf, &want).map_err(|e| io_err("SO_RCVBUF", e))?;
        }
    }
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(bind)).map_err(|e| io_err(format_args!("bind {bind}"), e))?;
    if let Some(g) = group {
        join(&fd, g, source, interface)?;
    }
    Ok(UdpSocket::from(fd))
}

/// The sending socket of a sink: an ephemeral port, connected to `dest`.
pub fn tx_socket(dest: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr =
        if dest.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
    let s = UdpSocket::bind(any)?;
    s.connect(dest).map_err(|e| io::Error::new(e.kind(), format!("connect {dest}: {e}")))?;
    Ok(s)
}

fn sockaddr_storage(ip: IpAddr) -> libc::sockaddr_storage {
    let ss = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(ip, 0));
    // SAFETY: sockaddr_storage is plain old data: all zero is a valid value.
    let mut out: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = (nix::sys::socket::SockaddrLike::len(&ss) as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `ss` holds `len` initialised bytes of a sockaddr, which fit
    // `out` (the size of any sockaddr); the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            nix::sys::socket::SockaddrLike::as_ptr(&ss).cast::<u8>(),
            (&mut out as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        )
    };
    out
}

/// Join `group` (from `source` only, when given) on `interface` (by name;
/// none: the kernel picks by route), with the RFC 3678 options that serve
/// IPv4 and IPv6 alike.
fn join(fd: &OwnedFd, group: IpAddr, source: Option<IpAddr>, interface: Option<&str>) -> io::Result<()> {
    let ifindex = match interface {
        Some(name) => nix::net::if_::if_nametoindex(name).map_err(|e| io_err(format_args!("interface {name}"), e))?,
        None => 0,
    };
    let level = if group.is_ipv4() { libc::IPPROTO_IP } else { libc::IPPROTO_IPV6 };
    let rc = match source {
        None => {
            let req = libc::group_req { gr_interface: ifindex, gr_group: sockaddr_storage(group) };
            // SAFETY: `req` is a valid group_req and the length is its size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    level,
                    libc::MCAST_JOIN_GROUP,
                    (&req as *const libc::group_req).cast(),
                    std::mem::size_of::<libc::group_req>() as libc::socklen_t,
                )
            }
        }
        Some(src) => {
            let req = libc::group_source_req {
                gsr_interface: ifindex,
                gsr_group: sockaddr_storage(group),
                gsr_source: sockaddr_storage(src),
            };
            // SAFETY: `req` is a valid group_source_req and the length is its size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    level,
                    libc::MCAST_JOIN_SOURCE_GROUP,
                    (&req as *const libc::group_source_req).cast(),
                    std::mem::size_of::<libc::group_source_req>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("join {group}: {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// A file under the target directory, removed when dropped (no crate
    /// for this: the plugin's dependency set stays what it links).
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(text: &str) -> TempPath {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "gst-rtpmgr-test-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&p, text).unwrap();
                TempPath(p)
            }
            pub fn as_str(&self) -> &str {
                self.0.to_str().unwrap()
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    const CONF: &str = r#"
[daemon]
backend = "kernel"

[[stream]]
name = "local"
direction = "relay"
bind = "0.0.0.0:5004"
destination = "127.0.0.1:6004"
payload_type = 33

[[stream]]
name = "mc"
direction = "relay"
bind = "0.0.0.0:5006"
group = "239.1.1.1"
source = "10.0.0.1"
interface = "eth0"
destination = "192.168.1.20:5006"
format = "udp-ts"

[[stream]]
name = "uni"
direction = "relay"
bind = "0.0.0.0:5008"
destination = "192.168.1.20:5008"
payload_type = 96
clock_rate = 48000
media_port = "loopback"
"#;

    /// The message of an error as GStreamer shows it (its Display quotes it).
    fn msg(e: gst::ErrorMessage) -> String {
        e.to_string().replace("\\\"", "\"")
    }

    fn rx(conf: &tempfile_path::TempPath, stream: &str) -> Result<RxPlan, String> {
        gst::init().unwrap();
        resolve_rx(&RxSettings { config: conf.as_str().into(), stream: Some(stream.into()), ..Default::default() })
            .map_err(msg)
    }

    #[test]
    fn a_loopback_destination_is_received_where_rtpmgrd_delivers() {
        let c = config(CONF);
        let p = rx(&c, "local").unwrap();
        assert_eq!(
            p.endpoint,
            RxEndpoint::Udp { bind: "127.0.0.1:6004".parse().unwrap(), group: None, source: None, interface: None }
        );
        assert_eq!(p.format, Format::Rtp { payload_type: Some(33), clock_rate: 90_000 });
        let caps = p.format.default_caps();
        assert_eq!(caps.structure(0).unwrap().get::<&str>("encoding-name").unwrap(), "MP2T");
    }

    #[test]
    fn a_multicast_stream_is_joined_like_rtpmgrd_joins_it() {
        let c = config(CONF);
        let p = rx(&c, "mc").unwrap();
        assert_eq!(
            p.endpoint,
            RxEndpoint::Udp {
                bind: "239.1.1.1:5006".parse().unwrap(),
                group: Some("239.1.1.1".parse().unwrap()),
                source: Some("10.0.0.1".parse().unwrap()),
                interface: Some("eth0".into())
            }
        );
        assert_eq!(p.format, Format::UdpTs);
        assert_eq!(p.format.default_caps().structure(0).unwrap().name(), "video/mpegts");
    }

    #[test]
    fn a_unicast_stream_relayed_elsewhere_is_refused_with_the_reason() {
        let c = config(CONF);
        let e = rx(&c, "uni").unwrap_err();
        assert!(e.contains("cannot be shared"), "{e}");
    }

    #[test]
    fn unknown_streams_and_missing_files_say_so() {
        let c = config(CONF);
        let e = rx(&c, "nope").unwrap_err();
        assert!(e.contains("No stream \"nope\"") && e.contains("local, mc, uni"), "{e}");
        let e = resolve_rx(&RxSettings {
            config: "/nonexistent/rtpmgr.toml".into(),
            stream: Some("x".into()),
            ..Default::default()
        })
        .unwrap_err();
        let e = msg(e);
        assert!(e.contains("No rtpmgr configuration"), "{e}");
        let e = msg(resolve_rx(&RxSettings::default()).unwrap_err());
        assert!(e.contains("Nothing to receive"), "{e}");
    }

    #[test]
    fn address_and_media_port_win_over_the_stream() {
        gst::init().unwrap();
        let c = config(CONF);
        let mut s = RxSettings {
            config: c.as_str().into(),
            stream: Some("uni".into()),
            address: Some("239.2.2.2:7000".into()),
            ..Default::default()
        };
        let p = resolve_rx(&s).unwrap();
        assert!(matches!(p.endpoint, RxEndpoint::Udp { group: Some(_), .. }));
        assert_eq!(p.format, Format::Rtp { payload_type: Some(96), clock_rate: 48_000 });
        s.media_port = Some("media0".into());
        assert_eq!(resolve_rx(&s).unwrap().endpoint, RxEndpoint::Port("media0".into()));
        s.address = Some("nonsense".into());
        s.media_port = None;
        assert!(msg(resolve_rx(&s).unwrap_err()).contains("not an address"));
    }

    #[test]
    fn caps_are_checked_against_the_stream() {
        gst::init().unwrap();
        let rtp = Format::default();
        assert!(rtp.check_caps(&"application/x-rtp,payload=33".parse().unwrap()).is_ok());
        let e = rtp.check_caps(&"audio/x-raw".parse().unwrap()).unwrap_err();
        assert!(e.contains("neither RTP"), "{e}");
        let e = Format::UdpTs.check_caps(&"application/x-rtp".parse().unwrap()).unwrap_err();
        assert!(e.contains("raw MPEG-TS"), "{e}");
    }

    #[test]
    fn sinks_go_to_the_destination_the_port_or_the_streams_port() {
        let c = config(CONF);
        let mut s = TxSettings { config: c.as_str().into(), ..Default::default() };
        assert_eq!(resolve_tx(&s).unwrap().0, TxEndpoint::Port("media0".into()));
        s.stream = Some("uni".into());
        assert_eq!(resolve_tx(&s).unwrap().0, TxEndpoint::Port("loopback".into()));
        s.media_port = Some("null".into());
        assert_eq!(resolve_tx(&s).unwrap().0, TxEndpoint::Port("null".into()));
        s.destination = Some("127.0.0.1:9".into());
        assert_eq!(resolve_tx(&s).unwrap().0, TxEndpoint::Udp("127.0.0.1:9".parse().unwrap()));
    }

    #[test]
    fn a_unicast_port_is_not_shared() {
        let a = rx_socket("127.0.0.1:0".parse().unwrap(), None, None, None, 0).unwrap();
        let taken = a.local_addr().unwrap();
        let e = rx_socket(taken, None, None, None, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    }
}
