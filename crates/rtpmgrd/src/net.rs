// SPDX-License-Identifier: MIT
//! UDP sockets for streams: buffer sizes, kernel receive timestamps,
//! multicast joins (any-source and source-specific, IPv4 and IPv6) and
//! multicast TTL.

use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use rtpmgr_config::{Direction, RtcpMode, StreamConfig};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

fn err(context: impl std::fmt::Display, e: impl Into<io::Error>) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

/// Open, configure and bind the socket of one stream; `timestamps`: the
/// kernel stamps each datagram's arrival (`SO_TIMESTAMPNS`, the daemon's
/// `receive_timestamps`).
pub fn open_stream_socket(cfg: &StreamConfig, buffer_bytes: u32, timestamps: bool) -> io::Result<UdpSocket> {
    let family = if cfg.bind.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd: OwnedFd =
        sock::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(|e| err("socket", e))?;
    // Several receivers of one multicast group on a box, and quick restarts.
    sock::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| err("SO_REUSEADDR", e))?;
    set_buffers(&fd, buffer_bytes, &cfg.name);
    if timestamps && cfg.direction != Direction::Egress {
        // Kernel arrival times for RFC 3550 jitter, independent of how late
        // the receiver thread gets to the packet.
        sock::setsockopt(&fd, sockopt::ReceiveTimestampns, &true).map_err(|e| err("SO_TIMESTAMPNS", e))?;
    }
    let addr = SockaddrStorage::from(cfg.bind);
    sock::bind(fd.as_raw_fd(), &addr).map_err(|e| err(format_args!("bind {}", cfg.bind), e))?;
    if let Some(group) = cfg.group {
        join(&fd, group, cfg.source, cfg.interface.as_deref())?;
    }
    if let (Some(ttl), Some(dest)) = (cfg.multicast_ttl, cfg.destination) {
        set_multicast_ttl(&fd, dest, ttl)?;
    }
    if let (Direction::Egress, RtcpMode::Off | RtcpMode::PortPlus1, Some(dest)) =
        (cfg.direction, cfg.rtcp, cfg.destination)
    {
        // After the TTL, as for the kernel relay's sender.
        connect_sender(&fd, dest, &cfg.name);
    }
    Ok(UdpSocket::from(fd))
}

/// Connect an egress stream's socket to its one destination, so that the
/// transmitter's sends name no address and the kernel looks the route up
/// once, here, instead of for every datagram (issue 18).
///
/// Only a socket that receives nothing: a connected UDP socket gets
/// datagrams from its peer only, which would cut a relay off from its
/// senders, and an egress stream's `rtcp = "mux"` socket off from the
/// reports of receivers, which send from their own addresses (a group's
/// receivers all do). The bound address and port stay as they are; with a wildcard
/// bind the source address is chosen now by the route, as each `sendto`
/// chose it. A connect that fails (no route yet) leaves the socket
/// unconnected, and the transmitter names the address per datagram as it
/// always did, so the stream starts and its sends fail and count the same.
fn connect_sender(fd: &OwnedFd, dest: SocketAddr, stream: &str) {
    if let Err(e) = sock::connect(fd.as_raw_fd(), &SockaddrStorage::from(dest)) {
        log::debug!("stream {stream}: connect {dest}: {e}; sending with an address per datagram");
    }
}

/// The sending socket of a `mode = "kernel"` relay, which the module sends
/// on: of `dest`'s family, bound to the unspecified address (an ephemeral
/// port), with the stream's send buffer and multicast TTL, connected to
/// `dest` (after the TTL, so the route is chosen knowing it).
pub fn open_sender_socket(dest: SocketAddr, buffer_bytes: u32, multicast_ttl: Option<u8>) -> io::Result<UdpSocket> {
    let (family, any): (_, SocketAddr) = if dest.is_ipv4() {
        (AddressFamily::Inet, (std::net::Ipv4Addr::UNSPECIFIED, 0).into())
    } else {
        (AddressFamily::Inet6, (std::net::Ipv6Addr::UNSPECIFIED, 0).into())
    };
    let fd: OwnedFd =
        sock::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(|e| err("socket", e))?;
    // Only the send buffer matters on a socket that never receives.
    let want = buffer_bytes as usize;
    if sock::setsockopt(&fd, sockopt::SndBufForce, &want).is_err() {
        let _ = sock::setsockopt(&fd, sockopt::SndBuf, &want);
    }
    if let Some(ttl) = multicast_ttl {
        set_multicast_ttl(&fd, dest, ttl)?;
    }
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(any)).map_err(|e| err(format_args!("bind {any}"), e))?;
    sock::connect(fd.as_raw_fd(), &SockaddrStorage::from(dest)).map_err(|e| err(format_args!("connect {dest}"), e))?;
    Ok(UdpSocket::from(fd))
}

/// The separate RTCP socket of a stream with `rtcp = "port+1"`: bound at
/// the port after the RTP port, joined to the same group, non-blocking.
pub fn open_rtcp_socket(cfg: &StreamConfig) -> io::Result<UdpSocket> {
    let Some(port) = cfg.rtcp_port() else {
        return Err(io::Error::other("the stream has no separate RTCP port"));
    };
    open_side_socket(cfg, port, "RTCP")
}

/// The column and row FEC sockets of a stream with `fec = true`, with the
/// stream's socket buffer size (FEC comes at a fifth of the media rate and
/// more, in bursts at the end of each matrix).
pub fn open_fec_sockets(cfg: &StreamConfig, buffer_bytes: u32) -> io::Result<Vec<UdpSocket>> {
    let Some(ports) = cfg.fec_ports() else { return Ok(Vec::new()) };
    ports
        .iter()
        .map(|&p| {
            let s = open_side_socket(cfg, p, "FEC")?;
            set_buffers(&s, buffer_bytes, &cfg.name);
            Ok(s)
        })
        .collect()
}

/// A socket beside the stream's RTP socket: same address, another port,
/// the same group joined, non-blocking.
fn open_side_socket(cfg: &StreamConfig, port: u16, what: &str) -> io::Result<UdpSocket> {
    let family = if cfg.bind.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd: OwnedFd =
        sock::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(|e| err("socket", e))?;
    sock::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| err("SO_REUSEADDR", e))?;
    let mut at = cfg.bind;
    at.set_port(port);
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(at)).map_err(|e| err(format_args!("bind {what} {at}"), e))?;
    if let Some(group) = cfg.group {
        join(&fd, group, cfg.source, cfg.interface.as_deref())?;
    }
    let s = UdpSocket::from(fd);
    s.set_nonblocking(true)?;
    Ok(s)
}

/// How many datagrams the socket has dropped since it was opened (receive
/// buffer full, mostly), read from SO_MEMINFO. Not SO_RXQ_OVFL: that count
/// travels on the datagrams queued after a drop, so the last drops of a
/// burst show only when more traffic comes, and on recent kernels it lags
/// the socket's real count.
pub fn socket_drops(sock: &UdpSocket) -> Option<u64> {
    let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes that outlives the
    // call; the kernel writes at most `len` bytes and stores the length it
    // wrote back into `len`.
    let rc = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MEMINFO, info.as_mut_ptr().cast(), &mut len)
    };
    let drops = libc::SK_MEMINFO_DROPS as usize;
    (rc == 0 && len as usize >= (drops + 1) * std::mem::size_of::<u32>()).then(|| info[drops].into())
}

/// `net.core.rmem_max`: what an unprivileged `SO_RCVBUF` is capped at.
pub fn rmem_max() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max").ok()?.trim().parse().ok()
}

/// Ask for `bytes` of socket buffer. `SO_RCVBUFFORCE` goes past
/// `net.core.rmem_max` when we hold CAP_NET_ADMIN; otherwise the plain
/// option is capped by the sysctl, which is logged, naming it, so that an
/// operator sees why bursts are dropped.
fn set_buffers(fd: &impl AsFd, bytes: u32, stream: &str) {
    let want = bytes as usize;
    if sock::setsockopt(fd, sockopt::RcvBufForce, &want).is_err() {
        let _ = sock::setsockopt(fd, sockopt::RcvBuf, &want);
    }
    if sock::setsockopt(fd, sockopt::SndBufForce, &want).is_err() {
        let _ = sock::setsockopt(fd, sockopt::SndBuf, &want);
    }
    if let Ok(got) = sock::getsockopt(fd, sockopt::RcvBuf) {
        // Linux reports double the requested value (bookkeeping overhead).
        if got / 2 < want {
            let max = rmem_max().map_or_else(|| "?".to_string(), |m| m.to_string());
            log::warn!(
                "stream {stream}: socket receive buffer is {} bytes, {want} requested (socket_buffer_bytes): \
                 the kernel caps it at net.core.rmem_max = {max} without CAP_NET_ADMIN; \
                 raise it (sysctl -w net.core.rmem_max={want}) or give rtpmgrd CAP_NET_ADMIN, \
                 or bursts longer than the buffer are dropped (socket_drops)",
                got / 2
            );
        }
    }
}

fn storage(ip: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match ip {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned at least as
            // strictly as sockaddr_in, by definition.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6.octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    ss
}

/// Join `group` (optionally only from `source`) on `interface`, with the
/// protocol-independent RFC 3678 options so one path serves IPv4 and IPv6.
fn join(fd: &impl AsFd, group: IpAddr, source: Option<IpAddr>, interface: Option<&str>) -> io::Result<()> {
    let ifindex = match interface {
        Some(name) => nix::net::if_::if_nametoindex(name).map_err(|e| err(format_args!("interface {name}"), e))?,
        None => 0, // the kernel picks the interface by route
    };
    membership(fd, group, source, ifindex, true)
}

/// Join `group` again on interface index `new` (the interface was removed
/// and came back, or was replaced), after leaving it on `old`, which may
/// fail harmlessly when the old device is gone.
pub fn rejoin(fd: &impl AsFd, group: IpAddr, source: Option<IpAddr>, old: u32, new: u32) -> io::Result<()> {
    let _ = membership(fd, group, source, old, false);
    membership(fd, group, source, new, true)
}

/// MCAST_(JOIN|LEAVE)_(SOURCE_)GROUP on interface index `ifindex`.
fn membership(fd: &impl AsFd, group: IpAddr, source: Option<IpAddr>, ifindex: u32, join: bool) -> io::Result<()> {
    let level = if group.is_ipv4() { libc::IPPROTO_IP } else { libc::IPPROTO_IPV6 };
    let verb = if join { "join" } else { "leave" };
    let what = match source {
        Some(s) => format!("{verb} {group} from source {s}"),
        None => format!("{verb} {group}"),
    };
    let rc = match source {
        None => {
            let req = libc::group_req { gr_interface: ifindex, gr_group: storage(group) };
            // SAFETY: `req` is a valid group_req and the length passed is its size.
            unsafe {
                libc::setsockopt(
                    fd.as_fd().as_raw_fd(),
                    level,
                    if join { libc::MCAST_JOIN_GROUP } else { libc::MCAST_LEAVE_GROUP },
                    (&req as *const libc::group_req).cast(),
                    std::mem::size_of::<libc::group_req>() as libc::socklen_t,
                )
            }
        }
        Some(src) => {
            let req =
                libc::group_source_req { gsr_interface: ifindex, gsr_group: storage(group), gsr_source: storage(src) };
            // SAFETY: `req` is a valid group_source_req and the length is its size.
            unsafe {
                libc::setsockopt(
                    fd.as_fd().as_raw_fd(),
                    level,
                    if join { libc::MCAST_JOIN_SOURCE_GROUP } else { libc::MCAST_LEAVE_SOURCE_GROUP },
                    (&req as *const libc::group_source_req).cast(),
                    std::mem::size_of::<libc::group_source_req>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 {
        return Err(err(what, io::Error::last_os_error()));
    }
    Ok(())
}

fn set_multicast_ttl(fd: &OwnedFd, dest: SocketAddr, ttl: u8) -> io::Result<()> {
    match dest {
        SocketAddr::V4(_) => {
            sock::setsockopt(fd, sockopt::IpMulticastTtl, &ttl).map_err(|e| err("IP_MULTICAST_TTL", e))
        }
        SocketAddr::V6(_) => {
            let hops: libc::c_int = ttl.into();
            // SAFETY: IPV6_MULTICAST_HOPS takes an int; we pass one and its size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_HOPS,
                    (&hops as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(err("IPV6_MULTICAST_HOPS", io::Error::last_os_error()));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn stream(direction: &str, bind: &str, destination: SocketAddr) -> StreamConfig {
        let text = format!(
            "[[stream]]\nname = \"s\"\ndirection = \"{direction}\"\nbind = \"{bind}\"\ndestination = \"{destination}\"\n"
        );
        rtpmgr_config::Config::parse(&text, Path::new("t.toml")).unwrap().streams.remove(0)
    }

    #[test]
    fn an_egress_socket_is_connected_to_its_destination_ipv4_and_ipv6() {
        for (bind, peer) in [("127.0.0.1:0", "127.0.0.1:0"), ("[::1]:0", "[::1]:0")] {
            let peer = UdpSocket::bind(peer).unwrap();
            let dest = peer.local_addr().unwrap();
            let s = open_stream_socket(&stream("egress", bind, dest), 1 << 16, true).unwrap();
            assert_eq!(s.peer_addr().unwrap(), dest, "bound at {bind}");
            // Still bound where configured: the address, an ephemeral port.
            assert_eq!(s.local_addr().unwrap().ip(), bind.parse::<SocketAddr>().unwrap().ip());
            // send() without an address reaches the destination.
            s.send(b"x").unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 4];
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((n, from), (1, s.local_addr().unwrap()));
        }
    }

    #[test]
    fn an_egress_socket_to_a_group_keeps_its_ttl_when_connected() {
        let dest: SocketAddr = "239.1.2.3:5004".parse().unwrap();
        let text = format!(
            "[[stream]]\nname = \"m\"\ndirection = \"egress\"\nbind = \"0.0.0.0:0\"\ndestination = \"{dest}\"\nmulticast_ttl = 7\n"
        );
        let cfg = rtpmgr_config::Config::parse(&text, Path::new("t.toml")).unwrap().streams.remove(0);
        let s = open_stream_socket(&cfg, 1 << 16, false).unwrap();
        assert_eq!(s.multicast_ttl_v4().unwrap(), 7);
        // Connected where a route to the group exists (not in every
        // network namespace); either way the socket is usable.
        if let Ok(peer) = s.peer_addr() {
            assert_eq!(peer, dest);
        }
    }

    #[test]
    fn an_egress_socket_with_muxed_rtcp_stays_unconnected() {
        // Receivers report from their own addresses, not the destination's.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let egress = |rtcp: &str| {
            let text = format!(
                "[[stream]]\nname = \"m\"\ndirection = \"egress\"\nbind = \"127.0.0.1:{port}\"\n\
                 destination = \"127.0.0.1:9\"\nrtcp = \"{rtcp}\"\n"
            );
            let cfg = rtpmgr_config::Config::parse(&text, Path::new("t.toml")).unwrap().streams.remove(0);
            open_stream_socket(&cfg, 1 << 16, false).unwrap()
        };
        assert!(egress("mux").peer_addr().is_err());
        // Its own RTCP socket (port + 1) leaves the RTP socket to send only.
        assert!(egress("port+1").peer_addr().is_ok());
    }

    #[test]
    fn a_relay_socket_stays_unconnected_and_hears_any_sender() {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let s = open_stream_socket(&stream("relay", &format!("127.0.0.1:{port}"), dest), 1 << 16, false).unwrap();
        assert!(s.peer_addr().is_err());
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"rtp", s.local_addr().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(s.recv_from(&mut buf).unwrap(), (3, sender.local_addr().unwrap()));
    }
}
