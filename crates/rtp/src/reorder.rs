// SPDX-License-Identifier: MIT
//! A jitter/reorder buffer for one RTP stream: packets come in in any
//! order and leave in sequence-number order, each waiting at most a fixed
//! delay for the missing packets before it.
//!
//! Packets live in a pool of fixed-size entries allocated once: the caller
//! receives straight into a free entry ([`ReorderBuffer::free_entries`]),
//! hands it over with [`insert`](ReorderBuffer::insert), and copies
//! released packets out in order ([`output`](ReorderBuffer::output), then
//! [`pop_output`](ReorderBuffer::pop_output), which frees the entry).
//! Nothing is allocated or copied inside the buffer per packet.
//!
//! # Rules
//!
//! * The first packet (of a stream, or of a new SSRC) is released at once
//!   and sets the next sequence number expected.
//! * A packet at the expected number is released, with every held packet
//!   that follows it without a gap.
//! * A packet ahead of it is held. The gap before the first held packet is
//!   given up when that packet has waited `delay` (its missing packets
//!   count as `skipped`), or at once when a packet arrives `window` or
//!   more ahead of the expected number (the buffer is full).
//! * A packet behind the expected number is `late` if its place was given
//!   up or is out of memory, a `duplicate` if it was released already or is
//!   held; either is dropped, so the output stays in order and unique.
//! * A new SSRC releases everything held (gaps given up) and starts over;
//!   so do two consecutive packets 3000 or more away from the expected
//!   number (a sender that restarted its sequence, as RFC 3550 A.1's
//!   `bad_seq`); the first of them is dropped as `late`.

use crate::seqstats::MAX_DROPOUT;

/// Counters of a reorder buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReorderStats {
    /// Packets released in order.
    pub released: u64,
    /// Released packets that had arrived after a higher sequence number
    /// (put back in order).
    pub reordered: u64,
    /// Dropped: arrived after their place was given up.
    pub late: u64,
    /// Dropped: released or held already.
    pub duplicates: u64,
    /// Sequence numbers given up: never arrived within the delay.
    pub skipped: u64,
    /// Of those, given up early because the window was full.
    pub overflow_skipped: u64,
    /// Start-overs: a new SSRC or a sequence restart.
    pub restarts: u64,
}

/// What [`ReorderBuffer::insert`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Released to the output, possibly with held packets after it.
    Released,
    /// Held until the packets before it arrive or the delay passes.
    Held,
    /// Dropped: its place was given up (or it starts a restart that
    /// another packet must confirm).
    Late,
    /// Dropped: a copy of a packet released or held.
    Duplicate,
    /// Not taken: the entry was not free (it holds a packet already).
    /// A caller error; nothing changed.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    Held,
    Released,
    Skipped,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    state: State,
    ext: u64,
    entry: u32,
    len: u32,
    arrival_ns: u64,
    /// Arrived after a higher sequence number.
    out_of_order: bool,
}

const EMPTY: Meta = Meta { state: State::Empty, ext: u64::MAX, entry: 0, len: 0, arrival_ns: 0, out_of_order: false };

/// The reorder buffer of one stream.
pub struct ReorderBuffer {
    entry_len: usize,
    pool: Vec<u8>,
    /// Free pool entries (a stack).
    free: Vec<u32>,
    /// Released entries in output order: (entry, len), a FIFO.
    out: Vec<(u32, u32)>,
    out_head: usize,
    out_len: usize,
    /// Indexed by extended sequence number modulo `window`.
    meta: Vec<Meta>,
    window: u64,
    delay_ns: u64,
    ssrc: Option<u32>,
    /// Extended sequence number released next; meaningful once started.
    next: u64,
    started: bool,
    highest: u64,
    /// When the gap at `next` was given up at the latest.
    gap_deadline: Option<u64>,
    /// A far packet waiting to be confirmed as a restart.
    far: Option<(u32, u16)>,
    held: usize,
    stats: ReorderStats,
}

/// Extended numbers start here, so that packets behind the first one
/// stay representable.
const BASE: u64 = 1 << 32;

impl ReorderBuffer {
    /// A buffer holding up to `window` packets (rounded up to a power of
    /// two, at least 16) for up to `delay_ns` each, whose entries take
    /// packets of up to `entry_len` bytes. `spare` extra entries are for
    /// receiving into (a batch) and for released packets the caller has not
    /// copied out yet.
    pub fn new(window: usize, spare: usize, entry_len: usize, delay_ns: u64) -> Self {
        let window = window.max(16).next_power_of_two();
        let entries = window + spare.max(1);
        ReorderBuffer {
            entry_len,
            pool: vec![0; entries * entry_len],
            free: (0..entries as u32).rev().collect(),
            out: vec![(0, 0); entries],
            out_head: 0,
            out_len: 0,
            meta: vec![EMPTY; window],
            window: window as u64,
            delay_ns,
            ssrc: None,
            next: 0,
            started: false,
            highest: 0,
            gap_deadline: None,
            far: None,
            held: 0,
            stats: ReorderStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReorderStats {
        self.stats
    }

    /// Packets held, waiting for earlier ones.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The window, in packets.
    pub fn window(&self) -> usize {
        self.window as usize
    }

    /// Bytes a pool entry holds.
    pub fn entry_len(&self) -> usize {
        self.entry_len
    }

    /// Free entries to receive into, at most `n`. An entry stays free
    /// until it is passed to [`insert`](Self::insert), so one that received
    /// no packet worth keeping needs nothing done.
    pub fn free_entries(&self, n: usize) -> impl Iterator<Item = u32> + '_ {
        self.free.iter().rev().take(n).copied()
    }

    /// Mutable views of pool entries `ids` (distinct, at most 64, as
    /// [`free_entries`](Self::free_entries) gives them), in that order,
    /// appended to `out`.
    pub fn entries_mut<'a>(&'a mut self, ids: &[u32], out: &mut Vec<&'a mut [u8]>) {
        let len = self.entry_len;
        // Walk the pool once in entry order, keeping the chunks asked for,
        // then hand them out in the order asked.
        let mut order: [(u32, usize); 64] = [(u32::MAX, 0); 64];
        let n = ids.len().min(order.len());
        for (k, &id) in ids.iter().take(n).enumerate() {
            order[k] = (id, k);
        }
        order[..n].sort_unstable();
        let mut picked: [Option<&'a mut [u8]>; 64] = [const { None }; 64];
        let mut rest: &'a mut [u8] = &mut self.pool;
        let mut at = 0u32;
        for &(id, k) in &order[..n] {
            let Some(skip) = id.checked_sub(at) else { continue }; // a repeated id
            let skip = (skip as usize * len).min(rest.len());
            let (_, tail) = core::mem::take(&mut rest).split_at_mut(skip);
            let (chunk, tail) = tail.split_at_mut(len.min(tail.len()));
            picked[k] = Some(chunk);
            rest = tail;
            at = id + 1;
        }
        out.extend(picked.iter_mut().take(n).filter_map(Option::take));
    }

    /// The bytes of entry `id`, mutable (an RTX packet is turned into
    /// the original in place before it is inserted).
    pub fn entry_mut(&mut self, id: u32) -> &mut [u8] {
        let start = id as usize * self.entry_len;
        self.pool.get_mut(start..start + self.entry_len).unwrap_or_default()
    }

    /// The bytes of entry `id`.
    pub fn entry(&self, id: u32) -> &[u8] {
        let start = id as usize * self.entry_len;
        self.pool.get(start..start + self.entry_len).unwrap_or_default()
    }

    fn take_free(&mut self, id: u32) -> bool {
        match self.free.iter().rposition(|&f| f == id) {
            Some(pos) => {
                self.free.swap_remove(pos);
                true
            }
            None => false,
        }
    }

    fn push_out(&mut self, entry: u32, len: u32) {
        let cap = self.out.len();
        let slot = (self.out_head + self.out_len) % cap;
        self.out[slot] = (entry, len);
        self.out_len += 1;
    }

    /// The oldest released packet not yet taken, if any.
    pub fn output(&self) -> Option<&[u8]> {
        if self.out_len == 0 {
            return None;
        }
        let (entry, len) = self.out[self.out_head];
        let start = entry as usize * self.entry_len;
        self.pool.get(start..start + len as usize)
    }

    /// Released packets not yet taken.
    pub fn output_len(&self) -> usize {
        self.out_len
    }

    /// Done with [`output`](Self::output): its entry is free again.
    pub fn pop_output(&mut self) {
        if self.out_len == 0 {
            return;
        }
        let (entry, _) = self.out[self.out_head];
        self.out_head = (self.out_head + 1) % self.out.len();
        self.out_len -= 1;
        self.free.push(entry);
    }

    /// The extended sequence number of `seq`, relative to `next`.
    fn extend(&self, seq: u16) -> u64 {
        let d = seq.wrapping_sub(self.next as u16);
        if d < 0x8000 {
            self.next + u64::from(d)
        } else {
            self.next.saturating_sub(u64::from(0x1_0000 - u32::from(d)))
        }
    }

    fn release(&mut self, m: Meta) {
        self.push_out(m.entry, m.len);
        self.stats.released += 1;
        if m.out_of_order {
            self.stats.reordered += 1;
        }
    }

    /// Release from `next` on while packets are there; stop at a gap.
    fn advance(&mut self) {
        loop {
            let i = (self.next % self.window) as usize;
            let m = self.meta[i];
            if m.state != State::Held || m.ext != self.next {
                break;
            }
            self.meta[i].state = State::Released;
            self.held -= 1;
            self.release(m);
            self.next += 1;
        }
        self.gap_deadline = self.first_held_arrival().map(|a| a.saturating_add(self.delay_ns));
    }

    /// Arrival of the first held packet after `next`, if any is held.
    fn first_held_arrival(&self) -> Option<u64> {
        if self.held == 0 {
            return None;
        }
        (self.next..=self.highest).find_map(|ext| {
            let m = self.meta[(ext % self.window) as usize];
            (m.state == State::Held && m.ext == ext).then_some(m.arrival_ns)
        })
    }

    /// Give up the gap at `next`: mark it skipped, then release what
    /// follows it.
    fn skip_gap(&mut self, overflow: bool) {
        loop {
            let i = (self.next % self.window) as usize;
            let m = self.meta[i];
            if m.state == State::Held && m.ext == self.next {
                break;
            }
            self.meta[i] = Meta { state: State::Skipped, ext: self.next, ..EMPTY };
            self.stats.skipped += 1;
            if overflow {
                self.stats.overflow_skipped += 1;
            }
            self.next += 1;
            if self.next > self.highest {
                break;
            }
        }
        self.advance();
    }

    /// Release everything held, giving up the gaps, and forget the stream.
    fn restart(&mut self) {
        while self.held > 0 {
            self.skip_gap(false);
        }
        self.meta.fill(EMPTY);
        self.started = false;
        self.gap_deadline = None;
        self.far = None;
        self.stats.restarts += 1;
    }

    /// Take the RTP packet in entry `id` (`len` bytes, sequence number
    /// `seq`, of `ssrc`) that arrived at `now_ns`.
    pub fn insert(&mut self, id: u32, len: usize, ssrc: u32, seq: u16, now_ns: u64) -> Insert {
        if !self.take_free(id) {
            return Insert::Refused;
        }
        let len = len.min(self.entry_len) as u32;
        if self.ssrc.is_some_and(|s| s != ssrc) && self.started {
            self.restart();
        }
        self.ssrc = Some(ssrc);
        if !self.started {
            self.started = true;
            self.next = BASE + u64::from(seq);
            self.highest = self.next;
        }
        let mut ext = self.extend(seq);
        let far = if ext >= self.next {
            ext - self.next >= u64::from(MAX_DROPOUT)
        } else {
            self.next - ext >= u64::from(MAX_DROPOUT)
        };
        if far {
            if self.far == Some((ssrc, seq.wrapping_sub(1))) {
                // Confirmed: the sender restarted its numbering.
                self.restart();
                self.started = true;
                self.next = BASE + u64::from(seq);
                self.highest = self.next;
                ext = self.next;
            } else {
                self.far = Some((ssrc, seq));
                self.stats.late += 1;
                self.free.push(id);
                return Insert::Late;
            }
        }
        self.far = None;
        if ext < self.next {
            let m = self.meta[(ext % self.window) as usize];
            self.free.push(id);
            if m.ext == ext && m.state == State::Released {
                self.stats.duplicates += 1;
                return Insert::Duplicate;
            }
            self.stats.late += 1;
            return Insert::Late;
        }
        // Room in the window: give up the oldest gaps if need be.
        while ext >= self.next + self.window {
            if self.held == 0 {
                // Nothing held: the numbers in between never came.
                let gap = ext - self.window + 1 - self.next;
                self.stats.skipped += gap;
                self.stats.overflow_skipped += gap;
                self.next = ext - self.window + 1;
                break;
            }
            self.skip_gap(true);
        }
        let i = (ext % self.window) as usize;
        if self.meta[i].ext == ext && self.meta[i].state == State::Held {
            self.stats.duplicates += 1;
            self.free.push(id);
            return Insert::Duplicate;
        }
        let out_of_order = ext < self.highest;
        self.highest = self.highest.max(ext);
        self.meta[i] = Meta { state: State::Held, ext, entry: id, len, arrival_ns: now_ns, out_of_order };
        self.held += 1;
        if ext == self.next {
            self.advance();
            Insert::Released
        } else {
            if self.gap_deadline.is_none() {
                self.gap_deadline = Some(now_ns.saturating_add(self.delay_ns));
            }
            Insert::Held
        }
    }

    /// When [`tick`](Self::tick) next has something to give up, if ever.
    pub fn deadline(&self) -> Option<u64> {
        self.gap_deadline
    }

    /// Give up the gaps whose first held packet has waited the delay.
    pub fn tick(&mut self, now_ns: u64) {
        while let Some(d) = self.gap_deadline {
            if now_ns < d {
                break;
            }
            self.skip_gap(false);
        }
    }

    /// The sequence numbers missing before held packets, oldest first, at
    /// most `max` of them (for retransmission requests).
    pub fn missing(&self, max: usize) -> impl Iterator<Item = u16> + '_ {
        let end = if self.held > 0 { self.highest } else { self.next };
        (self.next..end)
            .filter(move |&ext| {
                let m = self.meta[(ext % self.window) as usize];
                !(m.ext == ext && m.state == State::Held)
            })
            .take(max)
            .map(|ext| ext as u16)
    }
}

#[cfg(test)]
mod tests;
