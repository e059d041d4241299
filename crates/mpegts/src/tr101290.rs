// SPDX-License-Identifier: MIT
//! ETSI TR 101 290 (V1.4.1) priority-1 indicators of a transport stream,
//! the first checks of any IPTV monitoring probe, plus two of priority 2
//! that come for free (transport_error_indicator, CRC errors).
//!
//! | indicator | counted, once per ... |
//! |---|---|
//! | 1.1 TS_sync_loss | loss of sync: 2 consecutive bad sync bytes after sync was held (acquired after 5 good ones) |
//! | 1.2 Sync_byte_error | packet whose first byte is not 0x47 |
//! | 1.3 PAT_error_2 | 0.5 s without a PAT section on PID 0; a section with another table_id on PID 0; a PID 0 packet with scrambling_control not 00 |
//! | 1.4 Continuity_count_error | packet out of order, lost packets before it (one per jump), or a packet seen a third time ([`crate::cc`]) |
//! | 1.5 PMT_error_2 | 0.5 s without a PMT section on a program_map_PID of the PAT; a packet of one with scrambling_control not 00 |
//! | 1.6 PID_error | `pid_timeout` without a packet of an elementary PID a PMT names |
//! | 2.1 Transport_error | packet with transport_error_indicator set |
//! | 2.2 CRC_error | PAT or PMT section whose CRC_32 does not match |
//!
//! Time is the caller's (packet arrival, nanoseconds on a monotonic
//! clock), so the indicators are exact functions of the input. A missing
//! table or PID is counted once per interval of absence, when the next
//! packet of the stream shows the interval has passed: 1.75 s without a
//! PAT while the stream flows is 3 PAT errors. Timers start with the
//! stream's first packet (PAT), the PAT naming a PMT PID (PMT), and the
//! PMT naming an elementary PID (PID).
//!
//! Packets are judged in the datagram framing they arrive in: a packet
//! with a bad sync byte is counted and skipped, the next one is judged at
//! the next 188-byte boundary (UDP and RTP carry whole packets).

use crate::cc::{CcCounters, CcState, CcVerdict};
use crate::packet::{packets, TsPacket, PACKET_LEN, PID_NULL, PID_PAT, SYNC_BYTE};
use crate::psi::{long_section, pat_programs, Pmt, SectionAssembler, SectionError, SectionEvent, TABLE_PAT, TABLE_PMT};

/// PAT and PMT must repeat at least this often (1.3, 1.5).
pub const PSI_INTERVAL_NS: u64 = 500_000_000;
/// Consecutive good sync bytes that acquire sync.
pub const SYNC_LOCK: u8 = 5;
/// Consecutive bad sync bytes that lose it.
pub const SYNC_UNLOCK: u8 = 2;
/// Programs followed per stream (an MPTS rarely carries more than 20).
pub const MAX_PROGRAMS: usize = 64;
/// Elementary PIDs followed per stream, all programs together.
pub const MAX_ES_PIDS: usize = 512;
/// The default of [`AnalyzerConfig::pid_timeout_ns`]: 5 s.
pub const DEFAULT_PID_TIMEOUT_NS: u64 = 5_000_000_000;

const PID_COUNT: usize = 8192;
const NO_SLOT: u16 = u16::MAX;

/// The user-specified part of TR 101 290.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalyzerConfig {
    /// 1.6: how long a PID a PMT names may be absent.
    pub pid_timeout_ns: u64,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig { pid_timeout_ns: DEFAULT_PID_TIMEOUT_NS }
    }
}

/// The indicators, as event counts since the analyser started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Transport packets analysed (188-byte units, good sync or not).
    pub ts_packets: u64,
    /// 1.1 TS_sync_loss.
    pub sync_loss: u64,
    /// 1.2 Sync_byte_error.
    pub sync_byte_error: u64,
    /// 1.3 PAT_error_2.
    pub pat_error: u64,
    /// 1.4 Continuity_count_error.
    pub cc_error: u64,
    /// 1.5 PMT_error_2.
    pub pmt_error: u64,
    /// 1.6 PID_error.
    pub pid_error: u64,
    /// 2.1 Transport_error.
    pub transport_error: u64,
    /// 2.2 CRC_error (PAT and PMT sections).
    pub crc_error: u64,
}

#[derive(Debug, Clone, Copy)]
struct PidState {
    cc: CcState,
    /// Index into `programs` when this is a program_map_PID.
    pmt: u16,
    /// Index into `es` when a PMT names this PID.
    es: u16,
}

#[derive(Debug, Clone, Copy)]
struct Program {
    number: u16,
    pid: u16,
    deadline: u64,
    /// CRC of the PMT section last applied (0: none yet).
    last_crc: u32,
}

#[derive(Debug, Clone, Copy)]
struct EsPid {
    pid: u16,
    program: u16,
    deadline: u64,
}

/// Count the deadlines `deadline, deadline + period, ...` that `now` has
/// passed, and move `deadline` past them.
fn expire(deadline: &mut u64, now: u64, period: u64) -> u64 {
    if now <= *deadline || period == 0 {
        return 0;
    }
    let n = (now - *deadline - 1) / period + 1;
    *deadline = deadline.saturating_add(n.saturating_mul(period));
    n
}

/// TR 101 290 priority-1 analysis of one stream.
pub struct Analyzer {
    cfg: AnalyzerConfig,
    counters: Counters,
    cc: CcCounters,
    pids: Box<[PidState]>,
    started: bool,
    sync_good: u8,
    sync_bad: u8,
    in_sync: bool,
    pat_deadline: u64,
    /// CRC of the PAT section last applied (0: none yet).
    pat_crc: u32,
    pat_asm: Box<SectionAssembler>,
    programs: Box<[Option<Program>]>,
    pmt_asm: Box<[SectionAssembler]>,
    es: Vec<EsPid>,
    /// No deadline expires before this.
    next_check: u64,
    /// Hashes of the last datagrams, to recognise copies.
    recent: [u64; RECENT_DATAGRAMS],
    recent_next: usize,
    duplicate_datagrams: u64,
}

/// How many recent datagrams [`Analyzer::datagram`] remembers.
pub const RECENT_DATAGRAMS: usize = 8;

/// A 64-bit hash of a datagram, over 8-byte words (a few ns per TS
/// packet); never 0, the value of an empty memory slot.
fn datagram_hash(buf: &[u8]) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64 ^ buf.len() as u64;
    let mut words = buf.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
    h.max(1)
}

impl Analyzer {
    /// A new analyser; its tables (about 140 KiB) are allocated here and
    /// never grow.
    pub fn new(cfg: AnalyzerConfig) -> Self {
        let cfg = AnalyzerConfig { pid_timeout_ns: cfg.pid_timeout_ns.max(1) };
        Analyzer {
            cfg,
            counters: Counters::default(),
            cc: CcCounters::default(),
            pids: vec![PidState { cc: CcState::new(), pmt: NO_SLOT, es: NO_SLOT }; PID_COUNT].into_boxed_slice(),
            started: false,
            sync_good: 0,
            sync_bad: 0,
            in_sync: false,
            pat_deadline: 0,
            pat_crc: 0,
            pat_asm: Box::new(SectionAssembler::new()),
            programs: vec![None; MAX_PROGRAMS].into_boxed_slice(),
            pmt_asm: vec![SectionAssembler::new(); MAX_PROGRAMS].into_boxed_slice(),
            es: Vec::with_capacity(MAX_ES_PIDS),
            next_check: 0,
            recent: [0; RECENT_DATAGRAMS],
            recent_next: 0,
            duplicate_datagrams: 0,
        }
    }

    /// The indicators so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Loss, duplicates and reordering from the continuity counters, in
    /// TS packets.
    pub fn cc_counters(&self) -> CcCounters {
        self.cc
    }

    /// Whether the stream holds sync (1.1).
    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// Programs the last PAT announced (up to [`MAX_PROGRAMS`]).
    pub fn programs(&self) -> usize {
        self.programs.iter().flatten().count()
    }

    /// Elementary PIDs the PMTs name (up to [`MAX_ES_PIDS`]).
    pub fn es_pids(&self) -> usize {
        self.es.len()
    }

    /// Analyse every 188-byte packet of a datagram (a trailing partial
    /// packet is ignored), all arriving at `now_ns`.
    ///
    /// A datagram identical to one of the last [`RECENT_DATAGRAMS`] (that
    /// carry payload of a PID other than the null PID) is a copy the
    /// network made (a duplicating path, a doubled multicast
    /// route): its packets count as duplicates and are not analysed again,
    /// as the continuity counters of a multi-packet copy would otherwise
    /// read as a jump back. Returns false for such a copy.
    pub fn datagram(&mut self, buf: &[u8], now_ns: u64) -> bool {
        // Only datagrams with payload of some PID other than the null PID
        // can be told from a new one: stuffing repeats itself.
        let content = packets(buf).any(|p| {
            let p = TsPacket::new(p);
            p.pid() != PID_NULL && p.has_payload()
        });
        let h = if content { datagram_hash(buf) } else { 0 };
        if content && self.recent.contains(&h) {
            self.cc.duplicates += packets(buf).count() as u64;
            self.duplicate_datagrams += 1;
            return false;
        }
        if content {
            self.recent[self.recent_next % RECENT_DATAGRAMS] = h;
            self.recent_next = self.recent_next.wrapping_add(1);
        }
        for p in packets(buf) {
            self.packet(p, now_ns);
        }
        true
    }

    /// Datagrams [`datagram`](Self::datagram) found to be copies.
    pub fn duplicate_datagrams(&self) -> u64 {
        self.duplicate_datagrams
    }

    /// Analyse one packet arriving at `now_ns`.
    pub fn packet(&mut self, bytes: &[u8; PACKET_LEN], now_ns: u64) {
        self.counters.ts_packets += 1;
        if !self.started {
            self.started = true;
            self.pat_deadline = now_ns.saturating_add(PSI_INTERVAL_NS);
            self.next_check = self.pat_deadline.saturating_add(1);
        }
        if bytes[0] != SYNC_BYTE {
            self.counters.sync_byte_error += 1;
            self.sync_good = 0;
            self.sync_bad = self.sync_bad.saturating_add(1);
            if self.in_sync && self.sync_bad >= SYNC_UNLOCK {
                self.in_sync = false;
                self.counters.sync_loss += 1;
            }
            self.check_timers(now_ns);
            return;
        }
        self.sync_bad = 0;
        self.sync_good = self.sync_good.saturating_add(1);
        if !self.in_sync && self.sync_good >= SYNC_LOCK {
            self.in_sync = true;
        }
        let p = TsPacket::new(bytes);
        if p.transport_error() {
            self.counters.transport_error += 1;
        }
        // adaptation_field_control 00 is reserved: the packet is discarded.
        if p.adaptation_field_control() != 0 {
            self.judge(&p, now_ns);
        }
        self.check_timers(now_ns);
    }

    fn judge(&mut self, p: &TsPacket<'_>, now: u64) {
        let pid = p.pid();
        let Some(state) = self.pids.get_mut(usize::from(pid)) else { return };
        let verdict = if pid == PID_NULL {
            CcVerdict::NoPayload
        } else {
            state.cc.update(p.continuity_counter(), p.has_payload(), p.discontinuity())
        };
        self.cc.add(verdict);
        if verdict.is_error() {
            self.counters.cc_error += 1;
        }
        let (pmt, es) = (state.pmt, state.es);
        if let Some(e) = self.es.get_mut(usize::from(es)) {
            e.deadline = now.saturating_add(self.cfg.pid_timeout_ns);
        }
        let psi = pid == PID_PAT || pmt != NO_SLOT;
        if !psi {
            return;
        }
        if p.scrambling() != 0 {
            if pid == PID_PAT {
                self.counters.pat_error += 1;
            } else {
                self.counters.pmt_error += 1;
            }
            return;
        }
        // A repeated packet would feed the same bytes twice; after a jump
        // or a late packet the section in progress is broken.
        match verdict {
            CcVerdict::Duplicate | CcVerdict::ExcessDuplicate => return,
            CcVerdict::Late | CcVerdict::Lost(_) | CcVerdict::Discontinuity => {
                if pid == PID_PAT {
                    self.pat_asm.reset();
                } else if let Some(a) = self.pmt_asm.get_mut(usize::from(pmt)) {
                    a.reset();
                }
            }
            CcVerdict::First | CcVerdict::InOrder | CcVerdict::NoPayload => {}
        }
        let Some(payload) = p.payload() else { return };
        let pusi = p.pusi();
        if pid == PID_PAT {
            // The assembler is taken out while it runs, so the section
            // handler may change the tables.
            let mut asm = core::mem::take(&mut *self.pat_asm);
            asm.push(payload, pusi, &mut |e| match e {
                SectionEvent::Section(s) => self.pat_section(s, now),
                SectionEvent::TooLong => self.counters.pat_error += 1,
            });
            *self.pat_asm = asm;
        } else {
            let slot = usize::from(pmt);
            let Some(asm) = self.pmt_asm.get_mut(slot) else { return };
            let mut asm = core::mem::take(asm);
            asm.push(payload, pusi, &mut |e| match e {
                SectionEvent::Section(s) => self.pmt_section(slot, s, now),
                SectionEvent::TooLong => self.counters.pmt_error += 1,
            });
            if let Some(a) = self.pmt_asm.get_mut(slot) {
                *a = asm;
            }
        }
    }

    fn pat_section(&mut self, s: &[u8], now: u64) {
        if s.first() != Some(&TABLE_PAT) {
            self.counters.pat_error += 1;
            return;
        }
        let (h, body) = match long_section(s) {
            Ok(x) => x,
            Err(SectionError::Crc) => {
                self.counters.crc_error += 1;
                return;
            }
            Err(SectionError::Malformed) => {
                self.counters.pat_error += 1;
                return;
            }
        };
        if !h.current {
            return;
        }
        self.counters.pat_error += expire(&mut self.pat_deadline, now, PSI_INTERVAL_NS);
        self.pat_deadline = now.saturating_add(PSI_INTERVAL_NS);
        let crc = u32::from_be_bytes([s[s.len() - 4], s[s.len() - 3], s[s.len() - 2], s[s.len() - 1]]);
        if crc == self.pat_crc {
            return;
        }
        self.pat_crc = crc;
        let replace = h.section_number == 0 && h.last_section_number == 0;
        if replace {
            // Programs the new PAT no longer names.
            for slot in 0..self.programs.len() {
                let Some(prog) = self.programs[slot] else { continue };
                if !pat_programs(body).any(|(n, pid)| n != 0 && n == prog.number && pid == prog.pid) {
                    self.drop_program(slot);
                }
            }
        }
        for (number, pid) in pat_programs(body) {
            if number == 0 || pid == PID_PAT || pid == PID_NULL {
                continue;
            }
            if self.programs.iter().flatten().any(|p| p.number == number && p.pid == pid) {
                continue;
            }
            let Some(slot) = self.programs.iter().position(Option::is_none) else { break };
            let Some(state) = self.pids.get_mut(usize::from(pid)) else { continue };
            if state.pmt != NO_SLOT {
                continue; // two programs sharing one PMT PID: follow it once
            }
            state.pmt = slot as u16;
            self.programs[slot] =
                Some(Program { number, pid, deadline: now.saturating_add(PSI_INTERVAL_NS), last_crc: 0 });
            if let Some(a) = self.pmt_asm.get_mut(slot) {
                a.reset();
            }
        }
        self.reschedule();
    }

    fn drop_program(&mut self, slot: usize) {
        let Some(prog) = self.programs.get_mut(slot).and_then(Option::take) else { return };
        if let Some(state) = self.pids.get_mut(usize::from(prog.pid)) {
            state.pmt = NO_SLOT;
        }
        if let Some(a) = self.pmt_asm.get_mut(slot) {
            a.reset();
        }
        self.set_es(slot as u16, &mut core::iter::empty(), 0);
    }

    fn pmt_section(&mut self, slot: usize, s: &[u8], now: u64) {
        if s.first() != Some(&TABLE_PMT) {
            return; // other tables may share a PMT PID
        }
        let Some(Some(prog)) = self.programs.get(slot).copied() else { return };
        let (h, body) = match long_section(s) {
            Ok(x) => x,
            Err(SectionError::Crc) => {
                self.counters.crc_error += 1;
                return;
            }
            Err(SectionError::Malformed) => {
                self.counters.pmt_error += 1;
                return;
            }
        };
        if !h.current || h.id != prog.number {
            return;
        }
        let mut deadline = prog.deadline;
        self.counters.pmt_error += expire(&mut deadline, now, PSI_INTERVAL_NS);
        let crc = u32::from_be_bytes([s[s.len() - 4], s[s.len() - 3], s[s.len() - 2], s[s.len() - 1]]);
        if let Some(Some(p)) = self.programs.get_mut(slot) {
            p.deadline = now.saturating_add(PSI_INTERVAL_NS);
            if p.last_crc == crc {
                return;
            }
            p.last_crc = crc;
        }
        if let Some(pmt) = Pmt::parse(body) {
            let deadline = now.saturating_add(self.cfg.pid_timeout_ns);
            self.set_es(slot as u16, &mut pmt.streams().map(|(_, pid)| pid), deadline);
        }
        self.reschedule();
    }

    /// Make `pids` the elementary PIDs of program `slot`; PIDs new to the
    /// program start their timer at `deadline`, PIDs it keeps keep theirs
    /// (a new PMT version must not forgive a PID that has been missing).
    fn set_es(&mut self, slot: u16, pids: &mut dyn Iterator<Item = u16>, deadline: u64) {
        let mut previous = [(0u16, 0u64); 64];
        let mut n_prev = 0;
        for e in self.es.iter().filter(|e| e.program == slot) {
            if let Some(s) = self.pids.get_mut(usize::from(e.pid)) {
                s.es = NO_SLOT;
            }
            if let Some(p) = previous.get_mut(n_prev) {
                *p = (e.pid, e.deadline);
                n_prev += 1;
            }
        }
        self.es.retain(|e| e.program != slot);
        for pid in pids {
            if pid == PID_NULL || self.es.len() >= MAX_ES_PIDS || self.es.iter().any(|e| e.pid == pid) {
                continue;
            }
            let d = previous[..n_prev].iter().find(|(p, _)| *p == pid).map_or(deadline, |&(_, d)| d);
            self.es.push(EsPid { pid, program: slot, deadline: d });
        }
        for (i, e) in self.es.iter().enumerate() {
            if let Some(s) = self.pids.get_mut(usize::from(e.pid)) {
                s.es = i as u16;
            }
        }
    }

    /// The earliest instant a deadline can have passed.
    fn reschedule(&mut self) {
        let mut next = self.pat_deadline;
        for p in self.programs.iter().flatten() {
            next = next.min(p.deadline);
        }
        for e in &self.es {
            next = next.min(e.deadline);
        }
        self.next_check = next.saturating_add(1);
    }

    fn check_timers(&mut self, now: u64) {
        if now < self.next_check {
            return;
        }
        self.counters.pat_error += expire(&mut self.pat_deadline, now, PSI_INTERVAL_NS);
        for p in self.programs.iter_mut().flatten() {
            self.counters.pmt_error += expire(&mut p.deadline, now, PSI_INTERVAL_NS);
        }
        for e in self.es.iter_mut() {
            self.counters.pid_error += expire(&mut e.deadline, now, self.cfg.pid_timeout_ns);
        }
        self.reschedule();
    }
}

#[cfg(test)]
mod tests;
