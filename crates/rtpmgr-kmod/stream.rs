// SPDX-License-Identifier: GPL-2.0-only

//! The streams of a session: [`Stream`] on an [`Endpoint`] (a registry
//! port, or a UDP socket with its [`NetStream`] state: counters, RTP
//! statistics or TS continuity, forwarding target, send backlog).

use crate::abi::{self, NetCounters, StreamCounters};
use crate::net::{NetSocket, SendResult};
use crate::port::{self, PortRef};
use crate::ring::SharedBytes;
use crate::seqstats::SourceStats;
use crate::ts_cc::{CcCounters, CcState};
use crate::ts_head::{self, RecentHeads, TsHead, HEAD_LEN, PACKET_LEN};
use kernel::{alloc::VVec, prelude::*};

/// Bytes of a sending `udp` stream's backlog (see [`Backlog`]).
pub(crate) const BACKLOG_BYTES: usize = 64 << 10;
/// Bytes of the forwarding buffer: any UDP datagram fits.
pub(crate) const BOUNCE_BYTES: usize = 65536;

/// PIDs of a transport stream (13 bits).
const TS_PIDS: usize = 8192;
/// Bytes of the heads of the most transport packets a UDP datagram holds.
const TS_HEADS_BYTES: usize = (65_535 / PACKET_LEN) * HEAD_LEN;

/// A `NET_F_TS` stream's view of its MPEG-TS: the continuity of every PID,
/// judged from private copies of the packets' heads (the socket helper
/// copies them from the socket buffer, so nothing is read back from the
/// shared ring), by the `mpegts` crate's rules (`ts_cc`, `ts_head`).
pub(crate) struct TsState {
    /// Continuity of each PID: 4 bytes each, 32 KiB, charged to the
    /// stream's starter.
    pids: VVec<CcState>,
    /// Heads of the datagram being judged, filled by `NetSocket::recv`.
    pub(crate) heads: VVec<u8>,
    recent: RecentHeads,
    cc: CcCounters,
    /// Transport packets in accepted datagrams, and those judged (with
    /// payload, outside the null PID; copies excluded).
    packets: u64,
    judged: u64,
}

impl TsState {
    /// Allocated in the caller's context (`START_NET_STREAM`) and charged
    /// to it.
    pub(crate) fn new() -> Result<Self> {
        Ok(TsState {
            pids: VVec::from_elem(CcState::new(), TS_PIDS, GFP_KERNEL_ACCOUNT)
                .map_err(|_| ENOMEM)?,
            heads: VVec::from_elem(0u8, TS_HEADS_BYTES, GFP_KERNEL_ACCOUNT).map_err(|_| ENOMEM)?,
            recent: RecentHeads::new(),
            cc: CcCounters::default(),
            packets: 0,
            judged: 0,
        })
    }

    /// Judge a received datagram of `len` bytes from the heads `recv`
    /// copied for it: false if it is not raw MPEG-TS (the caller counts it
    /// malformed and drops it).
    pub(crate) fn datagram(&mut self, len: usize) -> bool {
        // Whole packets whose heads were all copied (a datagram the helper
        // copied no heads for fails here, on its length), each with the
        // sync byte.
        let Ok(n) = ts_head::check_heads(len, &self.heads) else {
            return false;
        };
        self.packets += n as u64;
        if self.recent.is_copy(&self.heads, n) {
            self.cc.duplicates += n as u64;
            return true;
        }
        for h in self.heads.chunks_exact(HEAD_LEN).take(n) {
            let Some(h) = TsHead::from_slice(h) else {
                break;
            };
            if !h.judged() {
                continue;
            }
            if let Some(st) = self.pids.get_mut(usize::from(h.pid())) {
                let v = st.update(h.continuity_counter(), h.has_payload(), h.discontinuity());
                if h.has_payload() {
                    self.judged += 1;
                }
                self.cc.add(v);
            }
        }
        true
    }

    /// Fill the TS fields of `c` (see `abi::NET_F_TS`).
    fn fill(&self, c: &mut NetCounters) {
        c.rtp_flags = abi::NET_TS_CONTINUITY;
        c.rtp_received = self.judged;
        c.rtp_expected = self.judged + self.cc.lost;
        c.rtp_lost = i64::try_from(self.cc.lost).unwrap_or(i64::MAX);
        c.rtp_duplicates = self.cc.duplicates;
        c.rtp_reordered = self.cc.reordered;
        c.ts_packets = self.packets;
        c.ts_cc_errors = self.cc.errors;
    }
}

/// What a stream's packets go through.
pub(crate) enum Endpoint {
    /// A registry port: `loopback`, `null`, a device-tree-bound peripheral.
    Port(PortRef),
    /// A UDP socket of user space's (`START_NET_STREAM`, the `udp` port).
    /// Boxed, so the 64 stream entries of a session stay small.
    Udp(KBox<NetStream>),
}

/// A running stream of a session.
pub(crate) struct Stream {
    pub(crate) endpoint: Endpoint,
    pub(crate) direction: u32,
    pub(crate) counters: StreamCounters,
}

impl Stream {
    /// A stream on `endpoint`; a registry port counts it as one of its
    /// users until it is dropped.
    pub(crate) fn new(endpoint: Endpoint, direction: u32, counters: StreamCounters) -> Stream {
        if let Endpoint::Port(p) = &endpoint {
            port::add_user(&**p, 1);
        }
        Stream {
            endpoint,
            direction,
            counters,
        }
    }

    /// The network side of a `udp` stream.
    pub(crate) fn net(&self) -> Option<&NetStream> {
        match &self.endpoint {
            Endpoint::Udp(n) => Some(n),
            Endpoint::Port(_) => None,
        }
    }

    /// The network side of a `udp` stream, to change.
    pub(crate) fn net_mut(&mut self) -> Option<&mut NetStream> {
        match &mut self.endpoint {
            Endpoint::Udp(n) => Some(n),
            Endpoint::Port(_) => None,
        }
    }

    /// Whether what the stream's port returns goes to its from-device side
    /// (a port that returns packets, and the stream receives).
    pub(crate) fn wants_return(&self) -> bool {
        match &self.endpoint {
            Endpoint::Port(p) => self.direction & abi::DIR_FROM_DEVICE != 0 && p.returns_packets(),
            Endpoint::Udp(_) => false,
        }
    }

    /// The port's name, `udp` for a socket.
    pub(crate) fn port_name(&self) -> &str {
        match &self.endpoint {
            Endpoint::Port(p) => p.name(),
            Endpoint::Udp(_) => "udp",
        }
    }
}

impl Drop for Stream {
    /// Closing a `udp` stream's socket sleeps and takes socket locks: a
    /// stream is dropped only in process context with no session lock held
    /// (see `Session::take_streams`).
    fn drop(&mut self) {
        if let Endpoint::Port(p) = &self.endpoint {
            port::add_user(&**p, -1);
        }
    }
}

/// Datagrams of a sending `udp` stream that the socket refused for want of
/// send-buffer space, oldest first, each as a `u32` length and its bytes.
///
/// A full socket must not stop the to-device ring, which carries every
/// stream of the session: the worker moves the slot's datagram here and
/// releases the slot, so the other streams go on (and later slots of this
/// stream queue behind, in order). The backlog is sent when the socket's
/// write-space callback says there is room. What does not fit in
/// [`BACKLOG_BYTES`] as well is dropped and counted (`tx_dropped`): the
/// destination is slower than the stream. Allocated when the stream
/// starts, in the caller's context and charged to it.
pub(crate) struct Backlog {
    buf: VVec<u8>,
    /// Next record to send, and the end of the last one.
    head: usize,
    tail: usize,
}

impl Backlog {
    pub(crate) fn new(bytes: usize) -> Result<Backlog> {
        let buf = VVec::from_elem(0u8, bytes, GFP_KERNEL_ACCOUNT).map_err(|_| ENOMEM)?;
        Ok(Backlog {
            buf,
            head: 0,
            tail: 0,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Append a copy of `pkt`; `false` if it does not fit.
    fn push(&mut self, pkt: &SharedBytes<'_>) -> bool {
        let need = 4 + pkt.len();
        if self.tail + need > self.buf.len() && self.head > 0 {
            // Move what is queued to the front (at most the buffer's size,
            // and only when the end is reached).
            self.buf.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        let Some(rec) = self.buf.get_mut(self.tail..self.tail + need) else {
            return false;
        };
        let (len, data) = rec.split_at_mut(4);
        len.copy_from_slice(&(pkt.len() as u32).to_ne_bytes());
        pkt.copy_to_slice(data);
        self.tail += need;
        true
    }

    /// The oldest datagram.
    fn front(&mut self) -> Option<&mut [u8]> {
        if self.is_empty() {
            return None;
        }
        let len = self.buf.get(self.head..self.head + 4)?;
        let len = u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize;
        self.buf.get_mut(self.head + 4..self.head + 4 + len)
    }

    /// Drop the oldest datagram.
    fn pop(&mut self) {
        if let Some(n) = self.front().map(|d| d.len()) {
            self.head += 4 + n;
            if self.head >= self.tail {
                self.head = 0;
                self.tail = 0;
            }
        }
    }
}

/// The network side of a `udp` stream.
pub(crate) struct NetStream {
    /// Dropped only in process context, never with `inner` held (it sleeps
    /// and takes socket locks): see `Session::take_streams`.
    pub(crate) sock: NetSocket,
    pub(crate) flags: u32,
    pub(crate) counters: NetCounters,
    /// `forward_to`: received datagrams go to this stream of the session.
    pub(crate) forward_to: Option<usize>,
    /// A whole datagram, for forwarding (empty without `forward_to`).
    pub(crate) bounce: VVec<u8>,
    /// Sending streams: what the socket could not take yet.
    pub(crate) backlog: Option<Backlog>,
    /// `NET_F_TS`: continuity of the transport stream.
    pub(crate) ts: Option<TsState>,
    /// Whether the socket has the fast path's hook (udp -> udp forwarding
    /// without the tap or `NET_F_TS`), and whether it is linked to
    /// `forward_to`'s socket now.
    pub(crate) fast: bool,
    pub(crate) fast_linked: bool,
    /// The counters the statistics record holds (`None`: not written
    /// yet). A record is written only when they change (see
    /// `Inner::publish_stats`).
    pub(crate) published: Option<NetCounters>,
}

/// The RTP judge of a `udp` stream: the `NET_F_RTP` header check and the
/// statistics of the current source (the `rtp` crate's `SourceStats`).
/// Owned by the stream's socket and only reached through the socket helper,
/// under its lock, from the worker and from the fast path in softirq alike,
/// so every datagram is judged once by one state. Never allocates.
pub(crate) struct RtpJudge {
    rtp_check: bool,
    clock_rate: u32,
    rtp: Option<SourceStats>,
    ssrc_changes: u64,
}

impl RtpJudge {
    pub(crate) fn new(flags: u32, clock_rate: u32) -> RtpJudge {
        RtpJudge {
            rtp_check: flags & abi::NET_F_RTP != 0,
            clock_rate,
            rtp: None,
            ssrc_changes: 0,
        }
    }

    /// Whether a datagram of `len` bytes whose first bytes are `head` (a
    /// private copy, at least `min(len, RTP_CHECK_BYTES)` of them) and
    /// last byte `last` passes (`NET_F_RTP`: an RTP header); accounts it
    /// if so. Without `NET_F_RTP` everything passes.
    pub(crate) fn accept(&mut self, len: usize, head: &[u8], last: u8, now: u64) -> bool {
        if !self.rtp_check {
            return true;
        }
        let seen = head.get(..len.min(abi::RTP_CHECK_BYTES)).unwrap_or(head);
        if abi::rtp_header_check(seen, len, last).is_err() {
            return false;
        }
        self.rtp_update(head, now);
        true
    }

    /// Account one datagram that passed the RTP header check; `head` holds
    /// at least its fixed header.
    fn rtp_update(&mut self, head: &[u8], now: u64) {
        let (Some(s), Some(t), Some(c)) = (head.get(2..4), head.get(4..8), head.get(8..12)) else {
            return;
        };
        let seq = u16::from_be_bytes([s[0], s[1]]);
        let ts = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
        let ssrc = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        match self.rtp.as_mut() {
            Some(st) if st.ssrc() == ssrc => {
                st.update(seq, ts, now);
            }
            other => {
                if other.is_some() {
                    self.ssrc_changes += 1;
                }
                let mut st = SourceStats::new(ssrc, seq, self.clock_rate);
                st.update(seq, ts, now);
                self.rtp = Some(st);
            }
        }
    }

    /// Fill the RTP fields of `c`.
    pub(crate) fn fill(&self, c: &mut NetCounters) {
        c.ssrc_changes = self.ssrc_changes;
        if let Some(st) = self.rtp.as_ref() {
            c.ssrc = st.ssrc();
            c.rtp_flags = abi::NET_RTP_SOURCE
                | if st.in_probation() {
                    abi::NET_RTP_PROBATION
                } else {
                    0
                };
            c.rtp_received = st.received();
            c.rtp_expected = st.expected();
            c.rtp_lost = st.lost();
            c.rtp_duplicates = st.duplicates();
            c.rtp_reordered = st.reordered();
            c.rtp_resyncs = st.resyncs();
            c.ext_highest_seq = st.extended_highest_seq();
            c.jitter_units = st.jitter_units();
        }
    }
}

/// Whether a send left its datagram waiting, and if so whether the socket's
/// write-space callback will wake the worker (`armed`) or room appeared
/// meanwhile and the worker must simply try again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxBlock {
    Armed,
    Retry,
}

/// Merge the blocks of several streams: one that must retry wins.
pub(crate) fn tx_block(a: Option<TxBlock>, b: Option<TxBlock>) -> Option<TxBlock> {
    match (a, b) {
        (Some(TxBlock::Retry), _) | (_, Some(TxBlock::Retry)) => Some(TxBlock::Retry),
        (Some(TxBlock::Armed), _) | (_, Some(TxBlock::Armed)) => Some(TxBlock::Armed),
        _ => None,
    }
}

impl NetStream {
    /// Send `pkt`, once more if the socket found room while arming its
    /// wake-up; counts what it did.
    pub(crate) fn try_send(&mut self, pkt: &SharedBytes<'_>) -> Option<TxBlock> {
        let mut r = self.sock.send(pkt);
        if matches!(r, SendResult::Retry) {
            r = self.sock.send(pkt);
        }
        match r {
            SendResult::Sent => {
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += pkt.len() as u64;
                None
            }
            SendResult::Failed => {
                self.counters.tx_errors += 1;
                None
            }
            SendResult::WouldBlock => {
                self.counters.tx_blocked += 1;
                Some(TxBlock::Armed)
            }
            SendResult::Retry => {
                self.counters.tx_blocked += 1;
                Some(TxBlock::Retry)
            }
        }
    }

    /// Send what the backlog holds, oldest first, until the socket is full
    /// again. Returns how many went and whether some still wait.
    pub(crate) fn drain_backlog(&mut self) -> (u32, Option<TxBlock>) {
        let mut sent = 0;
        loop {
            let Some(backlog) = self.backlog.as_mut() else {
                return (sent, None);
            };
            let Some(front) = backlog.front() else {
                return (sent, None);
            };
            let pkt = SharedBytes::from_slice(front);
            // `try_send` needs `self` whole: send through the socket here.
            let mut r = self.sock.send(&pkt);
            if matches!(r, SendResult::Retry) {
                r = self.sock.send(&pkt);
            }
            let len = pkt.len() as u64;
            match r {
                SendResult::Sent => {
                    self.counters.tx_packets += 1;
                    self.counters.tx_bytes += len;
                }
                SendResult::Failed => self.counters.tx_errors += 1,
                SendResult::WouldBlock => {
                    self.counters.tx_blocked += 1;
                    return (sent, Some(TxBlock::Armed));
                }
                SendResult::Retry => {
                    self.counters.tx_blocked += 1;
                    return (sent, Some(TxBlock::Retry));
                }
            }
            backlog.pop();
            sent += 1;
        }
    }

    /// A to-device datagram of this (sending) stream: sent, or queued in
    /// the backlog behind earlier ones, or dropped when that is full.
    pub(crate) fn transmit(&mut self, pkt: &SharedBytes<'_>) -> Option<TxBlock> {
        let queued = self.backlog.as_ref().is_some_and(|b| !b.is_empty());
        let blocked = if queued {
            Some(TxBlock::Armed)
        } else {
            self.try_send(pkt)
        };
        if blocked.is_some() && !self.backlog.as_mut().is_some_and(|b| b.push(pkt)) {
            self.counters.tx_dropped += 1;
        }
        blocked
    }

    /// Whether a received datagram of `len` bytes is what the stream
    /// carries (`NET_F_RTP`: an RTP header; `NET_F_TS`: whole transport
    /// packets), judged on the private copies `head` (its first bytes),
    /// `last` (its last byte) and the TS heads, never on the shared slot;
    /// accounts it in the stream's statistics if so. The RTP judge is the
    /// socket's, which the fast path shares (see `RtpJudge`).
    pub(crate) fn accept(&mut self, len: usize, head: &[u8], last: u8, now: u64) -> bool {
        if self.flags & abi::NET_F_RTP != 0 && !self.sock.judge(len, head, last, now) {
            return false;
        }
        if let Some(ts) = self.ts.as_mut() {
            return ts.datagram(len);
        }
        true
    }

    /// The counters, with the RTP statistics and what the socket helper
    /// counted (the fast path, the wake-ups) filled in.
    pub(crate) fn counters(&self) -> NetCounters {
        let mut c = self.counters;
        self.sock.fill_judged(&mut c);
        let f = self.sock.fast_counters();
        c.fwd_packets += f.fwd_packets;
        c.fwd_bytes += f.fwd_bytes;
        c.fwd_fast_packets = f.fwd_packets;
        c.fwd_copies = f.copies;
        c.malformed += f.malformed;
        c.forward_drops += f.fwd_drops;
        c.tx_packets += f.tx_packets;
        c.tx_bytes += f.tx_bytes;
        c.tx_errors += f.tx_errors;
        c.worker_wakeups = f.wakeups;
        if let Some(ts) = self.ts.as_ref() {
            ts.fill(&mut c);
        }
        c
    }
}
