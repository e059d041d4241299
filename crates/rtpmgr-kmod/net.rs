// SPDX-License-Identifier: GPL-2.0-only

//! The `udp` media port: a kernel UDP socket per stream.
//!
//! 7.2 has no Rust socket abstractions, so the socket itself lives in the C
//! helper `rtpmgr_net.c` (its header says why); this file declares that
//! helper's functions and wraps them in [`NetSocket`], a safe owner whose
//! methods take and return only Rust types. The session worker receives
//! into from-device slots and sends from to-device slots through it; the
//! socket's callbacks only wake the socket's owner ([`NetWaker`]), which
//! queues its worker. This file knows nothing of sessions.

use crate::abi;
use crate::ring::SharedBytes;
use core::ptr::NonNull;
use kernel::{
    ffi::{c_int, c_long, c_void},
    prelude::*,
    sync::{Arc, ArcBorrow},
};

/// The C helper's `struct rtpmgr_net`; only ever behind a pointer.
#[repr(C)]
struct RtpmgrNet {
    _opaque: [u8; 0],
}

// The helper's interface: rtpmgr_net.h, kept in step by hand.
extern "C" {
    fn rtpmgr_net_open(
        out: *mut *mut RtpmgrNet,
        ready: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
        family: c_int,
        laddr: *const u8,
        lport: u16,
        lscope: u32,
        raddr: *const u8,
        rport: u16,
        rscope: u32,
        opts: *const NetOpts,
    ) -> c_int;
    fn rtpmgr_net_join(n: *mut RtpmgrNet, group: *const u8, source: *const u8, ifindex: u32) -> c_int;
    fn rtpmgr_net_close(n: *mut RtpmgrNet);
    fn rtpmgr_net_rx_pending(n: *mut RtpmgrNet) -> bool;
    fn rtpmgr_net_drops(n: *mut RtpmgrNet) -> u64;
    fn rtpmgr_net_recv(
        n: *mut RtpmgrNet,
        dst: *mut u8,
        cap: u32,
        head: *mut u8,
        head_cap: u32,
        last: *mut u8,
    ) -> c_long;
    fn rtpmgr_net_send(n: *mut RtpmgrNet, buf: *const u8, len: u32) -> c_int;
}

/// What a socket's callbacks wake: its owner, which queues its worker.
pub(crate) trait NetWaker: Send + Sync + 'static {
    /// Runs in softirq or with BH disabled: must not sleep or take a
    /// sleeping lock.
    fn wake(this: ArcBorrow<'_, Self>);
}

/// The `ready` callback the helper calls with `ctx`.
///
/// # Safety
///
/// `ctx` must be the `Arc::into_raw` pointer a live [`NetSocket<W>`] holds:
/// that socket keeps the reference until after `rtpmgr_net_close` has
/// detached the callbacks and waited for running ones.
unsafe extern "C" fn ready<W: NetWaker>(ctx: *mut c_void) {
    // SAFETY: by the function's contract `ctx` came from `Arc::into_raw` of
    // an `Arc<W>` that the socket still holds, so the count is above zero
    // for the whole call.
    let w = unsafe { ArcBorrow::from_raw(ctx.cast_const().cast::<W>()) };
    W::wake(w);
}

/// Where to bind and connect, from a validated `NetStreamSpec`.
pub(crate) struct Endpoints {
    family: u16,
    local: abi::NetAddr,
    remote: Option<abi::NetAddr>,
    /// Multicast group to join, and the source for SSM.
    group: Option<abi::NetAddr>,
    source: Option<abi::NetAddr>,
    ifindex: u32,
    opts: NetOpts,
}

/// `struct rtpmgr_net_opts` (rtpmgr_net.h): options the helper applies
/// before connect; 0 leaves the stack's default.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NetOpts {
    /// Receive buffer bytes (receiving streams only: a send-only socket's
    /// receive queue is never read, so it keeps the small default).
    rcvbuf: c_int,
    /// Send buffer bytes (sending streams only).
    sndbuf: c_int,
    /// Sending to a multicast `remote`: the TTL / hop limit and the
    /// interface (0: by route).
    mc_ttl: c_int,
    mc_ifindex: c_int,
}

/// Whether `a` (of a known family) is a multicast address.
fn is_multicast(a: &abi::NetAddr) -> bool {
    match a.family {
        abi::NET_FAMILY_INET => a.addr[0] & 0xf0 == 0xe0,
        abi::NET_FAMILY_INET6 => a.addr[0] == 0xff,
        _ => false,
    }
}

/// A `NetAddr` is unset (all zero), IPv4 (no scope, bytes 4.. zero) or IPv6.
fn check_addr(a: &abi::NetAddr) -> Result {
    let ok = match a.family {
        abi::NET_FAMILY_UNSPEC => a.port == 0 && a.scope_id == 0 && a.addr == [0; 16],
        abi::NET_FAMILY_INET => a.scope_id == 0 && a.addr[4..] == [0; 12],
        abi::NET_FAMILY_INET6 => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

/// Validate a `START_NET_STREAM` argument (copied from user space, so
/// hostile) and derive the socket's endpoints.
pub(crate) fn endpoints(spec: &abi::NetStreamSpec) -> Result<Endpoints> {
    if spec.flags & !abi::NET_F_MASK != 0 || spec.reserved != 0 {
        return Err(EINVAL);
    }
    if spec.stream_id >= abi::MAX_STREAMS || spec.direction == 0 || spec.direction & !abi::DIR_BOTH != 0 {
        return Err(EINVAL);
    }
    for a in [&spec.local, &spec.remote, &spec.group, &spec.source] {
        check_addr(a)?;
    }
    // Forwarding is for receiving streams, never to itself; the target's
    // state is checked by the session under its lock. The tap needs a
    // forward target (without one everything goes to the ring anyway).
    if spec.forward_to != abi::NET_NO_FORWARD {
        if spec.direction != abi::DIR_FROM_DEVICE
            || spec.forward_to >= abi::MAX_STREAMS
            || spec.forward_to == spec.stream_id
        {
            return Err(EINVAL);
        }
    } else if spec.flags & abi::NET_F_TAP != 0 {
        return Err(EINVAL);
    }
    // setsockopt takes an int, for sizes and interface indices alike.
    let buffer_bytes = c_int::try_from(spec.rcvbuf).map_err(|_| EINVAL)?;
    let ifindex = c_int::try_from(spec.ifindex).map_err(|_| EINVAL)?;
    let (l, r) = (spec.local.family, spec.remote.family);
    if l != abi::NET_FAMILY_UNSPEC && r != abi::NET_FAMILY_UNSPEC && l != r {
        return Err(EINVAL);
    }
    let family = if l != abi::NET_FAMILY_UNSPEC { l } else { r };
    if family == abi::NET_FAMILY_UNSPEC {
        return Err(EINVAL);
    }
    // Receiving needs a known port; sending needs a destination.
    if spec.direction & abi::DIR_FROM_DEVICE != 0 && spec.local.port == 0 {
        return Err(EINVAL);
    }
    let remote = (r != abi::NET_FAMILY_UNSPEC).then_some(spec.remote);
    if remote.is_some_and(|a| a.port == 0) || (spec.direction & abi::DIR_TO_DEVICE != 0 && remote.is_none()) {
        return Err(EINVAL);
    }
    let local = abi::NetAddr { family, ..spec.local };
    // Multicast receive: a group of the stream's family (no port: that is
    // `local.port`), optionally one unicast source (SSM); `ifindex` picks
    // the interface to join on and means nothing without a group.
    let group = (spec.group.family != abi::NET_FAMILY_UNSPEC).then_some(spec.group);
    let source = (spec.source.family != abi::NET_FAMILY_UNSPEC).then_some(spec.source);
    if let Some(g) = &group {
        if g.family != family || g.port != 0 || g.scope_id != 0 || !is_multicast(g) {
            return Err(EINVAL);
        }
        if spec.direction & abi::DIR_FROM_DEVICE == 0 {
            return Err(EINVAL);
        }
    } else if source.is_some() {
        return Err(EINVAL);
    }
    // Multicast transmit: a TTL and an interface mean something only for
    // a stream that sends to a group.
    let sends_to_group = spec.direction & abi::DIR_TO_DEVICE != 0 && remote.is_some_and(|r| is_multicast(&r));
    if spec.mc_ttl > 255 || (spec.mc_ttl != 0 && !sends_to_group) {
        return Err(EINVAL);
    }
    if spec.ifindex != 0 && group.is_none() && !sends_to_group {
        return Err(EINVAL);
    }
    let mc_ifindex = if sends_to_group { ifindex } else { 0 };
    if let Some(src) = &source {
        if src.family != family || src.port != 0 || src.scope_id != 0 || is_multicast(src) || src.addr == [0; 16] {
            return Err(EINVAL);
        }
    }
    let receives = spec.direction & abi::DIR_FROM_DEVICE != 0;
    let sends = spec.direction & abi::DIR_TO_DEVICE != 0;
    let opts = NetOpts {
        rcvbuf: if receives { buffer_bytes } else { 0 },
        sndbuf: if sends { buffer_bytes } else { 0 },
        // At most 255 (checked above).
        mc_ttl: spec.mc_ttl as c_int,
        mc_ifindex,
    };
    Ok(Endpoints { family, local, remote, group, source, ifindex: spec.ifindex, opts })
}

/// What one receive brought.
pub(crate) enum Recv {
    /// Nothing waits.
    Empty,
    /// A datagram of `len` bytes; `min(len, capacity)` were written. `head`
    /// and `last` are private copies of its first bytes and last byte.
    Datagram { len: usize, head: [u8; abi::RTP_CHECK_BYTES], last: u8 },
    /// Dropped by the helper for a bad checksum.
    BadChecksum,
    /// A socket error (consumed: datagrams behind it are read on) or a
    /// datagram that could not be copied (dropped).
    Error,
}

/// Result of a send.
pub(crate) enum SendResult {
    Sent,
    /// No buffer space; the write-space callback will wake the owner.
    WouldBlock,
    /// No buffer space a moment ago, some now: try again.
    Retry,
    /// The stack refused the datagram (unreachable, refused, too big...).
    Failed,
}

/// An open kernel UDP socket with our callbacks installed, waking `W`.
///
/// Invariants: `raw` came from a successful `rtpmgr_net_open` and is closed
/// exactly once, in `drop`; `waker` is `Arc::into_raw` of a reference this
/// socket owns (the callbacks' `ctx`), released in `drop` after the close.
pub(crate) struct NetSocket<W: NetWaker> {
    raw: NonNull<RtpmgrNet>,
    waker: *const W,
}

// SAFETY: the helper's object may be used from any thread; every method
// that touches it takes `&self` only for calls the helper allows
// concurrently with the softirq callbacks, and the owner's lock serialises
// the worker's calls. `waker` is an `Arc<W>` with `W: Send + Sync`.
unsafe impl<W: NetWaker> Sync for NetSocket<W> {}
// SAFETY: as above; nothing in it is tied to the creating thread.
unsafe impl<W: NetWaker> core::marker::Send for NetSocket<W> {}

impl<W: NetWaker> NetSocket<W> {
    /// Create, bind (and connect) a socket with the current task's
    /// credentials and netns, whose callbacks wake `waker`. Must be called
    /// from the ioctl, never from the worker. The socket holds `waker`
    /// until it is closed.
    pub(crate) fn open(waker: Arc<W>, ep: &Endpoints) -> Result<Self> {
        let mut raw: *mut RtpmgrNet = core::ptr::null_mut();
        let (raddr, rport, rscope) = match &ep.remote {
            Some(r) => (r.addr.as_ptr(), r.port, r.scope_id),
            None => (core::ptr::null(), 0, 0),
        };
        let ctx = Arc::into_raw(waker);
        // SAFETY: `raw` is a valid out pointer; the address pointers point
        // to 16-byte arrays alive across the call (or are null for no
        // remote); `opts` points to a `NetOpts` (the C struct's layout)
        // alive across the call; `ready::<W>` with `ctx` meets `ready`'s
        // contract: the reference stays with the socket until after close.
        let rc = unsafe {
            rtpmgr_net_open(
                &mut raw,
                ready::<W>,
                ctx.cast_mut().cast::<c_void>(),
                c_int::from(ep.family),
                ep.local.addr.as_ptr(),
                ep.local.port,
                ep.local.scope_id,
                raddr,
                rport,
                rscope,
                &ep.opts,
            )
        };
        let Some(raw) = NonNull::new(raw).filter(|_| rc >= 0) else {
            // SAFETY: `ctx` came from `Arc::into_raw` above and no socket
            // kept it (the open failed, nothing was installed).
            drop(unsafe { Arc::from_raw(ctx) });
            return Err(if rc < 0 { Error::from_errno(rc) } else { ENOMEM });
        };
        let sock = NetSocket { raw, waker: ctx };
        if let Some(g) = &ep.group {
            let src = ep.source.as_ref().map_or(core::ptr::null(), |s| s.addr.as_ptr());
            // SAFETY: `raw` is open; `g.addr` and the source (if any) are
            // 16-byte arrays alive across the call; the helper reads 4 or
            // 16 of them by the socket's family, which is theirs
            // (`endpoints`). On failure `sock` closes the socket.
            let rc = unsafe { rtpmgr_net_join(sock.raw.as_ptr(), g.addr.as_ptr(), src, ep.ifindex) };
            if rc < 0 {
                return Err(Error::from_errno(rc));
            }
        }
        Ok(sock)
    }

    /// Datagrams the socket dropped before we read them.
    pub(crate) fn drops(&self) -> u64 {
        // SAFETY: `raw` is open (type invariant); the helper only reads an
        // atomic counter of the socket.
        unsafe { rtpmgr_net_drops(self.raw.as_ptr()) }
    }

    /// Whether a datagram waits.
    pub(crate) fn rx_pending(&self) -> bool {
        // SAFETY: `raw` is open (type invariant).
        unsafe { rtpmgr_net_rx_pending(self.raw.as_ptr()) }
    }

    /// Dequeue one datagram into `dst`.
    pub(crate) fn recv(&self, dst: &mut SharedBytes<'_>) -> Recv {
        let mut head = [0u8; abi::RTP_CHECK_BYTES];
        let mut last = 0u8;
        let cap = u32::try_from(dst.len()).unwrap_or(u32::MAX);
        // SAFETY: `raw` is open; `dst` is valid for writes of `cap` bytes
        // (`SharedBytes` invariant); `head` and `last` are our own buffers
        // of the sizes given.
        let rc = unsafe {
            rtpmgr_net_recv(self.raw.as_ptr(), dst.as_mut_ptr(), cap, head.as_mut_ptr(), head.len() as u32, &mut last)
        };
        match usize::try_from(rc) {
            Ok(len) => Recv::Datagram { len, head, last },
            Err(_) if rc == -(bindings_errno::EAGAIN as c_long) => Recv::Empty,
            Err(_) if rc == -(bindings_errno::EBADMSG as c_long) => Recv::BadChecksum,
            Err(_) => Recv::Error,
        }
    }

    /// Send one datagram without blocking.
    pub(crate) fn send(&self, pkt: &SharedBytes<'_>) -> SendResult {
        let len = u32::try_from(pkt.len()).unwrap_or(u32::MAX);
        // SAFETY: `raw` is open; `pkt` is valid for reads of its length
        // (`SharedBytes` invariant); the stack only copies from it.
        let rc = unsafe { rtpmgr_net_send(self.raw.as_ptr(), pkt.as_ptr(), len) };
        match rc {
            n if n >= 0 => SendResult::Sent,
            n if n == -bindings_errno::EAGAIN => SendResult::WouldBlock,
            n if n == -bindings_errno::EBUSY => SendResult::Retry,
            _ => SendResult::Failed,
        }
    }
}

impl<W: NetWaker> Drop for NetSocket<W> {
    fn drop(&mut self) {
        // SAFETY: `raw` is open and this is its only close (type
        // invariant). It sleeps: sockets are dropped in process context.
        unsafe { rtpmgr_net_close(self.raw.as_ptr()) };
        // SAFETY: the reference `ready`'s `ctx` stood for (type invariant);
        // the close detached the callbacks and waited for running ones.
        drop(unsafe { Arc::from_raw(self.waker) });
    }
}

/// The errnos the helper returns that we tell apart.
mod bindings_errno {
    use kernel::bindings;
    pub(super) const EAGAIN: i32 = bindings::EAGAIN as i32;
    pub(super) const EBUSY: i32 = bindings::EBUSY as i32;
    pub(super) const EBADMSG: i32 = bindings::EBADMSG as i32;
}
