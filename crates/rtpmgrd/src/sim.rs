// SPDX-License-Identifier: MIT
//! The simulator backend: an anonymous shared mapping plus a worker thread
//! that plays the kernel module and its `loopback` and `null` media ports.
//!
//! It is deliberately a second implementation of the module's behaviour,
//! not a mock: the same ring protocol (`rtpmgr_ring::proto`), the same
//! validation of everything user space writes (`SlotHeader::check`,
//! `ring_fill`), the same errnos, the same counters. Tests that pass here and
//! in the guest against the real module pin the two to one contract.
//!
//! Where it differs, it says so in [`Backend::info`]: it takes
//! [`abi::MAX_STREAM_IDS`] stream ids (the module its table's
//! `MAX_STREAMS`), and its `poll` is an eventfd (`Backend::poll_fd`)
//! armed by the waiter, as the module's wait queue is.
//!
//! The trait is `rtpmgr-device`'s, beside the real device that implements
//! it; the simulator stays in the daemon because only the daemon runs it
//! (`backend = "sim"`, its tests, the host benchmarks): the crates that
//! link `rtpmgr-device` for the real device (the GStreamer plugin, the
//! guest tests) would only carry its worker thread along.

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use rtpmgr_abi::{self as abi, Geometry, GeometryError, SessionCounters, SlotHeader, StreamCounters};
use rtpmgr_device::Backend;
use rtpmgr_ring::{anonymous_region, Consumer, CtrlWord, Producer, Region, RingId};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The module's default per-session pin limit (module parameter
/// `max_session_mb`, 64 MiB).
pub const DEFAULT_MAX_SESSION_BYTES: u64 = 64 << 20;

/// Slots the worker handles per pass before it publishes and looks again.
const WORKER_BATCH: u32 = 64;

const PORTS: [(&str, u32); 2] = [("loopback", abi::PORT_KIND_LOOPBACK), ("null", abi::PORT_KIND_NULL)];

/// Stream ids of a simulated session.
pub const SIM_STREAMS: u32 = abi::MAX_STREAM_IDS;

#[derive(Clone, Copy, Default)]
struct SimStream {
    port: u32,
    direction: u32,
    counters: StreamCounters,
}

struct State {
    region: Option<Arc<Region>>,
    streams: Vec<Option<SimStream>>,
    /// Bumped whenever `streams` changes: the worker copies its routes
    /// only then.
    generation: u64,
    session: SessionCounters,
    kicked: bool,
    shutdown: bool,
    /// Threads sleeping in `WAIT`: the worker wakes them only if any.
    waiters: usize,
}

impl Default for State {
    fn default() -> Self {
        State {
            region: None,
            streams: vec![None; SIM_STREAMS as usize],
            generation: 0,
            session: SessionCounters::default(),
            kicked: false,
            shutdown: false,
            waiters: 0,
        }
    }
}

impl State {
    fn running_streams(&self) -> usize {
        self.streams.iter().flatten().count()
    }
}

struct Shared {
    state: Mutex<State>,
    /// The worker sleeps here; `KICK` and shutdown wake it.
    kick_cv: Condvar,
    /// `WAIT` callers sleep here; the worker wakes them after each batch.
    wait_cv: Condvar,
    /// The simulated `poll`: written when from-device entries are
    /// published while `poll_armed`.
    poll_fd: EventFd,
    /// Set by a thread about to sleep on `poll_fd` (`arm_poll`), taken by
    /// the worker when it publishes: the need-wakeup handshake again, so
    /// a busy worker makes no system call for a poller that is awake.
    poll_armed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in the worker poisons the lock; the state is plain counters
        // and tables, still consistent, so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The simulated device: one session.
pub struct SimBackend {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    max_session_bytes: u64,
}

impl Default for SimBackend {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SESSION_BYTES)
    }
}

impl SimBackend {
    pub fn new(max_session_bytes: u64) -> Self {
        let poll_fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .expect("eventfd for the simulator's poll");
        let shared = Shared {
            state: Mutex::new(State::default()),
            kick_cv: Condvar::new(),
            wait_cv: Condvar::new(),
            poll_fd,
            poll_armed: AtomicBool::new(false),
        };
        SimBackend { shared: Arc::new(shared), worker: Mutex::new(None), max_session_bytes }
    }

    fn stop_worker(&self) {
        let handle = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            self.shared.lock().shutdown = true;
            self.shared.kick_cv.notify_all();
            let _ = h.join();
            self.shared.lock().shutdown = false;
        }
    }

    fn start_worker(&self, region: Arc<Region>) {
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name("rtpmgr-sim-kernel".into())
            .spawn(move || worker(&shared, &region))
            .expect("spawn simulator worker");
        *self.worker.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    fn configured(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = self.shared.lock();
        if st.region.is_none() {
            return Err(Errno::ENOTCONN.into());
        }
        Ok(st)
    }
}

impl Drop for SimBackend {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn info(&self) -> io::Result<abi::Info> {
        Ok(abi::Info {
            size: <abi::Info as abi::IoctlArg>::SIZE,
            abi_version: abi::ABI_VERSION,
            features: abi::FEATURE_MMAP_RINGS | abi::FEATURE_NEED_WAKEUP | abi::FEATURE_POLL,
            max_streams: SIM_STREAMS,
            min_slot_size: abi::MIN_SLOT_SIZE,
            max_slot_size: abi::MAX_SLOT_SIZE,
            min_slot_count: abi::MIN_SLOT_COUNT,
            max_slot_count: abi::MAX_SLOT_COUNT,
            port_count: PORTS.len() as u32,
            slot_header_size: abi::SLOT_HEADER_SIZE,
            max_session_bytes: self.max_session_bytes,
        })
    }

    fn port(&self, index: u32) -> io::Result<abi::PortInfo> {
        let (name, kind) = *PORTS.get(index as usize).ok_or(Errno::ENODEV)?;
        let users = self.shared.lock().streams.iter().flatten().filter(|s| s.port == index).count() as u32;
        let mut p =
            abi::PortInfo { size: <abi::PortInfo as abi::IoctlArg>::SIZE, index, kind, users, ..Default::default() };
        p.set_name(name);
        Ok(p)
    }

    fn configure(&self, slot_count: u32, slot_size: u32) -> io::Result<Arc<Region>> {
        let geometry = Geometry::new(slot_count, slot_size, self.max_session_bytes).map_err(|e| match e {
            GeometryError::TooLarge => Errno::ENOMEM,
            _ => Errno::EINVAL,
        })?;
        {
            let st = self.shared.lock();
            if st.running_streams() > 0 {
                return Err(Errno::EBUSY.into());
            }
        }
        self.stop_worker();
        let mut st = self.shared.lock();
        // As in the module: a previous region that is still mapped stays
        // valid for whoever holds it, but is no longer the session's.
        let region = anonymous_region(geometry)?;
        st.region = Some(Arc::clone(&region));
        st.session = SessionCounters::default();
        drop(st);
        self.start_worker(Arc::clone(&region));
        Ok(region)
    }

    fn start_stream(&self, stream_id: u32, port: u32, direction: u32) -> io::Result<()> {
        let mut st = self.configured()?;
        if stream_id >= SIM_STREAMS || direction == 0 || direction & !abi::DIR_BOTH != 0 {
            return Err(Errno::EINVAL.into());
        }
        if port as usize >= PORTS.len() {
            return Err(Errno::ENODEV.into());
        }
        let slot = &mut st.streams[stream_id as usize];
        if slot.is_some() {
            return Err(Errno::EEXIST.into());
        }
        *slot = Some(SimStream {
            port,
            direction,
            counters: StreamCounters { running: 1, port, direction, ..Default::default() },
        });
        st.generation += 1;
        Ok(())
    }

    fn stop_stream(&self, stream_id: u32) -> io::Result<()> {
        let mut st = self.shared.lock();
        if stream_id >= SIM_STREAMS {
            return Err(Errno::EINVAL.into());
        }
        st.streams[stream_id as usize].take().ok_or(Errno::ENOENT)?;
        st.generation += 1;
        Ok(())
    }

    fn status(&self, stream_id: u32) -> io::Result<abi::Status> {
        let st = self.shared.lock();
        let stream = if stream_id == abi::STATUS_SESSION_ONLY {
            StreamCounters::default()
        } else if stream_id >= SIM_STREAMS {
            return Err(Errno::EINVAL.into());
        } else {
            st.streams[stream_id as usize].map(|s| s.counters).unwrap_or_default()
        };
        let state = match (&st.region, st.running_streams()) {
            (None, _) => abi::STATE_UNCONFIGURED,
            (Some(_), 0) => abi::STATE_CONFIGURED,
            _ => abi::STATE_STREAMING,
        };
        Ok(abi::Status {
            size: <abi::Status as abi::IoctlArg>::SIZE,
            stream_id,
            state,
            _pad: 0,
            session: st.session,
            stream,
        })
    }

    fn reset(&self) -> io::Result<()> {
        self.stop_worker();
        let mut st = self.shared.lock();
        st.streams.iter_mut().for_each(|s| *s = None);
        st.generation += 1;
        st.session = SessionCounters::default();
        st.kicked = false;
        let region = st.region.clone();
        drop(st);
        if let Some(r) = region {
            for ring in [RingId::ToDevice, RingId::FromDevice] {
                for w in [CtrlWord::Producer, CtrlWord::Consumer, CtrlWord::Flags] {
                    r.ctrl_word(ring, w).store(0, Relaxed);
                }
            }
            self.start_worker(r);
        }
        Ok(())
    }

    fn kick(&self) -> io::Result<()> {
        let mut st = self.configured()?;
        st.session.kicks += 1;
        st.kicked = true;
        drop(st);
        self.shared.kick_cv.notify_one();
        Ok(())
    }

    fn wait(&self, flags: u32, timeout_ms: u32) -> io::Result<u32> {
        if flags == 0 || flags & !abi::WAIT_ALL != 0 || timeout_ms > abi::MAX_WAIT_MS {
            return Err(Errno::EINVAL.into());
        }
        let mut st = self.configured()?;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        loop {
            let region = st.region.clone().ok_or(Errno::ENOTCONN)?;
            let ready = ready_conditions(&region, flags);
            if ready != 0 {
                st.session.waits += 1;
                return Ok(ready);
            }
            let now = Instant::now();
            if now >= deadline {
                st.session.wait_timeouts += 1;
                return Err(Errno::ETIMEDOUT.into());
            }
            st.waiters += 1;
            st = self.shared.wait_cv.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            st.waiters -= 1;
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.shared.poll_fd.as_raw_fd())
    }

    fn arm_poll(&self) {
        self.shared.poll_armed.store(true, SeqCst);
        // Pairs with the worker's fence between publishing and taking
        // the flag: either it sees the flag, or the caller, looking at
        // the ring after this, sees its entries.
        fence(SeqCst);
    }

    fn clear_poll(&self) {
        // Non-blocking: EAGAIN when it was not written.
        let _ = self.shared.poll_fd.read();
    }
}

/// Which `WAIT` conditions hold, judged from the shared words as the module
/// does (user-written words only decide readiness, never memory access).
fn ready_conditions(region: &Region, flags: u32) -> u32 {
    let count = region.geometry().slot_count;
    let mut ready = 0;
    if flags & abi::WAIT_FROM_DEV_READY != 0 {
        let (prod, cons, _) = region.snapshot(RingId::FromDevice);
        if prod != cons {
            ready |= abi::WAIT_FROM_DEV_READY;
        }
    }
    if flags & abi::WAIT_TO_DEV_SPACE != 0 {
        let (prod, cons, _) = region.snapshot(RingId::ToDevice);
        if abi::ring_fill(prod, cons, count).is_some_and(|fill| fill < count) {
            ready |= abi::WAIT_TO_DEV_SPACE;
        }
    }
    ready
}

/// What the worker knows of a stream id: it takes to-device slots, and
/// whether the loopback port returns them on from-device.
const ROUTE_TO_DEV: u8 = 1;
const ROUTE_RETURN: u8 = 2;

/// Per-pass counter deltas of the ids a pass touched, folded into the
/// shared state under one lock: nothing proportional to the id space.
struct Pass {
    session: SessionCounters,
    /// to-device packets, bytes, from-device packets, bytes per id.
    deltas: Vec<[u64; 4]>,
    touched: Vec<u32>,
}

impl Pass {
    fn new() -> Pass {
        Pass { session: SessionCounters::default(), deltas: vec![[0; 4]; SIM_STREAMS as usize], touched: Vec::new() }
    }

    fn add(&mut self, id: u32, k: usize, len: u32) {
        let d = &mut self.deltas[id as usize];
        if d == &[0; 4] {
            self.touched.push(id);
        }
        d[k] += 1;
        d[k + 1] += u64::from(len);
    }
}

/// The kernel worker: drain to-device into the ports, publish what the
/// loopback port returns on from-device, sleep with need-wakeup when there
/// is nothing to do.
fn worker(shared: &Shared, region: &Arc<Region>) {
    let mut rx: Consumer = region.consumer(RingId::ToDevice);
    let mut tx: Producer = region.producer(RingId::FromDevice);
    let slot_size = region.geometry().slot_size;
    let mut routes = vec![0u8; SIM_STREAMS as usize];
    let mut generation = u64::MAX;
    let mut pass = Pass::new();
    loop {
        {
            let st = shared.lock();
            if st.shutdown {
                return;
            }
            if st.generation != generation {
                generation = st.generation;
                for (r, s) in routes.iter_mut().zip(&st.streams) {
                    *r = match s {
                        Some(s) if s.direction & abi::DIR_TO_DEVICE != 0 => {
                            let back = s.port == abi::PORT_LOOPBACK && s.direction & abi::DIR_FROM_DEVICE != 0;
                            ROUTE_TO_DEV | if back { ROUTE_RETURN } else { 0 }
                        }
                        _ => 0,
                    };
                }
            }
        }
        let mut blocked_on_space = false;
        let (mut consumed, mut produced) = (0u32, 0u32);
        let available = match rx.available() {
            Ok(n) => n,
            Err(_) => {
                pass.session.invalid_indices += 1;
                0
            }
        };
        // One time stamp per pass: the pass moves its slots at once, and a
        // clock read per slot cost ~2% of the relay's CPU (docs/performance.md).
        let pass_ns = if available > 0 { crate::monotonic_ns() } else { 0 };
        for i in 0..available.min(WORKER_BATCH) {
            // One copy of the header; everything below uses only the copy.
            let h: SlotHeader = rx.header(i);
            let route = match h.check_ids(slot_size, SIM_STREAMS) {
                Ok(()) => routes[h.stream_id as usize],
                Err(_) => 0,
            };
            if route & ROUTE_TO_DEV == 0 {
                pass.session.invalid_slots += 1;
                consumed += 1;
                continue;
            }
            if route & ROUTE_RETURN != 0 {
                if tx.free(produced + 1) <= produced {
                    blocked_on_space = true;
                    break;
                }
                let len = h.len as usize;
                rx.copy_payload(i, &mut tx.payload_mut(produced)[..len]);
                let out =
                    SlotHeader { len: h.len, stream_id: h.stream_id, timestamp_ns: pass_ns, ..Default::default() };
                tx.set_header(produced, &out);
                produced += 1;
                pass.add(h.stream_id, 2, h.len);
            }
            // Loopback with no return direction and the null port consume
            // the packet: counted, then gone.
            pass.add(h.stream_id, 0, h.len);
            consumed += 1;
        }
        // Publish before releasing: once user space sees the to-device
        // ring empty, everything the loopback made of it is visible.
        tx.publish(produced);
        rx.release(consumed);
        if produced > 0 {
            // The simulated poll: pairs with `arm_poll`'s fence.
            fence(SeqCst);
            if shared.poll_armed.swap(false, SeqCst) {
                let _ = shared.poll_fd.write(1);
            }
        }

        let mut st = shared.lock();
        fold(&mut st, &mut pass);
        if consumed > 0 || produced > 0 {
            let waiters = st.waiters > 0;
            drop(st);
            if waiters {
                shared.wait_cv.notify_all();
            }
            continue;
        }
        drop(st);
        // No progress: sleep until kicked, after the need-wakeup handshake
        // on whichever ring we wait for.
        let must_sleep = if blocked_on_space { tx.prepare_sleep() } else { rx.prepare_sleep() };
        if !must_sleep {
            continue;
        }
        let mut st = shared.lock();
        st.session.worker_sleeps += 1;
        while !st.kicked && !st.shutdown {
            st = shared.kick_cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.kicked = false;
        drop(st);
        rx.clear_need_wakeup();
        tx.clear_need_wakeup();
    }
}

fn fold(st: &mut State, pass: &mut Pass) {
    let s = &mut st.session;
    s.invalid_indices += std::mem::take(&mut pass.session.invalid_indices);
    s.invalid_slots += std::mem::take(&mut pass.session.invalid_slots);
    for id in pass.touched.drain(..) {
        let [tp, tb, fp, fb] = std::mem::take(&mut pass.deltas[id as usize]);
        st.session.to_dev_packets += tp;
        st.session.to_dev_bytes += tb;
        st.session.from_dev_packets += fp;
        st.session.from_dev_bytes += fb;
        if let Some(stream) = st.streams[id as usize].as_mut() {
            stream.counters.to_dev_packets += tp;
            stream.counters.to_dev_bytes += tb;
            stream.counters.from_dev_packets += fp;
            stream.counters.from_dev_bytes += fb;
        }
    }
}

#[cfg(test)]
mod tests;
