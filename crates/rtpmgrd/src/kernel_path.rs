// SPDX-License-Identifier: MIT
//! Streams the module runs by itself (`mode = "kernel"`).
//!
//! rtpmgrd sets them up and reads their counters; no packet of theirs
//! passes through its threads. It makes their sockets as it makes its own
//! (`net.rs`: bind, `SO_REUSEADDR`, buffers, multicast joins any-source or
//! source-specific, multicast TTL, connect) and hands them to the module
//! with `START_NET_STREAM`, which keeps them while the stream runs; so the
//! sockets are rtpmgrd's, with its credentials and under its LSM rules.
//!
//! * relay: a receiving `udp` stream at `bind` forwards every datagram to a
//!   sending `udp` stream connected to `destination`: network to network
//!   inside the kernel, as rtpengine's module does for a call leg. The
//!   media port is not on this path; it is what the user-space fallback
//!   relays through.
//! * ingress: the receiving `udp` stream forwards into a `DIR_TO_DEVICE`
//!   stream of the media port: network to peripheral inside the kernel.
//!
//! The module checks every datagram's RTP header (malformed ones are
//! counted and dropped) and keeps RFC 3550 statistics with the stream's
//! clock rate; it does not filter by `payload_type`, which here only
//! names the clock rate. A `format = "udp-ts"` stream is checked as raw
//! MPEG-TS instead (`NET_F_TS`: whole 188-byte packets with sync bytes)
//! and its continuity counters judged per PID by the `mpegts` crate's
//! rules, compiled into the module; the TR 101 290 indicators that need
//! the payload (PAT, PMT, PID, CRC) are user space's (`mode = "user"`).
//!
//! Where the device cannot do it (the simulator, a module without
//! `FEATURE_NET_STREAMS`, an option the `udp` port does not implement) the
//! caller falls back to the user-space path and logs the reason.

use crate::net::{open_sender_socket, open_stream_socket};
use rtpmgr_abi as abi;
use rtpmgr_config::{Direction, StreamConfig, StreamFormat};
use rtpmgr_control::{StreamReport, TsReport};
use rtpmgr_device::net_stream_spec;
use rtpmgr_device::{find_port, Backend};
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsFd;

/// A stream running in the module.
pub struct KernelStream {
    pub config: StreamConfig,
    /// The receiving `udp` stream.
    pub rx_id: u32,
    /// Its forwarding target: a sending `udp` stream (relay) or a stream
    /// of the media port (ingress).
    pub target_id: u32,
    /// Media-port index of an ingress stream's target.
    pub port: Option<u32>,
}

/// Why a kernel stream did not start.
#[derive(Debug)]
pub enum StartError {
    /// The device cannot run it: use the user-space path instead.
    Unsupported(String),
    /// It can, but not now (address in use, port gone, permission): the
    /// same failure the user-space path would meet, retried as such.
    Failed(io::Error),
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Failed(e)
    }
}

/// Why the device cannot run kernel streams at all; `None` when it can.
fn unsupported(info: &abi::Info) -> Option<String> {
    (info.features & abi::FEATURE_NET_STREAMS == 0)
        .then(|| "the device has no in-kernel network streams (FEATURE_NET_STREAMS)".into())
}

/// The `START_NET_STREAM` arguments of `cfg`: the receiving stream on
/// socket `rx`, and for a relay the sending one on `tx` it forwards to.
fn net_specs(
    cfg: &StreamConfig,
    rx_id: u32,
    target_id: u32,
    rx: &UdpSocket,
    tx: Option<&UdpSocket>,
) -> (abi::NetStreamSpec, Option<abi::NetStreamSpec>) {
    let mut r = net_stream_spec(rx_id, abi::DIR_FROM_DEVICE, rx.as_fd());
    r.flags = match cfg.format {
        StreamFormat::Rtp => abi::NET_F_RTP,
        StreamFormat::UdpTs => abi::NET_F_TS,
    };
    r.clock_rate = cfg.effective_clock_rate();
    r.forward_to = target_id;
    let t = tx.map(|tx| net_stream_spec(target_id, abi::DIR_TO_DEVICE, tx.as_fd()));
    (r, t)
}

/// An errno from `START_NET_STREAM` that means "not this device", not
/// "not now": no such ioctl or option, or a spec this module refuses
/// (`EINVAL`: a rule it has and the configuration's validation lacks);
/// retrying would meet the same answer.
fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTTY | libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EINVAL)
    )
}

fn ctx(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Start `cfg` in the module with stream ids `rx_id` and `target_id`,
/// its sockets asking for `buffer_bytes` of buffer (`socket_buffer_bytes`,
/// as for user-space streams). Nothing stays started when it fails.
pub fn start(
    backend: &dyn Backend,
    cfg: &StreamConfig,
    rx_id: u32,
    target_id: u32,
    buffer_bytes: u32,
) -> Result<KernelStream, StartError> {
    let info = backend.info().map_err(|e| ctx("GET_INFO", e))?;
    if let Some(reason) = unsupported(&info) {
        return Err(StartError::Unsupported(reason));
    }
    // The sockets first: what fails here (address in use, no such
    // interface) fails the same way in user space, and is retried.
    let rx_sock = open_stream_socket(cfg, buffer_bytes, true)?;
    let tx_sock = match (cfg.direction, cfg.destination) {
        (Direction::Relay, Some(dest)) => Some(open_sender_socket(dest, buffer_bytes, cfg.multicast_ttl)?),
        (Direction::Relay, None) => {
            return Err(StartError::Failed(io::Error::other("a relay needs a destination")));
        }
        _ => None,
    };
    let (rx, tx) = net_specs(cfg, rx_id, target_id, &rx_sock, tx_sock.as_ref());
    // The ABI's own rules, the very ones the module applies: a spec they
    // refuse is a bug of ours, named here rather than as a bare EINVAL.
    for spec in [Some(&rx), tx.as_ref()].into_iter().flatten() {
        if let Err(e) = spec.check() {
            return Err(StartError::Unsupported(format!("START_NET_STREAM would be refused: {e}")));
        }
    }
    let port = match cfg.direction {
        Direction::Relay => {
            let (Some(tx), Some(dest)) = (tx, cfg.destination) else {
                return Err(StartError::Failed(io::Error::other("a relay needs a destination")));
            };
            backend.start_net_stream(&tx).map_err(|e| {
                if is_unsupported(&e) {
                    StartError::Unsupported(format!("START_NET_STREAM (send to {dest}): {e}"))
                } else {
                    StartError::Failed(ctx(&format!("START_NET_STREAM (send to {dest})"), e))
                }
            })?;
            None
        }
        Direction::Ingress => {
            let port = find_port(backend, &cfg.media_port)?;
            backend.start_stream(target_id, port.index, abi::DIR_TO_DEVICE).map_err(|e| ctx("START_STREAM", e))?;
            Some(port.index)
        }
        Direction::Egress => return Err(StartError::Unsupported("an egress stream has no kernel path".into())),
    };
    if let Err(e) = backend.start_net_stream(&rx) {
        // Undo the target, so the ids are free for the retry or fallback.
        let _ = backend.stop_stream(target_id);
        let what = format!("START_NET_STREAM (receive at {})", cfg.bind);
        return Err(if is_unsupported(&e) {
            StartError::Unsupported(format!("{what}: {e}"))
        } else {
            StartError::Failed(ctx(&what, e))
        });
    }
    // The module holds the sockets now; ours close here.
    drop((rx_sock, tx_sock));
    Ok(KernelStream { config: cfg.clone(), rx_id, target_id, port })
}

impl KernelStream {
    /// Stop the receiver first, so nothing is forwarded to a stopped target.
    pub fn stop(&self, backend: &dyn Backend) {
        for id in [self.rx_id, self.target_id] {
            if let Err(e) = backend.stop_stream(id) {
                log::warn!("stream {}: STOP_STREAM {id}: {e}", self.config.name);
            }
        }
    }

    /// The stream's counters, from the module: `packets` are the datagrams
    /// forwarded, the RTP figures the module's RFC 3550 statistics.
    pub fn report(&self, backend: &dyn Backend, base: StreamReport) -> StreamReport {
        let rx = backend.net_status(self.rx_id).unwrap_or_default();
        let mut r = StreamReport {
            id: self.rx_id,
            state: "running".into(),
            mode: "kernel".into(),
            packets: rx.fwd_packets,
            bytes: rx.fwd_bytes,
            malformed: rx.malformed,
            oversize: rx.oversize,
            forward_drops: rx.forward_drops,
            fast_packets: rx.fwd_fast_packets,
            fast_copies: rx.fwd_copies,
            worker_wakeups: rx.worker_wakeups,
            socket_drops: rx.socket_drops,
            ..base
        };
        if rx.rtp_flags & abi::NET_RTP_SOURCE != 0 {
            r.ssrc = Some(rx.ssrc);
            r.lost = rx.rtp_lost;
            r.duplicates = rx.rtp_duplicates;
            r.reordered = rx.rtp_reordered;
            r.jitter_ms = f64::from(rx.jitter_units) * 1000.0 / f64::from(self.config.effective_clock_rate());
        }
        if rx.rtp_flags & abi::NET_TS_CONTINUITY != 0 {
            // As for a user-space `udp-ts` stream: loss from the continuity
            // counters.
            r.lost = rx.rtp_lost;
            r.duplicates = rx.rtp_duplicates;
            r.reordered = rx.rtp_reordered;
            r.ts = Some(TsReport {
                ts_packets: rx.ts_packets,
                cc_error: rx.ts_cc_errors,
                cc_lost: u64::try_from(rx.rtp_lost).unwrap_or(0),
                cc_duplicates: rx.rtp_duplicates,
                cc_reordered: rx.rtp_reordered,
                continuity_only: true,
                ..TsReport::default()
            });
        }
        r.ssrc_changes = rx.ssrc_changes;
        if self.port.is_some() {
            let target = backend.status(self.target_id).map(|s| s.stream).unwrap_or_default();
            r.device_to_packets = target.to_dev_packets;
            r.device_ring_full_drops = target.ring_full_drops;
        } else {
            let tx = backend.net_status(self.target_id).unwrap_or_default();
            r.sent_packets = tx.tx_packets;
            r.sent_bytes = tx.tx_bytes;
            // Refused by the stack, or dropped because neither the socket
            // nor the stream's backlog in the module had room.
            r.send_errors = tx.tx_errors + tx.tx_dropped;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    fn stream(extra: &str) -> StreamConfig {
        let text = format!("[[stream]]\nname = \"k\"\ndirection = \"relay\"\nmode = \"kernel\"\n{extra}");
        rtpmgr_config::Config::parse(&text, Path::new("test.toml")).unwrap().streams.remove(0)
    }

    fn info(features: u32) -> abi::Info {
        abi::Info { features, ..Default::default() }
    }

    #[test]
    fn a_device_without_net_streams_is_a_reason_to_fall_back() {
        let why = unsupported(&info(abi::FEATURE_MMAP_RINGS)).unwrap();
        assert!(why.contains("FEATURE_NET_STREAMS"), "{why}");
        assert_eq!(unsupported(&info(abi::FEATURE_NET_STREAMS | abi::FEATURE_MMAP_RINGS)), None);
    }

    #[test]
    fn a_relay_is_a_checked_receiver_forwarding_to_a_sender() {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = stream(&format!("bind = \"127.0.0.1:{port}\"\ndestination = \"127.0.0.1:9\"\npayload_type = 0\n"));
        let rx = open_stream_socket(&c, 1 << 20, true).unwrap();
        let tx = open_sender_socket(c.destination.unwrap(), 1 << 20, Some(4)).unwrap();
        let (r, t) = net_specs(&c, 6, 9, &rx, Some(&tx));
        let t = t.expect("a relay sends");
        assert_eq!((r.stream_id, r.direction, r.forward_to), (6, abi::DIR_FROM_DEVICE, 9));
        assert_eq!((r.flags, r.clock_rate, r.fd), (abi::NET_F_RTP, 8000, rx.as_raw_fd()));
        assert_eq!((t.stream_id, t.direction, t.forward_to), (9, abi::DIR_TO_DEVICE, abi::NET_NO_FORWARD));
        assert_eq!((t.flags, t.fd), (0, tx.as_raw_fd()));
        // The sockets the module gets: bound where the stream listens,
        // connected where it sends.
        assert_eq!(rx.local_addr().unwrap().ip().to_string(), "127.0.0.1");
        assert_eq!(tx.peer_addr().unwrap(), "127.0.0.1:9".parse().unwrap());
    }

    #[test]
    fn a_udp_ts_relay_is_checked_as_mpeg_ts_not_rtp() {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = stream(&format!("bind = \"127.0.0.1:{port}\"\ndestination = \"127.0.0.1:9\"\nformat = \"udp-ts\"\n"));
        let rx = open_stream_socket(&c, 1 << 20, true).unwrap();
        let (r, _) = net_specs(&c, 2, 3, &rx, None);
        assert_eq!((r.flags, r.forward_to), (abi::NET_F_TS, 3));
    }

    #[test]
    fn an_ingress_stream_has_no_sender() {
        let port = UdpSocket::bind("[::1]:0").unwrap().local_addr().unwrap().port();
        let text =
            format!("[[stream]]\nname = \"i\"\ndirection = \"ingress\"\nmode = \"kernel\"\nbind = \"[::1]:{port}\"\n");
        let c = rtpmgr_config::Config::parse(&text, Path::new("t.toml")).unwrap().streams.remove(0);
        let rx = open_stream_socket(&c, 0, true).unwrap();
        let (r, t) = net_specs(&c, 0, 1, &rx, None);
        assert!(t.is_none());
        assert_eq!((r.forward_to, r.fd), (1, rx.as_raw_fd()));
        assert!(rx.local_addr().unwrap().is_ipv6());
    }

    #[test]
    fn only_not_supported_errnos_mean_fall_back() {
        for e in [libc::ENOTTY, libc::EOPNOTSUPP, libc::EAFNOSUPPORT, libc::EPROTONOSUPPORT, libc::EINVAL] {
            assert!(is_unsupported(&io::Error::from_raw_os_error(e)), "{e}");
        }
        for e in [libc::EADDRINUSE, libc::EACCES, libc::ENODEV, libc::EADDRNOTAVAIL, libc::ENOENT] {
            assert!(!is_unsupported(&io::Error::from_raw_os_error(e)), "{e}");
        }
    }
}
