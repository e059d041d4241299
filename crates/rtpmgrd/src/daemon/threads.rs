// SPDX-License-Identifier: MIT
//! The data threads as the controller sees them: spawned once at start
//! (receiver and transmitter, or the one run-to-completion thread), woken
//! when the stream table changes, stopped one after the other by the
//! graceful stop. Kept apart from the supervisor because none of it is
//! about streams: it is the handles, stop flags, wakers and counters the
//! threads share with the controller.

use crate::receiver::Receiver;
use crate::stream::StreamTable;
use crate::transmitter::Transmitter;
use crate::wait::{ThreadStats, Waker};
use rtpmgr_config::{Config, Layout};
use rtpmgr_device::Backend;
use rtpmgr_ring::Region;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The receiver and transmitter threads (or the one thread doing both).
pub(super) struct DataThreads {
    rx_stop: Arc<AtomicBool>,
    tx_stop: Arc<AtomicBool>,
    /// `None` under run-to-completion, where `transmitter` does both.
    receiver: Option<JoinHandle<()>>,
    transmitter: Option<JoinHandle<()>>,
    /// From-device slots the transmitter could not route (the status
    /// report's `session.unroutable`).
    pub unroutable: Arc<AtomicU64>,
    /// The receiver's and the transmitter's: woken when the stream table
    /// changes and to stop.
    wakers: [Arc<Waker>; 2],
    /// The receiver's and the transmitter's counters.
    pub stats: [Arc<ThreadStats>; 2],
}

impl DataThreads {
    /// Start the threads `config.daemon.layout` asks for. They build their
    /// ring ends themselves: nix's preallocated message headers hold raw
    /// pointers and are not Send.
    pub fn spawn(
        config: &Config,
        backend: &Arc<dyn Backend>,
        region: &Arc<Region>,
        table: &Arc<StreamTable>,
    ) -> io::Result<DataThreads> {
        let rx_stop = Arc::new(AtomicBool::new(false));
        let tx_stop = Arc::new(AtomicBool::new(false));
        let unroutable = Arc::new(AtomicU64::new(0));
        let rx_waker = Arc::new(Waker::new()?);
        let tx_waker = Arc::new(Waker::new()?);
        let rx_stats = Arc::new(ThreadStats::default());
        let tx_stats = Arc::new(ThreadStats::default());
        let rtc = config.daemon.layout == Layout::RunToCompletion;
        if rtc && backend.poll_fd().is_none() {
            log::warn!("layout = \"run-to-completion\" needs a device that answers poll; using the threads layout");
        }
        let rtc = rtc && backend.poll_fd().is_some();
        let gso = config.daemon.udp_gso;
        let coalesce = config.daemon.rx_coalesce_us;
        let (receiver, transmitter) = if rtc {
            let (backend, region, table, rx_stop, tx_stop, unroutable) = (
                Arc::clone(backend),
                Arc::clone(region),
                Arc::clone(table),
                Arc::clone(&rx_stop),
                Arc::clone(&tx_stop),
                Arc::clone(&unroutable),
            );
            let (rx_waker, tx_waker, rx_stats, tx_stats) =
                (Arc::clone(&rx_waker), Arc::clone(&tx_waker), Arc::clone(&rx_stats), Arc::clone(&tx_stats));
            log::info!("layout: run-to-completion (one thread receives and transmits)");
            let h = std::thread::Builder::new().name("rtpmgr-rtc".into()).spawn(move || {
                let rx = Receiver::new(
                    Arc::clone(&backend),
                    &region,
                    Arc::clone(&table),
                    Arc::clone(&rx_stop),
                    rx_waker,
                    rx_stats,
                )
                .map(|r| r.with_coalesce(coalesce));
                let tx = Transmitter::new(
                    Arc::clone(&backend),
                    &region,
                    table,
                    Arc::clone(&tx_stop),
                    unroutable,
                    gso,
                    tx_waker,
                    tx_stats,
                );
                match (rx, tx) {
                    (Ok(rx), Ok(tx)) => crate::rtc::run(rx, tx, backend, rx_stop, tx_stop),
                    (Err(e), _) | (_, Err(e)) => log::error!("run-to-completion thread: cannot start: {e}"),
                }
            })?;
            // Joined after the transmitter's stop, as the transmitter is.
            (None, h)
        } else {
            let receiver = {
                let (backend, region, table, stop, waker, stats) = (
                    Arc::clone(backend),
                    Arc::clone(region),
                    Arc::clone(table),
                    Arc::clone(&rx_stop),
                    Arc::clone(&rx_waker),
                    Arc::clone(&rx_stats),
                );
                std::thread::Builder::new().name("rtpmgr-rx".into()).spawn(move || {
                    match Receiver::new(backend, &region, table, stop, waker, stats) {
                        Ok(r) => r.with_coalesce(coalesce).run(),
                        Err(e) => log::error!("receiver: cannot start: {e}"),
                    }
                })?
            };
            let transmitter = {
                let (backend, region, table, stop, unroutable, waker, stats) = (
                    Arc::clone(backend),
                    Arc::clone(region),
                    Arc::clone(table),
                    Arc::clone(&tx_stop),
                    Arc::clone(&unroutable),
                    Arc::clone(&tx_waker),
                    Arc::clone(&tx_stats),
                );
                std::thread::Builder::new().name("rtpmgr-tx".into()).spawn(move || {
                    match Transmitter::new(backend, &region, table, stop, unroutable, gso, waker, stats) {
                        Ok(t) => t.run(),
                        Err(e) => log::error!("transmitter: cannot start: {e}"),
                    }
                })?
            };
            (Some(receiver), transmitter)
        };
        Ok(DataThreads {
            rx_stop,
            tx_stop,
            receiver,
            transmitter: Some(transmitter),
            unroutable,
            wakers: [rx_waker, tx_waker],
            stats: [rx_stats, tx_stats],
        })
    }

    /// The stream table changed, or a stop was asked for: the data threads
    /// look now, not after their idle timeout.
    pub fn wake(&self) {
        for w in &self.wakers {
            w.wake();
        }
    }

    /// Stop reading the network and wait for the receiver to end.
    pub fn stop_receiver(&mut self) {
        self.rx_stop.store(true, Ordering::Release);
        // Woken also when one thread does both (run-to-completion): it
        // stops reading the sockets and goes on transmitting.
        self.wakers[0].wake();
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
    }

    /// Stop sending and wait for the transmitter (or the one thread) to end.
    pub fn stop_transmitter(&mut self) {
        self.tx_stop.store(true, Ordering::Release);
        self.wakers[1].wake();
        if let Some(h) = self.transmitter.take() {
            let _ = h.join();
        }
    }
}
