// SPDX-License-Identifier: MIT
//! Atomics used by the index protocol: `core`'s normally, loom's when the
//! crate is built with `--cfg loom` for the model check (tests/loom.rs).

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicU32, Ordering};

use rtpmgr_abi::proto::{Order, SharedWord};

/// A ring control word as user space (and the model check) sees it: the
/// protocol's [`SharedWord`] over an [`AtomicU32`].
#[repr(transparent)]
pub struct Word(pub AtomicU32);

impl Word {
    pub fn new(v: u32) -> Word {
        Word(AtomicU32::new(v))
    }

    /// The protocol's view of an atomic word of a mapped region.
    pub fn from_atomic(a: &AtomicU32) -> &Word {
        // SAFETY: `Word` is a `repr(transparent)` wrapper of `AtomicU32`, so
        // the reference keeps its layout, validity and lifetime.
        unsafe { &*(a as *const AtomicU32).cast::<Word>() }
    }
}

fn ordering(o: Order) -> Ordering {
    match o {
        Order::Relaxed => Ordering::Relaxed,
        Order::Acquire => Ordering::Acquire,
        Order::Release => Ordering::Release,
    }
}

impl SharedWord for Word {
    fn load(&self, order: Order) -> u32 {
        self.0.load(ordering(order))
    }
    fn store(&self, value: u32, order: Order) {
        self.0.store(value, ordering(order))
    }
    fn full_fence() {
        fence(Ordering::SeqCst);
    }
}
