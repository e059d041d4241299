// SPDX-License-Identifier: MIT
//! The user/kernel contract of `/dev/rtpmgr`: ioctl numbers, ioctl argument
//! structures and the layout of the shared (mmap'd) region.
//!
//! `src/abi.rs` is the single definition of that contract. User space uses
//! this crate as an ordinary dependency; the kernel module includes that very
//! file with `#[path = ".../rtpmgr-abi/src/abi.rs"] mod abi;` because kbuild
//! cannot use cargo dependencies. It therefore has to stay dependency-free,
//! without crate-level attributes, and free of anything that the kernel's
//! Rust does not offer.
//!
//! Rules that every structure here follows (and the layout tests pin):
//!
//! * `#[repr(C)]`, fixed-width fields only: no `usize`, no pointers, no `bool`,
//!   so 32-bit user space on a 64-bit kernel sees the same layout and
//!   `compat_ioctl` needs no translation;
//! * explicit padding fields (named `_pad*`/`reserved`), which must be zero on
//!   input so they can be given a meaning later;
//! * the first field of every ioctl argument is `size`, the caller's idea of
//!   the structure size; the kernel rejects a size it does not know (`EINVAL`);
//! * unknown flag bits are rejected (`EINVAL`), never ignored.
//!
//! # The shared region
//!
//! One region per open file (a *session*), created by `CONFIGURE_BUFFER` and
//! mapped with one `mmap(NULL, mmap_size, PROT_READ|PROT_WRITE, MAP_SHARED,
//! fd, 0)`:
//!
//! ```text
//! 0x0000  SharedHeader         written by the kernel at configure time, never read back
//! 0x0400  RingCtrl to-device   user produces, kernel consumes
//! 0x0800  RingCtrl from-device kernel produces, user consumes
//! 0x1000  to-device slots      slot_count × slot_size
//!  ...    from-device slots    slot_count × slot_size
//! ```
//!
//! Each ring index is a free-running `u32`; `slot_count` is a power of two, so
//! a slot is `index & (slot_count - 1)` and the number of filled entries is
//! `producer.wrapping_sub(consumer)`, which must never exceed `slot_count`.
//! Producer, consumer and flags words sit on separate cache lines.
//!
//! The side that sleeps (the kernel worker, waiting for to-device entries or
//! for from-device space) raises [`RING_NEED_WAKEUP`] in that ring's `flags`
//! before sleeping; the other side checks the flag after every publish or
//! release and issues [`RTPMGR_IOC_KICK`] only when it is set, so a busy
//! producer makes far fewer than one syscall per packet (the AF_XDP
//! need-wakeup scheme). The reverse direction blocks in [`RTPMGR_IOC_WAIT`].
//!
//! Everything in the region is writable by user space at any time, so the
//! kernel treats it as hostile: see [`ring_fill`] and [`SlotHeader::check`],
//! which both the module and the user-space simulator use.

#![no_std]

mod abi;
pub use abi::*;

#[cfg(test)]
mod tests;
