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
//!
//! A stream with a reorder buffer (`reorder_ms`) receives into its
//! buffer's entries instead, and its packets are copied into ring slots
//! in sequence order as the buffer releases them (one copy per packet,
//! only for such streams); a gap is waited for up to `reorder_ms`, a
//! deadline the thread's poll timeout honours.

use crate::rtcp;
use crate::stream::{Stream, StreamCounters, StreamTable};
use crate::wait::{Poller, ThreadStats, Waker, IDLE_MS, WAKER_TOKEN};
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage};
use nix::sys::time::TimeSpec;
use rtp::reorder::{Insert, ReorderBuffer};
use rtpmgr_abi::{SlotHeader, WAIT_FROM_DEV_READY, WAIT_TO_DEV_SPACE};
use rtpmgr_config::{RingFullPolicy, RtcpMode, StreamFormat};
use rtpmgr_device::Backend;
use rtpmgr_ring::{Producer, Region, RingId};
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Datagrams per `recvmmsg`.
pub const BATCH: u32 = 64;

/// How long a WAIT for ring space may block, and the pause after a failed
/// wait. Stop requests and stream-table changes come through the
/// thread's [`Waker`].
const POLL_MS: u16 = 100;

/// Whether an RTP payload is checked as MPEG-TS: a whole number of
/// 188-byte packets, and payload type 33 configured or, with none
/// configured, a sync byte where the first packet starts.
fn looks_like_ts(payload: &[u8], expected_pt: Option<u8>) -> bool {
    !payload.is_empty()
        && payload.len() % mpegts::PACKET_LEN == 0
        && (expected_pt == Some(rtp::PT_MP2T) || payload[0] == mpegts::SYNC_BYTE)
}

/// Which of a stream's sockets a descriptor is.
#[derive(Clone, Copy)]
enum Socket {
    Media,
    /// The second leg of a SMPTE 2022-7 stream.
    Leg2,
    Rtcp,
    /// Column (0) or row (1) FEC.
    Fec(usize),
}

pub struct Receiver {
    backend: Arc<dyn Backend>,
    table: Arc<StreamTable>,
    stop: Arc<AtomicBool>,
    producer: Producer,
    headers: MultiHeaders<SockaddrStorage>,
    poller: Poller,
    waker: Arc<Waker>,
    stats: Arc<ThreadStats>,
    /// The sockets the last wake-up found ready, kept between wake-ups.
    ready: Vec<(usize, Socket)>,
    /// The stream table's generation `streams` belongs to.
    generation: u64,
    streams: Vec<Arc<Stream>>,
    /// Indices of the streams with timers (reorder gaps, FEC, RTCP): only
    /// these are looked at after a wake-up.
    timed: Vec<usize>,
    waker_added: bool,
    /// Run to completion: this thread transmits too.
    watches_device: bool,
    /// `rx_coalesce_us`: the pause after a wake-up that brought less than
    /// a batch (0: none).
    coalesce_us: u32,
}

/// The token of the device's poll descriptor (run-to-completion).
const DEVICE_TOKEN: u64 = u64::MAX - 1;

/// The most events one wake-up takes (more wait for the next, level-triggered).
const READY_MAX: usize = 256;

/// The epoll token of socket `kind` of the `i`-th stream.
fn token(i: usize, kind: Socket) -> u64 {
    let k = match kind {
        Socket::Media => 0,
        Socket::Leg2 => 1,
        Socket::Rtcp => 2,
        Socket::Fec(f) => 3 + f as u64,
    };
    (i as u64) << 3 | k
}

fn untoken(t: u64) -> Option<(usize, Socket)> {
    let kind = match t & 7 {
        0 => Socket::Media,
        1 => Socket::Leg2,
        2 => Socket::Rtcp,
        k @ 3..=4 => Socket::Fec((k - 3) as usize),
        _ => return None,
    };
    Some(((t >> 3) as usize, kind))
}

/// Each socket the receiver reads of `s`, with what it is.
fn for_each_socket(s: &Stream, mut f: impl FnMut(&std::net::UdpSocket, Socket)) {
    if s.receives() {
        f(&s.socket, Socket::Media);
    }
    if let Some(r) = &s.rtcp_socket {
        f(r, Socket::Rtcp);
    }
    if let Some(l) = &s.leg2_socket {
        f(l, Socket::Leg2);
    }
    for (k, sock) in s.fec_sockets.iter().enumerate().take(2) {
        f(sock, Socket::Fec(k));
    }
}

/// What `recvmmsg` reported for one datagram.
#[derive(Clone, Copy, Default)]
struct Received {
    len: usize,
    /// Kernel arrival time, on the monotonic clock.
    arrival_ns: u64,
    truncated: bool,
    /// The sender's address.
    from: Option<SockaddrStorage>,
}

/// The verdict on one datagram.
enum Verdict {
    /// Good RTP: its SSRC and sequence number.
    Rtp { ssrc: u32, seq: u16 },
    /// Good raw MPEG-TS.
    Ts,
    /// RTCP on a muxed port (`rtcp = "mux"`): taken, not forwarded.
    Rtcp,
    /// Neither, as the stream's format wants it.
    Malformed,
    /// RTP with another payload type than configured.
    WrongPayloadType,
}

/// Check one datagram of `stream` and account it in the statistics (RTP,
/// TS health); the caller counts the verdict.
fn check(c: &mut StreamCounters, config: &rtpmgr_config::StreamConfig, data: &[u8], r: &Received) -> Verdict {
    let expected_pt = config.payload_type;
    let arrival_ns = r.arrival_ns;
    if config.rtcp == RtcpMode::Mux && rtp::rtcp::is_rtcp(data) {
        let media = c.rtp.current().map(|s| s.ssrc());
        if let Some(rt) = c.rtcp.as_mut() {
            rt.on_rtcp(data, r.from.as_ref().and_then(rtcp::source), arrival_ns, media);
        }
        return Verdict::Rtcp;
    }
    match config.format {
        StreamFormat::UdpTs => {
            // Judged whatever the verdict: TS health describes what
            // arrived, bad sync bytes included; a datagram that is not
            // whole packets is not TS at all.
            if let Some(ts) = c.ts.as_mut() {
                if data.len() % mpegts::PACKET_LEN == 0 {
                    ts.datagram(data, arrival_ns);
                }
            }
            match mpegts::check_datagram(data) {
                Ok(_) => Verdict::Ts,
                Err(_) => Verdict::Malformed,
            }
        }
        StreamFormat::Rtp => match rtp::RtpPacket::parse(data) {
            Err(_) => Verdict::Malformed,
            Ok(p) if expected_pt.is_some_and(|pt| pt != p.payload_type()) => Verdict::WrongPayloadType,
            Ok(p) => {
                let class = c.rtp.update(&p, arrival_ns);
                let payload = p.payload();
                if let Some(ts) = c.ts.as_mut() {
                    // RFC 2250: an MP2T payload is whole TS packets. A
                    // repeated RTP packet says nothing new about the TS.
                    if class != rtp::PacketClass::Duplicate && looks_like_ts(payload, expected_pt) {
                        ts.datagram(payload, arrival_ns);
                    }
                }
                if let Some(rt) = c.rtcp.as_mut() {
                    rt.note_rtp_source(r.from.as_ref().and_then(rtcp::source));
                    rt.media_pt.get_or_insert(p.payload_type());
                }
                Verdict::Rtp { ssrc: p.ssrc(), seq: p.sequence_number() }
            }
        },
    }
}

/// `CLOCK_REALTIME` in nanoseconds (what `SO_TIMESTAMPNS` stamps).
fn realtime_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// Turns `SO_TIMESTAMPNS` times (the realtime clock) into monotonic ones,
/// so that a step of the wall clock (NTP) is not taken for a stream that
/// paused: TR 101 290's timers and the reorder deadlines use them.
#[derive(Clone, Copy)]
struct ClockMap {
    mono: u64,
    real: u64,
}

impl ClockMap {
    fn now() -> ClockMap {
        ClockMap { real: realtime_ns(), mono: crate::monotonic_ns() }
    }
    fn to_mono(self, real: u64) -> u64 {
        // Arrived before now: at most as far back on the monotonic clock.
        self.mono.saturating_sub(self.real.saturating_sub(real))
    }
}

impl Receiver {
    pub fn new(
        backend: Arc<dyn Backend>,
        region: &Arc<Region>,
        table: Arc<StreamTable>,
        stop: Arc<AtomicBool>,
        waker: Arc<Waker>,
        stats: Arc<ThreadStats>,
    ) -> std::io::Result<Self> {
        let headers = MultiHeaders::preallocate(BATCH as usize, Some(nix::cmsg_space!(TimeSpec)));
        Ok(Receiver {
            backend,
            table,
            stop,
            producer: region.producer(RingId::ToDevice),
            headers,
            poller: Poller::new(READY_MAX)?,
            waker,
            stats,
            ready: Vec::new(),
            generation: u64::MAX,
            streams: Vec::new(),
            timed: Vec::new(),
            waker_added: false,
            watches_device: false,
            coalesce_us: 0,
        })
    }

    pub fn run(mut self) {
        while !self.stop.load(Ordering::Acquire) {
            self.refresh();
            self.turn(None);
        }
        self.finish();
    }

    /// Interrupt moderation (`rx_coalesce_us`).
    pub fn with_coalesce(mut self, us: u32) -> Self {
        self.coalesce_us = us;
        self
    }

    /// Also watch the device's poll descriptor (run-to-completion):
    /// [`Receiver::turn`] then reports it ready.
    pub fn watch_device(&mut self, fd: std::os::fd::RawFd) -> std::io::Result<()> {
        self.poller.add_raw(fd, DEVICE_TOKEN)?;
        self.watches_device = true;
        Ok(())
    }

    /// Take a changed stream table: the sockets registered again, the
    /// streams with timers noted.
    pub fn refresh(&mut self) {
        if self.table.generation() == self.generation {
            return;
        }
        if !self.waker_added {
            if let Err(e) = self.poller.add(&*self.waker, WAKER_TOKEN) {
                log::error!("receiver: epoll: {e}");
            }
            self.waker_added = true;
        }
        for s in &self.streams {
            for_each_socket(s, |fd, _| self.poller.delete(fd));
        }
        let (g, all) = self.table.snapshot();
        self.generation = g;
        // Every stream with RTCP is ours: an egress stream's sender
        // reports are timed here too.
        self.streams = all.into_iter().filter(|s| s.receives() || s.rtcp_socket.is_some() || has_rtcp(s)).collect();
        let streams = &self.streams;
        self.timed = (0..streams.len()).filter(|&i| streams[i].reorders() || has_rtcp(&streams[i])).collect();
        let mut sockets = 0;
        for (i, s) in self.streams.iter().enumerate() {
            for_each_socket(s, |fd, kind| {
                sockets += 1;
                if let Err(e) = self.poller.add(fd, token(i, kind)) {
                    log::error!("stream {}: epoll: {e}", s.config.name);
                }
            });
        }
        self.ready.reserve(sockets.min(READY_MAX));
    }

    /// One wait (at most `max_ms`, if given) and the work it found: the
    /// ready sockets drained, the timers that are due. True when the
    /// device's poll descriptor ([`Receiver::watch_device`]) was ready.
    pub fn turn(&mut self, max_ms: Option<u16>) -> bool {
        let streams = std::mem::take(&mut self.streams);
        let timed = std::mem::take(&mut self.timed);
        let device = self.turn_with(&streams, &timed, max_ms);
        self.streams = streams;
        self.timed = timed;
        device
    }

    fn turn_with(&mut self, streams: &[Arc<Stream>], timed: &[usize], max_ms: Option<u16>) -> bool {
        let mut timeout = self.poll_timeout(streams, timed);
        if let Some(m) = max_ms {
            timeout = timeout.min(m);
        }
        ThreadStats::add(&self.stats.syscalls, 1);
        match self.poller.wait(timeout) {
            Ok(0) => ThreadStats::add(&self.stats.timeouts, 1),
            Ok(_) => ThreadStats::add(&self.stats.wakeups, 1),
            Err(e) => {
                log::error!("receiver: epoll_wait failed: {e}");
                std::thread::sleep(Duration::from_millis(POLL_MS.into()));
                return false;
            }
        }
        self.ready.clear();
        let mut device = false;
        for t in self.poller.tokens() {
            if t == WAKER_TOKEN {
                self.waker.clear();
            } else if t == DEVICE_TOKEN {
                device = true;
            } else if let Some(w) = untoken(t).filter(|(i, _)| *i < streams.len()) {
                self.ready.push(w);
            }
        }
        // Media first: a FEC packet read before the media packets that
        // came with it would take them for lost.
        self.ready.sort_unstable_by_key(|(_, s)| !matches!(s, Socket::Media | Socket::Leg2));
        let before = ThreadStats::get(&self.stats.packets);
        for k in 0..self.ready.len() {
            let (i, socket) = self.ready[k];
            match socket {
                Socket::Media => self.drain(&streams[i]),
                Socket::Leg2 => self.drain_reordered(&streams[i], true),
                Socket::Rtcp => read_rtcp(&streams[i]),
                Socket::Fec(k) => read_fec(&streams[i], k),
            }
        }
        // Interrupt moderation: a wake-up that brought less than a batch
        // is followed by a pause, so that the next one finds more waiting
        // (and the device and the transmitter get batches too).
        let got = ThreadStats::get(&self.stats.packets) - before;
        if self.coalesce_us > 0 && got > 0 && got < u64::from(BATCH) {
            ThreadStats::add(&self.stats.syscalls, 1);
            std::thread::sleep(Duration::from_micros(self.coalesce_us.into()));
        }
        // Gaps whose wait is over; RTCP that is due.
        let now = crate::monotonic_ns();
        for &i in timed {
            let s = &streams[i];
            if s.reorders() {
                let mut c = s.counters();
                if let Some(rb) = c.reorder.as_mut() {
                    rb.tick(now);
                }
                if let Some(f) = c.fec.as_mut() {
                    f.tick(now);
                }
                drop(c);
                self.emit(s);
            }
            if has_rtcp(s) {
                rtcp_work(s, now);
            }
        }
        device
    }

    /// Stopping: what the reorder buffers hold goes out, gaps given up.
    pub fn finish(&mut self) {
        let streams = std::mem::take(&mut self.streams);
        for s in streams.iter().filter(|s| s.reorders()) {
            if let Some(rb) = s.counters().reorder.as_mut() {
                rb.tick(u64::MAX);
            }
            self.emit(s);
        }
    }

    /// How long the next wait may block: [`IDLE_MS`], or less when a
    /// reorder buffer's gap, a NACK retry or an RTCP report is due sooner
    /// (`timed`: the indices of the streams that have such timers).
    fn poll_timeout(&self, streams: &[Arc<Stream>], timed: &[usize]) -> u16 {
        let now = crate::monotonic_ns();
        let mut due = now + u64::from(IDLE_MS) * 1_000_000;
        for &i in timed {
            let c = streams[i].counters();
            if let Some(rb) = c.reorder.as_ref() {
                if rb.output_len() > 0 {
                    return 1; // the ring was full: try again soon
                }
                if let Some(d) = rb.deadline() {
                    due = due.min(d);
                }
                if let Some(n) = c.rtcp.as_ref().and_then(|r| r.nack.as_ref()) {
                    if rb.held() > 0 {
                        due = due.min(now + n.retry_ns());
                    }
                }
            }
            if let Some(r) = c.rtcp.as_ref() {
                due = due.min(r.next_report_ns());
            }
        }
        due.saturating_sub(now).div_ceil(1_000_000).min(u64::from(IDLE_MS)) as u16
    }

    /// Read `stream`'s socket until it is empty or the ring is full.
    fn drain(&mut self, stream: &Stream) {
        if stream.reorders() {
            self.drain_reordered(stream, false);
            return;
        }
        loop {
            let free = self.producer.free(BATCH).min(BATCH);
            if free == 0 {
                if self.ring_full(stream) {
                    continue;
                }
                return;
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

    /// The to-device ring is full: apply the stream's `ring_full` policy.
    /// True when the caller should look for room again.
    fn ring_full(&mut self, stream: &Stream) -> bool {
        match stream.config.ring_full {
            RingFullPolicy::Wait => {
                // The kernel has not taken the last batches yet. Leave the
                // datagrams in the socket buffer (sized by
                // socket_buffer_bytes) and wait for room. The next poll
                // comes straight back here while the socket has data, so a
                // timeout or error needs no handling.
                // Run to completion, this thread is also the transmitter:
                // the device may be waiting for it to drain the
                // from-device ring, so wake for that too and go and do it.
                let flags =
                    if self.watches_device { WAIT_TO_DEV_SPACE | WAIT_FROM_DEV_READY } else { WAIT_TO_DEV_SPACE };
                ThreadStats::add(&self.stats.syscalls, 1);
                let _ = self.backend.wait(flags, POLL_MS.into());
                false
            }
            RingFullPolicy::Drop => {
                // Discard one batch, then look for room again: the first
                // free slot goes to the newest datagrams.
                let n = self.discard(stream);
                stream.counters().ring_full_drops += n as u64;
                n == BATCH as usize
            }
        }
    }

    /// Read up to one batch from `stream`'s socket and throw it away
    /// (truncated into a small scratch area: only the count matters).
    fn discard(&mut self, stream: &Stream) -> usize {
        let mut scratch = [[0u8; 16]; BATCH as usize];
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH as usize] = std::array::from_fn(|_| [IoSliceMut::new(&mut [])]);
        for (iov, b) in iovs.iter_mut().zip(scratch.iter_mut()) {
            *iov = [IoSliceMut::new(b)];
        }
        ThreadStats::add(&self.stats.syscalls, 1);
        // Non-blocking, and every signal is blocked in this thread: no EINTR.
        recvmmsg(stream.socket.as_raw_fd(), &mut self.headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
            .map(|results| results.count())
            .unwrap_or(0)
    }

    fn receive(&mut self, stream: &Stream, free: u32, got: &mut [Received]) -> Result<usize, Errno> {
        // On the stack: no allocation per batch.
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH as usize] = std::array::from_fn(|_| [IoSliceMut::new(&mut [])]);
        let mut n = 0;
        for (iov, p) in iovs.iter_mut().zip(self.producer.payloads_mut(free)) {
            *iov = [IoSliceMut::new(p)];
            n += 1;
        }
        ThreadStats::add(&self.stats.syscalls, 1);
        recv_into(&stream.socket, &mut self.headers, &mut iovs[..n], got)
    }

    /// Check the received datagrams in place, compact, publish.
    fn accept(&mut self, stream: &Stream, got: &[Received]) {
        let now = crate::monotonic_ns();
        let mut c = stream.counters();
        let mut kept = 0u32;
        for (i, r) in got.iter().enumerate() {
            let i = i as u32;
            if r.truncated {
                c.oversize += 1;
                continue;
            }
            let data = &self.producer.payload_mut(i)[..r.len];
            match check(&mut c, &stream.config, data, r) {
                Verdict::Malformed => {
                    c.malformed += 1;
                    continue;
                }
                Verdict::WrongPayloadType => {
                    c.wrong_payload_type += 1;
                    continue;
                }
                Verdict::Rtcp => continue,
                Verdict::Rtp { .. } | Verdict::Ts => {}
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
        ThreadStats::add(&self.stats.batches, 1);
        ThreadStats::add(&self.stats.packets, u64::from(kept));
        self.publish(kept);
    }

    fn publish(&mut self, n: u32) {
        if self.producer.publish(n) {
            ThreadStats::add(&self.stats.syscalls, 1);
            if let Err(e) = self.backend.kick() {
                log::error!("receiver: KICK failed: {e}");
            }
        }
    }

    /// A stream with a reorder buffer: emit what it released, receive into
    /// its free entries, insert, until the socket is empty.
    fn drain_reordered(&mut self, stream: &Stream, leg2: bool) {
        let socket = if leg2 {
            match &stream.leg2_socket {
                Some(s) => s,
                None => return,
            }
        } else {
            &stream.socket
        };
        loop {
            if !self.emit(stream) {
                // Released packets wait for ring space.
                if self.ring_full(stream) {
                    continue;
                }
                return;
            }
            let mut got = [Received::default(); BATCH as usize];
            let mut ids = [0u32; BATCH as usize];
            let n = {
                let mut c = stream.counters();
                let Some(rb) = c.reorder.as_mut() else { return };
                let mut k = 0;
                for (slot, id) in ids.iter_mut().zip(rb.free_entries(BATCH as usize)) {
                    *slot = id;
                    k += 1;
                }
                if k == 0 {
                    return; // every entry is in use: the next emit frees some
                }
                let mut views = Vec::with_capacity(k);
                rb.entries_mut(&ids[..k], &mut views);
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> = views.into_iter().map(|v| [IoSliceMut::new(v)]).collect();
                match recv_into(socket, &mut self.headers, &mut iovs, &mut got) {
                    Ok(n) => (n, k),
                    Err(Errno::EAGAIN) => return,
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        log::warn!("stream {}: recvmmsg: {e}", stream.config.name);
                        return;
                    }
                }
            };
            let (n, asked) = n;
            if leg2 {
                self.accept_leg2(stream, &got[..n], &ids[..n]);
            } else {
                self.accept_reordered(stream, &got[..n], &ids[..n]);
            }
            // The two legs of a 2022-7 stream take turns, one batch each:
            // draining one leg first would put the other behind by a
            // whole socket buffer.
            if n < asked || stream.leg2_socket.is_some() {
                self.emit(stream);
                return;
            }
        }
    }

    /// Datagrams of the second leg of a SMPTE 2022-7 stream: good RTP of
    /// the configured payload type goes into the same reorder buffer,
    /// which keeps the first copy of each sequence number and drops the
    /// other as a duplicate. Counted on the leg; TS health and RTCP
    /// describe the first leg.
    fn accept_leg2(&mut self, stream: &Stream, got: &[Received], ids: &[u32]) {
        let now = crate::monotonic_ns();
        let mut guard = stream.counters();
        let c = &mut *guard;
        let (Some(rb), Some(leg)) = (c.reorder.as_mut(), c.leg2.as_mut()) else { return };
        for (r, &id) in got.iter().zip(ids) {
            let data = rb.entry(id).get(..r.len).unwrap_or_default();
            let (ssrc, seq) = match rtp::RtpPacket::parse(data) {
                Ok(p) if !r.truncated && stream.config.payload_type.is_none_or(|pt| pt == p.payload_type()) => {
                    leg.rtp.update(&p, r.arrival_ns);
                    (p.ssrc(), p.sequence_number())
                }
                _ => {
                    leg.malformed += 1;
                    continue;
                }
            };
            leg.packets += 1;
            leg.bytes += r.len as u64;
            if let Some(f) = c.fec.as_mut() {
                f.on_media(seq, data);
            }
            rb.insert(id, r.len, ssrc, seq, now);
        }
    }

    /// Check datagrams received into reorder entries and insert the good
    /// ones.
    fn accept_reordered(&mut self, stream: &Stream, got: &[Received], ids: &[u32]) {
        let now = crate::monotonic_ns();
        let mut guard = stream.counters();
        let c = &mut *guard;
        let Some(mut rb) = c.reorder.take() else { return };
        let mut fec_retry = None;
        for (r, &id) in got.iter().zip(ids) {
            if r.truncated {
                c.oversize += 1;
                continue;
            }
            if stream.config.nack && self.repair(c, &mut rb, &stream.config, id, r.len, now) {
                continue;
            }
            let data = rb.entry(id).get(..r.len).unwrap_or_default();
            match check(c, &stream.config, data, r) {
                Verdict::Malformed | Verdict::Ts => c.malformed += 1,
                Verdict::WrongPayloadType => c.wrong_payload_type += 1,
                Verdict::Rtcp => {}
                Verdict::Rtp { ssrc, seq } => {
                    if let Some(f) = c.fec.as_mut() {
                        f.on_media(seq, rb.entry(id).get(..r.len).unwrap_or_default());
                    }
                    rb.insert(id, r.len, ssrc, seq, now);
                    fec_retry = Some(ssrc);
                }
            }
        }
        // A FEC packet waiting for these to show its missing one overdue.
        // Only now: a rebuilt packet takes a free entry, and until the loop
        // is done the batch's own entries still count as free.
        if let (Some(ssrc), Some(f)) = (fec_retry, c.fec.as_mut().filter(|f| f.waiting())) {
            f.retry(ssrc, &mut |seq, pkt| insert_rebuilt(&mut rb, ssrc, seq, pkt, now));
        }
        c.reorder = Some(rb);
    }

    /// A retransmission for the reorder buffer, if the packet in entry
    /// `id` is one: an RFC 4588 RTX packet (`rtx_payload_type`), turned
    /// back into the original, or a RIST retransmission (the media SSRC
    /// with its last bit set). It bypasses the statistics of the original
    /// stream, which keep describing what the network lost.
    fn repair(
        &self,
        c: &mut StreamCounters,
        rb: &mut ReorderBuffer,
        cfg: &rtpmgr_config::StreamConfig,
        id: u32,
        len: usize,
        now: u64,
    ) -> bool {
        let Some(media_ssrc) = c.rtp.current().map(|s| s.ssrc()) else { return false };
        let Some(rt) = c.rtcp.as_mut() else { return false };
        let (pt, ssrc) = match rtp::RtpPacket::parse(rb.entry(id).get(..len).unwrap_or_default()) {
            Ok(p) => (p.payload_type(), p.ssrc()),
            Err(_) => return false,
        };
        let restored = if Some(pt) == cfg.rtx_payload_type {
            rt.counters.rtx_received += 1;
            let media_pt = rt.media_pt.unwrap_or(pt);
            rtp::rtx::unwrap_rtx(rb.entry_mut(id), len, media_pt, media_ssrc)
        } else if rtp::rtx::is_rist_retransmission(ssrc, media_ssrc) {
            rt.counters.rist_received += 1;
            let entry = rb.entry_mut(id);
            rtp::rtx::restore_rist(entry);
            rtp::RtpPacket::parse(entry.get(..len).unwrap_or_default()).ok().map(|p| (len, p.sequence_number()))
        } else {
            return false;
        };
        if let Some((len, seq)) = restored {
            if let Some(f) = c.fec.as_mut() {
                f.on_media(seq, rb.entry(id).get(..len).unwrap_or_default());
            }
            if matches!(rb.insert(id, len, media_ssrc, seq, now), Insert::Released | Insert::Held) {
                rt.counters.repaired += 1;
            }
        }
        true
    }

    /// Copy what `stream`'s reorder buffer released into ring slots and
    /// publish them. True when nothing released is left waiting.
    fn emit(&mut self, stream: &Stream) -> bool {
        let now = crate::monotonic_ns();
        let mut guard = stream.counters();
        let c = &mut *guard;
        let Some(rb) = c.reorder.as_mut() else { return true };
        loop {
            if rb.output_len() == 0 {
                return true;
            }
            let free = self.producer.free(BATCH).min(BATCH);
            if free == 0 {
                return false;
            }
            let mut k = 0u32;
            while k < free {
                let Some(pkt) = rb.output() else { break };
                let len = pkt.len();
                self.producer.payload_mut(k)[..len].copy_from_slice(pkt);
                let header =
                    SlotHeader { len: len as u32, stream_id: stream.id, timestamp_ns: now, ..Default::default() };
                self.producer.set_header(k, &header);
                rb.pop_output();
                c.packets += 1;
                c.bytes += len as u64;
                k += 1;
            }
            self.publish(k);
        }
    }
}

/// `recvmmsg` from `stream`'s socket into `iovs`, non-blocking; each
/// datagram's length, monotonic arrival time and truncation into `got`.
fn recv_into<'a>(
    socket: &std::net::UdpSocket,
    headers: &'a mut MultiHeaders<SockaddrStorage>,
    iovs: &'a mut [[IoSliceMut<'a>; 1]],
    got: &mut [Received],
) -> Result<usize, Errno> {
    let results = recvmmsg(socket.as_raw_fd(), headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
    let clock = ClockMap::now();
    let mut n = 0;
    for (msg, slot) in results.zip(got.iter_mut()) {
        let mut arrival_ns = None;
        for cmsg in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
                arrival_ns = Some(clock.to_mono(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64))
            }
        }
        *slot = Received {
            len: msg.bytes,
            arrival_ns: arrival_ns.unwrap_or(clock.mono),
            truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
            from: msg.address,
        };
        n += 1;
    }
    Ok(n)
}

fn has_rtcp(s: &Stream) -> bool {
    s.config.rtcp != RtcpMode::Off
}

/// Read what arrived on `stream`'s RTCP socket.
fn read_rtcp(stream: &Stream) {
    let Some(sock) = &stream.rtcp_socket else { return };
    let mut buf = [0u8; 2048];
    // Bounded: a flood cannot keep the thread here.
    for _ in 0..64 {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { return };
        let now = crate::monotonic_ns();
        let mut c = stream.counters();
        let media = c.rtp.current().map(|s| s.ssrc());
        if let Some(rt) = c.rtcp.as_mut() {
            rt.on_rtcp(&buf[..n], Some(from), now, media);
        }
    }
}

/// Send what RTCP is due for `stream`: NACKs for what its reorder buffer
/// misses, and the regular reports.
fn rtcp_work(stream: &Stream, now: u64) {
    let cfg = &stream.config;
    let sock = match cfg.rtcp {
        RtcpMode::PortPlus1 => stream.rtcp_socket.as_ref(),
        RtcpMode::Mux => Some(&stream.socket),
        RtcpMode::Off => None,
    };
    let Some(sock) = sock else { return };
    let mut guard = stream.counters();
    let c = &mut *guard;
    let Some(rt) = c.rtcp.as_mut() else { return };
    let mut buf = [0u8; rtcp::MAX_RTCP];
    let send = |rt: &mut rtcp::RtcpState, to: Option<std::net::SocketAddr>, pkt: Option<usize>, buf: &[u8]| {
        let (Some(to), Some(n)) = (to, pkt) else { return false };
        match sock.send_to(&buf[..n], to) {
            Ok(_) => true,
            Err(e) => {
                log::debug!("stream {}: RTCP to {to}: {e}", cfg.name);
                rt.counters.send_errors += 1;
                false
            }
        }
    };
    if let (Some(sched), Some(rb)) = (rt.nack.as_mut(), c.reorder.as_ref()) {
        let mut seqs = [0u16; 64];
        let n = sched.due(rb.missing(1024), now, &mut seqs);
        if n > 0 {
            let pkt = rt.nack_packet(&mut c.rtp, &seqs[..n], now, &mut buf);
            let to = rt.upstream(cfg);
            if send(rt, to, pkt, &buf) {
                rt.counters.nack_sent += 1;
                rt.counters.nack_requested += n as u64;
            }
        }
    }
    if !rt.report_due(now) {
        return;
    }
    if stream.receives() {
        let pkt = rt.receiver_report(&mut c.rtp, now, &mut buf);
        let to = rt.upstream(cfg);
        if send(rt, to, pkt, &buf) {
            rt.counters.rr_sent += 1;
        }
    }
    if stream.sends() {
        let unix = realtime_ns();
        let pkt = rt.sender_report(cfg.effective_clock_rate(), c.sent_packets, c.sent_bytes, now, unix, &mut buf);
        if send(rt, rtcp::RtcpState::downstream(cfg), pkt, &buf) {
            rt.counters.sr_sent += 1;
        }
    }
    rt.reported(cfg, now, c.bytes + c.sent_bytes);
}

/// Read what arrived on `stream`'s column (`k` 0) or row (1) FEC socket
/// and put what it rebuilds into the reorder buffer.
fn read_fec(stream: &Stream, k: usize) {
    let Some(sock) = stream.fec_sockets.get(k) else { return };
    let mut buf = [0u8; 2048];
    for _ in 0..64 {
        let Ok(n) = sock.recv(&mut buf) else { return };
        let now = crate::monotonic_ns();
        let mut guard = stream.counters();
        let c = &mut *guard;
        let Some(ssrc) = c.rtp.current().map(|s| s.ssrc()) else { continue };
        let (Some(fec), Some(rb)) = (c.fec.as_mut(), c.reorder.as_mut()) else { return };
        fec.on_fec(&buf[..n], ssrc, now, &mut |seq, pkt| insert_rebuilt(rb, ssrc, seq, pkt, now));
    }
}

/// Put a packet FEC rebuilt into a free entry of the reorder buffer.
fn insert_rebuilt(rb: &mut ReorderBuffer, ssrc: u32, seq: u16, pkt: &[u8], now: u64) {
    let Some(id) = rb.free_entries(1).next() else { return };
    let Some(dst) = rb.entry_mut(id).get_mut(..pkt.len()) else { return };
    dst.copy_from_slice(pkt);
    rb.insert(id, pkt.len(), ssrc, seq, now);
}
