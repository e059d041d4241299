// SPDX-License-Identifier: MIT
//! The index and need-wakeup protocol of one ring: `rtpmgr_abi::proto`,
//! the code the kernel module compiles too, so the loom model check
//! (tests/loom.rs) covers both sides. User space runs it over [`Word`]
//! (`core` atomics, loom's under `--cfg loom`).

pub use crate::sync::Word;
pub use rtpmgr_abi::proto::{BadIndex, ConsumerIndex, Indices, Order, ProducerIndex, SharedWord};
