// SPDX-License-Identifier: MIT
//! Atomics used by the index protocol: `core`'s normally, loom's when the
//! crate is built with `--cfg loom` for the model check (tests/loom.rs).

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicU32, Ordering};
