// SPDX-License-Identifier: GPL-2.0-only

//! Media ports: the one seam between the rings and any hardware.
//!
//! The session worker hands each valid to-device packet to the port of its
//! stream; a port that returns traffic (a loopback, or a peripheral in
//! loopback mode) writes the returned packet into the from-device slot it is
//! given. Ports never see the rings themselves.

use crate::abi;
use crate::ring::SharedBytes;
use kernel::{
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
};

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
    fn transmit(
        &self,
        _pkt: &SharedBytes<'_>,
        _ret: Option<&mut SharedBytes<'_>>,
    ) -> Option<usize> {
        None
    }
    fn users(&self) -> &Atomic<u32> {
        &self.users
    }
}

static LOOPBACK: Loopback = Loopback {
    users: Atomic::new(0),
};
static NULL: Null = Null {
    users: Atomic::new(0),
};

/// Ports every kernel has; device-tree ports follow at these indices plus
/// their slot number.
pub(crate) const BUILTIN_PORTS: u32 = 2;

/// A registry slot of a device-tree port.
enum Slot {
    Free,
    /// Taken by a probe that has not published its port yet.
    Reserved,
    Bound(Arc<dyn MediaPort>),
}

kernel::sync::global_lock! {
    // SAFETY: `Registry::new` runs in module init, before any use.
    unsafe(uninit) static DMA_PORTS: Mutex<KVec<Slot>> = KVec::new();
}

/// The registry's lifetime: made first in module init, dropped last at
/// exit, when it frees the slot vector (a static is never dropped).
pub(crate) struct Registry(());

impl Registry {
    /// Called once from module init.
    pub(crate) fn new() -> Registry {
        // SAFETY: called once, from module init, before the device and the
        // driver are registered (so before any other use of the lock).
        unsafe { DMA_PORTS.init() };
        Registry(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Module exit, after the driver and the device are gone: no probe,
        // unbind or stream can use the registry any more.
        let ports = core::mem::take(&mut *DMA_PORTS.lock());
        drop(ports);
    }
}

/// A port as a stream holds it: built-in ports are static, bound
/// peripherals are reference counted (and outlive their unbind harmlessly).
#[derive(Clone)]
pub(crate) enum PortRef {
    Builtin(&'static dyn MediaPort),
    Bound(Arc<dyn MediaPort>),
}

impl core::ops::Deref for PortRef {
    type Target = dyn MediaPort;
    fn deref(&self) -> &Self::Target {
        match self {
            PortRef::Builtin(p) => *p,
            PortRef::Bound(p) => &**p,
        }
    }
}

/// The port with ABI index `index`.
pub(crate) fn get(index: u32) -> Option<PortRef> {
    match index {
        abi::PORT_LOOPBACK => Some(PortRef::Builtin(&LOOPBACK)),
        abi::PORT_NULL => Some(PortRef::Builtin(&NULL)),
        _ => {
            let slot = (index - BUILTIN_PORTS) as usize;
            match DMA_PORTS.lock().get(slot) {
                Some(Slot::Bound(p)) => Some(PortRef::Bound(p.clone())),
                _ => None,
            }
        }
    }
}

/// How many port indices exist (some DMA slots may be empty after unbind).
pub(crate) fn count() -> u32 {
    BUILTIN_PORTS + DMA_PORTS.lock().len() as u32
}

/// A registry slot a probing device holds: free again when dropped unless
/// [`SlotReservation::commit`] published a port in it. Reserving and
/// publishing are two steps (the probe allocates in between, without the
/// lock), so two probes at once could otherwise pick the same free slot.
pub(crate) struct SlotReservation {
    slot: u32,
    committed: bool,
}

/// Reserve a free registry slot for a probing device (reused after unbind).
pub(crate) fn reserve_dma_slot() -> Result<SlotReservation> {
    let mut ports = DMA_PORTS.lock();
    let slot = match ports.iter().position(|s| matches!(s, Slot::Free)) {
        Some(free) => {
            ports[free] = Slot::Reserved;
            free
        }
        None => {
            ports.push(Slot::Reserved, GFP_KERNEL)?;
            ports.len() - 1
        }
    };
    Ok(SlotReservation {
        slot: slot as u32,
        committed: false,
    })
}

impl SlotReservation {
    /// The reserved slot.
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    /// Publish `port` in the slot; returns its ABI index.
    pub(crate) fn commit(mut self, port: Arc<dyn MediaPort>) -> u32 {
        if let Some(entry) = DMA_PORTS.lock().get_mut(self.slot as usize) {
            *entry = Slot::Bound(port);
        }
        self.committed = true;
        BUILTIN_PORTS + self.slot
    }
}

impl Drop for SlotReservation {
    fn drop(&mut self) {
        if !self.committed {
            if let Some(entry) = DMA_PORTS.lock().get_mut(self.slot as usize) {
                *entry = Slot::Free;
            }
        }
    }
}

/// Withdraw a port (unbind); its index stays reserved until reused.
pub(crate) fn unregister_dma(index: u32) {
    if let Some(entry) = DMA_PORTS.lock().get_mut((index - BUILTIN_PORTS) as usize) {
        *entry = Slot::Free;
    }
}

/// Count a stream on or off a port.
pub(crate) fn add_user(port: &dyn MediaPort, delta: i32) {
    if delta > 0 {
        port.users().add(1u32, Relaxed);
    } else {
        port.users().fetch_sub(1u32, Relaxed);
    }
}
