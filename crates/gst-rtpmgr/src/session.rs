// SPDX-License-Identifier: MIT
//! A session of `/dev/rtpmgr` as the elements use it: opened and mapped
//! once, shared by the elements of a process that name the same `session`,
//! with the streams they claim in it, the to-device ring's producer (the
//! sinks), the from-device ring's consumer (one source) and a way to wait
//! for the device that the elements' `unlock` can interrupt.

use gst::glib;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use rtpmgr_abi as abi;
use rtpmgr_device::Device;
use rtpmgr_ring::{Producer, Region, RingId};
use std::collections::HashMap;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Ring geometry of a session the element opens itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub slot_count: u32,
    pub slot_size: u32,
}

impl Default for Geometry {
    /// rtpmgrd's default (`[buffer]` of `/etc/rtpmgr.toml`): 1024 slots of
    /// 2 KiB, room for a 1328-byte RTP/MP2T packet in each; a 4 MiB region.
    fn default() -> Self {
        Geometry { slot_count: 1024, slot_size: 2048 }
    }
}

/// Which end of a stream an element is: the bits of the stream's direction
/// it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// rtpmgrsrc: reads the from-device ring.
    Source,
    /// rtpmgrsink: writes the to-device ring.
    Sink,
}

impl Role {
    fn direction(self) -> u32 {
        match self {
            Role::Source => abi::DIR_FROM_DEVICE,
            Role::Sink => abi::DIR_TO_DEVICE,
        }
    }
}

/// What a stream runs on.
#[derive(Debug)]
pub enum Target {
    /// A media port of the device, by name (`media0`, `loopback`, `null`).
    Port(String),
    /// A UDP socket of this process, made by the element (bound for a
    /// source, connected for a sink), handed to the module
    /// (`START_NET_STREAM`); `rtp` asks the module to drop what is not RTP.
    Udp { socket: UdpSocket, rtp: bool, clock_rate: u32 },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Port(name) => format!("media port {name}"),
            Target::Udp { socket, .. } => match (socket.local_addr(), socket.peer_addr()) {
                (_, Ok(peer)) => format!("UDP socket to {peer}"),
                (Ok(local), _) => format!("UDP socket at {local}"),
                _ => "UDP socket".to_string(),
            },
        }
    }
}

/// A stream of the session and the elements using it.
struct StreamEntry {
    /// The port's index, or `None` for a `udp` stream.
    port: Option<(u32, String)>,
    direction: u32,
    source: bool,
    sink: bool,
    /// Packets the sink wrote before its EOS: the source of the same
    /// stream ends once they are all back.
    sink_finished: Option<u64>,
}

/// One open session of the device.
pub struct Session {
    /// `Some` when shared by name (the registry's key).
    key: Option<(PathBuf, String)>,
    device_path: PathBuf,
    dev: Device,
    region: Arc<Region>,
    /// The to-device ring's producer, shared by the session's sinks.
    tx: Mutex<Producer>,
    /// An rtpmgrsrc holds the from-device ring (one consumer per ring).
    rx_taken: AtomicBool,
    streams: Mutex<HashMap<u32, StreamEntry>>,
}

type Registry = HashMap<(PathBuf, String), Weak<Session>>;
/// Named sessions of this process.
static SESSIONS: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another element's thread must not take this one down too;
    // the protected state is consistent between statements.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The errno of an `io::Error`, if it has one.
pub fn errno(e: &io::Error) -> Option<Errno> {
    e.raw_os_error().map(Errno::from_raw)
}

impl Session {
    /// Open `device` and map a region of `geometry`, or join the session of
    /// this process named `name` (whose geometry wins).
    pub fn open(device: &Path, name: Option<&str>, geometry: Geometry) -> Result<Arc<Session>, gst::ErrorMessage> {
        let name = name.filter(|n| !n.is_empty());
        let mut registry = lock(&SESSIONS);
        if let Some(n) = name {
            let key = (device.to_path_buf(), n.to_string());
            if let Some(s) = registry.get(&key).and_then(Weak::upgrade) {
                return Ok(s);
            }
        }
        let s = Arc::new(Self::open_new(device, name, geometry)?);
        if let Some(key) = &s.key {
            registry.retain(|_, w| w.strong_count() > 0);
            registry.insert(key.clone(), Arc::downgrade(&s));
        }
        Ok(s)
    }

    fn open_new(device: &Path, name: Option<&str>, geometry: Geometry) -> Result<Session, gst::ErrorMessage> {
        let shown = device.display();
        // Device::open names the path in its error and keeps the kind.
        let dev = Device::open(device).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => gst::error_msg!(
                gst::ResourceError::NotFound,
                ("No rtpmgr device {shown}: is the rtpmgr module loaded?"),
                ["open: {e}"]
            ),
            io::ErrorKind::PermissionDenied => gst::error_msg!(
                gst::ResourceError::OpenReadWrite,
                ("Not allowed to open {shown}: the device is for group rtpmgr (mode 0660)"),
                ["open: {e}"]
            ),
            _ => gst::error_msg!(gst::ResourceError::OpenReadWrite, ("Could not open {e}")),
        })?;
        let info = dev.info().map_err(|e| {
            gst::error_msg!(gst::ResourceError::Failed, ("{shown} is not an rtpmgr device (GET_INFO failed: {e})"))
        })?;
        if info.abi_version != abi::ABI_VERSION {
            return Err(gst::error_msg!(
                gst::ResourceError::Failed,
                ("{shown} speaks rtpmgr ABI version {}, this plugin version {}", info.abi_version, abi::ABI_VERSION)
            ));
        }
        let need = abi::FEATURE_MMAP_RINGS | abi::FEATURE_NEED_WAKEUP | abi::FEATURE_POLL;
        if info.features & need != need {
            return Err(gst::error_msg!(
                gst::ResourceError::Failed,
                ("{shown} lacks the mmap rings, need-wakeup or poll() (features {:#x})", info.features)
            ));
        }
        abi::Geometry::new(geometry.slot_count, geometry.slot_size, info.max_session_bytes).map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::Settings,
                (
                    "Ring geometry slot-count={} slot-size={} refused ({e:?}): powers of two, {}..={} slots of {}..={} bytes, at most {} MiB",
                    geometry.slot_count,
                    geometry.slot_size,
                    info.min_slot_count,
                    info.max_slot_count,
                    info.min_slot_size,
                    info.max_slot_size,
                    info.max_session_bytes >> 20
                )
            )
        })?;
        let cfg = dev.configure(geometry.slot_count, geometry.slot_size).map_err(|e| match errno(&e) {
            Some(Errno::ENOMEM) => gst::error_msg!(
                gst::ResourceError::NoSpaceLeft,
                (
                    "{shown}: no memory for {} slots of {} bytes (RLIMIT_MEMLOCK or the module's max_session_mb): use a smaller slot-count",
                    geometry.slot_count,
                    geometry.slot_size
                ),
                ["CONFIGURE_BUFFER: {e}"]
            ),
            _ => gst::error_msg!(gst::ResourceError::Settings, ("{shown}: CONFIGURE_BUFFER failed: {e}")),
        })?;
        let region = dev
            .map(&cfg)
            .map_err(|e| gst::error_msg!(gst::ResourceError::Failed, ("{shown}: mapping the rings failed: {e}")))?;
        let tx = Mutex::new(region.producer(RingId::ToDevice));
        Ok(Session {
            key: name.map(|n| (device.to_path_buf(), n.to_string())),
            device_path: device.to_path_buf(),
            dev,
            region,
            tx,
            rx_taken: AtomicBool::new(false),
            streams: Mutex::new(HashMap::new()),
        })
    }

    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// "session NAME of /dev/rtpmgr" or "the element's own session of ...".
    pub fn describe(&self) -> String {
        match &self.key {
            Some((_, n)) => format!("session {n:?} of {}", self.device_path.display()),
            None => format!("the element's own session of {}", self.device_path.display()),
        }
    }

    /// The from-device ring's consumer is the caller's until it calls
    /// [`Session::return_rx`]; `false` if another source has it.
    pub fn take_rx(&self) -> bool {
        !self.rx_taken.swap(true, Ordering::AcqRel)
    }

    pub fn return_rx(&self) {
        self.rx_taken.store(false, Ordering::Release);
    }

    pub fn tx(&self) -> MutexGuard<'_, Producer> {
        lock(&self.tx)
    }

    /// KICK, best effort: a failure here means the session is going away,
    /// which the next wait reports.
    pub fn kick(&self) {
        let _ = self.dev.kick();
    }

    /// The media port called `name`: its index.
    fn port_index(&self, name: &str) -> Result<u32, gst::ErrorMessage> {
        let count =
            self.dev.info().map_err(|e| gst::error_msg!(gst::ResourceError::Failed, ("GET_INFO: {e}")))?.port_count;
        let mut names = Vec::new();
        for i in 0..count {
            // An unbound device-tree port leaves its index empty (ENODEV).
            if let Ok(p) = self.dev.port(i) {
                let n = p.name_str().unwrap_or("?").to_string();
                if n == name {
                    return Ok(i);
                }
                names.push(n);
            }
        }
        Err(gst::error_msg!(
            gst::ResourceError::NotFound,
            ("No media port {name:?} on {}; it has: {}", self.device_path.display(), names.join(", "))
        ))
    }

    /// Claim stream `id` of this session for an element: start it on
    /// `target`, or, when the other kind of element of this session already
    /// runs it on the same media port, restart it in both directions (a sink
    /// and a source sharing a port that returns packets; started together in
    /// one pipeline, nothing is in flight yet).
    pub fn claim(self: &Arc<Self>, id: u32, role: Role, target: Target) -> Result<StreamClaim, gst::ErrorMessage> {
        if id >= abi::MAX_STREAMS {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ("stream-id {id} is out of range: a session has stream ids 0..{}", abi::MAX_STREAMS - 1)
            ));
        }
        let mut streams = lock(&self.streams);
        let what = target.describe();
        if let Some(e) = streams.get_mut(&id) {
            let same_port = match (&e.port, &target) {
                (Some((_, a)), Target::Port(b)) => a == b,
                _ => false,
            };
            let taken = match role {
                Role::Source => e.source,
                Role::Sink => e.sink,
            };
            if taken || !same_port {
                return Err(gst::error_msg!(
                    gst::ResourceError::Busy,
                    (
                        "Stream {id} of {} is busy: another {} uses it (on {}); give this element another stream-id or session",
                        self.describe(),
                        if taken { "element of the same kind" } else { "element" },
                        e.port.as_ref().map(|(_, n)| format!("media port {n}")).unwrap_or_else(|| "a UDP socket".into())
                    )
                ));
            }
            let (index, _) = e.port.clone().expect("same_port implies a port");
            let both = e.direction | role.direction();
            self.dev.stop_stream(id).map_err(|err| {
                gst::error_msg!(gst::ResourceError::Failed, ("Stream {id}: STOP_STREAM to restart it failed: {err}"))
            })?;
            self.start_port(id, index, &what, both)?;
            e.direction = both;
            match role {
                Role::Source => e.source = true,
                Role::Sink => e.sink = true,
            }
            return Ok(StreamClaim { session: Arc::clone(self), id, role });
        }
        let port = match target {
            Target::Port(name) => {
                let index = self.port_index(&name)?;
                self.start_port(id, index, &what, role.direction())?;
                Some((index, name))
            }
            Target::Udp { socket, rtp, clock_rate } => {
                let mut spec = rtpmgr_device::net_stream_spec(id, role.direction(), socket.as_fd());
                if rtp && role == Role::Source {
                    spec.flags |= abi::NET_F_RTP;
                    spec.clock_rate = clock_rate;
                }
                self.dev.start_net_stream(&spec).map_err(|e| self.start_error(id, &what, e))?;
                // The module holds the socket's file while the stream runs;
                // our descriptor may go.
                drop(socket);
                None
            }
        };
        streams.insert(
            id,
            StreamEntry {
                port,
                direction: role.direction(),
                source: role == Role::Source,
                sink: role == Role::Sink,
                sink_finished: None,
            },
        );
        Ok(StreamClaim { session: Arc::clone(self), id, role })
    }

    fn start_port(&self, id: u32, index: u32, what: &str, direction: u32) -> Result<(), gst::ErrorMessage> {
        self.dev.start_stream(id, index, direction).map_err(|e| self.start_error(id, what, e))
    }

    fn start_error(&self, id: u32, what: &str, e: io::Error) -> gst::ErrorMessage {
        let s = self.describe();
        match errno(&e) {
            Some(Errno::EEXIST) => gst::error_msg!(
                gst::ResourceError::Busy,
                ("Stream {id} of {s} is busy: it is already running"),
                ["START_STREAM: {e}"]
            ),
            Some(Errno::EBUSY) => gst::error_msg!(
                gst::ResourceError::Busy,
                ("Stream {id} of {s}: the {what} is busy (another stream holds it)"),
                ["START_NET_STREAM: {e}"]
            ),
            Some(Errno::ENODEV) => gst::error_msg!(
                gst::ResourceError::NotFound,
                ("Stream {id} of {s}: the {what} went away (unbound)"),
                ["START_STREAM: {e}"]
            ),
            _ => gst::error_msg!(gst::ResourceError::Failed, ("Stream {id} of {s} on the {what}: {e}")),
        }
    }

    /// The sink of stream `id` saw EOS after writing `packets` packets.
    pub fn sink_finished(&self, id: u32, packets: u64) {
        if let Some(e) = lock(&self.streams).get_mut(&id) {
            e.sink_finished = Some(packets);
        }
    }

    /// The packet count a sink of the same stream reported at its EOS, when
    /// that sink shares the stream with the caller (a source).
    pub fn sink_finished_count(&self, id: u32) -> Option<u64> {
        lock(&self.streams).get(&id).and_then(|e| if e.sink { e.sink_finished } else { None })
    }

    fn release(&self, id: u32, role: Role) {
        let mut streams = lock(&self.streams);
        let Some(e) = streams.get_mut(&id) else { return };
        match role {
            Role::Source => e.source = false,
            Role::Sink => e.sink = false,
        }
        if !e.source && !e.sink {
            streams.remove(&id);
            // Stopping a stream whose id does not run is harmless (ENOENT).
            let _ = self.dev.stop_stream(id);
        }
    }

    /// Block until the device is readable (`POLLIN`: from-device entries) or
    /// writable (`POLLOUT`: to-device room), `waker` is woken, or `timeout`
    /// passes (`None`: no timeout).
    pub fn wait(&self, events: PollFlags, waker: &Waker, timeout: Option<Duration>) -> io::Result<Wait> {
        let ms = match timeout {
            // Round up, so that a short remaining time does not spin.
            Some(t) => {
                PollTimeout::try_from(t.as_micros().div_ceil(1000).min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(self.dev.file().as_fd(), events), PollFd::new(waker.efd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) => Ok(Wait::Timeout),
            Ok(_) => {
                let woken = fds[1].revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
                let dev = fds[0].revents().unwrap_or(PollFlags::empty());
                if dev.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
                    return Err(io::Error::other(format!("poll on the device: {dev:?}")));
                }
                Ok(if woken { Wait::Woken } else { Wait::Ready })
            }
            Err(Errno::EINTR) => Ok(Wait::Timeout),
            Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
        }
    }

    /// Wait (at most `limit`) until the kernel took every to-device slot
    /// published so far: a sink's packets must leave before its stream
    /// stops, which would make the ones still in the ring invalid.
    pub fn drain_tx(&self, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            if lock(&self.tx).in_flight() == 0 {
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// GET_STATUS counters of stream `id`.
    pub fn stream_counters(&self, id: u32) -> Option<abi::StreamCounters> {
        self.dev.status(id).ok().map(|s| s.stream)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            let mut registry = lock(&SESSIONS);
            if registry.get(key).is_some_and(|w| w.strong_count() == 0) {
                registry.remove(key);
            }
        }
    }
}

/// What [`Session::wait`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Ready,
    Woken,
    Timeout,
}

/// A stream an element holds; stopped when the last element of the session
/// using it lets go.
pub struct StreamClaim {
    session: Arc<Session>,
    id: u32,
    role: Role,
}

impl Drop for StreamClaim {
    fn drop(&mut self) {
        self.session.release(self.id, self.role);
    }
}

/// Interrupts an element's [`Session::wait`] (its `unlock`).
pub struct Waker {
    efd: EventFd,
    flushing: AtomicBool,
}

impl Waker {
    pub fn new() -> Result<Waker, glib::Error> {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| glib::Error::new(gst::ResourceError::Failed, &format!("eventfd: {e}")))?;
        Ok(Waker { efd, flushing: AtomicBool::new(false) })
    }

    /// `unlock`: wake the waiter and make it return `Flushing`.
    pub fn wake(&self) {
        self.flushing.store(true, Ordering::SeqCst);
        let _ = self.efd.write(1);
    }

    /// `unlock_stop`.
    pub fn reset(&self) {
        self.flushing.store(false, Ordering::SeqCst);
        let _ = self.efd.read();
    }

    pub fn flushing(&self) -> bool {
        self.flushing.load(Ordering::SeqCst)
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of slot timestamps.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}
