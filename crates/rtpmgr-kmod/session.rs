// SPDX-License-Identifier: GPL-2.0-only

//! One open file of `/dev/rtpmgr`: its rings, streams, counters, ioctls,
//! the copying read()/write() path and the worker that moves packets.
//!
//! Locking: `inner` (a mutex) guards everything mutable. It is never held
//! while copying from or to user memory (a fault there takes `mmap_lock`,
//! which `mmap` takes before `inner`), so ioctl arguments are copied in
//! before locking and results copied out after unlocking.

use crate::abi::{self, Geometry, IoctlArg, NetCounters, SessionCounters, SlotHeader, StreamCounters};
use crate::device::MapCount;
use crate::net::{NetSocket, NetWaker, Recv, SendResult};
use crate::port::{self, PortRef};
use crate::ring::{Region, RingId, SharedBytes};
use crate::seqstats::SourceStats;
use kernel::{
    alloc::VVec,
    bindings,
    fs::File,
    iov::{IovIterDest, IovIterSource},
    mm::virt::{flags as vm_flags, VmaNew},
    new_mutex, new_poll_condvar,
    page::PAGE_SIZE,
    prelude::*,
    seq_file::{seq_print, SeqFile},
    sync::{
        poll::{PollCondVar, PollTable},
        Arc, ArcBorrow, Mutex,
    },
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
/// Packets, and bytes, the copying path holds for read(): both bound it
/// (256 packets of up to 64 KiB would be 16 MiB).
const COPY_QUEUE_MAX: usize = 256;
const COPY_QUEUE_BYTES: usize = 1 << 20;
/// Bytes of a sending `udp` stream's backlog (see [`Backlog`]).
const BACKLOG_BYTES: usize = 64 << 10;

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
    /// The socket of a `START_NET_STREAM` stream (port `udp`). Boxed, so
    /// the 64 stream entries of `Inner` stay small.
    net: Option<KBox<NetStream>>,
}

impl Stream {
    /// A stream on `port`, counted as one of its users until dropped.
    fn new(port: PortRef, direction: u32, counters: StreamCounters, net: Option<KBox<NetStream>>) -> Stream {
        port::add_user(&*port, 1);
        Stream { port, direction, counters, net }
    }

    /// Whether what the stream's port returns goes to its from-device side
    /// (a port that returns packets, and the stream receives).
    fn wants_return(&self) -> bool {
        self.direction & abi::DIR_FROM_DEVICE != 0 && self.port.returns_packets()
    }
}

impl Drop for Stream {
    /// Closing a `udp` stream's socket sleeps and takes socket locks: a
    /// stream is dropped only in process context with no session lock held
    /// (see `Session::take_streams`).
    fn drop(&mut self) {
        port::add_user(&*self.port, -1);
    }
}

/// Datagrams of a sending `udp` stream that the socket refused for want of
/// send-buffer space, oldest first, each as a `u32` length and its bytes.
///
/// A full socket must not stop the to-device ring, which carries every
/// stream of the session: the worker moves the slot's datagram here and
/// releases the slot, so the other streams go on (and later slots of this
/// stream queue behind, in order). The backlog is sent when the socket's
/// write-space callback says there is room. What does not fit in
/// [`BACKLOG_BYTES`] as well is dropped and counted (`tx_dropped`): the
/// destination is slower than the stream. Allocated when the stream
/// starts, in the caller's context and charged to it.
struct Backlog {
    buf: VVec<u8>,
    /// Next record to send, and the end of the last one.
    head: usize,
    tail: usize,
}

impl Backlog {
    fn new(bytes: usize) -> Result<Backlog> {
        let buf = VVec::from_elem(0u8, bytes, GFP_KERNEL_ACCOUNT).map_err(|_| ENOMEM)?;
        Ok(Backlog { buf, head: 0, tail: 0 })
    }

    fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Append a copy of `pkt`; `false` if it does not fit.
    fn push(&mut self, pkt: &SharedBytes<'_>) -> bool {
        let need = 4 + pkt.len();
        if self.tail + need > self.buf.len() && self.head > 0 {
            // Move what is queued to the front (at most the buffer's size,
            // and only when the end is reached).
            self.buf.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        let Some(rec) = self.buf.get_mut(self.tail..self.tail + need) else { return false };
        let (len, data) = rec.split_at_mut(4);
        len.copy_from_slice(&(pkt.len() as u32).to_ne_bytes());
        pkt.copy_to_slice(data);
        self.tail += need;
        true
    }

    /// The oldest datagram.
    fn front(&mut self) -> Option<&mut [u8]> {
        if self.is_empty() {
            return None;
        }
        let len = self.buf.get(self.head..self.head + 4)?;
        let len = u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize;
        self.buf.get_mut(self.head + 4..self.head + 4 + len)
    }

    /// Drop the oldest datagram.
    fn pop(&mut self) {
        if let Some(n) = self.front().map(|d| d.len()) {
            self.head += 4 + n;
            if self.head >= self.tail {
                self.head = 0;
                self.tail = 0;
            }
        }
    }
}

/// The network side of a `udp` stream.
struct NetStream {
    /// Dropped only in process context, never with `inner` held (it sleeps
    /// and takes socket locks): see `Session::take_streams`.
    sock: NetSocket<Session>,
    flags: u32,
    counters: NetCounters,
    /// `forward_to`: received datagrams go to this stream of the session.
    forward_to: Option<usize>,
    /// A whole datagram, for forwarding (empty without `forward_to`).
    bounce: VVec<u8>,
    /// Sending streams: what the socket could not take yet.
    backlog: Option<Backlog>,
    /// `NET_F_RTP`: statistics of the current source.
    rtp: Option<SourceStats>,
    clock_rate: u32,
    ssrc_changes: u64,
}

/// Whether a send left its datagram waiting, and if so whether the socket's
/// write-space callback will wake the worker (`armed`) or room appeared
/// meanwhile and the worker must simply try again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TxBlock {
    Armed,
    Retry,
}

/// Merge the blocks of several streams: one that must retry wins.
fn tx_block(a: Option<TxBlock>, b: Option<TxBlock>) -> Option<TxBlock> {
    match (a, b) {
        (Some(TxBlock::Retry), _) | (_, Some(TxBlock::Retry)) => Some(TxBlock::Retry),
        (Some(TxBlock::Armed), _) | (_, Some(TxBlock::Armed)) => Some(TxBlock::Armed),
        _ => None,
    }
}

impl NetStream {
    /// Send `pkt`, once more if the socket found room while arming its
    /// wake-up; counts what it did.
    fn try_send(&mut self, pkt: &SharedBytes<'_>) -> Option<TxBlock> {
        let mut r = self.sock.send(pkt);
        if matches!(r, SendResult::Retry) {
            r = self.sock.send(pkt);
        }
        match r {
            SendResult::Sent => {
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += pkt.len() as u64;
                None
            }
            SendResult::Failed => {
                self.counters.tx_errors += 1;
                None
            }
            SendResult::WouldBlock => {
                self.counters.tx_blocked += 1;
                Some(TxBlock::Armed)
            }
            SendResult::Retry => {
                self.counters.tx_blocked += 1;
                Some(TxBlock::Retry)
            }
        }
    }

    /// Send what the backlog holds, oldest first, until the socket is full
    /// again. Returns how many went and whether some still wait.
    fn drain_backlog(&mut self) -> (u32, Option<TxBlock>) {
        let mut sent = 0;
        loop {
            let Some(backlog) = self.backlog.as_mut() else { return (sent, None) };
            let Some(front) = backlog.front() else { return (sent, None) };
            let pkt = SharedBytes::from_slice(front);
            // `try_send` needs `self` whole: send through the socket here.
            let mut r = self.sock.send(&pkt);
            if matches!(r, SendResult::Retry) {
                r = self.sock.send(&pkt);
            }
            let len = pkt.len() as u64;
            match r {
                SendResult::Sent => {
                    self.counters.tx_packets += 1;
                    self.counters.tx_bytes += len;
                }
                SendResult::Failed => self.counters.tx_errors += 1,
                SendResult::WouldBlock => {
                    self.counters.tx_blocked += 1;
                    return (sent, Some(TxBlock::Armed));
                }
                SendResult::Retry => {
                    self.counters.tx_blocked += 1;
                    return (sent, Some(TxBlock::Retry));
                }
            }
            backlog.pop();
            sent += 1;
        }
    }

    /// A to-device datagram of this (sending) stream: sent, or queued in
    /// the backlog behind earlier ones, or dropped when that is full.
    fn transmit(&mut self, pkt: &SharedBytes<'_>) -> Option<TxBlock> {
        let queued = self.backlog.as_ref().is_some_and(|b| !b.is_empty());
        let blocked = if queued { Some(TxBlock::Armed) } else { self.try_send(pkt) };
        if blocked.is_some() && !self.backlog.as_mut().is_some_and(|b| b.push(pkt)) {
            self.counters.tx_dropped += 1;
        }
        blocked
    }

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
    /// Packets ports returned for write(): what read() hands out, and
    /// their bytes (both bounded).
    copy_queue: KVec<KVec<u8>>,
    copy_bytes: usize,
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

/// What one worker pass over the to-device side achieved.
#[derive(Default)]
struct TxPass {
    /// Moved at least one slot or backlog datagram.
    progress: bool,
    /// Entries wait, but the from-device ring has no room for what their
    /// port returns.
    no_space: bool,
    /// A sending `udp` stream holds datagrams its socket refused.
    blocked: Option<TxBlock>,
    /// The producer index the pass read: entries published after it are
    /// news when the worker is about to sleep.
    producer: u32,
}

/// What one worker pass over the receiving `udp` streams achieved.
#[derive(PartialEq, Eq)]
enum RxPass {
    /// Took at least one datagram.
    Progress,
    /// Nothing to receive.
    Idle,
    /// Datagrams wait, but the from-device ring is full.
    NoSpace,
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

    /// Send what the sending `udp` streams' backlogs hold (older than
    /// anything in the ring), then drain up to `BATCH` to-device entries
    /// into their ports and publish what the ports return.
    fn pass(&mut self) -> TxPass {
        let mut out = TxPass::default();
        for net in self.streams.iter_mut().flatten().filter_map(|s| s.net.as_mut()) {
            let (sent, blocked) = net.drain_backlog();
            out.progress |= sent > 0;
            out.blocked = tx_block(out.blocked, blocked);
        }
        let Some(region) = self.region.as_mut() else { return out };
        let slot_size = region.geometry().slot_size;
        out.producer = region.todev_producer();
        let available = match region.todev_available_at(out.producer) {
            Ok(n) => n.min(BATCH),
            Err(()) => {
                self.counters.invalid_indices += 1;
                0
            }
        };
        let (mut consumed, mut produced) = (0u32, 0u32);
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
                // Sent, queued in the stream's backlog or dropped: the
                // slot goes back either way, so one full socket never
                // holds up the other streams of the ring.
                let pkt = region.todev_payload(i, h.len);
                out.blocked = tx_block(out.blocked, net.transmit(&pkt));
            } else {
                // A slot that would come back waits in the ring until the
                // from-device ring has room: user space asked for every
                // packet (and reads the from-device ring it fills).
                let wants_return = stream.wants_return();
                if wants_return && !fromdev_room(region, produced, &mut self.counters) {
                    out.no_space = true;
                    break;
                }
                let pkt = region.todev_payload(i, h.len);
                let slot = wants_return.then_some(produced);
                if port_transmit(stream, h.stream_id, &pkt, region, slot, now, &mut self.counters) {
                    produced += 1;
                }
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
        out.progress |= consumed > 0 || produced > 0;
        out
    }

    /// Receive up to `BATCH` datagrams from the sockets of `udp` streams
    /// into the from-device ring. A full ring leaves them in the sockets.
    fn net_rx(&mut self) -> RxPass {
        let Some(region) = self.region.as_mut() else { return RxPass::Idle };
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
                    // A pending socket error (consumed: what is queued
                    // behind it is read on) or a datagram the helper could
                    // not copy (dropped). Never "empty".
                    Recv::Error => {
                        handled += 1;
                        net.counters.rx_errors += 1;
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
            RxPass::Progress
        } else if full {
            RxPass::NoSpace
        } else {
            RxPass::Idle
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
    let Some(net) = src.net.as_deref_mut() else { return 0 };
    let cap = region.geometry().payload_capacity() as usize;
    let now = monotonic_ns();
    let mut handled = 0;
    while handled < budget && net.sock.rx_pending() {
        let mut buf = SharedBytes::from_slice(&mut net.bounce);
        let (len, head, last) = match net.sock.recv(&mut buf) {
            Recv::Empty => break,
            Recv::BadChecksum => {
                handled += 1;
                net.counters.csum_errors += 1;
                continue;
            }
            Recv::Error => {
                handled += 1;
                net.counters.rx_errors += 1;
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
        let pkt = SharedBytes::from_slice(&mut net.bounce[..len]);
        let target = dst.as_mut().filter(|s| s.direction & abi::DIR_TO_DEVICE != 0);
        let Some(target) = target else {
            net.counters.forward_drops += 1;
            continue;
        };
        let sent = match target.net.as_mut() {
            // Forwarding never waits: a target whose socket is full (or
            // still has a backlog to send first) costs the datagram.
            Some(tn) if tn.backlog.as_ref().is_some_and(|b| !b.is_empty()) => false,
            Some(tn) => {
                let tx_errors = tn.counters.tx_errors;
                tn.try_send(&pkt).is_none() && tn.counters.tx_errors == tx_errors
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
    /// `WAIT` callers and `poll()` sleep here; the worker wakes them after
    /// each pass, and so do the ioctls that make room or stop streams.
    #[pin]
    waiters: PollCondVar,
    #[pin]
    work: Work<Session>,
    /// The VMAs mapping the region (see `MapCount`).
    maps: Arc<MapCount>,
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

impl WorkItem for Session {
    type Pointer = Arc<Session>;

    /// The kernel side of the rings. "Asleep" means "not queued": it runs
    /// until there is nothing to do, raises need-wakeup on every ring it
    /// waits for, re-checks once, and returns; `KICK` (or a socket
    /// callback) queues it again.
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
            if tx.progress || rx == RxPass::Progress {
                inner.publish_all_stats();
                drop(inner);
                this.waiters.notify_all();
                continue;
            }
            // Nothing moved: sleep. To-device need-wakeup goes up whatever
            // we wait for, so a slot published for any stream kicks us,
            // also while a socket holds a backlog (its write-space
            // callback wakes us for that one). Datagrams arriving meanwhile
            // queue the worker from the socket callback.
            let Some(r) = inner.region.as_mut() else { return };
            r.raise_need_wakeup(RingId::ToDevice);
            // Entries published since the pass looked: stay awake.
            let mut again = r.todev_producer() != tx.producer;
            if tx.no_space || rx == RxPass::NoSpace {
                r.raise_need_wakeup(RingId::FromDevice);
                again |= matches!(r.fromdev_free(1), Ok(n) if n > 0);
            }
            // Room appeared while a socket armed its wake-up: try again.
            again |= tx.blocked == Some(TxBlock::Retry);
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
    /// A new session for `open`; its 64 stream entries are built in
    /// place, never on the stack.
    pub(crate) fn open(_file: &File) -> Result<Arc<Session>> {
        let copy_queue = KVec::with_capacity(COPY_QUEUE_MAX, GFP_KERNEL_ACCOUNT)?;
        let maps = MapCount::new()?;
        Arc::pin_init(
            try_pin_init!(Session {
                inner <- new_mutex!(init!(Inner {
                    region: None,
                    streams <- pin_init::init_array_from_fn(|_| None),
                    counters: SessionCounters::default(),
                    copy_queue,
                    copy_bytes: 0,
                    closing: false,
                })),
                waiters <- new_poll_condvar!("rtpmgr::Session::waiters"),
                work <- new_work!("rtpmgr::Session::work"),
                maps,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The file is closed: stop the streams and wait until the worker is
    /// idle for good.
    pub(crate) fn release(self: Arc<Self>) {
        let taken = self.take_streams(|inner| inner.closing = true);
        drop(taken);
        self.waiters.notify_all();
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
    fn take_streams(&self, also: impl FnOnce(&mut Inner)) -> KVec<Stream> {
        // Room for all of them before locking; should the allocation fail,
        // the streams are taken one critical section each instead.
        let mut taken = KVec::with_capacity(abi::MAX_STREAMS as usize, GFP_KERNEL).unwrap_or_default();
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
        while let Some(id) = (0..abi::MAX_STREAMS as usize).find(|&id| inner.streams[id].is_some()) {
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
    fn after_removal(this: ArcBorrow<'_, Session>) {
        Session::kick(this);
        this.waiters.notify_all();
    }

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
                {
                    let mut inner = this.inner.lock();
                    if inner.region.is_none() {
                        return Err(enotconn());
                    }
                    inner.counters.kicks += 1;
                }
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
        let geometry =
            Geometry::new(cfg.slot_count, cfg.slot_size, crate::max_session_bytes()).map_err(|e| match e {
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
        let old = {
            let mut inner = self.inner.lock();
            // `mmap` counts a new mapping under this lock, so no mapping of
            // the old region can appear between the check and the swap.
            if busy(&inner) {
                return Err(EBUSY);
            }
            inner.counters = SessionCounters::default();
            inner.copy_queue.clear();
            inner.copy_bytes = 0;
            inner.region.replace(region)
        };
        // Unmapped (checked above): freeing it and giving back its charge
        // (which takes the configuring process's mmap lock) happen here,
        // without the session lock.
        drop(old);
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
        let counters =
            StreamCounters { running: 1, port: spec.port, direction: spec.direction, ..Default::default() };
        *slot = Some(Stream::new(port, spec.direction, counters, None));
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
            let Some(k) = spec.forward_to else { return Ok(()) };
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
            Some(_) => VVec::from_elem(0u8, BOUNCE_BYTES, GFP_KERNEL_ACCOUNT).map_err(|_| ENOMEM)?,
            None => VVec::new(),
        };
        let sends = spec.direction & abi::DIR_TO_DEVICE != 0;
        let receives = spec.direction & abi::DIR_FROM_DEVICE != 0;
        let backlog = if sends { Some(Backlog::new(BACKLOG_BYTES)?) } else { None };
        let sock = NetSocket::attach(spec.fd, receives, sends, me)?;
        let ns = NetStream {
            sock,
            flags: spec.flags,
            counters: NetCounters::default(),
            forward_to: spec.forward_to,
            bounce,
            backlog,
            rtp: None,
            clock_rate: spec.clock_rate,
            ssrc_changes: 0,
        };
        // On failure the socket is given back here, without `inner` held.
        let ns = KBox::new(ns, GFP_KERNEL_ACCOUNT)?;
        let mut inner = self.inner.lock();
        // Checked again: the lock was dropped while the socket was taken.
        let free = inner.region.is_some() && inner.streams[spec.stream_id].is_none() && !inner.closing;
        let target = check_target(&inner);
        if !free || target.is_err() {
            drop(inner);
            drop(ns);
            return Err(if free { target.err().unwrap_or(EINVAL) } else { EEXIST });
        }
        let counters =
            StreamCounters { running: 1, port: abi::PORT_UDP, direction: spec.direction, ..Default::default() };
        inner.streams[spec.stream_id] =
            Some(Stream::new(PortRef::Builtin(&port::UDP), spec.direction, counters, Some(ns)));
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
        st.counters = self.inner.lock().streams[st.stream_id as usize]
            .as_ref()
            .and_then(|s| s.net.as_ref())
            .map(|n| abi::NetCounters { socket_drops: n.sock.drops(), ..n.counters() })
            .ok_or(ENOENT)?;
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
        let st = this.inner.lock().take_stream(stop.stream_id as usize).ok_or(ENOENT)?;
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
                inner.streams[status.stream_id as usize].as_ref().map(|s| s.counters).unwrap_or_default()
            };
            status.state = inner.state();
            status.session = inner.counters;
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
            inner.copy_queue.clear();
            inner.copy_bytes = 0;
            if let Some(r) = inner.region.as_mut() {
                r.reset();
            }
        });
        drop(taken);
        // The rings are empty and show need-wakeup (as after configure):
        // the worker has nothing to do until the next kick. WAIT sleepers
        // re-check (to-device has room now).
        this.waiters.notify_all();
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

    /// `poll()`: readable while from-device entries (or packets for
    /// `read()`) wait, writable while the to-device ring has a free slot:
    /// `WAIT`'s conditions, on the same wait queue, which the worker wakes
    /// after every productive pass. Nothing before `CONFIGURE_BUFFER`.
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        table.register_wait(file, &self.waiters);
        let inner = self.inner.lock();
        let Some(region) = inner.region.as_ref() else { return 0 };
        let mut mask = 0;
        if region.fromdev_ready() || !inner.copy_queue.is_empty() {
            mask |= bindings::POLLIN | bindings::POLLRDNORM;
        }
        if region.todev_space() {
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
        let inner = self.inner.lock();
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
        // Counted under the lock CONFIGURE_BUFFER checks it under.
        MapCount::attach(&self.maps, vma);
        Ok(())
    }

    /// The copying baseline: one write() is one packet, a `SlotHeader`
    /// followed by `len` bytes, for a running stream.
    pub(crate) fn write_iter(session: ArcBorrow<'_, Session>, iov: &mut IovIterSource<'_>) -> Result<usize> {
        let total = iov.len();
        let hdr_size = abi::SLOT_HEADER_SIZE as usize;
        if total < hdr_size || total > abi::MAX_SLOT_SIZE as usize {
            return Err(EINVAL);
        }
        let mut buf = KVec::with_capacity(total, GFP_KERNEL_ACCOUNT)?;
        iov.copy_from_iter_vec(&mut buf, GFP_KERNEL_ACCOUNT)?;
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
        let pkt = SharedBytes::from_slice(payload);
        if let Some(net) = stream.net.as_mut() {
            // Never ahead of what waits in the backlog.
            if net.backlog.as_ref().is_some_and(|b| !b.is_empty()) || net.try_send(&pkt).is_some() {
                return Err(EAGAIN);
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
            back.extend_with(pkt.len(), 0u8, GFP_KERNEL_ACCOUNT)?;
            let mut out = SharedBytes::from_slice(&mut back);
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
            stream.counters.from_dev_packets += 1;
            stream.counters.from_dev_bytes += len as u64;
            let size = hdr_size + len;
            if inner.copy_queue.len() >= COPY_QUEUE_MAX || inner.copy_bytes + size > COPY_QUEUE_BYTES {
                full = true;
            } else {
                let mut packet = KVec::with_capacity(size, GFP_KERNEL_ACCOUNT)?;
                packet.extend_from_slice(out_hdr.as_bytes(), GFP_KERNEL_ACCOUNT)?;
                packet.extend_from_slice(&back, GFP_KERNEL_ACCOUNT)?;
                inner.copy_queue.push(packet, GFP_KERNEL_ACCOUNT)?;
                inner.copy_bytes += size;
            }
        }
        inner.counters.to_dev_packets += 1;
        inner.counters.to_dev_bytes += u64::from(h.len);
        if full {
            inner.counters.ring_full_drops += 1;
            if let Some(s) = inner.streams[h.stream_id as usize].as_mut() {
                s.counters.ring_full_drops += 1;
            }
        } else if let Some(len) = returned {
            inner.counters.from_dev_packets += 1;
            inner.counters.from_dev_bytes += len as u64;
        }
        drop(inner);
        session.waiters.notify_all();
        Ok(total)
    }

    /// One returned packet per read(), `SlotHeader` first; `EAGAIN` when
    /// none is queued (block in `WAIT` for `WAIT_FROM_DEV_READY`), `EMSGSIZE`
    /// if the buffer cannot hold the next one.
    pub(crate) fn read_iter(session: ArcBorrow<'_, Session>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        let packet = {
            let mut inner = session.inner.lock();
            let next_len = inner.copy_queue.first().map(|p| p.len()).ok_or(EAGAIN)?;
            if next_len > iov.len() {
                return Err(EMSGSIZE);
            }
            let p = inner.copy_queue.remove(0).map_err(|_| EAGAIN)?;
            inner.copy_bytes -= p.len();
            p
        };
        Ok(iov.copy_to_iter(&packet))
    }

    pub(crate) fn show_fdinfo(&self, m: &SeqFile) {
        let inner = self.inner.lock();
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
                        "rtpmgr-net:\t{} rx {} pkts {} B, tx {} pkts {} B, tx_errors {}, tx_blocked {}, tx_dropped {}, malformed {}, oversize {}, csum_errors {}, rx_errors {}, ring_full {}\n",
                        id,
                        c.rx_packets,
                        c.rx_bytes,
                        c.tx_packets,
                        c.tx_bytes,
                        c.tx_errors,
                        c.tx_blocked,
                        c.tx_dropped,
                        c.malformed,
                        c.oversize,
                        c.csum_errors,
                        c.rx_errors,
                        c.ring_full
                    );
                    if let Some(k) = n.forward_to {
                        seq_print!(
                            m,
                            "rtpmgr-fwd:\t{} -> {} fwd {} pkts {} B, forward_drops {}, tap {}, tap_drops {}\n",
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
