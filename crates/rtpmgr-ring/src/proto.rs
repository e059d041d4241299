// SPDX-License-Identifier: MIT
//! The index protocol of one single-producer/single-consumer ring, without
//! the slot memory: this is the part the loom model check (tests/loom.rs)
//! explores, so it is written once here and used by every ring end.
//!
//! Orderings:
//! * The producer fills slots, then stores `producer` with `Release`; the
//!   consumer loads `producer` with `Acquire` before reading slots.
//! * The consumer reads slots, then stores `consumer` with `Release`; the
//!   producer loads `consumer` with `Acquire` before reusing slots.
//! * Need-wakeup is a store-buffering (Dekker) handshake: the side about to
//!   sleep stores `flags`, issues a `SeqCst` fence and re-reads the other
//!   side's index; the other side stores its index, issues a `SeqCst` fence
//!   and reads `flags`. The fences forbid both reads seeing old values, so
//!   either the sleeper sees the new index and stays awake, or the waker
//!   sees the flag and kicks: no wake-up is lost.
//! * `flags` has one writer per ring: the side the ABI names as the sleeper
//!   (the kernel: consumer of to-device, producer of from-device). The other
//!   side never sleeps on `flags`; it blocks in `WAIT`, which the kernel
//!   serves with a wait queue. Two sleepers on one ring would overwrite each
//!   other's flag and lose wake-ups.

use crate::sync::{fence, AtomicU32, Ordering};
use rtpmgr_abi::{ring_fill, RING_NEED_WAKEUP};

/// Access to a ring's three control words.
pub trait Indices {
    fn producer(&self) -> &AtomicU32;
    fn consumer(&self) -> &AtomicU32;
    fn flags(&self) -> &AtomicU32;
}

impl<T: Indices + ?Sized> Indices for &T {
    fn producer(&self) -> &AtomicU32 {
        (**self).producer()
    }
    fn consumer(&self) -> &AtomicU32 {
        (**self).consumer()
    }
    fn flags(&self) -> &AtomicU32 {
        (**self).flags()
    }
}

/// The other side published impossible indices (more than a ring apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadIndex {
    pub producer: u32,
    pub consumer: u32,
}

/// Producer end. Owns the `producer` word: nobody else may write it.
pub struct ProducerIndex<I> {
    idx: I,
    slot_count: u32,
    /// Next position to fill; equal to the published `producer` word
    /// between calls.
    head: u32,
    /// Last `consumer` value seen; refreshed only when the cached view
    /// shows too little space, which keeps the consumer's cache line quiet.
    cached_tail: u32,
}

impl<I: Indices> ProducerIndex<I> {
    /// Attach to a ring whose words hold a consistent state
    /// (`producer == consumer` after configure or reset).
    pub fn new(idx: I, slot_count: u32) -> Self {
        debug_assert!(slot_count.is_power_of_two());
        let head = idx.producer().load(Ordering::Relaxed);
        let cached_tail = idx.consumer().load(Ordering::Acquire);
        Self { idx, slot_count, head, cached_tail }
    }

    /// Free slots as last seen, without touching the consumer's word.
    pub fn cached_free(&self) -> u32 {
        // A consumer index that is impossible relative to our head counts
        // as "no space": we never overwrite slots on a bad peer's word.
        match ring_fill(self.head, self.cached_tail, self.slot_count) {
            Some(fill) => self.slot_count - fill,
            None => 0,
        }
    }

    /// Free slots, refreshing the consumer index if fewer than `want` are
    /// known to be free.
    pub fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_free();
        if free >= want {
            return free;
        }
        self.cached_tail = self.idx.consumer().load(Ordering::Acquire);
        self.cached_free()
    }

    /// Ring position of the `i`-th free slot (`i < free()`).
    pub fn position(&self, i: u32) -> u32 {
        self.head.wrapping_add(i)
    }

    /// Publish the next `n` filled slots. Returns whether the consumer
    /// asked to be kicked. `n` must not exceed the last `free()` result.
    pub fn publish(&mut self, n: u32) -> bool {
        assert!(n <= self.cached_free(), "publishing {n} slots beyond the free space");
        if n == 0 {
            return false;
        }
        self.head = self.head.wrapping_add(n);
        self.idx.producer().store(self.head, Ordering::Release);
        fence(Ordering::SeqCst);
        self.idx.flags().load(Ordering::Relaxed) & RING_NEED_WAKEUP != 0
    }

    /// The sleeping side's half of the handshake for a producer waiting for
    /// space: raise need-wakeup, then re-check. Returns `true` if the caller
    /// must really sleep (still no space); `false` means space appeared and
    /// the flag has been cleared again.
    pub fn prepare_sleep(&mut self) -> bool {
        self.idx.flags().store(RING_NEED_WAKEUP, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.free(1) > 0 {
            self.clear_need_wakeup();
            return false;
        }
        true
    }

    pub fn clear_need_wakeup(&self) {
        self.idx.flags().store(0, Ordering::Relaxed);
    }

    /// Entries published and not yet released by the consumer (as last seen).
    pub fn in_flight(&mut self) -> u32 {
        self.slot_count - self.free(self.slot_count)
    }

    pub fn indices(&self) -> &I {
        &self.idx
    }
}

/// Consumer end. Owns the `consumer` word.
pub struct ConsumerIndex<I> {
    idx: I,
    slot_count: u32,
    /// Next position to read; equal to the published `consumer` word
    /// between calls.
    tail: u32,
}

impl<I: Indices> ConsumerIndex<I> {
    pub fn new(idx: I, slot_count: u32) -> Self {
        debug_assert!(slot_count.is_power_of_two());
        let tail = idx.consumer().load(Ordering::Relaxed);
        Self { idx, slot_count, tail }
    }

    /// Entries ready to read. The producer word is read exactly once and
    /// validated against our own tail (never against the shared consumer
    /// word, which the other side might scribble on).
    pub fn available(&mut self) -> Result<u32, BadIndex> {
        let producer = self.idx.producer().load(Ordering::Acquire);
        ring_fill(producer, self.tail, self.slot_count).ok_or(BadIndex { producer, consumer: self.tail })
    }

    /// Ring position of the `i`-th available entry.
    pub fn position(&self, i: u32) -> u32 {
        self.tail.wrapping_add(i)
    }

    /// Hand `n` read entries back to the producer. Returns whether the
    /// producer asked to be kicked (it waits for space).
    pub fn release(&mut self, n: u32) -> bool {
        if n == 0 {
            return false;
        }
        self.tail = self.tail.wrapping_add(n);
        self.idx.consumer().store(self.tail, Ordering::Release);
        fence(Ordering::SeqCst);
        self.idx.flags().load(Ordering::Relaxed) & RING_NEED_WAKEUP != 0
    }

    /// The sleeping side's half of the handshake for a consumer waiting for
    /// entries; see [`ProducerIndex::prepare_sleep`].
    pub fn prepare_sleep(&mut self) -> bool {
        self.idx.flags().store(RING_NEED_WAKEUP, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        match self.available() {
            // Still empty: sleep. An impossible producer index also sleeps:
            // the caller has counted it already, and staying awake would let
            // the other side make us spin; its next kick makes us look again.
            Ok(0) | Err(_) => true,
            Ok(_) => {
                self.clear_need_wakeup();
                false
            }
        }
    }

    pub fn clear_need_wakeup(&self) {
        self.idx.flags().store(0, Ordering::Relaxed);
    }

    pub fn indices(&self) -> &I {
        &self.idx
    }
}
