// SPDX-License-Identifier: MIT
//! The simulator backend: an anonymous shared mapping plus a worker thread
//! that plays the kernel module and its `loopback` and `null` media ports.
//!
//! It is deliberately a second implementation of the module's behaviour,
//! not a mock: the same ring protocol (`rtpmgr_ring::proto`), the same
//! validation of everything user space writes (`SlotHeader::check`,
//! `ring_fill`), the same errnos, the same counters. Tests that pass here and
//! in the guest against the real module pin the two to one contract.

use super::Backend;
use nix::errno::Errno;
use rtpmgr_abi::{self as abi, Geometry, GeometryError, SessionCounters, SlotHeader, StreamCounters};
use rtpmgr_ring::{anonymous_region, Consumer, CtrlWord, Producer, Region, RingId};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The module's default per-session pin limit (module parameter
/// `max_session_mb`, 64 MiB).
pub const DEFAULT_MAX_SESSION_BYTES: u64 = 64 << 20;

/// Slots the worker handles per pass before it publishes and looks again.
const WORKER_BATCH: u32 = 64;

const PORTS: [(&str, u32); 2] = [("loopback", abi::PORT_KIND_LOOPBACK), ("null", abi::PORT_KIND_NULL)];

#[derive(Clone, Copy, Default)]
struct SimStream {
    port: u32,
    direction: u32,
    counters: StreamCounters,
}

struct State {
    region: Option<Arc<Region>>,
    streams: [Option<SimStream>; abi::MAX_STREAMS as usize],
    session: SessionCounters,
    kicked: bool,
    shutdown: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            region: None,
            streams: [None; abi::MAX_STREAMS as usize],
            session: SessionCounters::default(),
            kicked: false,
            shutdown: false,
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
        let shared = Shared { state: Mutex::new(State::default()), kick_cv: Condvar::new(), wait_cv: Condvar::new() };
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
            features: abi::FEATURE_MMAP_RINGS | abi::FEATURE_NEED_WAKEUP,
            max_streams: abi::MAX_STREAMS,
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
        if stream_id >= abi::MAX_STREAMS || direction == 0 || direction & !abi::DIR_BOTH != 0 {
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
        Ok(())
    }

    fn stop_stream(&self, stream_id: u32) -> io::Result<()> {
        let mut st = self.shared.lock();
        if stream_id >= abi::MAX_STREAMS {
            return Err(Errno::EINVAL.into());
        }
        st.streams[stream_id as usize].take().map(|_| ()).ok_or_else(|| Errno::ENOENT.into())
    }

    fn status(&self, stream_id: u32) -> io::Result<abi::Status> {
        let st = self.shared.lock();
        let stream = if stream_id == abi::STATUS_SESSION_ONLY {
            StreamCounters::default()
        } else if stream_id >= abi::MAX_STREAMS {
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
        st.streams = [None; abi::MAX_STREAMS as usize];
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
            st = self.shared.wait_cv.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
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

/// Per-pass counter deltas, folded into the shared state under one lock.
struct Pass {
    session: SessionCounters,
    to_dev: [(u64, u64); abi::MAX_STREAMS as usize],
    from_dev: [(u64, u64); abi::MAX_STREAMS as usize],
}

impl Default for Pass {
    fn default() -> Self {
        let zero = [(0, 0); abi::MAX_STREAMS as usize];
        Pass { session: SessionCounters::default(), to_dev: zero, from_dev: zero }
    }
}

/// The kernel worker: drain to-device into the ports, publish what the
/// loopback port returns on from-device, sleep with need-wakeup when there
/// is nothing to do.
fn worker(shared: &Shared, region: &Arc<Region>) {
    let mut rx: Consumer = region.consumer(RingId::ToDevice);
    let mut tx: Producer = region.producer(RingId::FromDevice);
    let slot_size = region.geometry().slot_size;
    loop {
        let table = {
            let st = shared.lock();
            if st.shutdown {
                return;
            }
            st.streams
        };
        let mut pass = Pass::default();
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
            let stream = h.check(slot_size).ok().and_then(|()| table[h.stream_id as usize]);
            let Some(stream) = stream.filter(|s| s.direction & abi::DIR_TO_DEVICE != 0) else {
                pass.session.invalid_slots += 1;
                consumed += 1;
                continue;
            };
            let sid = h.stream_id as usize;
            if stream.port == abi::PORT_LOOPBACK && stream.direction & abi::DIR_FROM_DEVICE != 0 {
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
                pass.from_dev[sid].0 += 1;
                pass.from_dev[sid].1 += h.len as u64;
            }
            // Loopback with no return direction and the null port consume
            // the packet: counted, then gone.
            pass.to_dev[sid].0 += 1;
            pass.to_dev[sid].1 += h.len as u64;
            consumed += 1;
        }
        // Publish before releasing: once user space sees the to-device
        // ring empty, everything the loopback made of it is visible.
        tx.publish(produced);
        rx.release(consumed);

        let mut st = shared.lock();
        fold(&mut st, &pass, consumed, produced);
        if consumed > 0 || produced > 0 {
            drop(st);
            shared.wait_cv.notify_all();
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

fn fold(st: &mut State, pass: &Pass, consumed: u32, produced: u32) {
    let s = &mut st.session;
    s.invalid_indices += pass.session.invalid_indices;
    s.invalid_slots += pass.session.invalid_slots;
    if consumed == 0 && produced == 0 {
        return;
    }
    for (id, stream) in st.streams.iter_mut().enumerate() {
        let (tp, tb) = pass.to_dev[id];
        let (fp, fb) = pass.from_dev[id];
        st.session.to_dev_packets += tp;
        st.session.to_dev_bytes += tb;
        st.session.from_dev_packets += fp;
        st.session.from_dev_bytes += fb;
        if let Some(stream) = stream {
            stream.counters.to_dev_packets += tp;
            stream.counters.to_dev_bytes += tb;
            stream.counters.from_dev_packets += fp;
            stream.counters.from_dev_bytes += fb;
        }
    }
}

#[cfg(test)]
mod tests;
