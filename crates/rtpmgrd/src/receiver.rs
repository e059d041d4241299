// SPDX-License-Identifier: MIT
//! The receiver thread: UDP/RTP sockets → to-device ring.
//!
//! `recvmmsg` scatters up to [`BATCH`] datagrams straight into free ring
//! slots (no intermediate buffer). Each datagram is then checked in place:
//! RTP header (RFC 3550), payload type, size; or, for `format = "udp-ts"`,
//! a whole number of 188-byte TS packets with their sync bytes. MPEG-TS
//! (a `udp-ts` datagram, an RTP/MP2T payload) goes through the stream's
//! TR 101 290 analyser as well. Good packets get their slot
//! header and are published in one store; a bad one is counted and its slot
//! reused by moving the later packets of the batch down (the only copy, and
//! only after a bad packet).

use crate::backend::Backend;
use crate::stream::{Stream, StreamTable};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmmsg, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage};
use nix::sys::time::TimeSpec;
use rtpmgr_abi::{SlotHeader, WAIT_TO_DEV_SPACE};
use rtpmgr_config::{RingFullPolicy, StreamFormat};
use rtpmgr_ring::{Producer, Region, RingId};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Datagrams per `recvmmsg`.
pub const BATCH: u32 = 64;

/// How long one poll may block, which bounds how quickly the thread notices
/// a stop request or a changed stream table.
const POLL_MS: u16 = 100;

/// Whether an RTP payload is checked as MPEG-TS: a whole number of
/// 188-byte packets, and payload type 33 configured or, with none
/// configured, a sync byte where the first packet starts.
fn looks_like_ts(payload: &[u8], expected_pt: Option<u8>) -> bool {
    !payload.is_empty()
        && payload.len() % mpegts::PACKET_LEN == 0
        && (expected_pt == Some(33) || payload[0] == mpegts::SYNC_BYTE)
}

pub struct Receiver {
    backend: Arc<dyn Backend>,
    table: Arc<StreamTable>,
    stop: Arc<AtomicBool>,
    producer: Producer,
    headers: MultiHeaders<SockaddrStorage>,
}

/// What `recvmmsg` reported for one datagram.
#[derive(Clone, Copy, Default)]
struct Received {
    len: usize,
    arrival_ns: u64,
    truncated: bool,
}

impl Receiver {
    pub fn new(
        backend: Arc<dyn Backend>,
        region: &Arc<Region>,
        table: Arc<StreamTable>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let headers = MultiHeaders::preallocate(BATCH as usize, Some(nix::cmsg_space!(TimeSpec)));
        Receiver { backend, table, stop, producer: region.producer(RingId::ToDevice), headers }
    }

    pub fn run(mut self) {
        let mut generation = u64::MAX;
        let mut streams: Vec<Arc<Stream>> = Vec::new();
        while !self.stop.load(Ordering::Acquire) {
            if self.table.generation() != generation {
                let (g, all) = self.table.snapshot();
                generation = g;
                streams = all.into_iter().filter(|s| s.receives()).collect();
            }
            if streams.is_empty() {
                std::thread::sleep(Duration::from_millis(POLL_MS.into()));
                continue;
            }
            let ready: Vec<usize> = {
                let mut fds: Vec<PollFd<'_>> =
                    streams.iter().map(|s| PollFd::new(s.socket.as_fd(), PollFlags::POLLIN)).collect();
                match poll(&mut fds, PollTimeout::from(POLL_MS)) {
                    Ok(0) | Err(Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        log::error!("receiver: poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(POLL_MS.into()));
                        continue;
                    }
                }
                fds.iter()
                    .enumerate()
                    .filter(|(_, f)| f.revents().is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR)))
                    .map(|(i, _)| i)
                    .collect()
            };
            for i in ready {
                self.drain(&streams[i]);
            }
        }
    }

    /// Read `stream`'s socket until it is empty or the ring is full.
    fn drain(&mut self, stream: &Stream) {
        loop {
            let free = self.producer.free(BATCH).min(BATCH);
            if free == 0 {
                match stream.config.ring_full {
                    RingFullPolicy::Wait => {
                        // The kernel has not taken the last batches yet.
                        // Leave the datagrams in the socket buffer (sized
                        // by socket_buffer_bytes) and wait for room. The
                        // next poll comes straight back here while the
                        // socket has data, so a timeout or error needs no
                        // handling.
                        let _ = self.backend.wait(WAIT_TO_DEV_SPACE, POLL_MS.into());
                        return;
                    }
                    RingFullPolicy::Drop => {
                        // Discard one batch, then look for room again: the
                        // first free slot goes to the newest datagrams.
                        let n = self.discard(stream);
                        stream.counters().ring_full_drops += n as u64;
                        if n < BATCH as usize {
                            return; // socket drained
                        }
                        continue;
                    }
                }
            }
            let mut got = [Received::default(); BATCH as usize];
            let n = match self.receive(stream, free, &mut got) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("stream {}: recvmmsg: {e}", stream.config.name);
                    return;
                }
            };
            self.accept(stream, &got[..n]);
            if (n as u32) < free {
                return; // socket drained
            }
        }
    }

    /// Read up to one batch from `stream`'s socket and throw it away
    /// (truncated into a small scratch area: only the count matters).
    fn discard(&mut self, stream: &Stream) -> usize {
        let mut scratch = [[0u8; 16]; BATCH as usize];
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = scratch.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        // Non-blocking, and every signal is blocked in this thread: no EINTR.
        recvmmsg(stream.socket.as_raw_fd(), &mut self.headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
            .map(|results| results.count())
            .unwrap_or(0)
    }

    fn receive(&mut self, stream: &Stream, free: u32, got: &mut [Received]) -> Result<usize, Errno> {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            self.producer.payloads_mut(free).map(|p| [IoSliceMut::new(p)]).collect();
        let results =
            recvmmsg(stream.socket.as_raw_fd(), &mut self.headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
        let mut n = 0;
        for (msg, slot) in results.zip(got.iter_mut()) {
            let mut arrival_ns = None;
            for cmsg in msg.cmsgs().into_iter().flatten() {
                if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
                    arrival_ns = Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
                }
            }
            *slot = Received {
                len: msg.bytes,
                arrival_ns: arrival_ns.unwrap_or_else(crate::monotonic_ns),
                truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
            };
            n += 1;
        }
        Ok(n)
    }

    /// Check the received datagrams in place, compact, publish.
    fn accept(&mut self, stream: &Stream, got: &[Received]) {
        let now = crate::monotonic_ns();
        let expected_pt = stream.config.payload_type;
        let format = stream.config.format;
        let mut c = stream.counters();
        let mut kept = 0u32;
        for (i, r) in got.iter().enumerate() {
            let i = i as u32;
            if r.truncated {
                c.oversize += 1;
                continue;
            }
            let verdict = {
                let data = &self.producer.payload_mut(i)[..r.len];
                match format {
                    StreamFormat::UdpTs => {
                        // Judged whatever the verdict: TS health describes
                        // what arrived, bad sync bytes included; a datagram
                        // that is not whole packets is not TS at all.
                        if let Some(ts) = c.ts.as_mut() {
                            if data.len() % mpegts::PACKET_LEN == 0 {
                                ts.datagram(data, r.arrival_ns);
                            }
                        }
                        mpegts::check_datagram(data).map(|_| ()).map_err(|_| false)
                    }
                    StreamFormat::Rtp => match rtp::RtpPacket::parse(data) {
                        Err(_) => Err(false),
                        Ok(p) if expected_pt.is_some_and(|pt| pt != p.payload_type()) => Err(true),
                        Ok(p) => {
                            let class = c.rtp.update(&p, r.arrival_ns);
                            let payload = p.payload();
                            if let Some(ts) = c.ts.as_mut() {
                                // RFC 2250: an MP2T payload is whole TS
                                // packets. A repeated RTP packet says
                                // nothing new about the TS.
                                if class != rtp::PacketClass::Duplicate && looks_like_ts(payload, expected_pt) {
                                    ts.datagram(payload, r.arrival_ns);
                                }
                            }
                            Ok(())
                        }
                    },
                }
            };
            match verdict {
                Err(false) => {
                    c.malformed += 1;
                    continue;
                }
                Err(true) => {
                    c.wrong_payload_type += 1;
                    continue;
                }
                Ok(()) => {}
            }
            if kept != i {
                self.producer.move_slot(i, kept, r.len);
            }
            let header =
                SlotHeader { len: r.len as u32, stream_id: stream.id, timestamp_ns: now, ..Default::default() };
            self.producer.set_header(kept, &header);
            c.packets += 1;
            c.bytes += r.len as u64;
            kept += 1;
        }
        drop(c);
        if self.producer.publish(kept) {
            if let Err(e) = self.backend.kick() {
                log::error!("receiver: KICK failed: {e}");
            }
        }
    }
}
