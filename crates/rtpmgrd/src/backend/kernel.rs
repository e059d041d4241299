// SPDX-License-Identifier: MIT
//! The real device: `/dev/rtpmgr`, the rtpmgr kernel module.

use super::Backend;
use rtpmgr_abi as abi;
use rtpmgr_device::Device;
use rtpmgr_ring::Region;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// One session of the kernel module.
pub struct KernelBackend {
    dev: Device,
    /// The device answers `poll` (`FEATURE_POLL`).
    pollable: bool,
}

impl KernelBackend {
    pub fn open(path: &Path) -> io::Result<KernelBackend> {
        let dev = Device::open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(e.kind(), format!("{e} (is the rtpmgr module loaded?)"))
            } else {
                e
            }
        })?;
        let pollable = dev.info().is_ok_and(|i| i.features & abi::FEATURE_POLL != 0);
        Ok(KernelBackend { dev, pollable })
    }
}

impl Backend for KernelBackend {
    fn name(&self) -> &'static str {
        "kernel"
    }
    fn info(&self) -> io::Result<abi::Info> {
        self.dev.info()
    }
    fn port(&self, index: u32) -> io::Result<abi::PortInfo> {
        self.dev.port(index)
    }
    fn configure(&self, slot_count: u32, slot_size: u32) -> io::Result<Arc<Region>> {
        let cfg = self.dev.configure(slot_count, slot_size)?;
        self.dev.map(&cfg)
    }
    fn start_stream(&self, stream_id: u32, port: u32, direction: u32) -> io::Result<()> {
        self.dev.start_stream(stream_id, port, direction)
    }
    fn stop_stream(&self, stream_id: u32) -> io::Result<()> {
        self.dev.stop_stream(stream_id)
    }
    fn status(&self, stream_id: u32) -> io::Result<abi::Status> {
        self.dev.status(stream_id)
    }
    fn reset(&self) -> io::Result<()> {
        self.dev.reset()
    }
    fn kick(&self) -> io::Result<()> {
        self.dev.kick()
    }
    fn wait(&self, flags: u32, timeout_ms: u32) -> io::Result<u32> {
        self.dev.wait(flags, timeout_ms)
    }
    fn start_net_stream(&self, spec: &abi::NetStreamSpec) -> io::Result<()> {
        self.dev.start_net_stream(spec)
    }
    fn net_status(&self, stream_id: u32) -> io::Result<abi::NetCounters> {
        self.dev.net_status(stream_id)
    }
    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.pollable.then(|| self.dev.file().as_raw_fd())
    }
}
