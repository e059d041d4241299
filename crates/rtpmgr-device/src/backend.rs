// SPDX-License-Identifier: MIT
//! [`Backend`]: what a daemon needs from an rtpmgr device, one method per
//! ioctl, and [`Device`]'s implementation of it.
//!
//! The trait lives here, beside the device it abstracts, so that the real
//! device implements it itself: no wrapper type in the daemon restates
//! each ioctl. The other implementation is rtpmgrd's simulator
//! (`rtpmgrd::sim`), which stays in the daemon: it is a whole second
//! kernel (a worker thread, media ports, an eventfd) that only the daemon
//! and its tests run, and the GStreamer plugin and the guest tests that
//! link this crate have no use for it.
//!
//! `Device` keeps its inherent methods, so callers that hold a `Device`
//! (the guest tests, the GStreamer plugin) need no trait in scope; the
//! trait's methods are those, plus the two things only the trait has:
//! `configure` maps the region too, and `poll_fd` answers from the
//! device's `FEATURE_POLL`.

use crate::Device;
use nix::errno::Errno;
use rtpmgr_abi as abi;
use rtpmgr_ring::Region;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
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
        Err(io::Error::from_raw_os_error(Errno::EOPNOTSUPP as i32))
    }
    /// `GET_NET_STATUS`.
    fn net_status(&self, _stream_id: u32) -> io::Result<abi::NetCounters> {
        Err(io::Error::from_raw_os_error(Errno::EOPNOTSUPP as i32))
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
            Err(e) if e.raw_os_error() == Some(Errno::ENODEV as i32) => continue,
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

/// The kernel module: one session of `/dev/rtpmgr`.
impl Backend for Device {
    fn name(&self) -> &'static str {
        "kernel"
    }
    fn info(&self) -> io::Result<abi::Info> {
        Device::info(self)
    }
    fn port(&self, index: u32) -> io::Result<abi::PortInfo> {
        Device::port(self, index)
    }
    fn configure(&self, slot_count: u32, slot_size: u32) -> io::Result<Arc<Region>> {
        let cfg = Device::configure(self, slot_count, slot_size)?;
        self.map(&cfg)
    }
    fn start_stream(&self, stream_id: u32, port: u32, direction: u32) -> io::Result<()> {
        Device::start_stream(self, stream_id, port, direction)
    }
    fn stop_stream(&self, stream_id: u32) -> io::Result<()> {
        Device::stop_stream(self, stream_id)
    }
    fn status(&self, stream_id: u32) -> io::Result<abi::Status> {
        Device::status(self, stream_id)
    }
    fn reset(&self) -> io::Result<()> {
        Device::reset(self)
    }
    fn kick(&self) -> io::Result<()> {
        Device::kick(self)
    }
    fn wait(&self, flags: u32, timeout_ms: u32) -> io::Result<u32> {
        Device::wait(self, flags, timeout_ms)
    }
    fn start_net_stream(&self, spec: &abi::NetStreamSpec) -> io::Result<()> {
        Device::start_net_stream(self, spec)
    }
    fn net_status(&self, stream_id: u32) -> io::Result<abi::NetCounters> {
        Device::net_status(self, stream_id)
    }
    /// The device itself, where the module answers `poll`. Asked of the
    /// module each time (a few times at start), not cached at open, so
    /// `Device::open` stays a plain `open`.
    fn poll_fd(&self) -> Option<RawFd> {
        let pollable = Device::info(self).is_ok_and(|i| i.features & abi::FEATURE_POLL != 0);
        pollable.then(|| self.file().as_raw_fd())
    }
}
