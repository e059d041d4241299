// SPDX-License-Identifier: GPL-2.0-only

//! One open file of `/dev/rtpmgr`: a session, its state and lifecycle
//! (open, release, taking streams out), `poll()` and `mmap`. The ioctls
//! are in `ioctl.rs`, the streams in `stream.rs`, the worker in
//! `worker.rs`, the copying `read()`/`write()` path in `copy_path.rs`,
//! `fdinfo` in `fdinfo.rs`.
//!
//! Locking: `inner` (a mutex) guards everything mutable but the map slot.
//! It is never held while copying from or to user memory (a fault there
//! takes `mmap_lock`), so ioctl arguments are copied in before locking and
//! results copied out after unlocking. The worker takes socket locks under
//! it (`udp_sendmsg`), and setsockopt takes `mmap_lock` under a socket
//! lock, so nothing may take `inner` under `mmap_lock`: `mmap` takes only
//! `mappable`, the map slot's own lock, which is taken last (after `inner`
//! in CONFIGURE_BUFFER, after `mmap_lock` in `mmap`) and under which
//! nothing else is taken. KICK, WAIT and `poll()` take no `inner` either
//! (the worker holds it for whole passes): they use `Lockless` and the
//! shared words, WAIT sleeping with `mappable` as its condition lock.

use crate::abi::{self, SessionCounters};
use crate::mapping::MapCount;
use crate::net::NetWaker;
use crate::ring::{Region, RegionMem};
use crate::stream::Stream;
use kernel::{
    bindings,
    fs::File,
    mm::virt::{flags as vm_flags, VmaNew},
    new_mutex, new_poll_condvar,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        poll::{PollCondVar, PollTable},
        Arc, ArcBorrow, Mutex,
    },
    workqueue::{self, impl_has_work, new_work, Work},
};

pub(crate) fn enotconn() -> Error {
    Error::from_errno(-(bindings::ENOTCONN as i32))
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    // SAFETY: `ktime_get` has no preconditions.
    let ns = unsafe { bindings::ktime_get() };
    u64::try_from(ns).unwrap_or(0)
}

/// A session's state, under its mutex.
pub(crate) struct Inner {
    pub(crate) region: Option<Region>,
    pub(crate) streams: [Option<Stream>; abi::MAX_STREAMS as usize],
    pub(crate) counters: SessionCounters,
    /// Packets ports returned for write(): what read() hands out, and
    /// their bytes (both bounded).
    pub(crate) copy_queue: KVec<KVec<u8>>,
    pub(crate) copy_bytes: usize,
    /// Set on release; the worker stops at once.
    pub(crate) closing: bool,
}

impl Inner {
    pub(crate) fn running(&self) -> usize {
        self.streams.iter().flatten().count()
    }

    pub(crate) fn state(&self) -> u32 {
        match (&self.region, self.running()) {
            (None, _) => abi::STATE_UNCONFIGURED,
            (Some(_), 0) => abi::STATE_CONFIGURED,
            _ => abi::STATE_STREAMING,
        }
    }
}

impl Inner {
    /// Write stream `id`'s counters into its statistics record, if it is a
    /// `udp` stream and they changed since the record was last written
    /// (`running`: still started; the last write, not running, is always
    /// made). A record that does not change is not written: user space
    /// reads the records' cache lines, and 64 idle streams would otherwise
    /// cost 32 KiB of writes per worker pass. Returns whether it wrote.
    pub(crate) fn publish_stats(&mut self, id: usize, running: bool) -> bool {
        let (Some(region), Some(net)) = (
            self.region.as_mut(),
            self.streams
                .get_mut(id)
                .and_then(|s| s.as_mut())
                .and_then(Stream::net_mut),
        ) else {
            return false;
        };
        let c = abi::NetCounters {
            socket_drops: net.sock.drops(),
            ..net.counters()
        };
        if running && net.published == Some(c) {
            return false;
        }
        net.published = Some(c);
        region.publish_stats(id as u32, running, &c, monotonic_ns());
        true
    }

    /// Every `udp` stream's record that changed: after a worker pass that
    /// moved something, and when the fast path (which runs in softirq and
    /// never writes a record) queues the worker for it, a few times a
    /// second.
    pub(crate) fn publish_all_stats(&mut self) {
        for id in 0..self.streams.len() {
            self.publish_stats(id, true);
        }
    }

    /// Take stream `id` out (to be dropped after unlocking); a `udp`
    /// stream's record gets its last counters and loses `STATS_RUNNING`.
    pub(crate) fn take_stream(&mut self, id: usize) -> Option<Stream> {
        self.publish_stats(id, false);
        // A fast path sending through this stream's socket stops first
        // (its datagrams take the worker path, which finds no target): the
        // socket's detach, after unlocking, waits for a hook still using it.
        // The stream itself stops sending through its target too, so
        // whichever of the two is dropped first, no hook still uses it.
        for (k, net) in self.streams.iter_mut().enumerate() {
            let Some(net) = net.as_mut().and_then(Stream::net_mut) else {
                continue;
            };
            if net.fast_linked && (net.forward_to == Some(id) || k == id) {
                // SAFETY: unlinking gives no new pointer to keep alive.
                unsafe { net.sock.fast_link(None) };
                net.fast_linked = false;
            }
        }
        self.streams.get_mut(id)?.take()
    }

    /// Link the fast paths that forward to stream `id`, a `udp` stream
    /// that just started (a relay's target that stopped and runs again).
    pub(crate) fn link_fast_to(&mut self, id: usize) {
        if id >= self.streams.len() {
            return;
        }
        // Two entries of the table at once: split it around `id`.
        let (before, rest) = self.streams.split_at_mut(id);
        let Some((target, after)) = rest.split_first_mut() else {
            return;
        };
        let Some(target) = target
            .as_ref()
            .filter(|t| t.direction & abi::DIR_TO_DEVICE != 0)
            .and_then(Stream::net)
        else {
            return;
        };
        for net in Iterator::chain(before.iter_mut(), after.iter_mut()) {
            let Some(net) = net.as_mut().and_then(Stream::net_mut) else {
                continue;
            };
            if net.fast && !net.fast_linked && net.forward_to == Some(id) {
                // SAFETY: the target is a stream of this table, and
                // `take_stream`, the only way a stream leaves it (and so the
                // only way its socket is dropped), unlinks every socket
                // linked to it first.
                unsafe { net.sock.fast_link(Some(&target.sock)) };
                net.fast_linked = true;
            }
        }
    }
}

/// What `KICK`, `WAIT` and `poll()` read and count without the session
/// mutex, which the worker holds for a whole pass: a process that kicks or
/// waits must not sleep on it behind the worker (a context switch per
/// kick under load). The ring conditions come from the shared words
/// (`RegionMem::readiness`); the rest is here.
pub(crate) struct Lockless {
    /// A region is configured (set by the first CONFIGURE_BUFFER; a
    /// session never loses its region).
    configured: Atomic<bool>,
    /// `Inner::copy_queue.len()`, stored under `inner` after each change
    /// and before the waiters are woken.
    copy_queued: Atomic<usize>,
    /// `SessionCounters::{kicks, waits, wait_timeouts}`.
    kicks: Atomic<u64>,
    waits: Atomic<u64>,
    wait_timeouts: Atomic<u64>,
}

impl Lockless {
    fn new() -> Lockless {
        Lockless {
            configured: Atomic::new(false),
            copy_queued: Atomic::new(0),
            kicks: Atomic::new(0),
            waits: Atomic::new(0),
            wait_timeouts: Atomic::new(0),
        }
    }

    pub(crate) fn set_configured(&self) {
        self.configured.store(true, Release);
    }

    pub(crate) fn configured(&self) -> bool {
        self.configured.load(Acquire)
    }

    /// Call under `inner` after changing the copy queue.
    pub(crate) fn set_copy_queued(&self, n: usize) {
        self.copy_queued.store(n, Relaxed);
    }

    pub(crate) fn copy_queued(&self) -> bool {
        self.copy_queued.load(Relaxed) != 0
    }

    pub(crate) fn count_kick(&self) {
        self.kicks.add(1, Relaxed);
    }

    pub(crate) fn count_wait(&self, timed_out: bool) {
        let c = if timed_out {
            &self.wait_timeouts
        } else {
            &self.waits
        };
        c.add(1, Relaxed);
    }

    /// The session counters with the ones counted here.
    pub(crate) fn fill(&self, c: &mut SessionCounters) {
        c.kicks = self.kicks.load(Relaxed);
        c.waits = self.waits.load(Relaxed);
        c.wait_timeouts = self.wait_timeouts.load(Relaxed);
    }

    /// With the session counters (CONFIGURE_BUFFER, RESET).
    pub(crate) fn zero_counters(&self) {
        for c in [&self.kicks, &self.waits, &self.wait_timeouts] {
            c.store(0, Relaxed);
        }
    }
}

/// A session: the private data of an open `/dev/rtpmgr`.
#[pin_data]
pub(crate) struct Session {
    #[pin]
    pub(crate) inner: Mutex<Inner>,
    /// `WAIT` callers and `poll()` sleep here; the worker wakes them after
    /// each pass, and so do the ioctls that make room or stop streams.
    #[pin]
    pub(crate) waiters: PollCondVar,
    #[pin]
    work: Work<Session>,
    /// The VMAs mapping the region (see `MapCount`).
    pub(crate) maps: Arc<MapCount>,
    /// The configured region's memory, what `mmap` maps: set with the
    /// region by CONFIGURE_BUFFER. Its own lock, never `inner` (see the
    /// module's locking notes); a new VMA is counted in `maps` under it.
    #[pin]
    pub(crate) mappable: Mutex<Option<Arc<RegionMem>>>,
    pub(crate) lockless: Lockless,
}

impl_has_work! {
    impl HasWork<Self> for Session { self.work }
}

impl NetWaker for Session {
    /// A socket callback: data arrived or send space appeared.
    fn wake(this: ArcBorrow<'_, Self>) {
        Session::kick(this);
    }
}

impl Session {
    /// A new session for `open`; its 64 stream entries are built in
    /// place, never on the stack.
    pub(crate) fn open(_file: &File) -> Result<Arc<Session>> {
        let maps = MapCount::new()?;
        Arc::pin_init(
            try_pin_init!(Session {
                inner <- new_mutex!(init!(Inner {
                    region: None,
                    streams <- pin_init::init_array_from_fn(|_| None),
                    counters: SessionCounters::default(),
                    copy_queue: KVec::new(),
                    copy_bytes: 0,
                    closing: false,
                })),
                waiters <- new_poll_condvar!("rtpmgr::Session::waiters"),
                work <- new_work!("rtpmgr::Session::work"),
                maps,
                mappable <- new_mutex!(None, "rtpmgr::Session::mappable"),
                lockless: Lockless::new(),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The file is closed: stop the streams and wait until the worker is
    /// idle for good.
    pub(crate) fn release(self: Arc<Self>) {
        let taken = self.take_streams(|inner| inner.closing = true);
        drop(taken);
        self.wake_waiters();
        // SAFETY: `work` is an initialised work item inside `self`, alive
        // across the call. After it returns no run of the worker is pending
        // or executing, and none can be queued again: the file is going away
        // (no more ioctls), `closing` stops re-queueing, and the sockets
        // whose callbacks queued it are closed.
        unsafe { bindings::flush_work(Work::raw_get(&self.work)) };
    }

    /// Take every stream out in one critical section, with `also` done in
    /// the same one, and return them to be dropped after unlocking: closing
    /// a socket sleeps and takes socket locks, which must never nest inside
    /// `inner`. Nobody sees some streams stopped and others running.
    pub(crate) fn take_streams(&self, also: impl FnOnce(&mut Inner)) -> KVec<Stream> {
        // Room for all of them before locking; should the allocation fail,
        // the streams are taken one critical section each instead.
        let mut taken =
            KVec::with_capacity(abi::MAX_STREAMS as usize, GFP_KERNEL).unwrap_or_default();
        let mut inner = self.inner.lock();
        also(&mut inner);
        for id in 0..abi::MAX_STREAMS as usize {
            if taken.len() == taken.capacity() {
                break;
            }
            if let Some(st) = inner.take_stream(id) {
                // Within the capacity reserved above: no allocation.
                if let Err(e) = taken.push_within_capacity(st) {
                    inner.streams[id] = Some(e.0);
                }
            }
        }
        while let Some(id) = (0..abi::MAX_STREAMS as usize).find(|&id| inner.streams[id].is_some())
        {
            let st = inner.take_stream(id);
            drop(inner);
            drop(st);
            inner = self.inner.lock();
        }
        taken
    }

    /// Queue the worker (already queued: the queued run sees the news).
    pub(crate) fn kick(this: ArcBorrow<'_, Session>) {
        let arc: Arc<Session> = this.into();
        let _ = workqueue::system_unbound().enqueue(arc);
    }

    /// After STOP_STREAM: the stream's slots left in the to-device ring
    /// are invalid now and must be consumed (so the worker runs even if it
    /// slept waiting for the stream's socket, which is gone), and WAIT
    /// sleepers re-check.
    pub(crate) fn after_removal(this: ArcBorrow<'_, Session>) {
        Session::kick(this);
        this.wake_waiters();
    }

    /// Wake `WAIT` and `poll()` after a change of what they wait for (made
    /// before the call). They check under `mappable`, which is held until
    /// a waiter is on the wait queue, so taking it once here orders the
    /// change before their check or the wake-up after their sleep: no
    /// wake-up is lost between a waiter's check and its sleep.
    pub(crate) fn wake_waiters(&self) {
        drop(self.mappable.lock());
        self.waiters.notify_all();
    }

    /// `WAIT`'s and `poll()`'s conditions (`WAIT_*` bits), with `mappable`
    /// held; `None` before CONFIGURE_BUFFER.
    pub(crate) fn ready(&self, mappable: &Option<Arc<RegionMem>>) -> Option<u32> {
        let (from_ready, to_space) = mappable.as_ref()?.readiness();
        let mut ready = 0;
        if from_ready || self.lockless.copy_queued() {
            ready |= abi::WAIT_FROM_DEV_READY;
        }
        if to_space {
            ready |= abi::WAIT_TO_DEV_SPACE;
        }
        Some(ready)
    }

    /// `poll()`: readable while from-device entries (or packets for
    /// `read()`) wait, writable while the to-device ring has a free slot:
    /// `WAIT`'s conditions, on the same wait queue, which the worker wakes
    /// after every productive pass. Nothing before `CONFIGURE_BUFFER`.
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        table.register_wait(file, &self.waiters);
        let Some(ready) = self.ready(&self.mappable.lock()) else {
            return 0;
        };
        let mut mask = 0;
        if ready & abi::WAIT_FROM_DEV_READY != 0 {
            mask |= bindings::POLLIN | bindings::POLLRDNORM;
        }
        if ready & abi::WAIT_TO_DEV_SPACE != 0 {
            mask |= bindings::POLLOUT | bindings::POLLWRNORM;
        }
        mask
    }

    pub(crate) fn mmap(&self, vma: &VmaNew) -> Result {
        // Only the whole region, shared, never executable.
        if vma.flags() & vm_flags::SHARED == 0 || vma.executable() {
            return Err(EINVAL);
        }
        // SAFETY: `vma` is a valid VMA being set up; reading its page offset
        // has no side effects.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        if pgoff != 0 {
            return Err(EINVAL);
        }
        vma.try_clear_mayexec()?;
        // Not inherited by fork, cannot be grown by mremap, and kept out of
        // core dumps (the rings are packet data of the whole session).
        vma.set_dontcopy();
        vma.set_dontexpand();
        vma.set_dontdump();
        // Not `inner`: we hold `mmap_lock` (the module's locking notes).
        let mappable = self.mappable.lock();
        let mem = mappable.as_ref().ok_or(EINVAL)?;
        let len = vma.end() - vma.start();
        if len != mem.len() {
            return Err(EINVAL);
        }
        let mixed = vma.set_mixedmap();
        for i in 0..len / PAGE_SIZE {
            let page = mem.page(i).ok_or(EINVAL)?;
            mixed.vm_insert_page(vma.start() + i * PAGE_SIZE, &page)?;
        }
        // Counted under the lock CONFIGURE_BUFFER checks it under.
        MapCount::attach(&self.maps, vma);
        Ok(())
    }
}
