// SPDX-License-Identifier: MIT
//! The transmitter thread: from-device ring → UDP.
//!
//! Consecutive slots of one stream go out in one `sendmmsg` straight from
//! the ring (no copy); the slots are released after the batch is sent.

use crate::backend::Backend;
use crate::stream::{Stream, StreamTable};
use nix::errno::Errno;
use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
use rtpmgr_abi::{self as abi, SlotHeader, WAIT_FROM_DEV_READY};
use rtpmgr_ring::{Consumer, Region, RingId};
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Slots handled per pass (and datagrams per `sendmmsg`).
pub const BATCH: u32 = 64;

/// How long one WAIT may block; bounds the reaction to a stop request.
const WAIT_MS: u32 = 100;

pub struct Transmitter {
    backend: Arc<dyn Backend>,
    table: Arc<StreamTable>,
    stop: Arc<AtomicBool>,
    consumer: Consumer,
    headers: MultiHeaders<SockaddrStorage>,
    /// The destination of each datagram of a `sendmmsg`, kept between calls.
    addrs: Vec<Option<SockaddrStorage>>,
    /// From-device slots that named no stream able to send (stopped
    /// meanwhile, or an ingress-only stream): counted, then released.
    unroutable: Arc<AtomicU64>,
}

impl Transmitter {
    pub fn new(
        backend: Arc<dyn Backend>,
        region: &Arc<Region>,
        table: Arc<StreamTable>,
        stop: Arc<AtomicBool>,
        unroutable: Arc<AtomicU64>,
    ) -> Self {
        let headers = MultiHeaders::preallocate(BATCH as usize, None);
        let addrs = Vec::with_capacity(BATCH as usize);
        Transmitter { backend, table, stop, consumer: region.consumer(RingId::FromDevice), headers, addrs, unroutable }
    }

    pub fn run(mut self) {
        let mut generation = u64::MAX;
        let mut by_id: Vec<Option<Arc<Stream>>> = Vec::new();
        while !self.stop.load(Ordering::Acquire) {
            if self.table.generation() != generation {
                let (g, all) = self.table.snapshot();
                generation = g;
                by_id = vec![None; abi::MAX_STREAMS as usize];
                for s in all.into_iter().filter(|s| s.sends()) {
                    let id = s.id as usize;
                    by_id[id] = Some(s);
                }
            }
            let n = match self.consumer.available() {
                Ok(n) => n.min(BATCH),
                Err(bad) => {
                    // Only a broken device gets here; do not spin on it.
                    log::error!("transmitter: device published impossible ring indices {bad:?}");
                    std::thread::sleep(Duration::from_millis(WAIT_MS.into()));
                    continue;
                }
            };
            if n == 0 {
                match self.backend.wait(WAIT_FROM_DEV_READY, WAIT_MS) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(e.raw_os_error().map(Errno::from_raw), Some(Errno::ETIMEDOUT | Errno::EINTR)) => {}
                    Err(e) => {
                        log::error!("transmitter: WAIT failed: {e}");
                        std::thread::sleep(Duration::from_millis(WAIT_MS.into()));
                    }
                }
                continue;
            }
            let mut headers = [SlotHeader::default(); BATCH as usize];
            for (i, h) in headers[..n as usize].iter_mut().enumerate() {
                *h = self.consumer.header(i as u32);
            }
            let mut start = 0usize;
            while start < n as usize {
                let sid = headers[start].stream_id;
                let end = (start..n as usize).find(|&k| headers[k].stream_id != sid).unwrap_or(n as usize);
                match by_id.get(sid as usize).and_then(Option::as_ref) {
                    Some(stream) => self.send_run(stream, start as u32, &headers[start..end]),
                    None => {
                        self.unroutable.fetch_add((end - start) as u64, Ordering::Relaxed);
                    }
                }
                start = end;
            }
            if self.consumer.release(n) {
                if let Err(e) = self.backend.kick() {
                    log::error!("transmitter: KICK failed: {e}");
                }
            }
        }
    }

    /// Send slots `first..first + run.len()`, all of `stream`.
    fn send_run(&mut self, stream: &Stream, first: u32, run: &[SlotHeader]) {
        let Some(dest) = stream.destination else {
            self.unroutable.fetch_add(run.len() as u64, Ordering::Relaxed);
            return;
        };
        let fd = stream.socket.as_raw_fd();
        let mut sent_packets = 0u64;
        let mut sent_bytes = 0u64;
        let mut errors = 0u64;
        let mut k = 0usize;
        while k < run.len() {
            let iovs: Vec<[IoSlice<'_>; 1]> = run[k..]
                .iter()
                .enumerate()
                .map(|(j, h)| [IoSlice::new(self.consumer.payload(first + (k + j) as u32, h.len))])
                .collect();
            self.addrs.clear();
            self.addrs.resize(iovs.len(), Some(dest));
            let cmsgs: [ControlMessage<'_>; 0] = [];
            match sendmmsg(fd, &mut self.headers, &iovs, &self.addrs, cmsgs, MsgFlags::empty()) {
                Ok(results) => {
                    let mut n = 0usize;
                    for r in results {
                        sent_bytes += r.bytes as u64;
                        n += 1;
                    }
                    if n == 0 {
                        // Nothing went out and no error: count one as failed
                        // and skip it rather than loop forever.
                        errors += 1;
                        k += 1;
                    } else {
                        sent_packets += n as u64;
                        k += n;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // The first datagram failed (unreachable network, no
                    // route, ...): count it and go on with the rest.
                    log::debug!("stream {}: sendmmsg: {e}", stream.config.name);
                    errors += 1;
                    k += 1;
                }
            }
        }
        let last_sent = if stream.config.rtcp != rtpmgr_config::RtcpMode::Off && sent_packets > 0 {
            // What a sender report extrapolates from.
            run.last().and_then(|h| {
                let last = first + run.len() as u32 - 1;
                rtp::RtpPacket::parse(self.consumer.payload(last, h.len)).ok().map(|p| crate::rtcp::LastSent {
                    ssrc: p.ssrc(),
                    rtp_ts: p.timestamp(),
                    at_ns: crate::monotonic_ns(),
                })
            })
        } else {
            None
        };
        let mut c = stream.counters();
        if let (Some(last), Some(rt)) = (last_sent, c.rtcp.as_mut()) {
            rt.last_sent = Some(last);
        }
        c.sent_packets += sent_packets;
        c.sent_bytes += sent_bytes;
        c.send_errors += errors;
    }
}
