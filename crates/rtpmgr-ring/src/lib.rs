// SPDX-License-Identifier: MIT
//! The rtpmgr shared packet rings as seen from user space.
//!
//! [`proto`] holds the index and need-wakeup protocol of one ring (the part
//! the loom model check covers); [`region`] wraps a mapped shared region and
//! hands out the producer and consumer ends of its two rings. The layout
//! comes from `rtpmgr-abi`, the one definition shared with the kernel.

pub mod proto;
mod sync;

#[cfg(not(loom))]
pub mod region;

pub use proto::BadIndex;
#[cfg(not(loom))]
pub use region::{anonymous_region, Consumer, CtrlWord, Memory, Producer, Region, RegionError, RingId};

#[cfg(loom)]
pub use sync::{AtomicU32, Ordering, Word};
