// SPDX-License-Identifier: MIT
//! `/dev/rtpmgr` from user space: one [`Device`] per open file (a kernel
//! session), a typed method per ioctl, and the shared region mapped with
//! memmap2 and wrapped in `rtpmgr_ring::Region`.
//!
//! Errors are the kernel's errnos as `io::Error` (`raw_os_error()` holds the
//! errno), so callers can tell `ETIMEDOUT` from `EINTR` from `EINVAL`.
//!
//! [`Backend`] is the device's contract as a trait, implemented here by
//! [`Device`] and in rtpmgrd by its simulator (see [`backend`]).

pub mod backend;

pub use backend::{find_port, Backend};

use nix::errno::Errno;
use rtpmgr_abi::{self as abi, IoctlArg};
use rtpmgr_ring::Region;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;

// The request codes come from rtpmgr-abi, which pins them; the `_bad`
// macros take a code as it is.
nix::ioctl_read_bad!(ioc_get_info, abi::RTPMGR_IOC_GET_INFO, abi::Info);
nix::ioctl_readwrite_bad!(ioc_configure, abi::RTPMGR_IOC_CONFIGURE_BUFFER, abi::BufferConfig);
nix::ioctl_write_ptr_bad!(ioc_start, abi::RTPMGR_IOC_START_STREAM, abi::StreamSpec);
nix::ioctl_write_ptr_bad!(ioc_stop, abi::RTPMGR_IOC_STOP_STREAM, abi::StreamStop);
nix::ioctl_readwrite_bad!(ioc_status, abi::RTPMGR_IOC_GET_STATUS, abi::Status);
nix::ioctl_none_bad!(ioc_reset, abi::RTPMGR_IOC_RESET);
nix::ioctl_none_bad!(ioc_kick, abi::RTPMGR_IOC_KICK);
nix::ioctl_readwrite_bad!(ioc_wait, abi::RTPMGR_IOC_WAIT, abi::WaitArgs);
nix::ioctl_readwrite_bad!(ioc_get_port, abi::RTPMGR_IOC_GET_PORT, abi::PortInfo);
nix::ioctl_write_ptr_bad!(ioc_start_net, abi::RTPMGR_IOC_START_NET_STREAM, abi::NetStreamSpec);
nix::ioctl_readwrite_bad!(ioc_net_status, abi::RTPMGR_IOC_GET_NET_STATUS, abi::NetStatus);

/// A `START_NET_STREAM` argument for the UDP socket `fd` with nothing
/// optional set: receive what it receives (`DIR_FROM_DEVICE`) and/or send
/// to where it is connected (`DIR_TO_DEVICE`).
pub fn net_stream_spec(stream_id: u32, direction: u32, fd: BorrowedFd<'_>) -> abi::NetStreamSpec {
    abi::NetStreamSpec {
        size: abi::NetStreamSpec::SIZE,
        stream_id,
        direction,
        forward_to: abi::NET_NO_FORWARD,
        fd: fd.as_raw_fd(),
        ..Default::default()
    }
}

/// A UDP socket for a `udp` stream as rtpmgrd makes its own: `SO_REUSEADDR`,
/// bound to `local` (default: the unspecified address of `remote`'s family,
/// an ephemeral port), connected to `remote` when given. Options
/// (buffers, multicast) are the caller's to set before starting the stream.
pub fn udp_socket(local: Option<SocketAddr>, remote: Option<SocketAddr>) -> io::Result<UdpSocket> {
    use nix::sys::socket::{self as sock, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let v6 = match (local, remote) {
        (Some(l), _) => l.is_ipv6(),
        (None, Some(r)) => r.is_ipv6(),
        (None, None) => false,
    };
    let family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd = sock::socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(errno)?;
    sock::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(errno)?;
    let any: SocketAddr = if v6 { "[::]:0".parse() } else { "0.0.0.0:0".parse() }.expect("literal address");
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(local.unwrap_or(any))).map_err(errno)?;
    if let Some(r) = remote {
        sock::connect(fd.as_raw_fd(), &SockaddrStorage::from(r)).map_err(errno)?;
    }
    Ok(UdpSocket::from(fd))
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// An open session of `/dev/rtpmgr`.
pub struct Device {
    file: File,
}

impl Device {
    pub fn open(path: &Path) -> io::Result<Device> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Device { file })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn info(&self) -> io::Result<abi::Info> {
        let mut info = abi::Info::default();
        // SAFETY: the fd is open; `info` is a valid, writable `Info`, the
        // type the request code encodes.
        unsafe { ioc_get_info(self.file.as_raw_fd(), &mut info) }.map_err(errno)?;
        Ok(info)
    }

    pub fn port(&self, index: u32) -> io::Result<abi::PortInfo> {
        let mut p = abi::PortInfo { size: abi::PortInfo::SIZE, index, ..Default::default() };
        // SAFETY: as for `info`, with a `PortInfo`.
        unsafe { ioc_get_port(self.file.as_raw_fd(), &mut p) }.map_err(errno)?;
        Ok(p)
    }

    /// `CONFIGURE_BUFFER`; returns the geometry the kernel filled in.
    pub fn configure(&self, slot_count: u32, slot_size: u32) -> io::Result<abi::BufferConfig> {
        let mut cfg = abi::BufferConfig { size: abi::BufferConfig::SIZE, slot_count, slot_size, ..Default::default() };
        // SAFETY: as for `info`, with a `BufferConfig`.
        unsafe { ioc_configure(self.file.as_raw_fd(), &mut cfg) }.map_err(errno)?;
        Ok(cfg)
    }

    /// Map the region `configure` described, shared and read-write.
    pub fn map(&self, cfg: &abi::BufferConfig) -> io::Result<Arc<Region>> {
        let len = usize::try_from(cfg.mmap_size).map_err(|_| errno(Errno::EOVERFLOW))?;
        let map = memmap2::MmapOptions::new().len(len).map_raw(&self.file)?;
        Region::new(Box::new(map)).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub fn start_stream(&self, stream_id: u32, port: u32, direction: u32) -> io::Result<()> {
        let spec = abi::StreamSpec { size: abi::StreamSpec::SIZE, stream_id, port, direction, ..Default::default() };
        // SAFETY: the fd is open; `spec` is a valid `StreamSpec` the kernel only reads.
        unsafe { ioc_start(self.file.as_raw_fd(), &spec) }.map_err(errno)?;
        Ok(())
    }

    pub fn stop_stream(&self, stream_id: u32) -> io::Result<()> {
        let stop = abi::StreamStop { size: abi::StreamStop::SIZE, stream_id };
        // SAFETY: as for `start_stream`, with a `StreamStop`.
        unsafe { ioc_stop(self.file.as_raw_fd(), &stop) }.map_err(errno)?;
        Ok(())
    }

    pub fn status(&self, stream_id: u32) -> io::Result<abi::Status> {
        let mut st = abi::Status { size: abi::Status::SIZE, stream_id, ..Default::default() };
        // SAFETY: as for `info`, with a `Status`.
        unsafe { ioc_status(self.file.as_raw_fd(), &mut st) }.map_err(errno)?;
        Ok(st)
    }

    pub fn reset(&self) -> io::Result<()> {
        // SAFETY: the fd is open; RESET takes no argument.
        unsafe { ioc_reset(self.file.as_raw_fd()) }.map_err(errno)?;
        Ok(())
    }

    pub fn kick(&self) -> io::Result<()> {
        // SAFETY: the fd is open; KICK takes no argument.
        unsafe { ioc_kick(self.file.as_raw_fd()) }.map_err(errno)?;
        Ok(())
    }

    /// `START_NET_STREAM`: a stream on a UDP socket of this process (the
    /// `udp` port), which the module keeps while the stream runs. See
    /// [`net_stream_spec`] and [`udp_socket`].
    pub fn start_net_stream(&self, spec: &abi::NetStreamSpec) -> io::Result<()> {
        // SAFETY: the fd is open; `spec` is a valid `NetStreamSpec` the kernel only reads.
        unsafe { ioc_start_net(self.file.as_raw_fd(), spec) }.map_err(errno)?;
        Ok(())
    }

    /// `GET_NET_STATUS`: the counters of a `udp` stream.
    pub fn net_status(&self, stream_id: u32) -> io::Result<abi::NetCounters> {
        let mut st = abi::NetStatus { size: abi::NetStatus::SIZE, stream_id, ..Default::default() };
        // SAFETY: as for `info`, with a `NetStatus`.
        unsafe { ioc_net_status(self.file.as_raw_fd(), &mut st) }.map_err(errno)?;
        Ok(st.counters)
    }

    /// `WAIT`: the conditions that hold; `ETIMEDOUT`/`EINTR` as errors.
    pub fn wait(&self, flags: u32, timeout_ms: u32) -> io::Result<u32> {
        let mut w = abi::WaitArgs { size: abi::WaitArgs::SIZE, flags, timeout_ms, ready: 0 };
        // SAFETY: as for `info`, with a `WaitArgs`.
        unsafe { ioc_wait(self.file.as_raw_fd(), &mut w) }.map_err(errno)?;
        Ok(w.ready)
    }

    /// Any ioctl with any argument word, for tests that play a hostile or
    /// buggy caller. Returns the kernel's errno on failure.
    ///
    /// # Safety
    ///
    /// `arg` is passed to the kernel as it is: if it is a pointer the kernel
    /// may write through, it must point to writable memory of the size the
    /// request code encodes, or be deliberately invalid (the kernel then
    /// returns `EFAULT`).
    pub unsafe fn raw_ioctl(&self, request: u32, arg: usize) -> Result<i32, Errno> {
        // SAFETY: forwarded to the caller.
        let rc = unsafe { nix::libc::ioctl(self.file.as_raw_fd(), request as _, arg) };
        Errno::result(rc)
    }
}
