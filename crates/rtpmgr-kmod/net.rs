// SPDX-License-Identifier: GPL-2.0-only

//! The `udp` port: a UDP socket of user space's per stream.
//!
//! User space creates, binds, connects and joins the socket and passes its
//! descriptor to `START_NET_STREAM` (ABI version 2), as KCM and l2tp take
//! theirs: its credentials, LSM hooks and namespace decided everything
//! about the socket. The module keeps a reference to the socket's file,
//! installs its callbacks on it and receives and sends on it in the
//! session worker.
//!
//! 7.2 has no Rust socket abstractions, so the socket access lives in the C
//! helper `rtpmgr_net.c` (its header says why); this file declares that
//! helper's functions and wraps them in [`NetSocket`], a safe owner whose
//! methods take and return only Rust types. The socket's callbacks only
//! wake the socket's owner ([`NetWaker`]), which queues its worker. This
//! file knows nothing of sessions.

use crate::abi;
use crate::ring::SharedBytes;
use core::ptr::NonNull;
use kernel::{
    ffi::{c_int, c_long, c_void},
    fs::{File, LocalFile},
    prelude::*,
    sync::{aref::ARef, Arc, ArcBorrow},
};

/// The C helper's `struct rtpmgr_net`; only ever behind a pointer.
#[repr(C)]
struct RtpmgrNet {
    _opaque: [u8; 0],
}

// The helper's interface: rtpmgr_net.h, kept in step by hand.
extern "C" {
    fn rtpmgr_net_attach(
        out: *mut *mut RtpmgrNet,
        file: *mut c_void,
        receives: bool,
        sends: bool,
        ready: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
    ) -> c_int;
    fn rtpmgr_net_detach(n: *mut RtpmgrNet);
    fn rtpmgr_net_rx_pending(n: *mut RtpmgrNet) -> bool;
    fn rtpmgr_net_drops(n: *mut RtpmgrNet) -> u64;
    fn rtpmgr_net_recv(
        n: *mut RtpmgrNet,
        dst: *mut u8,
        cap: u32,
        head: *mut u8,
        head_cap: u32,
        last: *mut u8,
        ts: *mut u8,
        ts_cap: u32,
    ) -> c_long;
    fn rtpmgr_net_send(n: *mut RtpmgrNet, buf: *const u8, len: u32) -> c_int;
}

// rtpmgr_net.h's RTPMGR_TS_PACKET and RTPMGR_TS_HEAD.
const _: () = assert!(crate::ts_head::PACKET_LEN == 188 && crate::ts_head::HEAD_LEN == 6);

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
/// `ctx` must be the `Arc::<W>::into_raw` pointer a live [`NetSocket`]
/// holds: that socket keeps the reference until after `rtpmgr_net_detach`
/// has detached the callbacks and waited for running ones.
unsafe extern "C" fn ready<W: NetWaker>(ctx: *mut c_void) {
    // SAFETY: by the function's contract `ctx` came from `Arc::into_raw` of
    // an `Arc<W>` that the socket still holds, so the count is above zero
    // for the whole call.
    let w = unsafe { ArcBorrow::from_raw(ctx.cast_const().cast::<W>()) };
    W::wake(w);
}

/// Gives back the reference a [`NetSocket`] holds for its callbacks.
///
/// # Safety
///
/// `ctx` must be an `Arc::<W>::into_raw` pointer whose reference the caller
/// owns and gives up.
unsafe fn release<W: NetWaker>(ctx: *const c_void) {
    // SAFETY: by the function's contract.
    drop(unsafe { Arc::from_raw(ctx.cast::<W>()) });
}

/// A validated `START_NET_STREAM` argument.
pub(crate) struct NetSpec {
    pub(crate) stream_id: usize,
    pub(crate) direction: u32,
    pub(crate) flags: u32,
    pub(crate) forward_to: Option<usize>,
    pub(crate) clock_rate: u32,
    pub(crate) fd: u32,
}

/// Validate a `START_NET_STREAM` argument (copied from user space, so
/// hostile). The socket itself is checked when it is attached.
pub(crate) fn check_spec(spec: &abi::NetStreamSpec) -> Result<NetSpec> {
    if spec.flags & !abi::NET_F_MASK != 0 || spec.reserved != 0 {
        return Err(EINVAL);
    }
    // A datagram is RTP or raw MPEG-TS, not both.
    if spec.flags & abi::NET_F_RTP != 0 && spec.flags & abi::NET_F_TS != 0 {
        return Err(EINVAL);
    }
    if spec.stream_id >= abi::MAX_STREAMS
        || spec.direction == 0
        || spec.direction & !abi::DIR_BOTH != 0
    {
        return Err(EINVAL);
    }
    // Forwarding is for receiving streams, never to itself; the target's
    // state is checked by the session under its lock. The tap needs a
    // forward target (without one everything goes to the ring anyway).
    let forward_to = if spec.forward_to != abi::NET_NO_FORWARD {
        if spec.direction != abi::DIR_FROM_DEVICE
            || spec.forward_to >= abi::MAX_STREAMS
            || spec.forward_to == spec.stream_id
        {
            return Err(EINVAL);
        }
        Some(spec.forward_to as usize)
    } else if spec.flags & abi::NET_F_TAP != 0 {
        return Err(EINVAL);
    } else {
        None
    };
    let fd = u32::try_from(spec.fd).map_err(|_| EBADF)?;
    Ok(NetSpec {
        stream_id: spec.stream_id as usize,
        direction: spec.direction,
        flags: spec.flags,
        forward_to,
        clock_rate: spec.clock_rate,
        fd,
    })
}

/// What one receive brought.
pub(crate) enum Recv {
    /// Nothing waits.
    Empty,
    /// A datagram of `len` bytes; `min(len, capacity)` were written. `head`
    /// and `last` are private copies of its first bytes and last byte.
    Datagram {
        len: usize,
        head: [u8; abi::RTP_CHECK_BYTES],
        last: u8,
    },
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

/// A UDP socket of user space's with our callbacks installed, waking its
/// owner. The owner's type is erased (`ctx` and the `release` that goes
/// with it), so whoever holds a socket need not name its owner's type.
///
/// Invariants: `raw` came from a successful `rtpmgr_net_attach` on `file`'s
/// socket and is detached exactly once, in `drop`, before `file` is
/// released; `ctx` is `Arc::<W>::into_raw` of a reference this socket owns
/// (the callbacks' context) and `release` is `release::<W>` for that same
/// `W`, called once, in `drop`, after the detach.
pub(crate) struct NetSocket {
    raw: NonNull<RtpmgrNet>,
    ctx: *const c_void,
    release: unsafe fn(*const c_void),
    file: ARef<File>,
}

// SAFETY: the helper's object may be used from any thread; every method
// that touches it takes `&self` only for calls the helper allows
// concurrently with the softirq callbacks, and the owner's lock serialises
// the worker's calls. `ctx` is an `Arc<W>` with `W: Send + Sync`
// (`NetWaker`); `ARef<File>` is `Send + Sync`.
unsafe impl Sync for NetSocket {}
// SAFETY: as above; nothing in it is tied to the creating thread.
unsafe impl core::marker::Send for NetSocket {}

impl NetSocket {
    /// Take the UDP socket behind descriptor `fd` of the calling process
    /// for a stream that receives and/or sends, with callbacks that wake
    /// `waker`; the socket holds a reference to its file and to `waker`
    /// until it is dropped. Must be called from the ioctl (the descriptor
    /// is the caller's).
    pub(crate) fn attach<W: NetWaker>(
        fd: u32,
        receives: bool,
        sends: bool,
        waker: Arc<W>,
    ) -> Result<Self> {
        let file = LocalFile::fget(fd).map_err(|_| EBADF)?;
        // SAFETY: the ioctl does not use the file position of this
        // descriptor (nor of any other), so no fdget_pos region is active
        // on this thread for it.
        let file = unsafe { LocalFile::assume_no_fdget_pos(file) };
        let mut raw: *mut RtpmgrNet = core::ptr::null_mut();
        let ctx = Arc::into_raw(waker);
        // SAFETY: `raw` is a valid out pointer; `file` is a file we hold a
        // reference to for the socket's whole life (it is kept in the
        // `NetSocket`, released after the detach); `ready::<W>` with `ctx`
        // meets `ready`'s contract: the reference stays with the socket
        // until after the detach.
        let rc = unsafe {
            rtpmgr_net_attach(
                &mut raw,
                file.as_ptr().cast::<c_void>(),
                receives,
                sends,
                ready::<W>,
                ctx.cast_mut().cast::<c_void>(),
            )
        };
        match NonNull::new(raw).filter(|_| rc >= 0) {
            Some(raw) => Ok(NetSocket {
                raw,
                ctx: ctx.cast::<c_void>(),
                release: release::<W>,
                file,
            }),
            None => {
                // SAFETY: `ctx` came from `Arc::into_raw` above and nothing
                // kept it (the attach failed, nothing was installed).
                drop(unsafe { Arc::from_raw(ctx) });
                Err(if rc < 0 {
                    Error::from_errno(rc)
                } else {
                    ENOMEM
                })
            }
        }
    }

    /// Datagrams the socket dropped before we read them.
    pub(crate) fn drops(&self) -> u64 {
        // SAFETY: `raw` is attached (type invariant); the helper only reads
        // an atomic counter of the socket.
        unsafe { rtpmgr_net_drops(self.raw.as_ptr()) }
    }

    /// Whether a datagram waits.
    pub(crate) fn rx_pending(&self) -> bool {
        // SAFETY: `raw` is attached (type invariant).
        unsafe { rtpmgr_net_rx_pending(self.raw.as_ptr()) }
    }

    /// Dequeue one datagram into `dst`; with `ts`, private copies of the
    /// heads of its transport packets if it is whole ones (`ts_head`).
    pub(crate) fn recv(&self, dst: &mut SharedBytes<'_>, ts: Option<&mut [u8]>) -> Recv {
        let mut head = [0u8; abi::RTP_CHECK_BYTES];
        let mut last = 0u8;
        let cap = u32::try_from(dst.len()).unwrap_or(u32::MAX);
        let (ts, ts_cap) = match ts {
            Some(t) => (t.as_mut_ptr(), u32::try_from(t.len()).unwrap_or(u32::MAX)),
            None => (core::ptr::null_mut(), 0),
        };
        // SAFETY: `raw` is attached; `dst` is valid for writes of `cap`
        // bytes (`SharedBytes` invariant); `head` and `last` are our own
        // buffers of the sizes given; `ts` is null or our own buffer of
        // `ts_cap` bytes, borrowed mutably for the call.
        let rc = unsafe {
            rtpmgr_net_recv(
                self.raw.as_ptr(),
                dst.as_mut_ptr(),
                cap,
                head.as_mut_ptr(),
                head.len() as u32,
                &mut last,
                ts,
                ts_cap,
            )
        };
        match usize::try_from(rc) {
            Ok(len) => Recv::Datagram { len, head, last },
            Err(_) if rc == -(errno::EAGAIN as c_long) => Recv::Empty,
            Err(_) if rc == -(errno::EBADMSG as c_long) => Recv::BadChecksum,
            Err(_) => Recv::Error,
        }
    }

    /// Send one datagram without blocking.
    pub(crate) fn send(&self, pkt: &SharedBytes<'_>) -> SendResult {
        let len = u32::try_from(pkt.len()).unwrap_or(u32::MAX);
        // SAFETY: `raw` is attached; `pkt` is valid for reads of its length
        // (`SharedBytes` invariant); the stack only copies from it.
        let rc = unsafe { rtpmgr_net_send(self.raw.as_ptr(), pkt.as_ptr(), len) };
        match rc {
            n if n >= 0 => SendResult::Sent,
            n if n == -errno::EAGAIN => SendResult::WouldBlock,
            n if n == -errno::EBUSY => SendResult::Retry,
            _ => SendResult::Failed,
        }
    }
}

impl Drop for NetSocket {
    fn drop(&mut self) {
        // SAFETY: `raw` is attached and this is its only detach (type
        // invariant); `file` still holds the socket. It sleeps: sockets
        // are dropped in process context.
        unsafe { rtpmgr_net_detach(self.raw.as_ptr()) };
        // SAFETY: `release` goes with `ctx` and the reference is ours
        // (type invariant); the detach removed the callbacks and waited for
        // running ones, so nothing uses it any more.
        unsafe { (self.release)(self.ctx) };
        // `file` is released after this (fput): the socket closes then if
        // user space closed its descriptor.
        let _ = &self.file;
    }
}

/// The errnos the helper returns that we tell apart.
mod errno {
    use kernel::bindings;
    pub(super) const EAGAIN: i32 = bindings::EAGAIN as i32;
    pub(super) const EBUSY: i32 = bindings::EBUSY as i32;
    pub(super) const EBADMSG: i32 = bindings::EBADMSG as i32;
}
