// SPDX-License-Identifier: MIT
//! The contract itself: see the crate documentation in lib.rs.
//!
//! This file carries no crate-level attributes so that the kernel module
//! can include it with `#[path]` as an ordinary module.

// ---------------------------------------------------------------------------
// Versioning and limits
// ---------------------------------------------------------------------------

/// `"RTPM"` in little-endian byte order, at offset 0 of the shared region.
pub const SHARED_MAGIC: u32 = u32::from_le_bytes(*b"RTPM");
/// Incremented on any incompatible change of this file. Version 2:
/// `START_NET_STREAM` takes a UDP socket from user space
/// ([`NetStreamSpec::fd`]) instead of making one, `GET_NET_STATUS`'s
/// counters grew, `poll()` works ([`FEATURE_POLL`]). The shared region is
/// laid out as in version 1. Version 3: raw MPEG-TS streams
/// ([`NET_F_TS`]); [`NetCounters`] grew by `ts_packets` and
/// `ts_cc_errors`, which took the statistics record's reserved bytes.
/// Version 4: the kernel forwards udp -> udp in softirq; [`NetCounters`]
/// grew by `fwd_fast_packets`, `fwd_copies` and `worker_wakeups`, so
/// [`NetStatus`] is 272 bytes and a [`StatsRecord`] 512 (the statistics
/// area 32 KiB).
pub const ABI_VERSION: u32 = 4;

/// Smallest slot (bytes, including the slot header).
pub const MIN_SLOT_SIZE: u32 = 256;
/// Largest slot: a full 64 KiB UDP datagram's worth.
pub const MAX_SLOT_SIZE: u32 = 65_536;
/// Fewest slots per ring.
pub const MIN_SLOT_COUNT: u32 = 8;
/// Most slots per ring; keeps index arithmetic far from `u32` wrap ambiguity
/// (any count up to 2^31 would do) and bounds the work of one pass.
pub const MAX_SLOT_COUNT: u32 = 32_768;
/// Stream ids of the module's sessions (`0..MAX_STREAMS`), which is what it
/// announces in [`Info::max_streams`]; the statistics area has a record
/// for each.
pub const MAX_STREAMS: u32 = 64;
/// The most stream ids any device may announce in [`Info::max_streams`]
/// (ids are `0..info.max_streams`): every structure carries a stream id
/// as a `u32`, so the interface has room for a VoIP box's thousands of
/// streams in one session. The simulator announces this many; the module
/// [`MAX_STREAMS`] (its per-session table) for now. User space takes the
/// device's figure, never a constant.
pub const MAX_STREAM_IDS: u32 = 4096;
/// Longest media-port name, including the terminating NUL.
pub const PORT_NAME_LEN: usize = 32;

/// Ports every kernel offers; device-tree-bound ports follow from index 2.
pub const PORT_LOOPBACK: u32 = 0;
/// Counting sink: to-device packets are consumed and dropped.
pub const PORT_NULL: u32 = 1;

// ---------------------------------------------------------------------------
// ioctl number encoding (asm-generic/ioctl.h, used by arm64, x86, riscv)
// ---------------------------------------------------------------------------

pub const IOC_NRBITS: u32 = 8;
pub const IOC_TYPEBITS: u32 = 8;
pub const IOC_SIZEBITS: u32 = 14;
pub const IOC_DIRBITS: u32 = 2;
pub const IOC_NRSHIFT: u32 = 0;
pub const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
pub const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
pub const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
pub const IOC_NONE: u32 = 0;
pub const IOC_WRITE: u32 = 1;
pub const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)`.
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    // A size that does not fit 14 bits would silently corrupt the direction
    // bits; make that a compile-time error for the constants below.
    assert!(size < (1 << IOC_SIZEBITS));
    (dir << IOC_DIRSHIFT) | (ty << IOC_TYPESHIFT) | (nr << IOC_NRSHIFT) | ((size as u32) << IOC_SIZESHIFT)
}
/// `_IOC_DIR(cmd)`.
pub const fn ioc_dir(cmd: u32) -> u32 {
    (cmd >> IOC_DIRSHIFT) & ((1 << IOC_DIRBITS) - 1)
}
/// `_IOC_TYPE(cmd)`.
pub const fn ioc_type(cmd: u32) -> u32 {
    (cmd >> IOC_TYPESHIFT) & ((1 << IOC_TYPEBITS) - 1)
}
/// `_IOC_NR(cmd)`.
pub const fn ioc_nr(cmd: u32) -> u32 {
    (cmd >> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1)
}
/// `_IOC_SIZE(cmd)`.
pub const fn ioc_size(cmd: u32) -> u32 {
    (cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)
}

/// ioctl type byte. 0xB7 is unassigned in the kernel's
/// Documentation/userspace-api/ioctl/ioctl-number.rst.
pub const RTPMGR_IOC_MAGIC: u32 = 0xB7;

/// Read ABI version, features and limits. Valid in any session state.
pub const RTPMGR_IOC_GET_INFO: u32 = ioc(IOC_READ, RTPMGR_IOC_MAGIC, 0x00, core::mem::size_of::<Info>());
/// Size the session's rings; fills in the mapping geometry. `EBUSY` while a
/// stream runs or while the region is mapped.
pub const RTPMGR_IOC_CONFIGURE_BUFFER: u32 =
    ioc(IOC_READ | IOC_WRITE, RTPMGR_IOC_MAGIC, 0x01, core::mem::size_of::<BufferConfig>());
/// Start one stream (id, media port, direction). `ENOTCONN` before
/// `CONFIGURE_BUFFER`, `EEXIST` if the id runs already, `ENODEV` for an
/// unknown port.
pub const RTPMGR_IOC_START_STREAM: u32 = ioc(IOC_WRITE, RTPMGR_IOC_MAGIC, 0x02, core::mem::size_of::<StreamSpec>());
/// Stop one stream. `ENOENT` if it does not run.
pub const RTPMGR_IOC_STOP_STREAM: u32 = ioc(IOC_WRITE, RTPMGR_IOC_MAGIC, 0x03, core::mem::size_of::<StreamStop>());
/// Session counters, and one stream's when `Status::stream_id` names one.
pub const RTPMGR_IOC_GET_STATUS: u32 =
    ioc(IOC_READ | IOC_WRITE, RTPMGR_IOC_MAGIC, 0x04, core::mem::size_of::<Status>());
/// Stop every stream, empty both rings (indices back to 0) and zero the
/// counters. The geometry and the mapping stay.
pub const RTPMGR_IOC_RESET: u32 = ioc(IOC_NONE, RTPMGR_IOC_MAGIC, 0x05, 0);
/// Doorbell: wake the kernel worker. Needed only when a ring shows
/// [`RING_NEED_WAKEUP`]; harmless otherwise.
pub const RTPMGR_IOC_KICK: u32 = ioc(IOC_NONE, RTPMGR_IOC_MAGIC, 0x06, 0);
/// Block until a condition in [`WaitArgs::flags`] holds or the timeout
/// passes (`ETIMEDOUT`); interruptible (`EINTR`).
pub const RTPMGR_IOC_WAIT: u32 = ioc(IOC_READ | IOC_WRITE, RTPMGR_IOC_MAGIC, 0x07, core::mem::size_of::<WaitArgs>());
/// Describe media port `PortInfo::index`; `ENODEV` past the last one.
pub const RTPMGR_IOC_GET_PORT: u32 =
    ioc(IOC_READ | IOC_WRITE, RTPMGR_IOC_MAGIC, 0x08, core::mem::size_of::<PortInfo>());
/// Start a stream on a UDP socket of the caller's (the `udp` port):
/// network → from-device ring and/or to-device ring → network, no system
/// call per packet. User space creates, binds, connects and joins the
/// socket (so its credentials, LSM hooks and namespace decide everything
/// about it) and passes its descriptor; the module keeps a reference to it
/// while the stream runs. [`FEATURE_NET_STREAMS`] announces it.
pub const RTPMGR_IOC_START_NET_STREAM: u32 =
    ioc(IOC_WRITE, RTPMGR_IOC_MAGIC, 0x09, core::mem::size_of::<NetStreamSpec>());
/// Counters of one `udp` stream. `ENOENT` if the id runs no udp stream.
pub const RTPMGR_IOC_GET_NET_STATUS: u32 =
    ioc(IOC_READ | IOC_WRITE, RTPMGR_IOC_MAGIC, 0x0A, core::mem::size_of::<NetStatus>());

// ---------------------------------------------------------------------------
// ioctl arguments
// ---------------------------------------------------------------------------

/// Feature bits in [`Info::features`].
pub const FEATURE_MMAP_RINGS: u32 = 1 << 0;
/// The copying `write()`/`read()` path is available.
pub const FEATURE_RW_COPY: u32 = 1 << 1;
/// Rings implement the need-wakeup protocol.
pub const FEATURE_NEED_WAKEUP: u32 = 1 << 2;
/// `START_NET_STREAM` and `GET_NET_STATUS` exist (the `udp` port).
pub const FEATURE_NET_STREAMS: u32 = 1 << 3;
/// The region ends with the per-stream statistics area
/// ([`SharedHeader::stats_offset`], [`StatsRecord`]).
pub const FEATURE_STATS_AREA: u32 = 1 << 4;
/// `poll()`/`epoll` on the device: readable (`POLLIN`) while from-device
/// entries (or copied packets for `read()`) wait, writable (`POLLOUT`)
/// while the to-device ring has a free slot; nothing before
/// `CONFIGURE_BUFFER`. The conditions of `WAIT`, so one thread can wait for
/// the device and its sockets together.
pub const FEATURE_POLL: u32 = 1 << 5;

/// `GET_INFO` result.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Info {
    pub size: u32,
    pub abi_version: u32,
    pub features: u32,
    pub max_streams: u32,
    pub min_slot_size: u32,
    pub max_slot_size: u32,
    pub min_slot_count: u32,
    pub max_slot_count: u32,
    /// Media ports available to `START_STREAM` (indices `0..port_count`).
    pub port_count: u32,
    pub slot_header_size: u32,
    /// Most bytes one session may pin (module parameter).
    pub max_session_bytes: u64,
}

/// `CONFIGURE_BUFFER` argument; the kernel fills the `out` fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferConfig {
    pub size: u32,
    /// No flags are defined yet: must be 0.
    pub flags: u32,
    /// in: slots per ring (power of two, `MIN_SLOT_COUNT..=MAX_SLOT_COUNT`).
    pub slot_count: u32,
    /// in: bytes per slot (power of two, `MIN_SLOT_SIZE..=MAX_SLOT_SIZE`).
    pub slot_size: u32,
    /// out: length to pass to `mmap` (offset 0).
    pub mmap_size: u64,
    /// out: offset of the first to-device slot.
    pub to_dev_slots_offset: u64,
    /// out: offset of the first from-device slot.
    pub from_dev_slots_offset: u64,
}

/// Stream direction bits in [`StreamSpec::direction`].
pub const DIR_TO_DEVICE: u32 = 1 << 0;
pub const DIR_FROM_DEVICE: u32 = 1 << 1;
pub const DIR_BOTH: u32 = DIR_TO_DEVICE | DIR_FROM_DEVICE;

/// `START_STREAM` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamSpec {
    pub size: u32,
    /// `0..MAX_STREAMS`; tags every slot of this stream.
    pub stream_id: u32,
    /// Media port index (`PORT_LOOPBACK`, `PORT_NULL`, or a DT-bound port).
    pub port: u32,
    /// `DIR_TO_DEVICE`, `DIR_FROM_DEVICE` or both.
    pub direction: u32,
    /// No flags are defined yet: must be 0.
    pub flags: u32,
    pub reserved: u32,
}

/// `STOP_STREAM` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStop {
    pub size: u32,
    pub stream_id: u32,
}

/// Session states reported in [`Status::state`].
pub const STATE_UNCONFIGURED: u32 = 0;
/// Rings sized, no stream running.
pub const STATE_CONFIGURED: u32 = 1;
/// At least one stream running.
pub const STATE_STREAMING: u32 = 2;

/// `Status::stream_id` value asking for session counters only.
pub const STATUS_SESSION_ONLY: u32 = u32::MAX;

/// Counters of one session (all streams together).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Valid slots the kernel took from the to-device ring.
    pub to_dev_packets: u64,
    pub to_dev_bytes: u64,
    /// Slots the kernel published on the from-device ring.
    pub from_dev_packets: u64,
    pub from_dev_bytes: u64,
    /// To-device slots skipped as invalid (bad length, flags, stream id).
    pub invalid_slots: u64,
    /// Times the producer index seen in shared memory was impossible
    /// (more than `slot_count` ahead of the consumer, or behind it).
    pub invalid_indices: u64,
    /// Packets a port produced while the from-device ring was full.
    pub ring_full_drops: u64,
    /// `KICK` calls.
    pub kicks: u64,
    /// Times the kernel worker went to sleep with need-wakeup raised.
    pub worker_sleeps: u64,
    /// `WAIT` calls that returned ready, and ones that timed out.
    pub waits: u64,
    pub wait_timeouts: u64,
}

/// Counters of one stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// 1 while running, 0 otherwise.
    pub running: u32,
    pub port: u32,
    pub direction: u32,
    pub _pad: u32,
    pub to_dev_packets: u64,
    pub to_dev_bytes: u64,
    pub from_dev_packets: u64,
    pub from_dev_bytes: u64,
    pub ring_full_drops: u64,
}

/// `GET_STATUS` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub size: u32,
    /// in: a stream id, or `STATUS_SESSION_ONLY`.
    pub stream_id: u32,
    /// out: `STATE_*`.
    pub state: u32,
    pub _pad: u32,
    pub session: SessionCounters,
    /// out: zero unless `stream_id` names a stream.
    pub stream: StreamCounters,
}

/// Conditions for `WAIT`.
pub const WAIT_FROM_DEV_READY: u32 = 1 << 0;
/// The to-device ring has at least one free slot.
pub const WAIT_TO_DEV_SPACE: u32 = 1 << 1;
pub const WAIT_ALL: u32 = WAIT_FROM_DEV_READY | WAIT_TO_DEV_SPACE;
/// Longest accepted `WaitArgs::timeout_ms` (one minute).
pub const MAX_WAIT_MS: u32 = 60_000;

/// `WAIT` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitArgs {
    pub size: u32,
    /// in: `WAIT_*` conditions, at least one.
    pub flags: u32,
    /// in: `0..=MAX_WAIT_MS`; 0 polls.
    pub timeout_ms: u32,
    /// out: the conditions that hold.
    pub ready: u32,
}

/// Port kinds in [`PortInfo::kind`].
pub const PORT_KIND_LOOPBACK: u32 = 0;
pub const PORT_KIND_NULL: u32 = 1;
/// A device-tree-bound DMA-capable media peripheral.
pub const PORT_KIND_DMA: u32 = 2;
/// A kernel UDP socket (`START_NET_STREAM`); one per stream, not listed by
/// `GET_PORT`; `StreamCounters::port` reads [`PORT_UDP`].
pub const PORT_KIND_UDP: u32 = 3;
/// `StreamCounters::port` of a `udp` stream (no registry index).
pub const PORT_UDP: u32 = u32::MAX;

/// `GET_PORT` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub size: u32,
    /// in: port index.
    pub index: u32,
    /// out: `PORT_KIND_*`.
    pub kind: u32,
    /// out: streams of any session currently using the port.
    pub users: u32,
    /// out: NUL-terminated name (`loopback`, `null`, `media0`, ...).
    pub name: [u8; PORT_NAME_LEN],
}

impl Default for PortInfo {
    fn default() -> Self {
        Self { size: 0, index: 0, kind: 0, users: 0, name: [0; PORT_NAME_LEN] }
    }
}

impl PortInfo {
    /// The name up to its NUL, or `None` if it is not UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(PORT_NAME_LEN);
        core::str::from_utf8(&self.name[..end]).ok()
    }

    /// Store `name`, truncated so that a NUL always remains.
    pub fn set_name(&mut self, name: &str) {
        self.name = [0; PORT_NAME_LEN];
        let n = name.len().min(PORT_NAME_LEN - 1);
        self.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    }
}

/// The `size` value each argument must carry.
pub trait IoctlArg: Sized {
    const SIZE: u32 = core::mem::size_of::<Self>() as u32;
}
impl IoctlArg for Info {}
impl IoctlArg for BufferConfig {}
impl IoctlArg for StreamSpec {}
impl IoctlArg for StreamStop {}
impl IoctlArg for Status {}
impl IoctlArg for WaitArgs {}
impl IoctlArg for PortInfo {}
impl IoctlArg for NetStreamSpec {}
impl IoctlArg for NetStatus {}

// ---------------------------------------------------------------------------
// Network streams (the `udp` port)
// ---------------------------------------------------------------------------

/// [`NetStreamSpec::flags`]: check every received datagram against the
/// RFC 3550 fixed header ([`rtp_header_check`]); count and drop the others.
pub const NET_F_RTP: u32 = 1 << 0;
/// [`NetStreamSpec::flags`]: with `forward_to`, also copy each forwarded
/// datagram into the from-device ring (the monitoring tap). A full ring
/// never holds forwarding up: the copy is dropped and counted
/// ([`NetCounters::tap_drops`]).
pub const NET_F_TAP: u32 = 1 << 1;
/// [`NetStreamSpec::flags`]: raw UDP MPEG-TS (`format = "udp-ts"`). Every
/// received datagram must be a whole, non-zero number of 188-byte
/// transport packets each starting with the sync byte 0x47; the others are
/// counted ([`NetCounters::malformed`]) and dropped. The continuity
/// counters of every PID are judged as the `mpegts` crate's `cc` module
/// does (the same file, compiled into the module): loss, duplicates and
/// late packets in the sequence fields of [`NetCounters`] with
/// [`NET_TS_CONTINUITY`], errors in [`NetCounters::ts_cc_errors`]. A
/// datagram whose packets' headers repeat one of the last 8 is a copy the
/// network made: forwarded, but counted as duplicates, not judged again.
/// Excludes [`NET_F_RTP`] (`EINVAL`).
pub const NET_F_TS: u32 = 1 << 2;
/// Flags `START_NET_STREAM` accepts.
pub const NET_F_MASK: u32 = NET_F_RTP | NET_F_TAP | NET_F_TS;
/// [`NetStreamSpec::forward_to`]: no forwarding.
pub const NET_NO_FORWARD: u32 = u32::MAX;

/// `START_NET_STREAM` argument.
///
/// `fd` is a UDP socket (`AF_INET` or `AF_INET6`, `SOCK_DGRAM`,
/// `IPPROTO_UDP`) of the caller, which did everything a socket needs
/// before: bind, connect, multicast joins (any-source or SSM), buffer
/// sizes, multicast TTL and interface (rtpmgrd does it with nix, as for
/// its own sockets). The module checks it (`ENOTSOCK`, `EAFNOSUPPORT`,
/// `EPROTONOSUPPORT`), keeps a reference to its file while the stream
/// runs (closing the descriptor does not stop the stream), installs its
/// callbacks on it (`EBUSY` if the socket is another stream's, a tunnel's
/// or a sockmap's), receives from it in the session worker and sends on it
/// with the credentials of the task that created it. Until the stream
/// stops the socket is the stream's: user space must not read from it.
///
/// * `DIR_FROM_DEVICE`: every datagram the socket receives is written to
///   the from-device ring with this `stream_id`. The socket must be bound
///   (`EINVAL`); connected, it hears only its peer.
/// * `DIR_TO_DEVICE`: to-device slots of this stream are sent on the
///   socket, which must be connected (`EDESTADDRREQ`). A full send buffer
///   never holds up the ring: the datagram waits in the stream's backlog
///   in the kernel (64 KiB) and beyond that is dropped and counted
///   ([`NetCounters::tx_dropped`]).
///
/// * `forward_to` (`DIR_FROM_DEVICE` only): instead of the ring, each
///   received datagram goes to the stream with that id in this session,
///   which must be running with `DIR_TO_DEVICE` when this one starts (a
///   `udp` stream: sent from its socket; another port: its transmit). No
///   user space involvement; [`NET_F_TAP`] adds a copy to the ring. A
///   datagram the target cannot take (stopped, socket buffer full) is
///   dropped and counted in [`NetCounters::forward_drops`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStreamSpec {
    pub size: u32,
    pub stream_id: u32,
    pub direction: u32,
    /// `NET_F_*`.
    pub flags: u32,
    pub forward_to: u32,
    /// RTP clock rate (Hz) for the jitter of [`NET_F_RTP`] streams; 0 is
    /// taken as 1.
    pub clock_rate: u32,
    /// The socket's descriptor in the calling process.
    pub fd: i32,
    pub reserved: u32,
}

/// Why a [`NetStreamSpec`] is refused before its socket is looked at:
/// the rules of [`NetStreamSpec::check`]. The module answers `EBADF` for
/// [`NetSpecError::Fd`] and `EINVAL` for the others; user space names the
/// rule (rtpmgrd's log, its status report's fallback reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetSpecError {
    /// A flag outside [`NET_F_MASK`], or non-zero `reserved`.
    UnknownFlags,
    /// [`NET_F_RTP`] and [`NET_F_TS`] together: a datagram is one or the other.
    RtpAndTs,
    /// `stream_id` not below [`MAX_STREAMS`].
    StreamId,
    /// `direction` none, or bits outside [`DIR_BOTH`].
    Direction,
    /// `forward_to` on a stream that does not only receive, out of range,
    /// or the stream itself.
    ForwardTo,
    /// [`NET_F_TAP`] without `forward_to` (without a target everything goes
    /// to the ring anyway).
    TapWithoutForward,
    /// A negative descriptor.
    Fd,
}

impl core::fmt::Display for NetSpecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            NetSpecError::UnknownFlags => "unknown flags or reserved bytes set",
            NetSpecError::RtpAndTs => "NET_F_RTP and NET_F_TS together",
            NetSpecError::StreamId => "stream id out of range",
            NetSpecError::Direction => "no direction, or an unknown one",
            NetSpecError::ForwardTo => "forward_to needs a receive-only stream and another stream id in range",
            NetSpecError::TapWithoutForward => "NET_F_TAP without forward_to",
            NetSpecError::Fd => "negative socket descriptor",
        })
    }
}

/// A [`NetStreamSpec`] that passed [`NetStreamSpec::check`], in the types
/// its user takes. The socket itself (family, protocol, bound, connected,
/// not taken) and the target's state are checked by the module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetSpec {
    pub stream_id: usize,
    pub direction: u32,
    pub flags: u32,
    pub forward_to: Option<usize>,
    pub clock_rate: u32,
    pub fd: u32,
}

impl NetStreamSpec {
    /// The `START_NET_STREAM` argument's own rules (it is hostile in the
    /// module: copied from user space). One definition: the module refuses
    /// what this refuses, rtpmgrd checks its specs with it before asking.
    pub fn check(&self) -> Result<NetSpec, NetSpecError> {
        if self.flags & !NET_F_MASK != 0 || self.reserved != 0 {
            return Err(NetSpecError::UnknownFlags);
        }
        if self.flags & NET_F_RTP != 0 && self.flags & NET_F_TS != 0 {
            return Err(NetSpecError::RtpAndTs);
        }
        if self.stream_id >= MAX_STREAMS {
            return Err(NetSpecError::StreamId);
        }
        if self.direction == 0 || self.direction & !DIR_BOTH != 0 {
            return Err(NetSpecError::Direction);
        }
        let forward_to = if self.forward_to != NET_NO_FORWARD {
            if self.direction != DIR_FROM_DEVICE || self.forward_to >= MAX_STREAMS || self.forward_to == self.stream_id
            {
                return Err(NetSpecError::ForwardTo);
            }
            Some(self.forward_to as usize)
        } else if self.flags & NET_F_TAP != 0 {
            return Err(NetSpecError::TapWithoutForward);
        } else {
            None
        };
        let fd = u32::try_from(self.fd).map_err(|_| NetSpecError::Fd)?;
        Ok(NetSpec {
            stream_id: self.stream_id as usize,
            direction: self.direction,
            flags: self.flags,
            forward_to,
            clock_rate: self.clock_rate,
            fd,
        })
    }
}

/// Counters of one `udp` stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Datagrams written to the from-device ring, and their bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Datagrams sent from the to-device ring, and their bytes.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Sends the stack refused (the slot is consumed and counted here).
    pub tx_errors: u64,
    /// Times a send found the socket buffer full (the datagram waits in
    /// the stream's backlog until the socket has room).
    pub tx_blocked: u64,
    /// Datagrams dropped by [`NET_F_RTP`] as not RTP, or by [`NET_F_TS`] as
    /// not raw MPEG-TS.
    pub malformed: u64,
    /// Datagrams dropped as larger than a slot's payload.
    pub oversize: u64,
    /// Datagrams dropped for a bad UDP checksum.
    pub csum_errors: u64,
    /// Times reception stopped on a full from-device ring (the datagrams
    /// wait in the socket, which drops beyond its receive buffer).
    pub ring_full: u64,
    /// Datagrams forwarded to `forward_to` and their bytes (counted on the
    /// receiving stream; the target's `tx_*` count them as sent too).
    pub fwd_packets: u64,
    pub fwd_bytes: u64,
    /// Datagrams dropped because the target could not take them.
    pub forward_drops: u64,
    /// Tap copies written to the from-device ring, and copies dropped on a
    /// full ring.
    pub tap_packets: u64,
    pub tap_drops: u64,
    /// With [`NET_F_RTP`]: RFC 3550 receiver statistics of the current
    /// source (the `rtp` crate's `SourceStats`, the same code compiled into
    /// the module), over every datagram that passed the header check,
    /// forwarded or not. A new SSRC restarts them (`ssrc_changes`).
    /// [`NET_RTP_SOURCE`] in `rtp_flags`: a source was heard.
    /// With [`NET_F_TS`] ([`NET_TS_CONTINUITY`] in `rtp_flags`): the
    /// continuity counters of every PID, summed: `rtp_received` TS packets
    /// judged (with payload, outside the null PID), `rtp_lost` packets
    /// missing, `rtp_duplicates` copies (whole copied datagrams included),
    /// `rtp_reordered` late packets, `rtp_expected` received plus lost;
    /// `ssrc`, `rtp_resyncs`, `ext_highest_seq` and `jitter_units` stay 0.
    pub ssrc: u32,
    pub rtp_flags: u32,
    pub rtp_received: u64,
    pub rtp_expected: u64,
    pub rtp_lost: i64,
    pub rtp_duplicates: u64,
    pub rtp_reordered: u64,
    pub rtp_resyncs: u64,
    pub ssrc_changes: u64,
    /// Extended highest sequence number (RTCP form).
    pub ext_highest_seq: u32,
    /// Interarrival jitter in timestamp units of `clock_rate` (RTCP form;
    /// arrival times are taken when the worker dequeues the datagram).
    pub jitter_units: u32,
    /// Datagrams the socket dropped before the worker saw them (its
    /// receive buffer full, or refused by a socket filter): the stack's
    /// `sk_drops`, what a worker that falls behind costs.
    pub socket_drops: u64,
    /// Errors the receive path met: a socket error reported on receive
    /// (an ICMP error on a connected socket; the datagrams behind it are
    /// read on), or a datagram that could not be copied (dropped).
    pub rx_errors: u64,
    /// To-device datagrams dropped because the socket's send buffer and
    /// the stream's backlog in the kernel were both full (a destination
    /// slower than the stream). Counted instead of holding up the ring.
    pub tx_dropped: u64,
    /// With [`NET_F_TS`]: transport packets in the accepted datagrams.
    pub ts_packets: u64,
    /// With [`NET_F_TS`]: ETSI TR 101 290 1.4 Continuity_count_errors.
    pub ts_cc_errors: u64,
    /// Of `fwd_packets`: datagrams forwarded in softirq on the receiving
    /// CPU (the fast path of a udp -> udp `forward_to` without the tap),
    /// the socket buffer reused, never copied or queued to the worker.
    pub fwd_fast_packets: u64,
    /// Of `fwd_fast_packets`: datagrams whose headers had to be copied
    /// first (too little headroom, or a header shared with a clone).
    pub fwd_copies: u64,
    /// Times a datagram arriving on the socket queued the session worker
    /// (the socket's data-ready callback): what the fast path avoids.
    pub worker_wakeups: u64,
}

/// [`NetCounters::rtp_flags`]: a source was heard and the RTP fields hold
/// its statistics.
pub const NET_RTP_SOURCE: u32 = 1 << 0;
/// [`NetCounters::rtp_flags`]: that source is still in probation (RFC 3550
/// A.1), so nothing is counted yet.
pub const NET_RTP_PROBATION: u32 = 1 << 1;
/// [`NetCounters::rtp_flags`]: a [`NET_F_TS`] stream; the sequence fields
/// count TS continuity, not RTP sequence numbers.
pub const NET_TS_CONTINUITY: u32 = 1 << 2;

/// `GET_NET_STATUS` argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStatus {
    pub size: u32,
    /// in: a stream id started with `START_NET_STREAM`.
    pub stream_id: u32,
    pub _pad: [u32; 2],
    /// out.
    pub counters: NetCounters,
}

// The RFC 3550 header rules are the `rtp` crate's `rules.rs`, the file its
// `RtpPacket::parse` applies, included here (and so in the kernel module,
// which compiles this file) as `seqstats.rs` is in the module.
#[allow(dead_code, unreachable_pub)]
#[path = "../../rtp/src/rules.rs"]
mod rtp_rules;

/// Bytes of a datagram [`rtp_header_check`] needs to see: the fixed header,
/// 15 CSRCs and the extension header.
pub const RTP_CHECK_BYTES: usize = rtp_rules::CHECK_LEN;

/// Why a datagram is not RTP.
pub use rtp_rules::HeaderError as RtpHeaderError;

/// The RFC 3550 fixed-header rules the `rtp` crate's `RtpPacket::parse`
/// applies (version 2, CSRCs, extension and padding within the packet),
/// over a private copy: `head` holds the first `min(len, RTP_CHECK_BYTES)`
/// bytes of a datagram of `len` bytes whose last byte is `last`. Returns
/// the header length (fixed header, CSRCs, extension).
pub const fn rtp_header_check(head: &[u8], len: usize, last: u8) -> Result<usize, RtpHeaderError> {
    rtp_rules::check(head, len, last)
}

// ---------------------------------------------------------------------------
// Shared region
// ---------------------------------------------------------------------------

/// Bytes reserved for the header page (header and both ring control blocks).
/// The slots start here, so they are page aligned for 4 KiB pages; the kernel
/// reports the actual offsets in `BufferConfig`, which user space must use.
pub const HEADER_REGION_SIZE: u32 = 4096;
/// Offset of the to-device [`RingCtrl`].
pub const TO_DEV_CTRL_OFFSET: u32 = 0x400;
/// Offset of the from-device [`RingCtrl`].
pub const FROM_DEV_CTRL_OFFSET: u32 = 0x800;
/// Cache-line size assumed for separating the index words. 128 covers
/// CPUs with 128-byte lines or adjacent-line prefetch.
pub const CACHE_LINE: u32 = 128;

/// At offset 0 of the region. Written by the kernel once per
/// `CONFIGURE_BUFFER`; the kernel never reads it back, so user space
/// scribbling over it harms only itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedHeader {
    pub magic: u32,
    pub abi_version: u32,
    pub header_size: u32,
    pub slot_header_size: u32,
    pub slot_count: u32,
    pub slot_size: u32,
    pub to_dev_ctrl_offset: u32,
    pub from_dev_ctrl_offset: u32,
    pub to_dev_slots_offset: u64,
    pub from_dev_slots_offset: u64,
    pub mmap_size: u64,
    /// Offset of the statistics area: [`MAX_STREAMS`] records of
    /// `stats_record_size` bytes, record `i` for stream id `i`.
    pub stats_offset: u64,
    pub stats_record_size: u32,
    pub stats_records: u32,
}

/// One stream's counters in the statistics area at the end of the region,
/// written by the kernel after each worker pass that touched the stream
/// (and when it stops), never read back by it. A seqcount makes a snapshot
/// consistent: the kernel makes `seq` odd, writes the rest, makes it even
/// again; a reader copies the record between two equal even reads of
/// `seq` (`rtpmgr_ring::Region::stream_stats`). The same numbers as
/// `GET_NET_STATUS`, without a system call: a monitor can poll every
/// stream of a session for the cost of reading memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsRecord {
    pub seq: u32,
    /// The stream id the record belongs to (its index).
    pub stream_id: u32,
    /// `STATS_*`.
    pub flags: u32,
    pub _pad: u32,
    /// `CLOCK_MONOTONIC` of the last write: the kernel writes a record
    /// when its counters change (and once more when the stream stops).
    pub updated_ns: u64,
    /// A `udp` stream's counters, as `GET_NET_STATUS` returns them
    /// (`socket_drops` as of the update).
    pub counters: NetCounters,
    /// Zero; room for counters to come.
    pub _reserved: [u64; 29],
}

/// [`StatsRecord::flags`]: a `udp` stream runs with this id. Cleared when
/// it stops (the counters keep their last values).
pub const STATS_RUNNING: u32 = 1 << 0;
/// Bytes of a [`StatsRecord`] and of the statistics area.
pub const STATS_RECORD_SIZE: u32 = 512;
pub const STATS_AREA_SIZE: u32 = STATS_RECORD_SIZE * MAX_STREAMS;

/// Control block of one ring. The three words are written by different
/// sides and so live on different cache lines:
/// `producer` by the producer, `consumer` by the consumer, `flags` by
/// whichever side sleeps (always the kernel).
#[repr(C, align(128))]
pub struct RingCtrl {
    pub producer: u32,
    pub _pad0: [u8; CACHE_LINE as usize - 4],
    pub consumer: u32,
    pub _pad1: [u8; CACHE_LINE as usize - 4],
    pub flags: u32,
    pub _pad2: [u8; CACHE_LINE as usize - 4],
}

/// `RingCtrl::flags`: the kernel worker sleeps; kick it after publishing to
/// (to-device) or releasing from (from-device) this ring. Raised on both
/// rings after `CONFIGURE_BUFFER` and `RESET`: the worker starts asleep.
pub const RING_NEED_WAKEUP: u32 = 1 << 0;

/// Offsets of the words inside [`RingCtrl`].
pub const RING_PRODUCER_OFFSET: u32 = 0;
pub const RING_CONSUMER_OFFSET: u32 = CACHE_LINE;
pub const RING_FLAGS_OFFSET: u32 = 2 * CACHE_LINE;

/// Header at the start of every slot; the packet follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotHeader {
    /// Packet bytes after the header, `0..=slot_size - SLOT_HEADER_SIZE`.
    pub len: u32,
    /// `SLOT_F_*`; to-device slots must carry none.
    pub flags: u32,
    /// Stream the packet belongs to.
    pub stream_id: u32,
    pub reserved: u32,
    /// Nanoseconds, `CLOCK_MONOTONIC`: arrival from the network (to-device,
    /// set by user space) or from the port (from-device, set by the kernel).
    pub timestamp_ns: u64,
    pub reserved2: u64,
}

/// Size of [`SlotHeader`]; packet bytes start at this offset in a slot.
pub const SLOT_HEADER_SIZE: u32 = 32;

/// From-device flag: the port dropped packets of this stream (ring full)
/// just before this one.
pub const SLOT_F_AFTER_DROP: u32 = 1 << 0;
/// Flags the kernel may set on from-device slots.
pub const SLOT_F_FROM_DEV_MASK: u32 = SLOT_F_AFTER_DROP;
/// Flags user space may set on to-device slots: none yet.
pub const SLOT_F_TO_DEV_MASK: u32 = 0;

/// Why a slot was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// `len` larger than the slot's payload capacity.
    Length,
    /// Flag bits not defined for this direction.
    Flags,
    /// `stream_id` outside `0..MAX_STREAMS`.
    StreamId,
}

impl SlotHeader {
    /// Validate a to-device slot header snapshot against the ring geometry.
    /// The caller must have copied the header out of shared memory first and
    /// must use only the copy afterwards (never re-read shared memory).
    pub const fn check(&self, slot_size: u32) -> Result<(), SlotError> {
        self.check_ids(slot_size, MAX_STREAMS)
    }

    /// [`SlotHeader::check`] for a device with `max_streams` stream ids.
    pub const fn check_ids(&self, slot_size: u32, max_streams: u32) -> Result<(), SlotError> {
        if self.len > slot_size.saturating_sub(SLOT_HEADER_SIZE) {
            return Err(SlotError::Length);
        }
        if self.flags & !SLOT_F_TO_DEV_MASK != 0 {
            return Err(SlotError::Flags);
        }
        if self.stream_id >= max_streams {
            return Err(SlotError::StreamId);
        }
        Ok(())
    }
}

/// Filled entries of a ring given a producer index read from shared memory
/// and the reader's own consumer index, or `None` if the pair is impossible
/// (the producer more than `slot_count` ahead, or behind). `slot_count` must
/// be a valid geometry (power of two `<= MAX_SLOT_COUNT`).
pub const fn ring_fill(producer: u32, consumer: u32, slot_count: u32) -> Option<u32> {
    let fill = producer.wrapping_sub(consumer);
    if fill <= slot_count {
        Some(fill)
    } else {
        None
    }
}

/// Why a geometry was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    SlotCount,
    SlotSize,
    /// The region would exceed the session limit.
    TooLarge,
}

/// A validated ring geometry and the layout derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub slot_count: u32,
    pub slot_size: u32,
}

impl Geometry {
    /// Validate `slot_count`/`slot_size` and check the region against
    /// `max_bytes` (the per-session pin limit).
    pub const fn new(slot_count: u32, slot_size: u32, max_bytes: u64) -> Result<Self, GeometryError> {
        if !slot_count.is_power_of_two() || slot_count < MIN_SLOT_COUNT || slot_count > MAX_SLOT_COUNT {
            return Err(GeometryError::SlotCount);
        }
        if !slot_size.is_power_of_two() || slot_size < MIN_SLOT_SIZE || slot_size > MAX_SLOT_SIZE {
            return Err(GeometryError::SlotSize);
        }
        let g = Geometry { slot_count, slot_size };
        if g.region_bytes() > max_bytes {
            return Err(GeometryError::TooLarge);
        }
        Ok(g)
    }

    /// Bytes of one ring's slots. At most 2^15 × 2^16 = 2^31.
    pub const fn ring_bytes(&self) -> u64 {
        self.slot_count as u64 * self.slot_size as u64
    }
    pub const fn to_dev_slots_offset(&self) -> u64 {
        HEADER_REGION_SIZE as u64
    }
    pub const fn from_dev_slots_offset(&self) -> u64 {
        HEADER_REGION_SIZE as u64 + self.ring_bytes()
    }
    /// The statistics area follows the from-device slots; page aligned,
    /// as both rings are multiples of 2 KiB.
    pub const fn stats_offset(&self) -> u64 {
        HEADER_REGION_SIZE as u64 + 2 * self.ring_bytes()
    }
    /// Bytes the region needs before rounding to pages.
    pub const fn region_bytes(&self) -> u64 {
        self.stats_offset() + STATS_AREA_SIZE as u64
    }
    /// Mapping length for a given page size (a power of two).
    pub const fn mmap_size(&self, page_size: u64) -> u64 {
        (self.region_bytes() + page_size - 1) & !(page_size - 1)
    }
    pub const fn payload_capacity(&self) -> u32 {
        self.slot_size - SLOT_HEADER_SIZE
    }
    /// The header the kernel writes at offset 0.
    pub const fn shared_header(&self, page_size: u64) -> SharedHeader {
        SharedHeader {
            magic: SHARED_MAGIC,
            abi_version: ABI_VERSION,
            header_size: HEADER_REGION_SIZE,
            slot_header_size: SLOT_HEADER_SIZE,
            slot_count: self.slot_count,
            slot_size: self.slot_size,
            to_dev_ctrl_offset: TO_DEV_CTRL_OFFSET,
            from_dev_ctrl_offset: FROM_DEV_CTRL_OFFSET,
            to_dev_slots_offset: self.to_dev_slots_offset(),
            from_dev_slots_offset: self.from_dev_slots_offset(),
            mmap_size: self.mmap_size(page_size),
            stats_offset: self.stats_offset(),
            stats_record_size: STATS_RECORD_SIZE,
            stats_records: MAX_STREAMS,
        }
    }
}

// Compile-time guards; the tests below print the same facts readably.
const _: () = assert!(core::mem::size_of::<SlotHeader>() == SLOT_HEADER_SIZE as usize);
const _: () = assert!(core::mem::size_of::<NetStreamSpec>() == 32);
const _: () = assert!(core::mem::size_of::<NetStatus>() == 272);
const _: () = assert!(core::mem::size_of::<StatsRecord>() == STATS_RECORD_SIZE as usize);
const _: () = assert!(core::mem::size_of::<RingCtrl>() == 3 * CACHE_LINE as usize);
const _: () = assert!(TO_DEV_CTRL_OFFSET as usize >= core::mem::size_of::<SharedHeader>());
const _: () = assert!(FROM_DEV_CTRL_OFFSET as usize >= TO_DEV_CTRL_OFFSET as usize + core::mem::size_of::<RingCtrl>());
const _: () = assert!(HEADER_REGION_SIZE as usize >= FROM_DEV_CTRL_OFFSET as usize + core::mem::size_of::<RingCtrl>());

// ---------------------------------------------------------------------------
// The ring protocol
// ---------------------------------------------------------------------------

pub mod proto {
    //! The index protocol of one single-producer/single-consumer ring, without
    //! the slot memory: the part of the contract both sides run, and the part
    //! the loom model check (`crates/rtpmgr-ring/tests/loom.rs`) explores. It
    //! is written once, here, generic over the atomics ([`SharedWord`]): user
    //! space runs it with `core` atomics (loom's under the model check), the
    //! kernel module, which compiles this file by `#[path]`, with
    //! `kernel::sync::atomic` and `smp_mb()`. So the model check covers what
    //! the kernel runs. It uses nothing but `core` and the rest of this file.
    //!
    //! Orderings:
    //! * The producer fills slots, then stores `producer` with `Release`; the
    //!   consumer loads `producer` with `Acquire` before reading slots.
    //! * The consumer reads slots, then stores `consumer` with `Release`; the
    //!   producer loads `consumer` with `Acquire` before reusing slots.
    //! * Need-wakeup is a store-buffering (Dekker) handshake: the side about to
    //!   sleep stores `flags`, issues a full fence and re-reads the other
    //!   side's index; the other side stores its index, issues a full fence
    //!   and reads `flags`. The fences forbid both reads seeing old values, so
    //!   either the sleeper sees the new index and stays awake, or the waker
    //!   sees the flag and kicks: no wake-up is lost.
    //! * `flags` has one writer per ring: the side the ABI names as the sleeper
    //!   (the kernel: consumer of to-device, producer of from-device). The other
    //!   side never sleeps on `flags`; it blocks in `WAIT` or `poll()`, which
    //!   the kernel serves with a wait queue. Two sleepers on one ring would
    //!   overwrite each other's flag and lose wake-ups. So the kernel hands
    //!   entries on with [`ConsumerIndex::commit`] / [`ProducerIndex::commit`]
    //!   (nobody sleeps on its flags for them), user space with `release` /
    //!   `publish`, which look at the flag.

    use super::{ring_fill, RING_NEED_WAKEUP};

    /// The memory orderings the protocol uses.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Order {
        Relaxed,
        Acquire,
        Release,
    }

    /// One shared control word: the atomic operations the protocol needs.
    /// User space implements it with `core` (or loom) atomics, the kernel with
    /// `kernel::sync::atomic` and `smp_mb()`.
    pub trait SharedWord {
        fn load(&self, order: Order) -> u32;
        fn store(&self, value: u32, order: Order);
        /// A full barrier: a `SeqCst` fence, `smp_mb()` in the kernel.
        fn full_fence();
    }

    /// Access to a ring's three control words.
    pub trait Indices {
        type Word: SharedWord + ?Sized;
        fn producer(&self) -> &Self::Word;
        fn consumer(&self) -> &Self::Word;
        fn flags(&self) -> &Self::Word;
    }

    impl<T: Indices + ?Sized> Indices for &T {
        type Word = T::Word;
        fn producer(&self) -> &Self::Word {
            (**self).producer()
        }
        fn consumer(&self) -> &Self::Word {
            (**self).consumer()
        }
        fn flags(&self) -> &Self::Word {
            (**self).flags()
        }
    }

    fn fence<I: Indices>() {
        <I::Word as SharedWord>::full_fence();
    }

    /// The other side published impossible indices (more than a ring apart).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct BadIndex {
        pub producer: u32,
        pub consumer: u32,
    }

    /// Producer end. Owns the `producer` word: nobody else may write it.
    pub struct ProducerIndex<I> {
        idx: I,
        slot_count: u32,
        /// Next position to fill; equal to the published `producer` word
        /// between calls.
        head: u32,
        /// Last `consumer` value seen; refreshed only when the cached view
        /// shows too little space, which keeps the consumer's cache line quiet.
        cached_tail: u32,
    }

    impl<I: Indices> ProducerIndex<I> {
        /// Attach to a ring whose words hold a consistent state
        /// (`producer == consumer` after configure or reset).
        pub fn new(idx: I, slot_count: u32) -> Self {
            debug_assert!(slot_count.is_power_of_two());
            let head = idx.producer().load(Order::Relaxed);
            let cached_tail = idx.consumer().load(Order::Acquire);
            Self { idx, slot_count, head, cached_tail }
        }

        /// Free slots as last seen, without touching the consumer's word.
        pub fn cached_free(&self) -> u32 {
            // A consumer index that is impossible relative to our head counts
            // as "no space": we never overwrite slots on a bad peer's word.
            match ring_fill(self.head, self.cached_tail, self.slot_count) {
                Some(fill) => self.slot_count - fill,
                None => 0,
            }
        }

        /// Free slots, refreshing the consumer index if fewer than `want` are
        /// known to be free; `Err` if the consumer's word is impossible.
        pub fn free_checked(&mut self, want: u32) -> Result<u32, BadIndex> {
            let free = self.cached_free();
            if free >= want {
                return Ok(free);
            }
            self.cached_tail = self.idx.consumer().load(Order::Acquire);
            match ring_fill(self.head, self.cached_tail, self.slot_count) {
                Some(fill) => Ok(self.slot_count - fill),
                None => Err(BadIndex { producer: self.head, consumer: self.cached_tail }),
            }
        }

        /// Free slots, refreshing the consumer index if fewer than `want` are
        /// known to be free (an impossible consumer word: none).
        pub fn free(&mut self, want: u32) -> u32 {
            self.free_checked(want).unwrap_or(0)
        }

        /// Ring position of the `i`-th free slot (`i < free()`).
        pub fn position(&self, i: u32) -> u32 {
            self.head.wrapping_add(i)
        }

        /// The next position to fill (the published `producer` word).
        pub fn head(&self) -> u32 {
            self.head
        }

        /// Publish the next `n` filled slots to a consumer that never sleeps
        /// on this ring's flags. `n` must not exceed the last `free()` result.
        pub fn commit(&mut self, n: u32) {
            debug_assert!(n <= self.cached_free(), "publishing {n} slots beyond the free space");
            if n > 0 {
                self.head = self.head.wrapping_add(n);
                self.idx.producer().store(self.head, Order::Release);
            }
        }

        /// Publish the next `n` filled slots. Returns whether the consumer
        /// asked to be kicked. `n` must not exceed the last `free()` result.
        pub fn publish(&mut self, n: u32) -> bool {
            assert!(n <= self.cached_free(), "publishing {n} slots beyond the free space");
            if n == 0 {
                return false;
            }
            self.commit(n);
            fence::<I>();
            self.idx.flags().load(Order::Relaxed) & RING_NEED_WAKEUP != 0
        }

        /// The sleeping side's half of the handshake for a producer waiting for
        /// space: raise need-wakeup, then re-check. Returns `true` if the caller
        /// must really sleep (still no space; an impossible consumer word also
        /// sleeps); `false` means space appeared and the flag has been cleared
        /// again.
        pub fn prepare_sleep(&mut self) -> bool {
            self.raise_need_wakeup();
            if self.free(1) > 0 {
                self.clear_need_wakeup();
                return false;
            }
            true
        }

        /// The sleeper's flag store and full fence, without the re-check.
        pub fn raise_need_wakeup(&self) {
            self.idx.flags().store(RING_NEED_WAKEUP, Order::Relaxed);
            fence::<I>();
        }

        /// Lower the flag, writing the shared word only if it is up: the
        /// worker clears on every pass, and a store of an unchanged value
        /// still takes the cache line from the peer that reads it.
        pub fn clear_need_wakeup(&self) {
            if self.idx.flags().load(Order::Relaxed) != 0 {
                self.idx.flags().store(0, Order::Relaxed);
            }
        }

        /// Entries published and not yet released by the consumer (as last seen).
        pub fn in_flight(&mut self) -> u32 {
            self.slot_count - self.free(self.slot_count)
        }

        pub fn indices(&self) -> &I {
            &self.idx
        }
    }

    /// Consumer end. Owns the `consumer` word.
    pub struct ConsumerIndex<I> {
        idx: I,
        slot_count: u32,
        /// Next position to read; equal to the published `consumer` word
        /// between calls.
        tail: u32,
    }

    impl<I: Indices> ConsumerIndex<I> {
        pub fn new(idx: I, slot_count: u32) -> Self {
            debug_assert!(slot_count.is_power_of_two());
            let tail = idx.consumer().load(Order::Relaxed);
            Self { idx, slot_count, tail }
        }

        /// Entries ready to read. The producer word is read exactly once and
        /// validated against our own tail (never against the shared consumer
        /// word, which the other side might scribble on).
        pub fn available(&mut self) -> Result<u32, BadIndex> {
            let producer = self.idx.producer().load(Order::Acquire);
            ring_fill(producer, self.tail, self.slot_count).ok_or(BadIndex { producer, consumer: self.tail })
        }

        /// Ring position of the `i`-th available entry.
        pub fn position(&self, i: u32) -> u32 {
            self.tail.wrapping_add(i)
        }

        /// The next position to read (the published `consumer` word).
        pub fn tail(&self) -> u32 {
            self.tail
        }

        /// Hand `n` read entries back to a producer that never sleeps on this
        /// ring's flags.
        pub fn commit(&mut self, n: u32) {
            if n > 0 {
                self.tail = self.tail.wrapping_add(n);
                self.idx.consumer().store(self.tail, Order::Release);
            }
        }

        /// Hand `n` read entries back to the producer. Returns whether the
        /// producer asked to be kicked (it waits for space).
        pub fn release(&mut self, n: u32) -> bool {
            if n == 0 {
                return false;
            }
            self.commit(n);
            fence::<I>();
            self.idx.flags().load(Order::Relaxed) & RING_NEED_WAKEUP != 0
        }

        /// The sleeping side's half of the handshake for a consumer waiting for
        /// entries; see [`ProducerIndex::prepare_sleep`].
        pub fn prepare_sleep(&mut self) -> bool {
            let tail = self.tail;
            self.prepare_sleep_since(tail)
        }

        /// The handshake for a consumer that may leave entries unread (the
        /// kernel, when what they need is not there): `seen` is the producer
        /// index it last looked at. Returns `true` if the caller must really
        /// sleep: nothing was published after `seen`, or the producer's word is
        /// impossible (the caller counted it already; staying awake would let
        /// the other side make it spin; the next kick makes it look again).
        /// `false`: entries arrived, the flag has been cleared again.
        pub fn prepare_sleep_since(&mut self, seen: u32) -> bool {
            self.idx.flags().store(RING_NEED_WAKEUP, Order::Relaxed);
            fence::<I>();
            let producer = self.idx.producer().load(Order::Acquire);
            if producer == seen || ring_fill(producer, self.tail, self.slot_count).is_none() {
                return true;
            }
            self.clear_need_wakeup();
            false
        }

        /// Lower the flag, writing the shared word only if it is up: the
        /// worker clears on every pass, and a store of an unchanged value
        /// still takes the cache line from the peer that reads it.
        pub fn clear_need_wakeup(&self) {
            if self.idx.flags().load(Order::Relaxed) != 0 {
                self.idx.flags().store(0, Order::Relaxed);
            }
        }

        pub fn indices(&self) -> &I {
            &self.idx
        }
    }
}
