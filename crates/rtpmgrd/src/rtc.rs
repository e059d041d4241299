// SPDX-License-Identifier: MIT
//! The run-to-completion layout (`layout = "run-to-completion"`): one
//! thread does the receiver's and the transmitter's work, waiting for the
//! sockets and the device's `poll` in one epoll set. A packet crosses no
//! thread of rtpmgrd's on its way (the device's own worker aside): no
//! hand-off wake-up between a receiver and a transmitter.

use crate::receiver::Receiver;
use crate::transmitter::Transmitter;
use rtpmgr_device::Backend;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Batches sent before the sockets are looked at again: bounds how long
/// a busy from-device ring keeps the thread from its sockets.
const TX_PASSES: usize = 16;

/// Run until `tx_stop`. After `rx_stop` the sockets are no longer read
/// (the reorder buffers are flushed once) and the thread only transmits,
/// so that the rings drain as with the threads layout.
pub fn run(
    mut rx: Receiver,
    mut tx: Transmitter,
    backend: Arc<dyn Backend>,
    rx_stop: Arc<AtomicBool>,
    tx_stop: Arc<AtomicBool>,
) {
    let Some(fd) = backend.poll_fd() else {
        // Checked by the caller; nothing sensible to wait on otherwise.
        log::error!("run-to-completion needs a device that answers poll");
        return;
    };
    if let Err(e) = rx.watch_device(fd) {
        log::error!("run-to-completion: epoll on the device: {e}");
        return;
    }
    let mut receiving = true;
    while !tx_stop.load(Ordering::Acquire) {
        let mut moved = 0;
        for _ in 0..TX_PASSES {
            let n = tx.pass();
            moved += n;
            if n == 0 {
                break;
            }
        }
        if receiving && rx_stop.load(Ordering::Acquire) {
            rx.finish();
            receiving = false;
        }
        if !receiving {
            if moved == 0 {
                tx.sleep();
            }
            continue;
        }
        rx.refresh();
        let max_ms = if moved > 0 {
            // More may be there: look at the sockets without sleeping.
            Some(0)
        } else {
            // Arm, then look again: an entry published in between is seen
            // here or wakes the epoll.
            backend.arm_poll();
            if tx.pending() {
                Some(0)
            } else {
                None
            }
        };
        if rx.turn(max_ms) {
            backend.clear_poll();
        }
    }
}
