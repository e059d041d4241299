// SPDX-License-Identifier: MIT
//! Device backends, one trait shaped after the `/dev/rtpmgr` ioctl set.
//!
//! `sim` plays the kernel module in-process (same ring protocol, same
//! validation, same errnos) so the whole daemon runs and is tested on a
//! host without the module. The `kernel` backend drives the real device.

pub mod kernel;
pub mod sim;

use rtpmgr_abi as abi;
use rtpmgr_ring::Region;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

/// What the daemon needs from a device. Every method maps to one ioctl
/// (or to `mmap` for `configure`) and reports failures as the errno the
/// kernel would return.
pub trait Backend: Send + Sync {
    /// `"kernel"` or `"sim"`, for logs and status.
    fn name(&self) -> &'static str;
    /// `GET_INFO`.
    fn info(&self) -> io::Result<abi::Info>;
    /// `GET_PORT`; `ENODEV` past the last port.
    fn port(&self, index: u32) -> io::Result<abi::PortInfo>;
    /// `CONFIGURE_BUFFER` followed by the `mmap` of the region.
    fn configure(&self, slot_count: u32, slot_size: u32) -> io::Result<Arc<Region>>;
    /// `START_STREAM`.
    fn start_stream(&self, stream_id: u32, port: u32, direction: u32) -> io::Result<()>;
    /// `STOP_STREAM`.
    fn stop_stream(&self, stream_id: u32) -> io::Result<()>;
    /// `GET_STATUS` for a stream id or `abi::STATUS_SESSION_ONLY`.
    fn status(&self, stream_id: u32) -> io::Result<abi::Status>;
    /// `RESET`.
    fn reset(&self) -> io::Result<()>;
    /// `KICK`.
    fn kick(&self) -> io::Result<()>;
    /// `WAIT`: the `WAIT_*` conditions that hold; `ETIMEDOUT` on timeout.
    fn wait(&self, flags: u32, timeout_ms: u32) -> io::Result<u32>;
    /// `START_NET_STREAM`: a stream on the device's own `udp` port.
    /// `EOPNOTSUPP` on a device without in-kernel network streams (the
    /// simulator: it has no kernel to run them in).
    fn start_net_stream(&self, _spec: &abi::NetStreamSpec) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
    /// `GET_NET_STATUS`.
    fn net_status(&self, _stream_id: u32) -> io::Result<abi::NetCounters> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
    /// A descriptor that is readable (`EPOLLIN`) while from-device entries
    /// wait, for epoll: the device itself where it answers `poll`
    /// (`FEATURE_POLL`), the simulator's eventfd. `None`: threads wait in
    /// `WAIT` instead. Valid as long as the backend.
    fn poll_fd(&self) -> Option<RawFd> {
        None
    }
    /// Before sleeping on [`Backend::poll_fd`]: make the next from-device
    /// entry wake the sleeper. The caller looks at the ring again after
    /// this, so an entry published in between is not missed. The module's
    /// `poll` is level-triggered and needs nothing; the simulator arms its
    /// eventfd.
    fn arm_poll(&self) {}
    /// After [`Backend::poll_fd`] was readable: reset it (the simulator's
    /// eventfd; the module's needs nothing).
    fn clear_poll(&self) {}
}

/// Look a media port up by name (`loopback`, `null`, `media0`, ...).
pub fn find_port(backend: &dyn Backend, name: &str) -> io::Result<abi::PortInfo> {
    let count = backend.info()?.port_count;
    let mut known = Vec::new();
    for index in 0..count {
        let p = match backend.port(index) {
            Ok(p) => p,
            // An index whose peripheral was unbound stays reserved (and
            // answers ENODEV) until another one binds: skip it.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => continue,
            Err(e) => return Err(e),
        };
        match p.name_str() {
            Some(n) if n == name => return Ok(p),
            Some(n) => known.push(n.to_owned()),
            None => {}
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("media port {name:?} does not exist on the {} backend (ports: {})", backend.name(), known.join(", ")),
    ))
}
