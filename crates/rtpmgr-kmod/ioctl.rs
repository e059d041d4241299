// SPDX-License-Identifier: GPL-2.0-only

//! The ioctls of `/dev/rtpmgr`: every argument is copied in from user
//! space (so hostile), checked, and answered with a result or an errno.

use crate::abi::{self, Geometry, IoctlArg, NetCounters, SessionCounters, StreamCounters};
use crate::net::NetSocket;
use crate::port;
use crate::ring::Region;
use crate::session::{enotconn, Inner, Session};
use crate::stream::{
    Backlog, Endpoint, NetStream, RtpJudge, Stream, TsState, BACKLOG_BYTES, BOUNCE_BYTES,
};
use kernel::{
    alloc::VVec,
    prelude::*,
    sync::{Arc, ArcBorrow},
    time::msecs_to_jiffies,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

// The ABI structures are `#[repr(C)]`, made only of integer fields and byte
// arrays with explicit padding fields (their sizes are pinned in rtpmgr-abi's
// layout tests), so every bit pattern is valid and they contain no
// uninitialised bytes: they may be read from and written to user memory.
// SAFETY: see above.
unsafe impl FromBytes for abi::BufferConfig {}
// SAFETY: see above.
unsafe impl AsBytes for abi::BufferConfig {}
// SAFETY: see above.
unsafe impl FromBytes for abi::StreamSpec {}
// SAFETY: see above.
unsafe impl FromBytes for abi::StreamStop {}
// SAFETY: see above.
unsafe impl FromBytes for abi::Status {}
// SAFETY: see above.
unsafe impl AsBytes for abi::Status {}
// SAFETY: see above.
unsafe impl FromBytes for abi::WaitArgs {}
// SAFETY: see above.
unsafe impl AsBytes for abi::WaitArgs {}
// SAFETY: see above.
unsafe impl AsBytes for abi::Info {}
// SAFETY: see above.
unsafe impl FromBytes for abi::PortInfo {}
// SAFETY: see above.
unsafe impl AsBytes for abi::PortInfo {}
// SAFETY: see above.
unsafe impl FromBytes for abi::SlotHeader {}
// SAFETY: see above.
unsafe impl AsBytes for abi::SlotHeader {}
// SAFETY: see above.
unsafe impl FromBytes for abi::NetStreamSpec {}
// SAFETY: see above.
unsafe impl FromBytes for abi::NetStatus {}
// SAFETY: see above.
unsafe impl AsBytes for abi::NetStatus {}

pub(crate) fn read_arg<T: FromBytes + IoctlArg>(user: UserPtr) -> Result<T> {
    let v: T = UserSlice::new(user, core::mem::size_of::<T>())
        .reader()
        .read()?;
    Ok(v)
}

fn write_arg<T: AsBytes>(user: UserPtr, v: &T) -> Result {
    UserSlice::new(user, core::mem::size_of::<T>())
        .writer()
        .write(v)
}

fn check_size(size: u32, want: u32) -> Result {
    if size == want {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

impl Session {
    pub(crate) fn ioctl(this: ArcBorrow<'_, Session>, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserPtr::from_addr(arg);
        match cmd {
            abi::RTPMGR_IOC_GET_INFO => this.get_info(user),
            abi::RTPMGR_IOC_CONFIGURE_BUFFER => this.configure(user),
            abi::RTPMGR_IOC_START_STREAM => this.start_stream(user),
            abi::RTPMGR_IOC_STOP_STREAM => Session::stop_stream(this, user),
            abi::RTPMGR_IOC_GET_STATUS => this.get_status(user),
            abi::RTPMGR_IOC_RESET => Session::reset(this),
            abi::RTPMGR_IOC_KICK => {
                // Without the session mutex: the worker may hold it for a
                // pass, and a kick must not wait for that.
                if !this.lockless.configured() {
                    return Err(enotconn());
                }
                this.lockless.count_kick();
                Session::kick(this);
                Ok(0)
            }
            abi::RTPMGR_IOC_WAIT => this.wait(user),
            abi::RTPMGR_IOC_GET_PORT => this.get_port(user),
            abi::RTPMGR_IOC_START_NET_STREAM => {
                let r = this.start_net_stream(this.into(), user);
                // Datagrams may have arrived before the stream was in the
                // table: look once.
                if r.is_ok() {
                    Session::kick(this);
                }
                r
            }
            abi::RTPMGR_IOC_GET_NET_STATUS => this.get_net_status(user),
            _ => Err(ENOTTY),
        }
    }

    fn get_info(&self, user: UserPtr) -> Result<isize> {
        let info = abi::Info {
            size: <abi::Info as IoctlArg>::SIZE,
            abi_version: abi::ABI_VERSION,
            features: abi::FEATURE_MMAP_RINGS
                | abi::FEATURE_RW_COPY
                | abi::FEATURE_NEED_WAKEUP
                | abi::FEATURE_NET_STREAMS
                | abi::FEATURE_STATS_AREA
                | abi::FEATURE_POLL,
            max_streams: abi::MAX_STREAMS,
            min_slot_size: abi::MIN_SLOT_SIZE,
            max_slot_size: abi::MAX_SLOT_SIZE,
            min_slot_count: abi::MIN_SLOT_COUNT,
            max_slot_count: abi::MAX_SLOT_COUNT,
            port_count: port::count(),
            slot_header_size: abi::SLOT_HEADER_SIZE,
            max_session_bytes: crate::max_session_bytes(),
        };
        write_arg(user, &info)?;
        Ok(0)
    }

    fn get_port(&self, user: UserPtr) -> Result<isize> {
        let mut p: abi::PortInfo = read_arg(user)?;
        check_size(p.size, <abi::PortInfo as IoctlArg>::SIZE)?;
        let port = port::get(p.index).ok_or(ENODEV)?;
        p.kind = port.kind();
        p.users = port.users().load(kernel::sync::atomic::Relaxed);
        p.set_name(port.name());
        write_arg(user, &p)?;
        Ok(0)
    }

    fn configure(&self, user: UserPtr) -> Result<isize> {
        let mut cfg: abi::BufferConfig = read_arg(user)?;
        check_size(cfg.size, <abi::BufferConfig as IoctlArg>::SIZE)?;
        if cfg.flags != 0 {
            return Err(EINVAL);
        }
        let geometry = Geometry::new(cfg.slot_count, cfg.slot_size, crate::max_session_bytes())
            .map_err(|e| match e {
                abi::GeometryError::TooLarge => ENOMEM,
                _ => EINVAL,
            })?;
        let busy = |inner: &Inner| inner.running() > 0 || self.maps.mapped();
        if busy(&self.inner.lock()) {
            return Err(EBUSY);
        }
        // Allocate (and charge) without the lock: it may sleep for a while.
        let region = Region::new(geometry)?;
        cfg.mmap_size = region.mmap_size() as u64;
        cfg.to_dev_slots_offset = geometry.to_dev_slots_offset();
        cfg.from_dev_slots_offset = geometry.from_dev_slots_offset();
        let mem = region.mem();
        let old = {
            let mut inner = self.inner.lock();
            // `mmap` counts a new mapping under `mappable`, so no mapping
            // of the old region can appear between the check and the swap.
            let mut mappable = self.mappable.lock();
            if busy(&inner) {
                return Err(EBUSY);
            }
            inner.counters = SessionCounters::default();
            self.lockless.zero_counters();
            inner.copy_queue.clear();
            self.lockless.set_copy_queued(0);
            inner.copy_bytes = 0;
            self.lockless.set_configured();
            (inner.region.replace(region), mappable.replace(mem))
        };
        // Unmapped (checked above): freeing it and giving back its charge
        // (which takes the configuring process's mmap lock) happen here,
        // without the session's locks.
        drop(old);
        // A WAIT asleep on the old region: the new one has room.
        self.wake_waiters();
        write_arg(user, &cfg)?;
        Ok(0)
    }

    fn start_stream(&self, user: UserPtr) -> Result<isize> {
        let spec: abi::StreamSpec = read_arg(user)?;
        check_size(spec.size, <abi::StreamSpec as IoctlArg>::SIZE)?;
        if spec.flags != 0 || spec.reserved != 0 {
            return Err(EINVAL);
        }
        if spec.stream_id >= abi::MAX_STREAMS
            || spec.direction == 0
            || spec.direction & !abi::DIR_BOTH != 0
        {
            return Err(EINVAL);
        }
        let port = port::get(spec.port).ok_or(ENODEV)?;
        let mut inner = self.inner.lock();
        if inner.region.is_none() {
            return Err(enotconn());
        }
        let slot = &mut inner.streams[spec.stream_id as usize];
        if slot.is_some() {
            return Err(EEXIST);
        }
        let counters = StreamCounters {
            running: 1,
            port: spec.port,
            direction: spec.direction,
            ..Default::default()
        };
        *slot = Some(Stream::new(Endpoint::Port(port), spec.direction, counters));
        Ok(0)
    }

    /// `START_NET_STREAM`: validate the argument, take the caller's socket
    /// (its file, checked and with our callbacks installed) without
    /// `inner` held, then publish the stream. The socket holds `me` (this
    /// session) for its callbacks.
    fn start_net_stream(&self, me: Arc<Session>, user: UserPtr) -> Result<isize> {
        let spec: abi::NetStreamSpec = read_arg(user)?;
        check_size(spec.size, <abi::NetStreamSpec as IoctlArg>::SIZE)?;
        let spec = crate::net::check_spec(&spec)?;
        let check_target = |inner: &Inner| -> Result {
            let Some(k) = spec.forward_to else {
                return Ok(());
            };
            match inner.streams[k].as_ref() {
                None => Err(ENOENT),
                Some(t) if t.direction & abi::DIR_TO_DEVICE == 0 => Err(EINVAL),
                Some(_) => Ok(()),
            }
        };
        {
            let inner = self.inner.lock();
            if inner.region.is_none() {
                return Err(enotconn());
            }
            if inner.streams[spec.stream_id].is_some() {
                return Err(EEXIST);
            }
            check_target(&inner)?;
        }
        // Allocated here, in the caller's context, and charged to it.
        let bounce = match spec.forward_to {
            Some(_) => {
                VVec::from_elem(0u8, BOUNCE_BYTES, GFP_KERNEL_ACCOUNT).map_err(|_| ENOMEM)?
            }
            None => VVec::new(),
        };
        let sends = spec.direction & abi::DIR_TO_DEVICE != 0;
        let receives = spec.direction & abi::DIR_FROM_DEVICE != 0;
        let backlog = if sends {
            Some(Backlog::new(BACKLOG_BYTES)?)
        } else {
            None
        };
        let ts = if spec.flags & abi::NET_F_TS != 0 {
            Some(TsState::new()?)
        } else {
            None
        };
        // The fast path: udp -> udp forwarding without the tap (which needs
        // the ring) and without NET_F_TS (whose judge is the worker's),
        // unless the module parameter `fast_path` is 0. A target that is
        // not a `udp` stream leaves the hook idle.
        let fast = crate::fast_path()
            && spec.forward_to.is_some()
            && spec.flags & (abi::NET_F_TAP | abi::NET_F_TS) == 0;
        let judge = RtpJudge::new(spec.flags, spec.clock_rate);
        let sock = NetSocket::attach(spec.fd, receives, sends, fast, me, judge)?;
        let ns = NetStream {
            sock,
            flags: spec.flags,
            counters: NetCounters::default(),
            forward_to: spec.forward_to,
            bounce,
            backlog,
            ts,
            fast,
            fast_linked: false,
            published: None,
        };
        // On failure the socket is given back here, without `inner` held.
        let ns = KBox::new(ns, GFP_KERNEL_ACCOUNT)?;
        let mut inner = self.inner.lock();
        // Checked again: the lock was dropped while the socket was taken.
        let free =
            inner.region.is_some() && inner.streams[spec.stream_id].is_none() && !inner.closing;
        let target = check_target(&inner);
        if !free || target.is_err() {
            drop(inner);
            drop(ns);
            return Err(if free {
                target.err().unwrap_or(EINVAL)
            } else {
                EEXIST
            });
        }
        let counters = StreamCounters {
            running: 1,
            port: abi::PORT_UDP,
            direction: spec.direction,
            ..Default::default()
        };
        inner.streams[spec.stream_id] =
            Some(Stream::new(Endpoint::Udp(ns), spec.direction, counters));
        // The fast path: this stream's to its target, others' to this one
        // (a relay's target that stopped and runs again).
        if let Some(k) = spec.forward_to {
            inner.link_fast_to(k);
        }
        inner.link_fast_to(spec.stream_id);
        // Its record is valid (zero counters, running) from the start.
        inner.publish_stats(spec.stream_id, true);
        Ok(0)
    }

    fn get_net_status(&self, user: UserPtr) -> Result<isize> {
        let mut st: abi::NetStatus = read_arg(user)?;
        check_size(st.size, <abi::NetStatus as IoctlArg>::SIZE)?;
        if st.stream_id >= abi::MAX_STREAMS || st._pad != [0; 2] {
            return Err(EINVAL);
        }
        let mut inner = self.inner.lock();
        st.counters = inner.streams[st.stream_id as usize]
            .as_ref()
            .and_then(Stream::net)
            .map(|n| abi::NetCounters {
                socket_drops: n.sock.drops(),
                ..n.counters()
            })
            .ok_or(ENOENT)?;
        // The record says the same if the counters changed since it was
        // last written (the fast path does not write it); an unchanged
        // record is left as it is.
        inner.publish_stats(st.stream_id as usize, true);
        drop(inner);
        write_arg(user, &st)?;
        Ok(0)
    }

    fn stop_stream(this: ArcBorrow<'_, Session>, user: UserPtr) -> Result<isize> {
        let stop: abi::StreamStop = read_arg(user)?;
        check_size(stop.size, <abi::StreamStop as IoctlArg>::SIZE)?;
        if stop.stream_id >= abi::MAX_STREAMS {
            return Err(EINVAL);
        }
        // Taken under the lock, dropped (a socket closed) after it.
        let st = this
            .inner
            .lock()
            .take_stream(stop.stream_id as usize)
            .ok_or(ENOENT)?;
        drop(st);
        Session::after_removal(this);
        Ok(0)
    }

    fn get_status(&self, user: UserPtr) -> Result<isize> {
        let mut status: abi::Status = read_arg(user)?;
        check_size(status.size, <abi::Status as IoctlArg>::SIZE)?;
        {
            let inner = self.inner.lock();
            status.stream = if status.stream_id == abi::STATUS_SESSION_ONLY {
                StreamCounters::default()
            } else if status.stream_id >= abi::MAX_STREAMS {
                return Err(EINVAL);
            } else {
                inner.streams[status.stream_id as usize]
                    .as_ref()
                    .map(|s| s.counters)
                    .unwrap_or_default()
            };
            status.state = inner.state();
            status.session = inner.counters;
            self.lockless.fill(&mut status.session);
            status._pad = 0;
        }
        write_arg(user, &status)?;
        Ok(0)
    }

    /// `RESET`: every stream stopped, both rings emptied, the counters
    /// zeroed, all in one critical section, so a concurrent START_STREAM
    /// lands wholly before (and is stopped) or wholly after.
    fn reset(this: ArcBorrow<'_, Session>) -> Result<isize> {
        let taken = this.take_streams(|inner| {
            inner.counters = SessionCounters::default();
            this.lockless.zero_counters();
            inner.copy_queue.clear();
            this.lockless.set_copy_queued(0);
            inner.copy_bytes = 0;
            if let Some(r) = inner.region.as_mut() {
                r.reset();
            }
        });
        drop(taken);
        // The rings are empty and show need-wakeup (as after configure):
        // the worker has nothing to do until the next kick. WAIT sleepers
        // re-check (to-device has room now).
        this.wake_waiters();
        Ok(0)
    }

    fn wait(&self, user: UserPtr) -> Result<isize> {
        let mut args: abi::WaitArgs = read_arg(user)?;
        check_size(args.size, <abi::WaitArgs as IoctlArg>::SIZE)?;
        if args.flags == 0
            || args.flags & !abi::WAIT_ALL != 0
            || args.timeout_ms > abi::MAX_WAIT_MS
            || args.ready != 0
        {
            return Err(EINVAL);
        }
        let mut jiffies = msecs_to_jiffies(args.timeout_ms);
        // Not the session mutex, which the worker holds for whole passes:
        // the conditions come from the shared words under `mappable`, the
        // lock `wake_waiters` takes before waking us.
        let mut mappable = self.mappable.lock();
        let ready = loop {
            let ready = self.ready(&mappable).ok_or_else(enotconn)? & args.flags;
            if ready != 0 {
                self.lockless.count_wait(false);
                break ready;
            }
            if jiffies == 0 {
                self.lockless.count_wait(true);
                return Err(ETIMEDOUT);
            }
            match self
                .waiters
                .wait_interruptible_timeout(&mut mappable, jiffies)
            {
                kernel::sync::CondVarTimeoutResult::Timeout => jiffies = 0,
                kernel::sync::CondVarTimeoutResult::Woken { jiffies: left } => jiffies = left,
                kernel::sync::CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
            }
        };
        drop(mappable);
        args.ready = ready;
        write_arg(user, &args)?;
        Ok(0)
    }
}
