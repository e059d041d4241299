// SPDX-License-Identifier: MIT
//! rtpmgrsrc's end of the from-device ring: packets of one stream out of
//! their slots, wrapped (zero copy) or copied into GStreamer buffers.
//!
//! Slots go back to the kernel in ring order only (the consumer index is one
//! number), so a slot whose packet is still in a downstream buffer holds
//! back every slot after it. Zero-copy buffers are therefore limited to
//! half the ring at a time; beyond that packets are copied and their slots
//! released at once, so the kernel always has the other half.

use crate::session::Session;
use rtpmgr_abi::SlotHeader;
use rtpmgr_ring::Consumer;
use std::sync::{Arc, Mutex, MutexGuard};

/// The consumer's position bookkeeping.
struct State {
    consumer: Consumer,
    /// Next ring position to look at.
    head: u32,
    /// Oldest position not yet handed back (the consumer index).
    tail: u32,
    /// Per slot: its packet is done with (copied, skipped, or its buffer
    /// freed), so the slot may go back once every older one has.
    done: Vec<bool>,
    /// Zero-copy buffers downstream now.
    held: u32,
}

/// Counters of the reader (the element's `stats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RxCounters {
    pub packets: u64,
    pub bytes: u64,
    pub zero_copy: u64,
    pub copied: u64,
    /// Slots of other stream ids of the session (skipped).
    pub other_streams: u64,
    /// Packets flagged `SLOT_F_AFTER_DROP` (the port dropped before them).
    pub after_drop: u64,
}

pub struct Reader {
    session: Arc<Session>,
    stream_id: u32,
    mask: u32,
    payload_cap: u32,
    budget: u32,
    state: Mutex<State>,
    counters: Mutex<RxCounters>,
}

/// One packet out of the ring.
pub struct Packet {
    pub data: PacketData,
    pub header: SlotHeader,
}

pub enum PacketData {
    /// The slot itself, until the buffer wrapping it is freed.
    Slot(SlotRef),
    /// A copy; the slot went back.
    Copy(Vec<u8>),
}

impl Reader {
    /// Packets of `stream_id`. The session's from-device consumer must have
    /// been taken ([`Session::take_rx`]) by the caller; the reader gives it
    /// back when it goes, after the last buffer it lent.
    pub fn new(session: Arc<Session>, stream_id: u32) -> Arc<Reader> {
        let consumer = session.region().consumer(rtpmgr_ring::RingId::FromDevice);
        let g = session.region().geometry();
        let tail = consumer_tail(&session);
        Arc::new(Reader {
            stream_id,
            mask: g.slot_count - 1,
            payload_cap: g.payload_capacity(),
            budget: g.slot_count / 2,
            state: Mutex::new(State { consumer, head: tail, tail, done: vec![false; g.slot_count as usize], held: 0 }),
            counters: Mutex::new(RxCounters::default()),
            session,
        })
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    pub fn counters(&self) -> RxCounters {
        *lock(&self.counters)
    }

    /// Zero-copy buffers downstream now.
    pub fn held(&self) -> u32 {
        lock(&self.state).held
    }

    /// Up to `max` packets of the stream that are ready, without waiting;
    /// `zero_copy` wraps slots while the budget allows. `Err` if the kernel
    /// published an impossible index (a broken device).
    pub fn read(self: &Arc<Self>, max: usize, zero_copy: bool) -> Result<Vec<Packet>, String> {
        let mut st = lock(&self.state);
        let avail = st.consumer.available().map_err(|b| {
            format!("the from-device ring shows impossible indices (producer {}, consumer {})", b.producer, b.consumer)
        })?;
        let seen = st.head.wrapping_sub(st.tail);
        let new = avail.saturating_sub(seen) as usize;
        let mut out = Vec::with_capacity(new.min(max));
        let mut c = RxCounters::default();
        let mut k = 0;
        while k < new && out.len() < max {
            let i = seen + k as u32;
            let pos = st.head;
            st.head = st.head.wrapping_add(1);
            k += 1;
            let header = st.consumer.header(i);
            let len = header.len.min(self.payload_cap);
            if header.stream_id != self.stream_id {
                c.other_streams += 1;
                st.done[(pos & self.mask) as usize] = true;
                continue;
            }
            c.packets += 1;
            c.bytes += len as u64;
            if header.flags & rtpmgr_abi::SLOT_F_AFTER_DROP != 0 {
                c.after_drop += 1;
            }
            let data = if zero_copy && st.held < self.budget {
                st.held += 1;
                c.zero_copy += 1;
                let ptr = st.consumer.payload(i, len).as_ptr();
                PacketData::Slot(SlotRef { reader: Arc::clone(self), pos, ptr, len: len as usize })
            } else {
                let mut v = vec![0u8; len as usize];
                st.consumer.copy_payload(i, &mut v);
                st.done[(pos & self.mask) as usize] = true;
                c.copied += 1;
                PacketData::Copy(v)
            };
            out.push(Packet { data, header: SlotHeader { len, ..header } });
        }
        self.give_back(&mut st);
        drop(st);
        let mut total = lock(&self.counters);
        total.packets += c.packets;
        total.bytes += c.bytes;
        total.zero_copy += c.zero_copy;
        total.copied += c.copied;
        total.other_streams += c.other_streams;
        total.after_drop += c.after_drop;
        Ok(out)
    }

    /// Hand back the slots from the tail on that are done; kick the kernel
    /// if it waits for room.
    fn give_back(&self, st: &mut State) {
        let mut n = 0;
        while st.tail != st.head && st.done[(st.tail & self.mask) as usize] {
            st.done[(st.tail & self.mask) as usize] = false;
            st.tail = st.tail.wrapping_add(1);
            n += 1;
        }
        if n > 0 && st.consumer.release(n) {
            self.session.kick();
        }
    }

    fn slot_freed(&self, pos: u32) {
        let mut st = lock(&self.state);
        st.done[(pos & self.mask) as usize] = true;
        st.held -= 1;
        self.give_back(&mut st);
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Every buffer is gone (they hold the reader): hand back what is
        // left so that a later source of the session starts clean.
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let rest = st.head.wrapping_sub(st.tail);
        st.consumer.release(rest);
        self.session.return_rx();
    }
}

/// The consumer index as the ring shows it (where a new reader starts).
fn consumer_tail(session: &Session) -> u32 {
    session.region().snapshot(rtpmgr_ring::RingId::FromDevice).1
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A from-device slot lent to a GStreamer buffer: its packet bytes, given
/// back to the kernel when the buffer's memory is freed.
pub struct SlotRef {
    reader: Arc<Reader>,
    pos: u32,
    ptr: *const u8,
    len: usize,
}

// SAFETY: `ptr` points into the mapped region, which the reader (and so
// this value, through it) keeps mapped; the slot is not written by anyone
// while it is lent (the kernel produces only into slots the consumer index
// has passed, and this one's is held back until `drop`), so reading it from
// any thread is sound.
unsafe impl Send for SlotRef {}

impl AsRef<[u8]> for SlotRef {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `Send`: `len` bytes of a published, unreleased slot's
        // payload (at most its capacity), valid while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for SlotRef {
    fn drop(&mut self) {
        self.reader.slot_freed(self.pos);
    }
}
