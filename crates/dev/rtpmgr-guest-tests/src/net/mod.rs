// SPDX-License-Identifier: MIT
//! Tests of the `udp` port (`START_NET_STREAM`): kernel UDP sockets that
//! feed the from-device ring and drain the to-device ring. By subject:
//!
//! * [`unicast`]: receive and transmit, intact and in order, IPv4 and IPv6,
//!   junk and oversize datagrams counted, a full ring's overflow accounted;
//! * [`forward`]: in-kernel forwarding, to a sending `udp` stream (relay,
//!   with and without the tap) and into a media port that returns packets;
//! * [`multicast`]: any-source and source-specific receive, multicast send
//!   with TTL / hop limit;
//! * [`stats`]: the module's RFC 3550 statistics against the `rtp` crate's;
//! * [`hostile`]: bad arguments and sockets, stop/close/RESET under traffic;
//! * [`hold`]: the long-running stream ci/guest/init floods around rmmod.
//!
//! This file holds what they share: sockets, specs, sessions, waits.

mod forward;
mod hold;
mod hostile;
mod multicast;
mod stats;
mod unicast;

pub(crate) use forward::{
    udp_forward_to_loopback, udp_forward_to_media0, udp_relay_tap_v4, udp_relay_tap_v6, udp_relay_v4,
};
pub(crate) use hold::hold;
pub(crate) use hostile::{udp_hostile_args, udp_stop_close_under_traffic, Flood};
pub(crate) use multicast::{
    udp_mcast_ssm_v4, udp_mcast_ssm_v6, udp_mcast_tx_v4, udp_mcast_tx_v6, udp_mcast_v4, udp_mcast_v6,
};
pub(crate) use stats::{udp_rtp_stats_v4, udp_stats_idle_record_v4};
pub(crate) use unicast::{udp_rx_intact_v4, udp_rx_intact_v6, udp_tx_intact_v4, udp_tx_intact_v6};

use super::{expect_errno, fail, open, TestResult};
use nix::errno::Errno;
use rtpmgr_abi::{self as abi, IoctlArg, SlotHeader};
use rtpmgr_device::{net_stream_spec, udp_socket, Device};
use rtpmgr_ring::{Consumer, Producer, RingId};
use rtpmgr_test_kit::mcast;
use rtpmgr_test_kit::packet::{numbered, with_ssrc};
use rtpmgr_test_kit::sender::Window;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const V4: &str = "127.0.0.1";
const V6: &str = "::1";

/// A free UDP port on `ip` (bound and released; nothing else runs here).
pub(crate) fn free_port(ip: &str) -> Result<u16, String> {
    let s = UdpSocket::bind((ip, 0)).map_err(fail("bind"))?;
    Ok(s.local_addr().map_err(fail("local_addr"))?.port())
}

pub(crate) fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("literal address"), port)
}

/// A `udp` stream's socket, made in user space as rtpmgrd makes it (bound
/// to `local`, connected to `remote`), and its START_NET_STREAM argument.
/// Keep the socket until the stream started; the module holds it after.
pub(crate) fn net_spec(
    id: u32,
    direction: u32,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
) -> Result<(abi::NetStreamSpec, UdpSocket), String> {
    let s = udp_socket(local, remote).map_err(|e| format!("socket {local:?} -> {remote:?}: {e}"))?;
    Ok((net_stream_spec(id, direction, s.as_fd()), s))
}

/// Start a `udp` stream on a socket made as [`net_spec`] makes it.
pub(crate) fn start_net(
    dev: &Device,
    id: u32,
    direction: u32,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
) -> TestResult {
    let (spec, _sock) = net_spec(id, direction, local, remote)?;
    dev.start_net_stream(&spec).map_err(|e| format!("START_NET_STREAM {id}: {e}"))
}

/// Release `n` consumed from-device entries (kicking the worker when it
/// asks for it); when nothing was consumed, wait for more instead.
fn release_or_wait(dev: &Device, ring: &mut Consumer, n: u32) -> TestResult {
    if ring.release(n) {
        dev.kick().map_err(fail("KICK"))?;
    }
    if n == 0 {
        wait_from_device(dev)?;
    }
    Ok(())
}

/// `WAIT` up to a second for from-device entries; a timeout is no error.
fn wait_from_device(dev: &Device) -> TestResult {
    match dev.wait(abi::WAIT_FROM_DEV_READY, 1000) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Ok(()),
        Err(e) => Err(format!("WAIT: {e}")),
    }
}

/// Fill up to `want` free to-device slots with packets `first..` of
/// `stream` and publish them: how many, and whether the worker was kicked.
fn publish_packets(dev: &Device, tx: &mut Producer, first: u32, want: u32, stream: u32) -> Result<(u32, bool), String> {
    let free = tx.free(want).min(want);
    for i in 0..free {
        let p = numbered(first + i);
        tx.payload_mut(i)[..p.len()].copy_from_slice(&p);
        tx.set_header(i, &SlotHeader { len: p.len() as u32, stream_id: stream, ..Default::default() });
    }
    let kicked = tx.publish(free);
    if kicked {
        dev.kick().map_err(fail("KICK"))?;
    }
    Ok((free, kicked))
}

/// A configured, mapped session.
pub(crate) fn session(slots: u32) -> Result<(Device, Arc<rtpmgr_ring::Region>), String> {
    let dev = open()?;
    let cfg = dev.configure(slots, 2048).map_err(fail("configure"))?;
    let region = dev.map(&cfg).map_err(fail("map"))?;
    Ok((dev, region))
}

/// Poll `GET_NET_STATUS` of `id` until `done` holds (at most 10 s).
pub(crate) fn net_status_until(
    dev: &Device,
    id: u32,
    done: impl Fn(&abi::NetCounters) -> bool,
) -> Result<abi::NetCounters, String> {
    let t = Instant::now();
    loop {
        let c = dev.net_status(id).map_err(fail("GET_NET_STATUS"))?;
        if done(&c) || t.elapsed() > Duration::from_secs(10) {
            return Ok(c);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The registry index of the port called `name`.
fn port_index(dev: &Device, name: &str) -> Result<u32, String> {
    let count = dev.info().map_err(fail("GET_INFO"))?.port_count;
    (0..count)
        .find(|&i| dev.port(i).ok().and_then(|p| p.name_str().map(|n| n == name)) == Some(true))
        .ok_or_else(|| format!("no port {name}"))
}
