// SPDX-License-Identifier: GPL-2.0-only

//! One open file of `/dev/rtpmgr`: its rings, streams, counters, ioctls,
//! the copying read()/write() path and the worker that moves packets.
//!
//! Locking: `inner` (a mutex) guards everything mutable. It is never held
//! while copying from or to user memory (a fault there takes `mmap_lock`,
//! which `mmap` takes before `inner`), so ioctl arguments are copied in
//! before locking and results copied out after unlocking.

use crate::abi::{self, Geometry, IoctlArg, NetCounters, SessionCounters, SlotHeader, StreamCounters};
use crate::net::{NetSocket, Recv, SendResult};
use crate::port::{self, PortRef};
use crate::ring::{Region, RingId, SharedBytes};
use crate::seqstats::SourceStats;
use kernel::{
    alloc::VVec,
    bindings,
    fs::{File, Kiocb},
    iov::{IovIterDest, IovIterSource},
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    mm::virt::{flags as vm_flags, VmaNew},
    new_condvar, new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    seq_file::{seq_print, SeqFile},
    sync::{Arc, ArcBorrow, CondVar, Mutex},
    time::msecs_to_jiffies,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
    workqueue::{self, impl_has_work, new_work, Work, WorkItem},
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

/// Slots the worker handles per pass before publishing.
const BATCH: u32 = 64;
/// Passes per worker run before it yields the CPU by re-queueing itself.
const PASSES_PER_RUN: u32 = 16;
/// Packets the copying path holds for read().
const COPY_QUEUE_MAX: usize = 256;

fn enotconn() -> Error {
    Error::from_errno(-(bindings::ENOTCONN as i32))
}

fn monotonic_ns() -> u64 {
    // SAFETY: `ktime_get` has no preconditions.
    let ns = unsafe { bindings::ktime_get() };
    u64::try_from(ns).unwrap_or(0)
}

struct Stream {
    port: PortRef,
    direction: u32,
    counters: StreamCounters,
    /// The socket of a `START_NET_STREAM` stream (port `udp`). Boxed:
    /// `Inner` (64 streams) is built on the stack in `open`.
    net: Option<KBox<NetStream>>,
}

impl Stream {
    /// Whether what the stream's port returns goes to its from-device side
    /// (a port that returns packets, and the stream receives).
    fn wants_return(&self) -> bool {
        self.direction & abi::DIR_FROM_DEVICE != 0 && self.port.returns_packets()
    }
}

/// The network side of a `udp` stream.
struct NetStream {
    /// Dropped only in process context, never with `inner` held (it sleeps
    /// and takes socket locks): see `Session::stop_streams`.
    sock: NetSocket,
    flags: u32,
    counters: NetCounters,
    /// `forward_to`: received datagrams go to this stream of the session.
    forward_to: Option<usize>,
    /// A whole datagram, for forwarding (empty without `forward_to`).
    bounce: VVec<u8>,
    /// `NET_F_RTP`: statistics of the current source.
    rtp: Option<SourceStats>,
    clock_rate: u32,
    ssrc_changes: u64,
}

impl NetStream {
    /// Account one datagram that passed the RTP header check; `head` holds
    /// at least its fixed header.
    fn rtp_update(&mut self, head: &[u8], now: u64) {
        let (Some(s), Some(t), Some(c)) = (head.get(2..4), head.get(4..8), head.get(8..12)) else { return };
        let seq = u16::from_be_bytes([s[0], s[1]]);
        let ts = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
        let ssrc = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        match self.rtp.as_mut() {
            Some(st) if st.ssrc() == ssrc => {
                st.update(seq, ts, now);
            }
            other => {
                if other.is_some() {
                    self.ssrc_changes += 1;
                }
                let mut st = SourceStats::new(ssrc, seq, self.clock_rate);
                st.update(seq, ts, now);
                self.rtp = Some(st);
            }
        }
    }

    /// The counters, with the RTP statistics filled in.
    fn counters(&self) -> NetCounters {
        let mut c = self.counters;
        c.ssrc_changes = self.ssrc_changes;
        if let Some(st) = self.rtp.as_ref() {
            c.ssrc = st.ssrc();
            c.rtp_flags = abi::NET_RTP_SOURCE | if st.in_probation() { abi::NET_RTP_PROBATION } else { 0 };
            c.rtp_received = st.received();
            c.rtp_expected = st.expected();
            c.rtp_lost = st.lost();
            c.rtp_duplicates = st.duplicates();
            c.rtp_reordered = st.reordered();
            c.rtp_resyncs = st.resyncs();
            c.ext_highest_seq = st.extended_highest_seq();
            c.jitter_units = st.jitter_units();
        }
        c
    }
}

/// Bytes of the forwarding buffer: any UDP datagram fits.
const BOUNCE_BYTES: usize = 65536;

struct Inner {
    region: Option<Region>,
    streams: [Option<Stream>; abi::MAX_STREAMS as usize],
    counters: SessionCounters,
    /// Packets ports returned for write(): what read() hands out.
    copy_queue: KVec<KVec<u8>>,
    /// Set on release; the worker stops at once.
    closing: bool,
}

impl Inner {
    fn running(&self) -> usize {
        self.streams.iter().flatten().count()
    }

    fn state(&self) -> u32 {
        match (&self.region, self.running()) {
            (None, _) => abi::STATE_UNCONFIGURED,
            (Some(_), 0) => abi::STATE_CONFIGURED,
            _ => abi::STATE_STREAMING,
        }
    }
}

/// What one worker pass achieved.
enum Pass {
    /// Moved at least one slot.
    Progress,
    /// Nothing to consume.
    Idle,
    /// Entries wait, but the from-device ring has no room.
    NoSpace,
    /// A socket's send buffer is full. `armed`: its write-space callback
    /// queues the worker; otherwise try again.
    TxBusy { armed: bool },
}

impl Inner {
    /// Write stream `id`'s counters into its statistics record, if it is a
    /// `udp` stream (`running`: still started).
    fn publish_stats(&mut self, id: usize, running: bool) {
        let (Some(region), Some(net)) =
            (self.region.as_mut(), self.streams.get(id).and_then(|s| s.as_ref()).and_then(|s| s.net.as_ref()))
        else {
            return;
        };
        let c = abi::NetCounters { socket_drops: net.sock.drops(), ..net.counters() };
        region.publish_stats(id as u32, running, &c, monotonic_ns());
    }

    /// After a worker pass that moved something: every `udp` stream's
    /// record (at most 64 records of 256 bytes).
    fn publish_all_stats(&mut self) {
        for id in 0..self.streams.len() {
            self.publish_stats(id, true);
        }
    }

    /// Take stream `id` out (to be dropped after unlocking); a `udp`
    /// stream's record gets its last counters and loses `STATS_RUNNING`.
    fn take_stream(&mut self, id: usize) -> Option<Stream> {
        self.publish_stats(id, false);
        self.streams.get_mut(id)?.take()
    }

    /// Drain up to `BATCH` to-device entries into their ports and publish
    /// what the ports return.
    fn pass(&mut self) -> Pass {
        let Some(region) = self.region.as_mut() else { return Pass::Idle };
        let slot_size = region.geometry().slot_size;
        let available = match region.todev_available() {
            Ok(n) => n.min(BATCH),
            Err(()) => {
                self.counters.invalid_indices += 1;
                0
            }
        };
        let (mut consumed, mut produced) = (0u32, 0u32);
        let mut blocked = false;
        let mut tx_busy = None;
        let now = monotonic_ns();
        for i in 0..available {
            // One copy of the header; only the copy is used below.
            let h: SlotHeader = region.todev_header(i);
            let stream = h.check(slot_size).ok().and_then(|()| self.streams[h.stream_id as usize].as_mut());
            let Some(stream) = stream.filter(|s| s.direction & abi::DIR_TO_DEVICE != 0) else {
                self.counters.invalid_slots += 1;
                consumed += 1;
                continue;
            };
            if let Some(net) = stream.net.as_mut() {
                let pkt = region.todev_payload(i, h.len);
                match net.sock.send(&pkt) {
                    SendResult::Sent => {
                        net.counters.tx_packets += 1;
                        net.counters.tx_bytes += u64::from(h.len);
                    }
                    SendResult::Failed => net.counters.tx_errors += 1,
                    busy @ (SendResult::WouldBlock | SendResult::Retry) => {
                        // The slot stays; it is sent when there is room.
                        net.counters.tx_blocked += 1;
                        tx_busy = Some(matches!(busy, SendResult::WouldBlock));
                        break;
                    }
                }
                stream.counters.to_dev_packets += 1;
                stream.counters.to_dev_bytes += u64::from(h.len);
                self.counters.to_dev_packets += 1;
                self.counters.to_dev_bytes += u64::from(h.len);
                consumed += 1;
                continue;
            }
            // A slot that would come back waits in the ring until the
            // from-device ring has room: user space asked for every packet.
            let wants_return = stream.wants_return();
            if wants_return && !fromdev_room(region, produced, &mut self.counters) {
                blocked = true;
                break;
            }
            let pkt = region.todev_payload(i, h.len);
            let slot = wants_return.then_some(produced);
            if port_transmit(stream, h.stream_id, &pkt, region, slot, now, &mut self.counters) {
                produced += 1;
            }
            stream.counters.to_dev_packets += 1;
            stream.counters.to_dev_bytes += u64::from(h.len);
            self.counters.to_dev_packets += 1;
            self.counters.to_dev_bytes += u64::from(h.len);
            consumed += 1;
        }
        // Publish before releasing: once user space sees to-device empty,
        // everything returned from it is visible.
        region.fromdev_publish(produced);
        region.todev_release(consumed);
        if consumed > 0 || produced > 0 {
            Pass::Progress
        } else if blocked {
            Pass::NoSpace
        } else if let Some(armed) = tx_busy {
            Pass::TxBusy { armed }
        } else {
            Pass::Idle
        }
    }

    /// Receive up to `BATCH` datagrams from the sockets of `udp` streams
    /// into the from-device ring. A full ring leaves them in the sockets.
    fn net_rx(&mut self) -> Pass {
        let Some(region) = self.region.as_mut() else { return Pass::Idle };
        let cap = region.geometry().payload_capacity() as usize;
        let now = monotonic_ns();
        let (mut produced, mut handled) = (0u32, 0u32);
        let mut full = false;
        'streams: for id in 0..self.streams.len() {
            let fwd = self.streams[id].as_ref().and_then(|s| s.net.as_ref()).and_then(|n| n.forward_to);
            if let Some(k) = fwd {
                handled +=
                    forward(&mut self.streams, id, k, region, &mut produced, &mut self.counters, BATCH - handled);
                continue;
            }
            let Some(stream) = self.streams[id].as_mut() else { continue };
            if stream.direction & abi::DIR_FROM_DEVICE == 0 {
                continue;
            }
            let Some(net) = stream.net.as_mut() else { continue };
            while handled < BATCH && net.sock.rx_pending() {
                match region.fromdev_free(produced + 1) {
                    Ok(free) if free > produced => {}
                    Ok(_) => {
                        net.counters.ring_full += 1;
                        full = true;
                        break 'streams;
                    }
                    Err(()) => {
                        self.counters.invalid_indices += 1;
                        full = true;
                        break 'streams;
                    }
                }
                let mut out = region.fromdev_payload(produced);
                let (len, head, last) = match net.sock.recv(&mut out) {
                    Recv::Empty => break,
                    Recv::BadChecksum => {
                        handled += 1;
                        net.counters.csum_errors += 1;
                        continue;
                    }
                    Recv::Datagram { len, head, last } => (len, head, last),
                };
                handled += 1;
                if len > cap {
                    net.counters.oversize += 1;
                    continue;
                }
                // Checked on the private copies, never on the shared slot.
                if net.flags & abi::NET_F_RTP != 0 {
                    if abi::rtp_header_check(&head[..len.min(abi::RTP_CHECK_BYTES)], len, last).is_err() {
                        net.counters.malformed += 1;
                        continue;
                    }
                    net.rtp_update(&head, now);
                }
                let header =
                    SlotHeader { len: len as u32, stream_id: id as u32, timestamp_ns: now, ..Default::default() };
                region.fromdev_set_header(produced, &header);
                produced += 1;
                net.counters.rx_packets += 1;
                net.counters.rx_bytes += len as u64;
                stream.counters.from_dev_packets += 1;
                stream.counters.from_dev_bytes += len as u64;
                self.counters.from_dev_packets += 1;
                self.counters.from_dev_bytes += len as u64;
            }
        }
        region.fromdev_publish(produced);
        if handled > 0 {
            Pass::Progress
        } else if full {
            Pass::NoSpace
        } else {
            Pass::Idle
        }
    }
}

/// Forward up to `budget` datagrams of stream `id` (a receiving `udp`
/// stream with `forward_to` = `k`) to stream `k`, with the tap copies into
/// the from-device ring after the `produced` slots already filled. Never
/// waits: what the target or the ring cannot take is dropped and counted.
/// Returns the datagrams handled.
fn forward(
    streams: &mut [Option<Stream>],
    id: usize,
    k: usize,
    region: &mut Region,
    produced: &mut u32,
    session: &mut SessionCounters,
    budget: u32,
) -> u32 {
    if id == k || id >= streams.len() || k >= streams.len() {
        return 0;
    }
    let (src, dst) = if id < k {
        let (a, b) = streams.split_at_mut(k);
        (&mut a[id], &mut b[0])
    } else {
        let (a, b) = streams.split_at_mut(id);
        (&mut b[0], &mut a[k])
    };
    let Some(src) = src.as_mut() else { return 0 };
    let Some(net) = src.net.as_mut() else { return 0 };
    let cap = region.geometry().payload_capacity() as usize;
    let now = monotonic_ns();
    let mut handled = 0;
    while handled < budget && net.sock.rx_pending() {
        // SAFETY: the bounce buffer is ours, `BOUNCE_BYTES` long and not
        // otherwise accessed while `buf` and `pkt` live (this loop body).
        let mut buf = unsafe { SharedBytes::from_raw(net.bounce.as_mut_ptr(), net.bounce.len()) };
        let (len, head, last) = match net.sock.recv(&mut buf) {
            Recv::Empty => break,
            Recv::BadChecksum => {
                handled += 1;
                net.counters.csum_errors += 1;
                continue;
            }
            Recv::Datagram { len, head, last } => (len, head, last),
        };
        handled += 1;
        if len > net.bounce.len() {
            net.counters.oversize += 1;
            continue;
        }
        if net.flags & abi::NET_F_RTP != 0 {
            if abi::rtp_header_check(&head[..len.min(abi::RTP_CHECK_BYTES)], len, last).is_err() {
                net.counters.malformed += 1;
                continue;
            }
            net.rtp_update(&head, now);
        }
        // SAFETY: as above; `len` is within the buffer (checked).
        let pkt = unsafe { SharedBytes::from_raw(net.bounce.as_mut_ptr(), len) };
        let target = dst.as_mut().filter(|s| s.direction & abi::DIR_TO_DEVICE != 0);
        let Some(target) = target else {
            net.counters.forward_drops += 1;
            continue;
        };
        let sent = match target.net.as_mut() {
            Some(tn) => {
                let mut r = tn.sock.send(&pkt);
                if matches!(r, SendResult::Retry) {
                    r = tn.sock.send(&pkt);
                }
                match r {
                    SendResult::Sent => {
                        tn.counters.tx_packets += 1;
                        tn.counters.tx_bytes += len as u64;
                        true
                    }
                    SendResult::Failed => {
                        tn.counters.tx_errors += 1;
                        false
                    }
                    SendResult::WouldBlock | SendResult::Retry => {
                        tn.counters.tx_blocked += 1;
                        false
                    }
                }
            }
            None => {
                // A port that returns packets (loopback, media0) gives the
                // returned packet to the target's from-device side, as for
                // its own to-device slots. Unlike those, a forwarded packet
                // cannot wait for room: a full ring (or a packet larger
                // than a slot, which would be cut) drops the returned copy
                // only, counted, and the packet still goes to the port.
                let k_id = k as u32;
                let slot = if target.wants_return() {
                    let room = len <= cap && fromdev_room(region, *produced, session);
                    if !room {
                        target.counters.ring_full_drops += 1;
                        session.ring_full_drops += 1;
                    }
                    room.then_some(*produced)
                } else {
                    None
                };
                if port_transmit(target, k_id, &pkt, region, slot, now, session) {
                    *produced += 1;
                }
                true
            }
        };
        if !sent {
            net.counters.forward_drops += 1;
            continue;
        }
        target.counters.to_dev_packets += 1;
        target.counters.to_dev_bytes += len as u64;
        net.counters.fwd_packets += 1;
        net.counters.fwd_bytes += len as u64;
        if net.flags & abi::NET_F_TAP == 0 {
            continue;
        }
        if len <= cap && fromdev_room(region, *produced, session) {
            let mut out = region.fromdev_payload(*produced);
            out.copy_from(&pkt);
            let header = SlotHeader { len: len as u32, stream_id: id as u32, timestamp_ns: now, ..Default::default() };
            region.fromdev_set_header(*produced, &header);
            *produced += 1;
            net.counters.tap_packets += 1;
            src.counters.from_dev_packets += 1;
            src.counters.from_dev_bytes += len as u64;
            session.from_dev_packets += 1;
            session.from_dev_bytes += len as u64;
        } else {
            net.counters.tap_drops += 1;
        }
    }
    handled
}

/// Whether from-device slot `produced` (the next one after those this pass
/// already filled) is free. An impossible consumer index, which user space
/// wrote, is counted and reads as "no room": we cannot know which slots are
/// free, so we write none.
fn fromdev_room(region: &mut Region, produced: u32, session: &mut SessionCounters) -> bool {
    match region.fromdev_free(produced + 1) {
        Ok(free) => free > produced,
        Err(()) => {
            session.invalid_indices += 1;
            false
        }
    }
}

/// Hand `pkt` to the registry port of `stream` (id `id`). With `slot` (the
/// caller checked that this from-device slot is free and that the stream
/// wants returned packets), what the port returns is written there with its
/// header and counted. Returns whether the slot was filled; the caller
/// publishes it. To-device counting is the caller's: it differs per path.
fn port_transmit(
    stream: &mut Stream,
    id: u32,
    pkt: &SharedBytes<'_>,
    region: &Region,
    slot: Option<u32>,
    now: u64,
    session: &mut SessionCounters,
) -> bool {
    let Some(k) = slot else {
        let _ = stream.port.transmit(pkt, None);
        return false;
    };
    let mut out = region.fromdev_payload(k);
    // An unbound DMA port returns nothing; the slot stays unwritten.
    let Some(len) = stream.port.transmit(pkt, Some(&mut out)) else { return false };
    let header = SlotHeader { len: len as u32, stream_id: id, timestamp_ns: now, ..Default::default() };
    region.fromdev_set_header(k, &header);
    stream.counters.from_dev_packets += 1;
    stream.counters.from_dev_bytes += len as u64;
    session.from_dev_packets += 1;
    session.from_dev_bytes += len as u64;
    true
}

/// A session: the private data of an open `/dev/rtpmgr`.
#[pin_data]
pub(crate) struct Session {
    #[pin]
    inner: Mutex<Inner>,
    /// `WAIT` callers sleep here; the worker wakes them after each pass.
    #[pin]
    waiters: CondVar,
    #[pin]
    work: Work<Session>,
}

impl_has_work! {
    impl HasWork<Self> for Session { self.work }
}

impl WorkItem for Session {
    type Pointer = Arc<Session>;

    /// The kernel side of the rings. "Asleep" means "not queued": it runs
    /// until there is nothing to do, raises need-wakeup on the ring it waits
    /// for, re-checks once, and returns; `KICK` queues it again.
    fn run(this: Arc<Session>) {
        for _ in 0..PASSES_PER_RUN {
            let mut inner = this.inner.lock();
            if inner.closing {
                return;
            }
            if let Some(r) = inner.region.as_ref() {
                r.clear_need_wakeup();
            }
            let tx = inner.pass();
            let rx = inner.net_rx();
            if matches!(tx, Pass::Progress) || matches!(rx, Pass::Progress) {
                inner.publish_all_stats();
                drop(inner);
                this.waiters.notify_all();
                continue;
            }
            // Nothing moved: sleep on what blocks us. Datagrams arriving
            // meanwhile queue the worker again from the socket callback.
            let Some(r) = inner.region.as_mut() else { return };
            let mut again = false;
            match tx {
                Pass::Idle => {
                    r.raise_need_wakeup(RingId::ToDevice);
                    // Entries that arrived in between: stay awake.
                    again |= matches!(r.todev_available(), Ok(n) if n > 0);
                }
                Pass::NoSpace => {
                    r.raise_need_wakeup(RingId::FromDevice);
                    again |= matches!(r.fromdev_free(1), Ok(n) if n > 0);
                }
                // The write-space callback queues us when `armed`.
                Pass::TxBusy { armed } => again |= !armed,
                Pass::Progress => {}
            }
            if matches!(rx, Pass::NoSpace) {
                r.raise_need_wakeup(RingId::FromDevice);
                again |= matches!(r.fromdev_free(1), Ok(n) if n > 0);
            }
            if again {
                continue;
            }
            inner.counters.worker_sleeps += 1;
            return;
        }
        // Still busy after a fair share: run again later, behind others.
        if !this.inner.lock().closing {
            let _ = workqueue::system_unbound().enqueue(this);
        }
    }
}

fn read_arg<T: FromBytes + IoctlArg>(user: UserPtr) -> Result<T> {
    let v: T = UserSlice::new(user, core::mem::size_of::<T>()).reader().read()?;
    Ok(v)
}

fn write_arg<T: AsBytes>(user: UserPtr, v: &T) -> Result {
    UserSlice::new(user, core::mem::size_of::<T>()).writer().write(v)
}

fn check_size(size: u32, want: u32) -> Result {
    if size == want {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

impl Session {
    fn new_session() -> Result<Arc<Session>> {
        let copy_queue = KVec::with_capacity(COPY_QUEUE_MAX, GFP_KERNEL)?;
        Arc::pin_init(
            try_pin_init!(Session {
                inner <- new_mutex!(Inner {
                    region: None,
                    streams: [const { None }; abi::MAX_STREAMS as usize],
                    counters: SessionCounters::default(),
                    copy_queue,
                    closing: false,
                }),
                waiters <- new_condvar!("rtpmgr::Session::waiters"),
                work <- new_work!("rtpmgr::Session::work"),
            }),
            GFP_KERNEL,
        )
    }

    /// On close: stop the streams and wait until the worker is idle for good.
    fn shut_down(&self) {
        {
            self.inner.lock().closing = true;
        }
        self.stop_streams();
        self.waiters.notify_all();
        // SAFETY: `work` is an initialised work item inside `self`, alive
        // across the call. After it returns no run of the worker is pending
        // or executing, and none can be queued again: the file is going away
        // (no more ioctls) and `closing` stops re-queueing.
        unsafe { bindings::flush_work(Work::raw_get(&self.work)) };
    }

    /// Stop every stream. Each is taken out under the lock and dropped
    /// after it: closing a socket sleeps and takes socket locks, which must
    /// never nest inside `inner`.
    fn stop_streams(&self) {
        for id in 0..abi::MAX_STREAMS as usize {
            let stream = self.inner.lock().take_stream(id);
            if let Some(st) = stream {
                port::add_user(&*st.port, -1);
            }
        }
    }

    pub(crate) fn kick(this: ArcBorrow<'_, Session>) {
        let arc: Arc<Session> = this.into();
        // Already queued: the queued run will see the new entries.
        let _ = workqueue::system_unbound().enqueue(arc);
    }

    fn get_info(&self, user: UserPtr) -> Result<isize> {
        let info = abi::Info {
            size: <abi::Info as IoctlArg>::SIZE,
            abi_version: abi::ABI_VERSION,
            features: abi::FEATURE_MMAP_RINGS
                | abi::FEATURE_RW_COPY
                | abi::FEATURE_NEED_WAKEUP
                | abi::FEATURE_NET_STREAMS
                | abi::FEATURE_STATS_AREA,
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
        let geometry =
            Geometry::new(cfg.slot_count, cfg.slot_size, crate::max_session_bytes()).map_err(|e| match e {
                abi::GeometryError::TooLarge => ENOMEM,
                _ => EINVAL,
            })?;
        if self.inner.lock().running() > 0 {
            return Err(EBUSY);
        }
        // Allocate without the lock (it may sleep for a while).
        let region = Region::new(geometry)?;
        cfg.mmap_size = region.mmap_size() as u64;
        cfg.to_dev_slots_offset = geometry.to_dev_slots_offset();
        cfg.from_dev_slots_offset = geometry.from_dev_slots_offset();
        {
            let mut inner = self.inner.lock();
            if inner.running() > 0 {
                return Err(EBUSY);
            }
            // An old region still mapped somewhere keeps its pages (each
            // mapped page holds a reference) but is no longer ours.
            inner.region = Some(region);
            inner.counters = SessionCounters::default();
            inner.copy_queue.clear();
        }
        write_arg(user, &cfg)?;
        Ok(0)
    }

    fn start_stream(&self, user: UserPtr) -> Result<isize> {
        let spec: abi::StreamSpec = read_arg(user)?;
        check_size(spec.size, <abi::StreamSpec as IoctlArg>::SIZE)?;
        if spec.flags != 0 || spec.reserved != 0 {
            return Err(EINVAL);
        }
        if spec.stream_id >= abi::MAX_STREAMS || spec.direction == 0 || spec.direction & !abi::DIR_BOTH != 0 {
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
        port::add_user(&*port, 1);
        *slot = Some(Stream {
            port,
            direction: spec.direction,
            counters: StreamCounters { running: 1, port: spec.port, direction: spec.direction, ..Default::default() },
            net: None,
        });
        Ok(0)
    }

    /// `START_NET_STREAM`: validate everything, then create and bind the
    /// socket here, in the caller's context (its credentials decide
    /// privileged ports, its netns the addresses), without `inner` held.
    ///
    /// `ctx` is `Arc::as_ptr` of this session (the socket callbacks' context).
    fn start_net_stream(&self, ctx: *const Session, user: UserPtr) -> Result<isize> {
        let spec: abi::NetStreamSpec = read_arg(user)?;
        check_size(spec.size, <abi::NetStreamSpec as IoctlArg>::SIZE)?;
        let ep = crate::net::endpoints(&spec)?;
        // `endpoints` checked it is a stream id other than ours.
        let forward_to = (spec.forward_to != abi::NET_NO_FORWARD).then_some(spec.forward_to as usize);
        let check_target = |inner: &Inner| -> Result {
            let Some(k) = forward_to else { return Ok(()) };
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
            if inner.streams[spec.stream_id as usize].is_some() {
                return Err(EEXIST);
            }
            check_target(&inner)?;
        }
        let bounce = match forward_to {
            Some(_) => VVec::from_elem(0u8, BOUNCE_BYTES, GFP_KERNEL).map_err(|_| ENOMEM)?,
            None => VVec::new(),
        };
        let sock = NetSocket::open(ctx, &ep)?;
        let ns = NetStream {
            sock,
            flags: spec.flags,
            counters: NetCounters::default(),
            forward_to,
            bounce,
            rtp: None,
            clock_rate: spec.clock_rate,
            ssrc_changes: 0,
        };
        // On failure the socket closes here, without `inner` held.
        let ns = KBox::new(ns, GFP_KERNEL)?;
        let mut inner = self.inner.lock();
        // Checked again: the lock was dropped while the socket was made.
        let free = inner.region.is_some() && inner.streams[spec.stream_id as usize].is_none() && !inner.closing;
        let target = check_target(&inner);
        if !free || target.is_err() {
            drop(inner);
            drop(ns);
            return Err(if free { target.err().unwrap_or(EINVAL) } else { EEXIST });
        }
        port::add_user(&port::UDP, 1);
        inner.streams[spec.stream_id as usize] = Some(Stream {
            port: PortRef::Builtin(&port::UDP),
            direction: spec.direction,
            counters: StreamCounters {
                running: 1,
                port: abi::PORT_UDP,
                direction: spec.direction,
                ..Default::default()
            },
            net: Some(ns),
        });
        // Its record is valid (zero counters, running) from the start.
        inner.publish_stats(spec.stream_id as usize, true);
        // Datagrams may have arrived before the stream was published: the
        // ioctl handler kicks the worker once.
        Ok(0)
    }

    fn get_net_status(&self, user: UserPtr) -> Result<isize> {
        let mut st: abi::NetStatus = read_arg(user)?;
        check_size(st.size, <abi::NetStatus as IoctlArg>::SIZE)?;
        if st.stream_id >= abi::MAX_STREAMS || st._pad != [0; 2] {
            return Err(EINVAL);
        }
        st.counters = self.inner.lock().streams[st.stream_id as usize]
            .as_ref()
            .and_then(|s| s.net.as_ref())
            .map(|n| abi::NetCounters { socket_drops: n.sock.drops(), ..n.counters() })
            .ok_or(ENOENT)?;
        write_arg(user, &st)?;
        Ok(0)
    }

    fn stop_stream(&self, user: UserPtr) -> Result<isize> {
        let stop: abi::StreamStop = read_arg(user)?;
        check_size(stop.size, <abi::StreamStop as IoctlArg>::SIZE)?;
        if stop.stream_id >= abi::MAX_STREAMS {
            return Err(EINVAL);
        }
        // Taken under the lock, dropped (a socket closed) after it.
        let st = self.inner.lock().take_stream(stop.stream_id as usize).ok_or(ENOENT)?;
        port::add_user(&*st.port, -1);
        drop(st);
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
                inner.streams[status.stream_id as usize].as_ref().map(|s| s.counters).unwrap_or_default()
            };
            status.state = inner.state();
            status.session = inner.counters;
            status._pad = 0;
        }
        write_arg(user, &status)?;
        Ok(0)
    }

    fn reset(&self) -> Result<isize> {
        self.stop_streams();
        let mut inner = self.inner.lock();
        inner.counters = SessionCounters::default();
        inner.copy_queue.clear();
        if let Some(r) = inner.region.as_mut() {
            r.reset();
        }
        Ok(0)
    }

    fn wait(&self, user: UserPtr) -> Result<isize> {
        let mut args: abi::WaitArgs = read_arg(user)?;
        check_size(args.size, <abi::WaitArgs as IoctlArg>::SIZE)?;
        if args.flags == 0 || args.flags & !abi::WAIT_ALL != 0 || args.timeout_ms > abi::MAX_WAIT_MS || args.ready != 0
        {
            return Err(EINVAL);
        }
        let mut jiffies = msecs_to_jiffies(args.timeout_ms);
        let mut inner = self.inner.lock();
        let ready = loop {
            let Some(region) = inner.region.as_ref() else { return Err(enotconn()) };
            let mut ready = 0;
            if args.flags & abi::WAIT_FROM_DEV_READY != 0 && (region.fromdev_ready() || !inner.copy_queue.is_empty()) {
                ready |= abi::WAIT_FROM_DEV_READY;
            }
            if args.flags & abi::WAIT_TO_DEV_SPACE != 0 && region.todev_space() {
                ready |= abi::WAIT_TO_DEV_SPACE;
            }
            if ready != 0 {
                inner.counters.waits += 1;
                break ready;
            }
            if jiffies == 0 {
                inner.counters.wait_timeouts += 1;
                return Err(ETIMEDOUT);
            }
            match self.waiters.wait_interruptible_timeout(&mut inner, jiffies) {
                kernel::sync::CondVarTimeoutResult::Timeout => jiffies = 0,
                kernel::sync::CondVarTimeoutResult::Woken { jiffies: left } => jiffies = left,
                kernel::sync::CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
            }
        };
        drop(inner);
        args.ready = ready;
        write_arg(user, &args)?;
        Ok(0)
    }
}

#[vtable]
impl MiscDevice for Session {
    type Ptr = Arc<Session>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Arc<Session>> {
        // The 7.2 miscdevice abstraction leaves `file_operations.owner`
        // unset, so an open file would not pin the module. Pin it here and
        // release it as the last step of `release`, so that unloading is
        // impossible while a session is open.
        // SAFETY: `THIS_MODULE` is this module, alive while its code runs.
        if !unsafe { bindings::try_module_get(crate::THIS_MODULE.as_ptr()) } {
            return Err(ENODEV);
        }
        Self::new_session().inspect_err(|_| {
            // SAFETY: balances the successful `try_module_get` above.
            unsafe { bindings::module_put(crate::THIS_MODULE.as_ptr()) }
        })
    }

    fn release(session: Arc<Session>, _file: &File) {
        session.shut_down();
        drop(session);
        // SAFETY: balances `try_module_get` in `open`; nothing of the session
        // remains. This is the last statement, as in `module_put_and_*`.
        unsafe { bindings::module_put(crate::THIS_MODULE.as_ptr()) };
    }

    fn mmap(session: ArcBorrow<'_, Session>, _file: &File, vma: &VmaNew) -> Result {
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
        // Not inherited by fork, cannot be grown by mremap.
        vma.set_dontcopy();
        vma.set_dontexpand();
        let inner = session.inner.lock();
        let region = inner.region.as_ref().ok_or(EINVAL)?;
        let len = vma.end() - vma.start();
        if len != region.mmap_size() {
            return Err(EINVAL);
        }
        let mixed = vma.set_mixedmap();
        for i in 0..len / PAGE_SIZE {
            let page = region.page(i).ok_or(EINVAL)?;
            mixed.vm_insert_page(vma.start() + i * PAGE_SIZE, &page)?;
        }
        Ok(())
    }

    fn ioctl(session: ArcBorrow<'_, Session>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserPtr::from_addr(arg);
        match cmd {
            abi::RTPMGR_IOC_GET_INFO => session.get_info(user),
            abi::RTPMGR_IOC_CONFIGURE_BUFFER => session.configure(user),
            abi::RTPMGR_IOC_START_STREAM => session.start_stream(user),
            abi::RTPMGR_IOC_STOP_STREAM => session.stop_stream(user),
            abi::RTPMGR_IOC_GET_STATUS => session.get_status(user),
            abi::RTPMGR_IOC_RESET => session.reset(),
            abi::RTPMGR_IOC_KICK => {
                {
                    let mut inner = session.inner.lock();
                    if inner.region.is_none() {
                        return Err(enotconn());
                    }
                    inner.counters.kicks += 1;
                }
                Session::kick(session);
                Ok(0)
            }
            abi::RTPMGR_IOC_WAIT => session.wait(user),
            abi::RTPMGR_IOC_GET_PORT => session.get_port(user),
            abi::RTPMGR_IOC_START_NET_STREAM => {
                let ctx = Arc::as_ptr(&Arc::from(session));
                let r = session.start_net_stream(ctx, user);
                if r.is_ok() {
                    Session::kick(session);
                }
                r
            }
            abi::RTPMGR_IOC_GET_NET_STATUS => session.get_net_status(user),
            _ => Err(ENOTTY),
        }
    }

    /// The copying baseline: one write() is one packet, a `SlotHeader`
    /// followed by `len` bytes, for a running stream.
    fn write_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let session = kiocb.file();
        let total = iov.len();
        let hdr_size = abi::SLOT_HEADER_SIZE as usize;
        if total < hdr_size || total > abi::MAX_SLOT_SIZE as usize {
            return Err(EINVAL);
        }
        let mut buf = KVec::with_capacity(total, GFP_KERNEL)?;
        iov.copy_from_iter_vec(&mut buf, GFP_KERNEL)?;
        if buf.len() != total {
            return Err(EFAULT);
        }
        let h = SlotHeader::from_bytes_copy(&buf[..hdr_size]).ok_or(EINVAL)?;
        if h.check(abi::MAX_SLOT_SIZE).is_err() || h.len as usize != total - hdr_size {
            return Err(EINVAL);
        }
        let mut inner = session.inner.lock();
        if inner.region.is_none() {
            return Err(enotconn());
        }
        let stream = inner.streams[h.stream_id as usize]
            .as_mut()
            .filter(|s| s.direction & abi::DIR_TO_DEVICE != 0)
            .ok_or(EINVAL)?;
        let payload = &mut buf[hdr_size..];
        // SAFETY: `payload` is our exclusive kernel buffer, valid for its
        // length for this scope, with no other reference used meanwhile.
        let pkt = unsafe { SharedBytes::from_raw(payload.as_mut_ptr(), payload.len()) };
        if let Some(net) = stream.net.as_mut() {
            match net.sock.send(&pkt) {
                SendResult::Sent => {
                    net.counters.tx_packets += 1;
                    net.counters.tx_bytes += u64::from(h.len);
                }
                SendResult::Failed => net.counters.tx_errors += 1,
                SendResult::WouldBlock | SendResult::Retry => {
                    net.counters.tx_blocked += 1;
                    return Err(EAGAIN);
                }
            }
            stream.counters.to_dev_packets += 1;
            stream.counters.to_dev_bytes += u64::from(h.len);
            inner.counters.to_dev_packets += 1;
            inner.counters.to_dev_bytes += u64::from(h.len);
            return Ok(total);
        }
        let wants_return = stream.wants_return();
        let mut back = KVec::new();
        let returned = if wants_return {
            back.extend_with(payload.len(), 0u8, GFP_KERNEL)?;
            // SAFETY: `back` is an exclusive kernel buffer of that length.
            let mut out = unsafe { SharedBytes::from_raw(back.as_mut_ptr(), back.len()) };
            stream.port.transmit(&pkt, Some(&mut out))
        } else {
            stream.port.transmit(&pkt, None)
        };
        stream.counters.to_dev_packets += 1;
        stream.counters.to_dev_bytes += u64::from(h.len);
        let mut full = false;
        if let Some(len) = returned {
            back.truncate(len);
            let out_hdr = SlotHeader {
                len: len as u32,
                stream_id: h.stream_id,
                timestamp_ns: monotonic_ns(),
                ..Default::default()
            };
            let mut packet = KVec::with_capacity(hdr_size + len, GFP_KERNEL)?;
            packet.extend_from_slice(out_hdr.as_bytes(), GFP_KERNEL)?;
            packet.extend_from_slice(&back, GFP_KERNEL)?;
            stream.counters.from_dev_packets += 1;
            stream.counters.from_dev_bytes += len as u64;
            if inner.copy_queue.len() >= COPY_QUEUE_MAX {
                full = true;
            } else {
                inner.copy_queue.push(packet, GFP_KERNEL)?;
            }
        }
        inner.counters.to_dev_packets += 1;
        inner.counters.to_dev_bytes += u64::from(h.len);
        if full {
            inner.counters.ring_full_drops += 1;
            if let Some(s) = inner.streams[h.stream_id as usize].as_mut() {
                s.counters.ring_full_drops += 1;
            }
        } else if returned.is_some() {
            inner.counters.from_dev_packets += 1;
            inner.counters.from_dev_bytes += returned.unwrap_or(0) as u64;
        }
        drop(inner);
        session.waiters.notify_all();
        Ok(total)
    }

    /// One returned packet per read(), `SlotHeader` first; `EAGAIN` when
    /// none is queued (block in `WAIT` for `WAIT_FROM_DEV_READY`), `EMSGSIZE`
    /// if the buffer cannot hold the next one.
    fn read_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let session = kiocb.file();
        let packet = {
            let mut inner = session.inner.lock();
            let next_len = inner.copy_queue.first().map(|p| p.len()).ok_or(EAGAIN)?;
            if next_len > iov.len() {
                return Err(EMSGSIZE);
            }
            inner.copy_queue.remove(0).map_err(|_| EAGAIN)?
        };
        Ok(iov.copy_to_iter(&packet))
    }

    fn show_fdinfo(session: ArcBorrow<'_, Session>, m: &SeqFile, _file: &File) {
        let inner = session.inner.lock();
        let state = match inner.state() {
            abi::STATE_UNCONFIGURED => "unconfigured",
            abi::STATE_CONFIGURED => "configured",
            _ => "streaming",
        };
        seq_print!(m, "rtpmgr-state:\t{}\n", state);
        if let Some(r) = inner.region.as_ref() {
            let g = r.geometry();
            let (to, from) = r.fill();
            seq_print!(
                m,
                "rtpmgr-rings:\t{} x {} B, to-device fill {}, from-device fill {}\n",
                g.slot_count,
                g.slot_size,
                to,
                from
            );
        }
        let c = &inner.counters;
        seq_print!(
            m,
            "rtpmgr-counters:\tto_dev {} pkts {} B, from_dev {} pkts {} B, invalid_slots {}, invalid_indices {}, ring_full_drops {}, kicks {}, sleeps {}, waits {}/{}\n",
            c.to_dev_packets,
            c.to_dev_bytes,
            c.from_dev_packets,
            c.from_dev_bytes,
            c.invalid_slots,
            c.invalid_indices,
            c.ring_full_drops,
            c.kicks,
            c.worker_sleeps,
            c.waits,
            c.wait_timeouts
        );
        for (id, s) in inner.streams.iter().enumerate() {
            if let Some(s) = s {
                seq_print!(
                    m,
                    "rtpmgr-stream:\t{} port {} dir {} to_dev {} from_dev {}\n",
                    id,
                    s.port.name(),
                    s.direction,
                    s.counters.to_dev_packets,
                    s.counters.from_dev_packets
                );
                if let Some(n) = s.net.as_ref() {
                    let c = &n.counters;
                    seq_print!(
                        m,
                        "rtpmgr-net:\t{} rx {} pkts {} B, tx {} pkts {} B, tx_errors {}, tx_blocked {}, malformed {}, oversize {}, csum_errors {}, ring_full {}\n",
                        id,
                        c.rx_packets,
                        c.rx_bytes,
                        c.tx_packets,
                        c.tx_bytes,
                        c.tx_errors,
                        c.tx_blocked,
                        c.malformed,
                        c.oversize,
                        c.csum_errors,
                        c.ring_full
                    );
                    if let Some(k) = n.forward_to {
                        seq_print!(
                            m,
                            "rtpmgr-fwd:	{} -> {} fwd {} pkts {} B, forward_drops {}, tap {}, tap_drops {}\n",
                            id,
                            k,
                            c.fwd_packets,
                            c.fwd_bytes,
                            c.forward_drops,
                            c.tap_packets,
                            c.tap_drops
                        );
                    }
                }
            }
        }
    }
}
