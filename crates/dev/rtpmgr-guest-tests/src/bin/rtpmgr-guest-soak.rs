// SPDX-License-Identifier: MIT
//! `rtpmgr-guest-soak`: the guest half of `ci/soak`. A seeded generator of
//! many RTP streams with injected loss and reordering, a verifier at their
//! destinations, and a sampler of rtpmgrd's memory and the kernel's slab,
//! run against the real rtpmgrd (kernel backend) in the booted guest.
//!
//! ```text
//! rtpmgr-guest-soak config [--streams N]
//! rtpmgr-guest-soak run --pid PID [--seed N] [--minutes M] [--streams N] [--rate PPS]
//!                       [--loss-pct P] [--reorder-pct P] [--rss-bound-kib K] [--slab-bound-kib K]
//! ```
//!
//! `config` prints the rtpmgrd configuration the run expects: stream `sN`
//! relays 127.0.0.1:(5100+N) to 127.0.0.1:(6100+N), even streams through
//! the module's `loopback` port, odd ones through the device-tree-bound
//! `media0`.
//!
//! `run` sends `--rate` packets/s per stream (RTP/MP2T, 7 x 188 bytes) for
//! `--minutes`, and injects, per packet and from each stream's own seeded
//! generator:
//!
//! * loss: with probability `--loss-pct`, 1 to 3 consecutive sequence
//!   numbers are never sent. Each skipped number is one lost packet in
//!   RFC 3550 A.3's sense (`expected - received`, expected running from the
//!   first to the highest number): `lost` grows by exactly the numbers
//!   skipped, because the first 16 and the last 8 packets of every stream
//!   are never touched (probation sees sequential numbers; the highest
//!   number is sent).
//! * reordering: with probability `--reorder-pct`, one packet is held back
//!   and sent after the next 1 to 3 packets. It arrives below the highest
//!   number seen and was not seen before: one `reordered` packet (the
//!   definition in crates/rtp's stats), and 0 lost once it has arrived. A
//!   swap of two adjacent packets is the displacement 1 case.
//!
//! Events never overlap (the packets a held one is sent behind are sent
//! untouched), so the expected statistics are exactly the injected counts.
//! At the end rtpmgrd's per-stream `lost`, `reordered`, `duplicates`,
//! `packets`, `sent_packets` and its drop counters (from `rtpmgrctl status
//! --json`) must equal what was injected and sent, and the verifier must
//! have received every sent packet once, intact, with as many late arrivals
//! as were injected (the relay keeps each stream's order).
//!
//! Every `interval` (30 s, or an eighth of a shorter run) the generator
//! holds until the relay has drained, and rtpmgrd's VmRSS and
//! /proc/meminfo's Slab, SUnreclaim and VmallocUsed are read at that quiet
//! point (packets queued in sockets are not growth); once more after the
//! run. "Flat": over the samples from the warm-up on (60 s, or a quarter of
//! a shorter run), the median of the last three exceeds the median of the
//! first three by at most the bound: VmRSS and SUnreclaim by theirs, Slab
//! by twice the slab bound (it also holds reclaimable dentries and inodes
//! of the /proc files read).
//!
//! Prints the seed first, progress on stderr, one JSON document on stdout;
//! exits 0 only if every check passed.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, String>;

/// Stream N receives on SEND_BASE + N and sends to DEST_BASE + N.
const SEND_BASE: u16 = 5100;
const DEST_BASE: u16 = 6100;
/// Seven TS packets per RTP/MP2T datagram (`PT_MP2T`, 90 kHz clock).
const TS_PACKET: usize = 188;
const PAYLOAD: usize = 7 * TS_PACKET;
const RTP_HEADER: usize = rtp::FIXED_HEADER_LEN;
const DATAGRAM: usize = RTP_HEADER + PAYLOAD;
/// Packets at the start of every stream that are never touched: RFC 3550
/// A.1's probation needs 2 sequential numbers, the rest is margin.
const HEAD_CLEAN: u64 = 16;
/// Packets at the end that are never touched: the highest number must be
/// sent, or the numbers skipped just before it would not count as lost.
const TAIL_CLEAN: u64 = 8;
/// Longest loss burst and farthest displacement of a held packet; both far
/// below A.1's MAX_DROPOUT (3000) and MAX_MISORDER (100).
const MAX_BURST: u64 = 3;
const MAX_DISPLACEMENT: u64 = 3;
/// rtpmgrd's per-stream counters of datagrams it dropped itself.
const DROP_FIELDS: [&str; 3] = ["ring_drops", "socket_drops", "ring_full_drops"];
/// The longest wait after the last packet for the relay to drain: a
/// guest that fell behind catches up here.
const DRAIN: Duration = Duration::from_secs(60);

const USAGE: &str = "\
usage: rtpmgr-guest-soak config [--streams N]
       rtpmgr-guest-soak run --pid PID [--seed N] [--minutes M] [--streams N] [--rate PPS]
                             [--loss-pct P] [--reorder-pct P] [--rss-bound-kib K] [--slab-bound-kib K]";

use rtpmgr_test_kit::packet::write_header;
use rtpmgr_test_kit::procfs::all_cpus_ticks;
use rtpmgr_test_kit::{Rng, PT_MP2T};

struct Opts {
    seed: u64,
    minutes: f64,
    streams: usize,
    rate: f64,
    loss_pct: f64,
    reorder_pct: f64,
    pid: u32,
    rss_bound_kib: u64,
    slab_bound_kib: u64,
    ctl: String,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        seed: 1,
        minutes: 10.0,
        streams: 20,
        rate: 20.0,
        loss_pct: 0.5,
        reorder_pct: 0.5,
        pid: 0,
        rss_bound_kib: 256,
        slab_bound_kib: 256,
        ctl: "rtpmgrctl".into(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{a} {v:?}: {e}");
        match a.as_str() {
            "--seed" => o.seed = v.parse().map_err(|e| bad(&e))?,
            "--minutes" => o.minutes = v.parse().map_err(|e| bad(&e))?,
            "--streams" => o.streams = v.parse().map_err(|e| bad(&e))?,
            "--rate" => o.rate = v.parse().map_err(|e| bad(&e))?,
            "--loss-pct" => o.loss_pct = v.parse().map_err(|e| bad(&e))?,
            "--reorder-pct" => o.reorder_pct = v.parse().map_err(|e| bad(&e))?,
            "--pid" => o.pid = v.parse().map_err(|e| bad(&e))?,
            "--rss-bound-kib" => o.rss_bound_kib = v.parse().map_err(|e| bad(&e))?,
            "--slab-bound-kib" => o.slab_bound_kib = v.parse().map_err(|e| bad(&e))?,
            "--ctl" => o.ctl = v.clone(),
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    // rtpmgrd's limit: the module's stream ids.
    if !(1..=rtpmgr_abi::MAX_STREAMS as usize).contains(&o.streams) {
        return Err(format!("--streams: 1 to {} (rtpmgrd's limit)", rtpmgr_abi::MAX_STREAMS));
    }
    if !((1.0..=10_000.0).contains(&o.rate) && o.minutes > 0.0 && o.minutes <= 24.0 * 60.0) {
        return Err("--rate 1..=10000 and --minutes above 0 please".into());
    }
    if !(0.0..=10.0).contains(&o.loss_pct) || !(0.0..=10.0).contains(&o.reorder_pct) {
        return Err("--loss-pct and --reorder-pct: 0 to 10".into());
    }
    Ok(o)
}

fn config(streams: usize) -> String {
    let mut s = String::from(
        "# Written by rtpmgr-guest-soak config: the ci/soak guest's rtpmgrd.\n\
         [daemon]\nbackend = \"kernel\"\ndevice = \"/dev/rtpmgr\"\n\
         control_socket = \"/run/rtpmgr/control.sock\"\nlog_level = \"info\"\n\
         status_interval_secs = 60\nsocket_buffer_bytes = 4194304\n\n\
         [buffer]\nslot_count = 1024\nslot_size = 2048\n",
    );
    for n in 0..streams {
        let port = if n % 2 == 0 { "loopback" } else { "media0" };
        s += &format!(
            "\n[[stream]]\nname = \"s{n}\"\ndirection = \"relay\"\nbind = \"127.0.0.1:{}\"\n\
             destination = \"127.0.0.1:{}\"\npayload_type = {PT_MP2T}\nmedia_port = \"{port}\"\n",
            SEND_BASE + n as u16,
            DEST_BASE + n as u16
        );
    }
    s
}

/// What one stream sends, decided packet by packet from its own generator.
struct Plan {
    rng: Rng,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    loss_ppm: u64,
    reorder_ppm: u64,
    /// The next index (sequence number - seq0) not yet decided on.
    next: u64,
    /// Indices decided on and not yet sent (a held packet and the ones
    /// sent before it).
    pending: VecDeque<u64>,
    tail: u64,
    sent: u64,
    lost: u64,
    loss_events: u64,
    reordered: u64,
}

impl Plan {
    fn new(seed: u64, stream: usize, o: &Opts) -> Plan {
        let mut rng = Rng::new(seed ^ (stream as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let ssrc = rng.next() as u32;
        // Random start numbers: some streams cross the 16-bit wrap.
        let seq0 = rng.next() as u16;
        let ts0 = rng.next() as u32;
        Plan {
            rng,
            ssrc,
            seq0,
            ts0,
            loss_ppm: (o.loss_pct * 10_000.0) as u64,
            reorder_ppm: (o.reorder_pct * 10_000.0) as u64,
            next: 0,
            pending: VecDeque::new(),
            tail: 0,
            sent: 0,
            lost: 0,
            loss_events: 0,
            reordered: 0,
        }
    }

    /// The index of the next packet to send; `stopping`: inject nothing
    /// more, send what is pending and TAIL_CLEAN clean packets, then None.
    fn next(&mut self, stopping: bool) -> Option<u64> {
        if let Some(i) = self.pending.pop_front() {
            return Some(i);
        }
        if stopping {
            if self.tail == TAIL_CLEAN {
                return None;
            }
            self.tail += 1;
        } else if self.next >= HEAD_CLEAN {
            let r = self.rng.below(1_000_000);
            if r < self.loss_ppm {
                let burst = 1 + self.rng.below(MAX_BURST);
                self.lost += burst;
                self.loss_events += 1;
                self.next += burst;
            } else if r < self.loss_ppm + self.reorder_ppm {
                let held = self.next;
                let d = 1 + self.rng.below(MAX_DISPLACEMENT);
                self.pending.extend(held + 1..=held + d);
                self.pending.push_back(held);
                self.next = held + d + 1;
                self.reordered += 1;
                return self.pending.pop_front();
            }
        }
        let i = self.next;
        self.next += 1;
        Some(i)
    }
}

/// The datagram of packet `index` of stream `stream`: an RTP header and
/// seven TS packets whose bytes are a function of stream and index, so the
/// verifier can rebuild and compare it whole.
fn build(buf: &mut [u8; DATAGRAM], stream: usize, ssrc: u32, seq0: u16, ts0: u32, ts_step: u32, index: u64) {
    let (seq, ts) = (seq0.wrapping_add(index as u16), ts0.wrapping_add(ts_step.wrapping_mul(index as u32)));
    write_header(buf, PT_MP2T, seq, ts, ssrc);
    let fill = index.wrapping_mul(131).wrapping_add(stream as u64 * 7) as u8;
    for (k, ts) in buf[RTP_HEADER..].chunks_exact_mut(TS_PACKET).enumerate() {
        ts[0] = 0x47;
        ts[1] = 0x01;
        ts[2] = stream as u8;
        ts[3] = 0x10 | ((index as u8).wrapping_mul(7).wrapping_add(k as u8) & 0x0f);
        ts[4..12].copy_from_slice(&index.to_be_bytes());
        for (j, b) in ts[12..].iter_mut().enumerate() {
            *b = fill.wrapping_add(j as u8).wrapping_add(k as u8);
        }
    }
}

/// The generator: every stream at `rate`, interleaved, paced by an absolute
/// schedule (a late tick is sent at once, not skipped).
struct SenderResult {
    plans: Vec<Plan>,
    send_errors: u64,
    max_late_ms: f64,
    seconds: f64,
}

/// The sampler's hold on the generator: while `hold` is set the sender
/// stops before its next packet and sets `held`; its schedule resumes
/// shifted by the pause. `sent` counts the packets sent so far.
#[derive(Default)]
struct Gate {
    hold: AtomicBool,
    held: AtomicBool,
    sent: AtomicU64,
}

fn sender(mut plans: Vec<Plan>, rate: f64, duration: Duration, gate: &Gate) -> Result<SenderResult> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind sender: {e}"))?;
    let streams = plans.len();
    let period = 1.0 / (rate * streams as f64);
    let ts_step = (90_000.0 / rate) as u32;
    let mut buf = [0u8; DATAGRAM];
    let (mut send_errors, mut max_late) = (0u64, 0f64);
    let mut done = vec![false; streams];
    let first = Instant::now();
    let mut start = first;
    // Traffic stops after the planned number of ticks or after `duration`
    // of sending (holds excluded), whichever comes first: a guest that
    // falls behind its schedule still runs for the time asked. Each
    // stream's packets are a function of the seed up to that point.
    let planned = (duration.as_secs_f64() * rate).round() as u64 * streams as u64;
    let mut tick = 0u64;
    let mut stopping = false;
    while done.iter().any(|d| !d) {
        if gate.hold.load(Ordering::SeqCst) {
            let t0 = Instant::now();
            gate.held.store(true, Ordering::SeqCst);
            while gate.hold.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            gate.held.store(false, Ordering::SeqCst);
            start += t0.elapsed();
        }
        let due = start + Duration::from_secs_f64(period * tick as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            max_late = max_late.max((now - due).as_secs_f64());
        }
        let n = (tick % streams as u64) as usize;
        // Once stopping, always: a later hold shifts `start` back.
        stopping = stopping || tick >= planned || start.elapsed() >= duration;
        tick += 1;
        let p = &mut plans[n];
        let Some(index) = p.next(stopping) else {
            done[n] = true;
            continue;
        };
        build(&mut buf, n, p.ssrc, p.seq0, p.ts0, ts_step, index);
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, SEND_BASE + n as u16));
        match sock.send_to(&buf, to) {
            Ok(_) => {
                p.sent += 1;
                gate.sent.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => send_errors += 1,
        }
    }
    Ok(SenderResult { plans, send_errors, max_late_ms: max_late * 1e3, seconds: first.elapsed().as_secs_f64() })
}

/// What arrived at one destination.
#[derive(Default)]
struct Dest {
    seen: Vec<u64>,
    max: Option<u64>,
    delivered: u64,
    duplicates: u64,
    late: u64,
    corrupt: u64,
}

impl Dest {
    /// Count packet `index`; true if it was new.
    fn note(&mut self, index: u64) -> bool {
        let (w, b) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.seen.len() <= w {
            self.seen.resize(w + 1, 0);
        }
        if self.seen[w] & b != 0 {
            self.duplicates += 1;
            return false;
        }
        self.seen[w] |= b;
        self.delivered += 1;
        match self.max {
            Some(m) if index < m => self.late += 1,
            _ => self.max = Some(index),
        }
        true
    }
}

/// The verifier: one thread polling every destination socket; each
/// datagram is rebuilt from its index and must match byte for byte.
fn receiver(
    socks: Vec<UdpSocket>,
    keys: Vec<(u32, u16, u32)>,
    rate: f64,
    stop: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
) -> Vec<Dest> {
    let ts_step = (90_000.0 / rate) as u32;
    let mut dests: Vec<Dest> = socks.iter().map(|_| Dest::default()).collect();
    let mut fds: Vec<libc::pollfd> =
        socks.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let mut buf = [0u8; 2048];
    let mut want = [0u8; DATAGRAM];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `fds` is a live array of fds.len() pollfd structures.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if r <= 0 {
            continue;
        }
        for (n, fd) in fds.iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            while let Ok(len) = socks[n].recv(&mut buf) {
                let d = &mut dests[n];
                if len != DATAGRAM {
                    d.corrupt += 1;
                    continue;
                }
                let mut ix = [0u8; 8];
                ix.copy_from_slice(&buf[RTP_HEADER + 4..RTP_HEADER + 12]);
                let index = u64::from_be_bytes(ix);
                let (ssrc, seq0, ts0) = keys[n];
                build(&mut want, n, ssrc, seq0, ts0, ts_step, index);
                if buf[..len] != want[..] || index > 1 << 32 {
                    d.corrupt += 1;
                    continue;
                }
                if d.note(index) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    dests
}

/// One memory sample.
#[derive(Clone, Debug)]
struct Sample {
    t: f64,
    rss_kib: u64,
    /// The heap and stacks part of it (RssAnon; the rest is the mapped
    /// rings and the binary).
    rss_anon_kib: u64,
    slab_kib: u64,
    sunreclaim_kib: u64,
    vmalloc_kib: u64,
    available_kib: u64,
    /// rtpmgrd's packets received, all streams.
    packets: u64,
    /// Share of the guest's CPU time busy since the previous sample
    /// (headroom: near 100 means the guest cannot keep up).
    cpu_busy_pct: f64,
    /// Taken during the run (false: the one after it).
    loaded: bool,
}

fn kib_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn status(ctl: &str) -> Result<Value> {
    let out = std::process::Command::new(ctl).args(["status", "--json"]).output().map_err(|e| format!("{ctl}: {e}"))?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{ctl} status --json: {e}"))
}

/// Wait until rtpmgrd has received and sent, and the destinations have
/// got, `total` packets; at most DRAIN (then the final counts tell what is
/// missing).
fn drain(o: &Opts, total: u64, delivered: &AtomicU64) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let report = status(&o.ctl)?;
        let sum = |k: &str| -> u64 {
            report["streams"].as_array().map(|a| a.iter().filter_map(|s| s[k].as_u64()).sum()).unwrap_or(0)
        };
        if sum("packets") >= total && sum("sent_packets") >= total && delivered.load(Ordering::SeqCst) >= total {
            return Ok(());
        }
        if t0.elapsed() >= DRAIN {
            eprintln!("soak: not drained after {} s: {} sent, rtpmgrd {} in", DRAIN.as_secs(), total, sum("packets"));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sample(o: &Opts, t: f64, loaded: bool, cpu: &mut (u64, u64)) -> Result<Sample> {
    let now = all_cpus_ticks();
    let (busy, total) = (now.0.saturating_sub(cpu.0), now.1.saturating_sub(cpu.1));
    *cpu = now;
    let st = std::fs::read_to_string(format!("/proc/{}/status", o.pid))
        .map_err(|e| format!("rtpmgrd (pid {}) is gone: {e}", o.pid))?;
    let mem = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let packets = status(&o.ctl)?["streams"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["packets"].as_u64()).sum())
        .unwrap_or(0);
    Ok(Sample {
        t,
        rss_kib: kib_field(&st, "VmRSS"),
        rss_anon_kib: kib_field(&st, "RssAnon"),
        slab_kib: kib_field(&mem, "Slab"),
        sunreclaim_kib: kib_field(&mem, "SUnreclaim"),
        vmalloc_kib: kib_field(&mem, "VmallocUsed"),
        available_kib: kib_field(&mem, "MemAvailable"),
        packets,
        cpu_busy_pct: if total > 0 { busy as f64 * 100.0 / total as f64 } else { 0.0 },
        loaded,
    })
}

struct Checks {
    list: Vec<Value>,
    failed: u64,
}

impl Checks {
    fn check(&mut self, name: String, ok: bool, detail: String) {
        if !ok {
            self.failed += 1;
            eprintln!("soak: FAILED {name}: {detail}");
        }
        self.list.push(json!({"name": name, "ok": ok, "detail": detail}));
    }
}

fn run(o: &Opts) -> Result<bool> {
    if o.pid == 0 {
        return Err("run needs --pid (rtpmgrd's)".into());
    }
    let duration = Duration::from_secs_f64(o.minutes * 60.0);
    let interval = (duration.as_secs_f64() / 8.0).min(30.0);
    let warmup = (duration.as_secs_f64() / 4.0).min(60.0);
    eprintln!(
        "soak: seed {} ({} streams x {} pkt/s, {} min, loss {}%, reorder {}%, sample every {:.1} s, warm-up {:.0} s)",
        o.seed, o.streams, o.rate, o.minutes, o.loss_pct, o.reorder_pct, interval, warmup
    );

    let mut socks = Vec::new();
    for n in 0..o.streams {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, DEST_BASE + n as u16))
            .map_err(|e| format!("bind destination {}: {e}", DEST_BASE + n as u16))?;
        s.set_nonblocking(true).map_err(|e| format!("nonblocking: {e}"))?;
        let size: libc::c_int = 1 << 20;
        // SAFETY: a valid socket and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        socks.push(s);
    }
    let plans: Vec<Plan> = (0..o.streams).map(|n| Plan::new(o.seed, n, o)).collect();
    let keys: Vec<(u32, u16, u32)> = plans.iter().map(|p| (p.ssrc, p.seq0, p.ts0)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let rx = {
        let (stop, delivered, keys, rate) = (stop.clone(), delivered.clone(), keys.clone(), o.rate);
        std::thread::spawn(move || receiver(socks, keys, rate, stop, delivered))
    };
    let start = Instant::now();
    let gate = Arc::new(Gate::default());
    let tx = {
        let (rate, gate) = (o.rate, gate.clone());
        std::thread::spawn(move || sender(plans, rate, duration, &gate))
    };

    // Memory is read at quiet points: the generator holds, the relay
    // drains (rtpmgrd has received and forwarded, and the destinations
    // have got, everything sent so far), then the sample is taken, so that
    // packets in flight in socket queues (many when the guest falls behind
    // its schedule) are not taken for growth.
    let mut samples = Vec::new();
    let mut k = 0u32;
    let mut cpu = all_cpus_ticks();
    let mut max_quiesce = 0f64;
    loop {
        let due = start + Duration::from_secs_f64(interval * k as f64);
        while Instant::now() < due && !tx.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
        }
        gate.hold.store(true, Ordering::SeqCst);
        while !gate.held.load(Ordering::SeqCst) && !tx.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if tx.is_finished() {
            break;
        }
        let q0 = Instant::now();
        drain(o, gate.sent.load(Ordering::SeqCst), &delivered)?;
        max_quiesce = max_quiesce.max(q0.elapsed().as_secs_f64());
        let s = sample(o, start.elapsed().as_secs_f64(), true, &mut cpu)?;
        gate.hold.store(false, Ordering::SeqCst);
        eprintln!(
            "soak: t {:6.1} s  rtpmgrd VmRSS {} KiB (anon {})  Slab {} KiB  SUnreclaim {} KiB  packets {}  CPU busy {:.0}%",
            s.t, s.rss_kib, s.rss_anon_kib, s.slab_kib, s.sunreclaim_kib, s.packets, s.cpu_busy_pct
        );
        samples.push(s);
        k += 1;
    }
    let sent = tx.join().map_err(|_| "sender panicked")??;
    let total: u64 = sent.plans.iter().map(|p| p.sent).sum();
    let drain_start = Instant::now();
    drain(o, total, &delivered)?;
    // Late stragglers would show up as duplicates or extra packets.
    std::thread::sleep(Duration::from_secs(1));
    let report = status(&o.ctl)?;
    let drain_s = drain_start.elapsed().as_secs_f64();
    let after = sample(o, start.elapsed().as_secs_f64(), false, &mut cpu)?;
    eprintln!(
        "soak: t {:6.1} s  rtpmgrd VmRSS {} KiB (anon {})  Slab {} KiB  SUnreclaim {} KiB  packets {} (end)",
        after.t, after.rss_kib, after.rss_anon_kib, after.slab_kib, after.sunreclaim_kib, after.packets
    );
    samples.push(after);
    stop.store(true, Ordering::Relaxed);
    let dests = rx.join().map_err(|_| "receiver panicked")?;

    let mut c = Checks { list: Vec::new(), failed: 0 };
    let empty = Vec::new();
    let reported = report["streams"].as_array().unwrap_or(&empty);
    let mut per_stream = Vec::new();
    let mut totals = [0u64; 6];
    for (n, (p, d)) in sent.plans.iter().zip(&dests).enumerate() {
        let name = format!("s{n}");
        let r = reported.iter().find(|s| s["name"] == name.as_str()).cloned().unwrap_or(Value::Null);
        let u = |k: &str| r[k].as_u64().unwrap_or(u64::MAX);
        let lost = r["lost"].as_i64().unwrap_or(i64::MIN);
        // Datagrams rtpmgrd dropped for want of room: "ring_drops" in older
        // reports, "socket_drops" and "ring_full_drops" in newer ones.
        let drops: u64 = DROP_FIELDS.iter().filter_map(|k| r[*k].as_u64()).sum();
        let ok = r["state"] == "running"
            && u("packets") == p.sent
            && lost == p.lost as i64
            && u("reordered") == p.reordered
            && u("duplicates") == 0
            && drops == 0
            && u("malformed") == 0
            && u("sent_packets") == p.sent
            && u("send_errors") == 0
            && r["ssrc"].as_u64() == Some(p.ssrc as u64);
        c.check(
            format!("{name}: rtpmgrd's statistics = injected"),
            ok,
            format!(
                "sent {} lost {} reordered {}; rtpmgrd packets {} lost {} reordered {} duplicates {} drops {drops} \
                 sent {} send_errors {} state {}",
                p.sent,
                p.lost,
                p.reordered,
                r["packets"],
                r["lost"],
                r["reordered"],
                r["duplicates"],
                r["sent_packets"],
                r["send_errors"],
                r["state"]
            ),
        );
        c.check(
            format!("{name}: destination got every sent packet once, intact"),
            d.delivered == p.sent && d.duplicates == 0 && d.corrupt == 0 && d.late == p.reordered,
            format!(
                "sent {} delivered {} duplicates {} corrupt {} late {} (injected {})",
                p.sent, d.delivered, d.duplicates, d.corrupt, d.late, p.reordered
            ),
        );
        for (t, v) in totals.iter_mut().zip([
            p.sent,
            p.lost,
            p.reordered,
            d.delivered,
            lost.max(0) as u64,
            r["reordered"].as_u64().unwrap_or(0),
        ]) {
            *t += v;
        }
        per_stream.push(json!({
            "name": name,
            "media_port": r["media_port"],
            "ssrc": p.ssrc,
            "first_seq": p.seq0,
            "sent": p.sent,
            "highest_index": p.next - 1,
            "injected": {"lost": p.lost, "loss_events": p.loss_events, "reordered": p.reordered},
            "rtpmgrd": {
                "packets": r["packets"], "lost": r["lost"], "reordered": r["reordered"],
                "duplicates": r["duplicates"], "drops": drops, "sent_packets": r["sent_packets"],
                "jitter_ms": r["jitter_ms"],
            },
            "destination": {"delivered": d.delivered, "duplicates": d.duplicates, "late": d.late, "corrupt": d.corrupt},
        }));
    }
    let session = &report["session"];
    c.check(
        "kernel session: no ring-full drops, no invalid slots".into(),
        session["ring_full_drops"] == 0 && session["invalid_slots"] == 0 && session["invalid_indices"] == 0,
        format!(
            "ring_full_drops {} invalid_slots {} invalid_indices {} unroutable {}",
            session["ring_full_drops"], session["invalid_slots"], session["invalid_indices"], session["unroutable"]
        ),
    );
    c.check("generator: no send errors".into(), sent.send_errors == 0, format!("{} send errors", sent.send_errors));

    // Flatness: the samples from the warm-up on, the median of their first
    // three against the median of their last three (the last one taken
    // after the run). Medians, because a single quiet-point reading can
    // catch a transient (a short-lived allocation of rtpmgrctl's or the
    // daemon's); a leak moves all three.
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t >= warmup - 0.5).collect();
    let mut flat = json!(null);
    if after.len() >= 4 {
        let n = (after.len() / 2).min(3);
        let median = |part: &[&Sample], f: fn(&Sample) -> u64| {
            let mut v: Vec<u64> = part.iter().map(|s| f(s)).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        let (head, tail) = (&after[..n], &after[after.len() - n..]);
        let pair = |f: fn(&Sample) -> u64| (median(head, f), median(tail, f));
        let (rss, slab, sunr) = (pair(|s| s.rss_kib), pair(|s| s.slab_kib), pair(|s| s.sunreclaim_kib));
        let growth = |(a, b): (u64, u64)| b as i64 - a as i64;
        let slab_bound = 2 * o.slab_bound_kib;
        for (name, (a, b), bound) in [
            ("rtpmgrd VmRSS flat", rss, o.rss_bound_kib),
            ("kernel SUnreclaim flat", sunr, o.slab_bound_kib),
            ("kernel Slab flat", slab, slab_bound),
        ] {
            let g = growth((a, b));
            c.check(name.into(), g <= bound as i64, format!("{a} -> {b} KiB ({g:+} KiB; bound {bound} KiB)"));
        }
        flat = json!({
            "from_t": head[0].t, "to_t": tail[n - 1].t, "median_of": n,
            "rss_kib": [rss.0, rss.1], "rss_growth_kib": growth(rss), "rss_bound_kib": o.rss_bound_kib,
            "slab_kib": [slab.0, slab.1], "slab_growth_kib": growth(slab), "slab_bound_kib": slab_bound,
            "sunreclaim_kib": [sunr.0, sunr.1], "sunreclaim_growth_kib": growth(sunr),
            "sunreclaim_bound_kib": o.slab_bound_kib,
        });
    } else {
        c.check("memory samples after the warm-up".into(), false, format!("{} samples, 4 needed", after.len()));
    }

    let pass = c.failed == 0;
    let doc = json!({
        "seed": o.seed,
        "streams": o.streams,
        "rate_per_stream": o.rate,
        "minutes": o.minutes,
        "loss_pct": o.loss_pct,
        "reorder_pct": o.reorder_pct,
        "sample_interval_s": interval,
        "warmup_s": warmup,
        "drain_s": drain_s,
        "max_quiesce_s": max_quiesce,
        "generator": {"seconds": sent.seconds, "max_late_ms": sent.max_late_ms, "send_errors": sent.send_errors},
        "totals": {
            "sent": totals[0], "injected_lost": totals[1], "injected_reordered": totals[2],
            "delivered": totals[3], "rtpmgrd_lost": totals[4], "rtpmgrd_reordered": totals[5],
        },
        "session": session,
        "flat": flat,
        "samples": samples.iter().map(|s| json!({
            "t": s.t, "rss_kib": s.rss_kib, "rss_anon_kib": s.rss_anon_kib, "slab_kib": s.slab_kib, "sunreclaim_kib": s.sunreclaim_kib,
            "vmalloc_kib": s.vmalloc_kib, "available_kib": s.available_kib, "packets": s.packets, "cpu_busy_pct": s.cpu_busy_pct, "loaded": s.loaded,
        })).collect::<Vec<_>>(),
        "per_stream": per_stream,
        "checks": c.list,
        "pass": pass,
    });
    println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?);
    eprintln!(
        "soak: {} checks, {} failed: {}",
        doc["checks"].as_array().map_or(0, |a| a.len()),
        c.failed,
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(pass)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("config") => parse(&args[1..]).map(|o| {
            print!("{}", config(o.streams));
            true
        }),
        Some("run") => parse(&args[1..]).and_then(|o| run(&o)),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rtpmgr-guest-soak: {e}");
            ExitCode::from(2)
        }
    }
}
