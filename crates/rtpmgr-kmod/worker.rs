// SPDX-License-Identifier: GPL-2.0-only

//! The session worker: the kernel side of the rings. A work item on
//! `system_unbound` that moves to-device slots (and `udp` backlogs) to
//! their ports and sockets, receives datagrams into the from-device ring
//! or forwards them, publishes the statistics records, and sleeps with
//! need-wakeup raised when there is nothing to do.

use crate::abi::{self, NetCounters, SessionCounters, SlotHeader};
use crate::net::{NetSocket, Recv};
use crate::ring::{Region, SharedBytes};
use crate::session::{monotonic_ns, Inner, Session};
use crate::stream::{tx_block, Endpoint, NetStream, Stream, TsState, TxBlock};
use kernel::{
    sync::Arc,
    workqueue::{self, WorkItem},
};

/// Slots the worker handles per pass before publishing.
const BATCH: u32 = 64;
/// Passes per worker run before it yields the CPU by re-queueing itself.
const PASSES_PER_RUN: u32 = 16;

/// What one worker pass over the to-device side achieved.
#[derive(Default)]
pub(crate) struct TxPass {
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
pub(crate) enum RxPass {
    /// Took at least one datagram.
    Progress,
    /// Nothing to receive.
    Idle,
    /// Datagrams wait, but the from-device ring is full.
    NoSpace,
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
                this.wake_waiters();
                continue;
            }
            // What the fast path counted since (it queues us for this).
            inner.publish_all_stats();
            // Nothing moved: sleep. To-device need-wakeup goes up whatever
            // we wait for, so a slot published for any stream kicks us,
            // also while a socket holds a backlog (its write-space
            // callback wakes us for that one). Datagrams arriving meanwhile
            // queue the worker from the socket callback.
            let Some(r) = inner.region.as_mut() else {
                return;
            };
            // The handshake of `abi::proto` (the code the loom model check
            // covers): entries published since the pass looked, or
            // from-device room, keep us awake.
            let mut again = !r.todev_prepare_sleep(tx.producer);
            if tx.no_space || rx == RxPass::NoSpace {
                again |= !r.fromdev_prepare_sleep();
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

impl Inner {
    /// Send what the sending `udp` streams' backlogs hold (older than
    /// anything in the ring), then drain up to `BATCH` to-device entries
    /// into their ports and publish what the ports return.
    fn pass(&mut self) -> TxPass {
        let mut out = TxPass::default();
        for net in self
            .streams
            .iter_mut()
            .flatten()
            .filter_map(Stream::net_mut)
        {
            let (sent, blocked) = net.drain_backlog();
            out.progress |= sent > 0;
            out.blocked = tx_block(out.blocked, blocked);
        }
        let Some(region) = self.region.as_mut() else {
            return out;
        };
        let slot_size = region.geometry().slot_size;
        let (producer, available) = region.todev_available();
        out.producer = producer;
        let available = match available {
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
            let stream = h
                .check(slot_size)
                .ok()
                .and_then(|()| self.streams[h.stream_id as usize].as_mut());
            let Some(stream) = stream.filter(|s| s.direction & abi::DIR_TO_DEVICE != 0) else {
                self.counters.invalid_slots += 1;
                consumed += 1;
                continue;
            };
            if let Endpoint::Udp(net) = &mut stream.endpoint {
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
                if port_transmit(
                    stream,
                    h.stream_id,
                    &pkt,
                    region,
                    slot,
                    now,
                    &mut self.counters,
                ) {
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
        let Some(region) = self.region.as_mut() else {
            return RxPass::Idle;
        };
        let cap = region.geometry().payload_capacity() as usize;
        let now = monotonic_ns();
        let (mut produced, mut handled) = (0u32, 0u32);
        let mut full = false;
        'streams: for id in 0..self.streams.len() {
            let fwd = self.streams[id]
                .as_ref()
                .and_then(Stream::net)
                .and_then(|n| n.forward_to);
            if let Some(k) = fwd {
                handled += forward(
                    &mut self.streams,
                    id,
                    k,
                    region,
                    &mut produced,
                    &mut self.counters,
                    BATCH - handled,
                );
                continue;
            }
            let Some(stream) = self.streams[id].as_mut() else {
                continue;
            };
            if stream.direction & abi::DIR_FROM_DEVICE == 0 {
                continue;
            }
            let Endpoint::Udp(net) = &mut stream.endpoint else {
                continue;
            };
            // One borrow of the box, so its fields borrow apart.
            let net: &mut NetStream = net;
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
                let (len, head, last) =
                    match receive(&net.sock, net.ts.as_mut(), &mut net.counters, &mut out) {
                        Received::Empty => break,
                        Received::Counted => {
                            handled += 1;
                            continue;
                        }
                        Received::Datagram { len, head, last } => (len, head, last),
                    };
                handled += 1;
                if len > cap {
                    net.counters.oversize += 1;
                    continue;
                }
                // Checked on the private copies, never on the shared slot.
                if !net.accept(len, &head, last, now) {
                    net.counters.malformed += 1;
                    continue;
                }
                let header = SlotHeader {
                    len: len as u32,
                    stream_id: id as u32,
                    timestamp_ns: now,
                    ..Default::default()
                };
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

/// What [`receive`] brought.
enum Received {
    /// Nothing waits.
    Empty,
    /// Something the helper dropped, counted: a bad checksum, a pending
    /// socket error (consumed: what is queued behind it is read on) or a
    /// datagram it could not copy. Never "empty".
    Counted,
    /// A datagram of `len` bytes; `min(len, capacity of dst)` were written.
    Datagram {
        len: usize,
        head: [u8; abi::RTP_CHECK_BYTES],
        last: u8,
    },
}

/// One datagram of a `udp` stream's socket into `dst` (with `NET_F_TS`, its
/// transport packets' heads into `ts`); the helper's drops counted in
/// `counters`. Both receive loops (into the ring, into the forwarding
/// bounce buffer) take their datagrams here.
fn receive(
    sock: &NetSocket,
    ts: Option<&mut TsState>,
    counters: &mut NetCounters,
    dst: &mut SharedBytes<'_>,
) -> Received {
    match sock.recv(dst, ts.map(|t| &mut t.heads[..])) {
        Recv::Empty => Received::Empty,
        Recv::BadChecksum => {
            counters.csum_errors += 1;
            Received::Counted
        }
        Recv::Error => {
            counters.rx_errors += 1;
            Received::Counted
        }
        Recv::Datagram { len, head, last } => Received::Datagram { len, head, last },
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
    let Endpoint::Udp(net) = &mut src.endpoint else {
        return 0;
    };
    // One borrow of the box, so its fields borrow apart.
    let net: &mut NetStream = net;
    let cap = region.geometry().payload_capacity() as usize;
    let now = monotonic_ns();
    let mut handled = 0;
    while handled < budget && net.sock.rx_pending() {
        let mut buf = SharedBytes::from_slice(&mut net.bounce);
        let (len, head, last) =
            match receive(&net.sock, net.ts.as_mut(), &mut net.counters, &mut buf) {
                Received::Empty => break,
                Received::Counted => {
                    handled += 1;
                    continue;
                }
                Received::Datagram { len, head, last } => (len, head, last),
            };
        handled += 1;
        if len > net.bounce.len() {
            net.counters.oversize += 1;
            continue;
        }
        if !net.accept(len, &head, last, now) {
            net.counters.malformed += 1;
            continue;
        }
        let pkt = SharedBytes::from_slice(&mut net.bounce[..len]);
        let target = dst
            .as_mut()
            .filter(|s| s.direction & abi::DIR_TO_DEVICE != 0);
        let Some(target) = target else {
            net.counters.forward_drops += 1;
            continue;
        };
        let sent = match target.net_mut() {
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
            let header = SlotHeader {
                len: len as u32,
                stream_id: id as u32,
                timestamp_ns: now,
                ..Default::default()
            };
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
    let Endpoint::Port(port) = &stream.endpoint else {
        return false;
    };
    let Some(k) = slot else {
        let _ = port.transmit(pkt, None);
        return false;
    };
    let mut out = region.fromdev_payload(k);
    // An unbound DMA port returns nothing; the slot stays unwritten.
    let Some(len) = port.transmit(pkt, Some(&mut out)) else {
        return false;
    };
    let header = SlotHeader {
        len: len as u32,
        stream_id: id,
        timestamp_ns: now,
        ..Default::default()
    };
    region.fromdev_set_header(k, &header);
    stream.counters.from_dev_packets += 1;
    stream.counters.from_dev_bytes += len as u64;
    session.from_dev_packets += 1;
    session.from_dev_bytes += len as u64;
    true
}
