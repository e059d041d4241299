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
//!
//! The fast path (issue 18): a receiving stream that forwards to another
//! `udp` stream without the tap has the helper's UDP encapsulation hook
//! installed, which forwards in softirq, in the same socket buffer
//! ([`NetSocket::fast_link`]). Every datagram of a socket, fast or not, is
//! judged by the socket's [`RtpJudge`] under the helper's lock.

use crate::abi;
use crate::ring::SharedBytes;
use crate::stream::RtpJudge;
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
        fast: bool,
        ready: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
        judge: JudgeFn,
        jctx: *mut c_void,
    ) -> c_int;
    fn rtpmgr_net_fast_link(n: *mut RtpmgrNet, dst: *mut RtpmgrNet);
    fn rtpmgr_net_judge(
        n: *mut RtpmgrNet,
        head: *const u8,
        head_len: u32,
        len: u32,
        last: u8,
        now: u64,
    ) -> bool;
    fn rtpmgr_net_with_judge(
        n: *mut RtpmgrNet,
        f: unsafe extern "C" fn(*mut c_void, *mut c_void),
        arg: *mut c_void,
    );
    fn rtpmgr_net_fast_counters(n: *mut RtpmgrNet, out: *mut FastCounters);
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
// rtpmgr_net.h's RTPMGR_JUDGE_HEAD.
const _: () = assert!(abi::RTP_CHECK_BYTES == 76);

/// rtpmgr_net.h's `rtpmgr_judge_fn`.
type JudgeFn = unsafe extern "C" fn(*mut c_void, *const u8, u32, u32, u8, u64) -> bool;

/// rtpmgr_net.h's `struct rtpmgr_fast_counters`: what the helper counts
/// with atomics (the fast path's datagrams, and the data-ready wake-ups).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct FastCounters {
    pub(crate) wakeups: u64,
    pub(crate) fwd_packets: u64,
    pub(crate) fwd_bytes: u64,
    pub(crate) copies: u64,
    pub(crate) malformed: u64,
    pub(crate) fwd_drops: u64,
    pub(crate) tx_packets: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) tx_errors: u64,
}

/// The judge the helper calls, in softirq (the fast path) or with BH
/// disabled (`rtpmgr_net_judge`), always under its lock.
///
/// # Safety
///
/// `jctx` must be the `KBox::<RtpJudge>::into_raw` pointer of a live
/// [`NetSocket`] (freed only after the detach), and the caller must hold
/// the helper's lock, which makes this the only access to it; `head` must
/// be valid for reads of `head_len` bytes.
unsafe extern "C" fn judge_cb(
    jctx: *mut c_void,
    head: *const u8,
    head_len: u32,
    len: u32,
    last: u8,
    now: u64,
) -> bool {
    // SAFETY: by the function's contract `jctx` is a live `RtpJudge` that
    // nobody else accesses while the helper's lock is held.
    let j = unsafe { &mut *jctx.cast::<RtpJudge>() };
    // SAFETY: by the function's contract.
    let head = unsafe { core::slice::from_raw_parts(head, head_len as usize) };
    j.accept(len as usize, head, last, now)
}

/// Fills the RTP fields of the `NetCounters` at `arg` from the judge.
///
/// # Safety
///
/// As [`judge_cb`] for `jctx`; `arg` must point to a `NetCounters` the
/// caller borrows mutably for the call.
unsafe extern "C" fn fill_cb(jctx: *mut c_void, arg: *mut c_void) {
    // SAFETY: by the function's contract (the lock is held).
    let j = unsafe { &*jctx.cast::<RtpJudge>() };
    // SAFETY: by the function's contract.
    let c = unsafe { &mut *arg.cast::<abi::NetCounters>() };
    j.fill(c);
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

/// Validate a `START_NET_STREAM` argument (copied from user space, so
/// hostile) by the ABI's rules, which rtpmgrd applies too
/// (`NetStreamSpec::check`). The socket itself is checked when it is
/// attached, the target's state by the session under its lock.
pub(crate) fn check_spec(spec: &abi::NetStreamSpec) -> Result<abi::NetSpec> {
    spec.check().map_err(|e| match e {
        abi::NetSpecError::Fd => EBADF,
        _ => EINVAL,
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
/// `W`, called once, in `drop`, after the detach. `judge` is
/// `KBox::into_raw` of the socket's judge, reached only through the helper
/// (under its lock) and freed in `drop` after the detach.
pub(crate) struct NetSocket {
    raw: NonNull<RtpmgrNet>,
    ctx: *const c_void,
    release: unsafe fn(*const c_void),
    judge: *mut RtpJudge,
    file: ARef<File>,
}

// SAFETY: the helper's object may be used from any thread; every method
// that touches it takes `&self` only for calls the helper allows
// concurrently with the softirq callbacks, and the owner's lock serialises
// the worker's calls. `ctx` is an `Arc<W>` with `W: Send + Sync`
// (`NetWaker`); `ARef<File>` is `Send + Sync`; `judge` is only reached
// through the helper, under its lock.
unsafe impl Sync for NetSocket {}
// SAFETY: as above; nothing in it is tied to the creating thread.
unsafe impl core::marker::Send for NetSocket {}

impl NetSocket {
    /// Take the UDP socket behind descriptor `fd` of the calling process
    /// for a stream that receives and/or sends, with callbacks that wake
    /// `waker`; the socket holds a reference to its file and to `waker`
    /// until it is dropped. With `fast` (a receiving stream), the fast
    /// path's hook is installed too, idle until [`Self::fast_link`]. Must
    /// be called from the ioctl (the descriptor is the caller's).
    pub(crate) fn attach<W: NetWaker>(
        fd: u32,
        receives: bool,
        sends: bool,
        fast: bool,
        waker: Arc<W>,
        judge: RtpJudge,
    ) -> Result<Self> {
        let judge = KBox::into_raw(KBox::new(judge, GFP_KERNEL_ACCOUNT)?);
        // Given back unless the attach succeeds.
        let free_judge = || {
            // SAFETY: `judge` came from `KBox::into_raw` above and the
            // helper kept no pointer to it (the attach did not succeed).
            drop(unsafe { KBox::from_raw(judge) });
        };
        let file = match LocalFile::fget(fd) {
            Ok(f) => f,
            Err(_) => {
                free_judge();
                return Err(EBADF);
            }
        };
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
        // until after the detach; so do `judge_cb` and `judge`, which is
        // freed only after the detach.
        let rc = unsafe {
            rtpmgr_net_attach(
                &mut raw,
                file.as_ptr().cast::<c_void>(),
                receives,
                sends,
                fast,
                ready::<W>,
                ctx.cast_mut().cast::<c_void>(),
                judge_cb,
                judge.cast::<c_void>(),
            )
        };
        match NonNull::new(raw).filter(|_| rc >= 0) {
            Some(raw) => Ok(NetSocket {
                raw,
                ctx: ctx.cast::<c_void>(),
                release: release::<W>,
                judge,
                file,
            }),
            None => {
                free_judge();
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

    /// Point this (receiving, `fast`) socket's fast path at `dst`'s socket,
    /// or stop it with `None`.
    ///
    /// # Safety
    ///
    /// A `dst` given here must stay attached until this socket is linked
    /// elsewhere or unlinked (`fast_link(None)`) and only then be dropped:
    /// its detach waits (`synchronize_net`) for a hook that still sends
    /// through it, but the hook finds it through this link, so a link to a
    /// dropped socket is a use after free in softirq.
    pub(crate) unsafe fn fast_link(&self, dst: Option<&NetSocket>) {
        let d = dst.map_or(core::ptr::null_mut(), |d| d.raw.as_ptr());
        // SAFETY: both are attached (type invariant); the helper only
        // stores the pointer under RCU, and the caller's contract keeps `d`
        // attached for as long as the link stands.
        unsafe { rtpmgr_net_fast_link(self.raw.as_ptr(), d) };
    }

    /// Judge a datagram the worker received (see [`RtpJudge::accept`]).
    pub(crate) fn judge(&self, len: usize, head: &[u8], last: u8, now: u64) -> bool {
        let head = &head[..head.len().min(abi::RTP_CHECK_BYTES)];
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        // SAFETY: `raw` is attached (type invariant); `head` is valid for
        // reads of its length, which fits u32.
        unsafe {
            rtpmgr_net_judge(
                self.raw.as_ptr(),
                head.as_ptr(),
                head.len() as u32,
                len,
                last,
                now,
            )
        }
    }

    /// Fill the RTP fields of `c` from the judge.
    pub(crate) fn fill_judged(&self, c: &mut abi::NetCounters) {
        // SAFETY: `raw` is attached; `fill_cb` gets the socket's judge
        // under the helper's lock and `c`, borrowed mutably for the call.
        unsafe {
            rtpmgr_net_with_judge(
                self.raw.as_ptr(),
                fill_cb,
                core::ptr::from_mut(c).cast::<c_void>(),
            )
        };
    }

    /// What the helper counted.
    pub(crate) fn fast_counters(&self) -> FastCounters {
        let mut f = FastCounters::default();
        // SAFETY: `raw` is attached; `f` is ours, of the C layout.
        unsafe { rtpmgr_net_fast_counters(self.raw.as_ptr(), &mut f) };
        f
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
        // SAFETY: `judge` came from `KBox::into_raw` and is freed only here
        // (type invariant); after the detach the helper calls nothing with it.
        drop(unsafe { KBox::from_raw(self.judge) });
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
