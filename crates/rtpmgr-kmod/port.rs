// SPDX-License-Identifier: GPL-2.0-only

//! Media ports: the one seam between the rings and any hardware.
//!
//! The session worker hands each valid to-device packet to the port of its
//! stream; a port that returns traffic (a loopback, or a peripheral in
//! loopback mode) writes the returned packet into the from-device slot it is
//! given. Ports never see the rings themselves.

use crate::abi;
use crate::ring::SharedBytes;
use kernel::sync::atomic::{Atomic, Relaxed};

/// A media port.
pub(crate) trait MediaPort: Send + Sync {
    /// `abi::PORT_KIND_*`.
    fn kind(&self) -> u32;
    /// Name user space selects it by (`loopback`, `null`, `media0`, ...).
    fn name(&self) -> &str;
    /// Whether `transmit` can return packets on from-device.
    fn returns_packets(&self) -> bool;
    /// Take one packet for the device. If `ret` is given, a port that
    /// returns packets writes one there and returns its length.
    fn transmit(&self, pkt: &SharedBytes<'_>, ret: Option<&mut SharedBytes<'_>>) -> Option<usize>;
    /// Streams (of all sessions) using the port.
    fn users(&self) -> &Atomic<u32>;
}

/// Sends every packet straight back: bring-up and tests.
pub(crate) struct Loopback {
    users: Atomic<u32>,
}

impl MediaPort for Loopback {
    fn kind(&self) -> u32 {
        abi::PORT_KIND_LOOPBACK
    }
    fn name(&self) -> &str {
        "loopback"
    }
    fn returns_packets(&self) -> bool {
        true
    }
    fn transmit(&self, pkt: &SharedBytes<'_>, ret: Option<&mut SharedBytes<'_>>) -> Option<usize> {
        ret.map(|r| r.copy_from(pkt))
    }
    fn users(&self) -> &Atomic<u32> {
        &self.users
    }
}

/// Counts and drops: a sink for measuring the path up to the device.
pub(crate) struct Null {
    users: Atomic<u32>,
}

impl MediaPort for Null {
    fn kind(&self) -> u32 {
        abi::PORT_KIND_NULL
    }
    fn name(&self) -> &str {
        "null"
    }
    fn returns_packets(&self) -> bool {
        false
    }
    fn transmit(&self, _pkt: &SharedBytes<'_>, _ret: Option<&mut SharedBytes<'_>>) -> Option<usize> {
        None
    }
    fn users(&self) -> &Atomic<u32> {
        &self.users
    }
}

static LOOPBACK: Loopback = Loopback { users: Atomic::new(0) };
static NULL: Null = Null { users: Atomic::new(0) };

/// Ports every kernel has; device-tree ports follow.
pub(crate) const BUILTIN_PORTS: u32 = 2;

/// The port with ABI index `index`.
pub(crate) fn get(index: u32) -> Option<&'static dyn MediaPort> {
    match index {
        abi::PORT_LOOPBACK => Some(&LOOPBACK),
        abi::PORT_NULL => Some(&NULL),
        _ => None,
    }
}

/// How many ports there are.
pub(crate) fn count() -> u32 {
    BUILTIN_PORTS
}

/// Count a stream on or off a port.
pub(crate) fn add_user(port: &dyn MediaPort, delta: i32) {
    if delta > 0 {
        port.users().add(1u32, Relaxed);
    } else {
        port.users().fetch_sub(1u32, Relaxed);
    }
}
