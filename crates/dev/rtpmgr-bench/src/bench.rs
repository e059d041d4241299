// SPDX-License-Identifier: MIT
//! The host figures: how each is measured.
//!
//! * [`saturation`]: one stream offered flat out by a generator that sends
//!   single datagrams (no GSO aggregates), every relay in turn.
//! * [`paced`]: many paced streams (IPTV 10 Mbit/s, VoIP 50 packets/s),
//!   rtpmgrd against the bare epoll loop at the same load.
//! * [`latency`]: one paced stream, send to arrival through the relay.
//! * [`callgrind`]: user-space instructions per relayed packet.
//!
//! Every comparison is measured side by side in one run: repetition k of
//! every relay runs back to back (interleaved), and the ratios pair them.

use crate::load::{free_ports, Generator, Receiver, RxReport, RxShared};
use crate::packet::{now_ns, Shape, IPTV, PACKET, PAYLOAD, VOIP};
use crate::perf::{Counts, Meter as CountMeter, PerfEvents};
use crate::rate::packets_per_s;
use crate::relay::{Relay, RelayKind, Tools};
use crate::report::{Bound, Figure, Ratio, Section, Stat, Status};
use crate::stats::{percentile, Summary};
use rtpmgr_test_kit::procfs;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How long a relay may take from start to passing the first probe.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The same under valgrind, which starts programs slowly.
const VALGRIND_START_TIMEOUT: Duration = Duration::from_secs(90);
/// Time for the last packets to come through before the receiver stops.
const DRAIN: Duration = Duration::from_millis(300);

/// One paced load: `streams` streams of `stream_pps` packets/s each.
#[derive(Clone, Debug)]
pub struct Load {
    pub name: &'static str,
    pub shape: Shape,
    pub streams: usize,
    pub stream_pps: f64,
    /// Upper bound on rtpmgrd's CPU per packet against the bare loop's.
    pub cpu_ratio_target: Option<f64>,
    /// Targets on rtpmgrd's system calls and context switches per packet.
    pub wakeup_targets: Option<(f64, f64)>,
    /// Every packet must arrive.
    pub lossless_target: bool,
}

impl Load {
    pub fn offered_pps(&self) -> f64 {
        self.streams as f64 * self.stream_pps
    }
}

/// A 10 Mbit/s MPEG-TS stream in 1316-byte payloads: 950 packets/s.
pub fn iptv_stream_pps() -> f64 {
    packets_per_s(10e6, PAYLOAD)
}

/// The loads of a full run.
pub fn full_loads() -> Vec<Load> {
    let iptv = |name, streams, wake: bool, lossless| Load {
        name,
        shape: IPTV,
        streams,
        stream_pps: iptv_stream_pps(),
        cpu_ratio_target: Some(1.1),
        wakeup_targets: wake.then_some((0.25, 0.1)),
        lossless_target: lossless,
    };
    vec![
        iptv("iptv64", 64, true, false),
        // 158 x 950 = 150 kpps: the lossless target's load.
        iptv("iptv150k", 158, false, true),
        iptv("iptv256", 256, true, false),
        Load {
            name: "voip1000",
            shape: VOIP,
            streams: 1000,
            stream_pps: 50.0,
            cpu_ratio_target: None,
            wakeup_targets: None,
            lossless_target: false,
        },
        Load {
            name: "voip4000",
            shape: VOIP,
            streams: 4000,
            stream_pps: 50.0,
            cpu_ratio_target: Some(1.2),
            wakeup_targets: None,
            lossless_target: false,
        },
    ]
}

/// What to run and how long.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    pub repetitions: usize,
    pub saturation_warmup: Duration,
    pub saturation_window: Duration,
    /// Relays of the saturation figure, in turn.
    pub saturation_relays: Vec<RelayKind>,
    /// The saturating generator sends UDP GSO aggregates (reference only:
    /// a relay with UDP_GRO would win for free).
    pub generator_gso: bool,
    pub paced_warmup: Duration,
    pub paced_window: Duration,
    pub loads: Vec<Load>,
    /// Relays of the paced figures (the bare loop is always measured).
    pub paced_relays: Vec<RelayKind>,
    pub latency_rate_pps: f64,
    pub latency_warmup: Duration,
    pub latency_window: Duration,
    /// Paced rates of the two callgrind runs (packets/s) and their length.
    pub callgrind_rates: (f64, f64),
    pub callgrind_seconds: Duration,
    pub callgrind_relays: Vec<RelayKind>,
    /// (generator CPU, relay CPU)
    pub pin: Option<(usize, usize)>,
    /// Nice level of the relays (the generator sets its own).
    pub nice: Option<i32>,
    /// Attempts at a disturbed repetition (1: never repeat).
    pub attempts: usize,
    /// Repeats each figure may spend; bounds the time on a busy host.
    pub repeat_budget: usize,
    /// perf and the events it counts here; `None`: /proc only.
    pub perf: Option<PerfEvents>,
    /// valgrind, for the instruction counts.
    pub valgrind: Option<std::path::PathBuf>,
    repeats_left: Cell<usize>,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            repetitions: 10,
            saturation_warmup: Duration::from_millis(500),
            saturation_window: Duration::from_secs(2),
            saturation_relays: vec![
                RelayKind::Rtpmgrd,
                RelayKind::Bare,
                RelayKind::Gstreamer,
                RelayKind::GstreamerTuned,
            ],
            generator_gso: false,
            paced_warmup: Duration::from_secs(1),
            paced_window: Duration::from_secs(3),
            loads: full_loads(),
            paced_relays: vec![RelayKind::Rtpmgrd, RelayKind::Bare],
            latency_rate_pps: 4000.0,
            latency_warmup: Duration::from_millis(200),
            latency_window: Duration::from_secs(2),
            callgrind_rates: (500.0, 2500.0),
            callgrind_seconds: Duration::from_secs(4),
            callgrind_relays: vec![RelayKind::Rtpmgrd, RelayKind::Bare, RelayKind::GstreamerTuned],
            pin: None,
            nice: None,
            attempts: 3,
            repeat_budget: 6,
            perf: None,
            valgrind: None,
            repeats_left: Cell::new(0),
        }
    }

    /// About 30 s: enough to show every path works and the JSON is sound.
    pub fn quick() -> Plan {
        let loads = full_loads().into_iter().filter(|l| l.name == "iptv64" || l.name == "voip1000").collect();
        Plan {
            quick: true,
            repetitions: 1,
            saturation_warmup: Duration::from_millis(200),
            saturation_window: Duration::from_millis(500),
            paced_warmup: Duration::from_millis(300),
            paced_window: Duration::from_millis(700),
            loads,
            latency_warmup: Duration::from_millis(100),
            latency_window: Duration::from_millis(500),
            callgrind_relays: Vec::new(),
            attempts: 1,
            repeat_budget: 0,
            ..Plan::full()
        }
    }

    fn relay_cpu(&self) -> Option<usize> {
        self.pin.map(|p| p.1)
    }

    /// A figure begins: its budget of repeats.
    fn budget(&self, repeats: usize) {
        self.repeats_left.set(repeats);
    }

    /// Whether attempt `attempt` (from 1), disturbed, may be repeated; if
    /// so, one repeat of the figure's budget is spent.
    fn repeat(&self, attempt: usize) -> bool {
        let left = self.repeats_left.get();
        if attempt < self.attempts && left > 0 {
            self.repeats_left.set(left - 1);
            true
        } else {
            false
        }
    }

    fn counters_note(&self) -> String {
        match &self.perf {
            Some(p) => format!(
                "Counts from perf stat -p (all the relay's threads), switched on and off at the window's edges \
                 through perf's control FIFO; events counted here: {}{}.",
                p.events.join(", "),
                if p.missing.is_empty() {
                    String::new()
                } else {
                    format!(" (not available on this machine: {})", p.missing.join(", "))
                }
            ),
            None => "perf is not available: CPU time from /proc/<pid>/stat, context switches from \
                     /proc/<pid>/task/*/status; system calls are not counted."
                .into(),
        }
    }
}

fn loopback(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

fn sleep_until(t_ns: u64) {
    let now = now_ns();
    if t_ns > now {
        std::thread::sleep(Duration::from_nanos(t_ns - now));
    }
}

/// A repetition during which other work took more than this share of a
/// measured CPU (% of its time) is disturbed: repeated (see
/// [`Plan::attempts`]), and counted if it stays disturbed.
pub const DISTURBED_PERCENT: f64 = 10.0;

/// CPU time taken on the measured CPUs by anything but the benchmark: on
/// the relay's CPU everything but the relay, on the generator's (when
/// `both`) everything but this process. Needs pinning.
#[derive(Clone, Copy)]
struct Meter {
    t: u64,
    relay: (f64, f64),
    gen: (f64, f64),
}

impl Meter {
    fn read(plan: &Plan, relay: &Relay) -> Option<Meter> {
        let (g, r) = plan.pin?;
        Some(Meter {
            t: now_ns(),
            relay: (procfs::cpu_busy_seconds(r).ok()?, relay.cpu_seconds().ok()?),
            gen: (procfs::cpu_busy_seconds(g).ok()?, procfs::cpu_seconds(std::process::id()).ok()?),
        })
    }

    fn foreign_since(&self, now: &Meter, both: bool) -> f64 {
        let secs = ((now.t - self.t) as f64 / 1e9).max(1e-3);
        let other = |a: (f64, f64), b: (f64, f64)| ((b.0 - a.0) - (b.1 - a.1)).max(0.0) / secs * 100.0;
        let r = other(self.relay, now.relay);
        if both {
            r.max(other(self.gen, now.gen))
        } else {
            r
        }
    }
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.0} %")
    } else {
        "-".into()
    }
}

fn repeat_rule(plan: &Plan) -> String {
    if plan.attempts > 1 {
        format!("is repeated, {} attempts at most, while the figure's budget of repeats lasts", plan.attempts)
    } else {
        "is kept (this mode repeats nothing)".into()
    }
}

/// A relay with the receiver behind it and a generator in front, the path
/// through it proven by probes.
struct Rig {
    relay: Relay,
    shared: Arc<RxShared>,
    rx: Option<std::thread::JoinHandle<RxReport>>,
    gen: Generator,
    in_ports: Vec<u16>,
    rx_port: u16,
}

impl Rig {
    fn start(kind: RelayKind, tools: &Tools, plan: &Plan, streams: usize, latency: bool) -> Result<Rig, String> {
        Rig::start_shaped(kind, tools, plan, streams, latency, IPTV, &[], plan.relay_cpu())
    }

    #[allow(clippy::too_many_arguments)]
    fn start_shaped(
        kind: RelayKind,
        tools: &Tools,
        plan: &Plan,
        streams: usize,
        latency: bool,
        shape: Shape,
        wrapper: &[String],
        cpu: Option<usize>,
    ) -> Result<Rig, String> {
        let e = |e: std::io::Error| e.to_string();
        let receiver = Receiver::bind_shape(shape).map_err(e)?;
        let dest = receiver.addr().map_err(e)?;
        let in_ports = free_ports(streams).map_err(e)?;
        let mut relay =
            Relay::start_with(kind, tools, &in_ports, dest, cpu, plan.nice, shape.pt, wrapper).map_err(e)?;
        let shared = RxShared::new(streams);
        let rx = Some(receiver.spawn(Arc::clone(&shared), latency));
        let mut gen = Generator::with_shape(in_ports.iter().map(|&p| loopback(p)).collect(), shape).map_err(e)?;
        let timeout = if wrapper.is_empty() { START_TIMEOUT } else { VALGRIND_START_TIMEOUT };
        let mut rig_err = None;
        if let Err(err) = gen.probe(&shared, timeout, &mut || relay.check_alive()) {
            rig_err = Some(format!("{}: {err} ({})", kind.label(), relay.log_tail()));
        }
        let mut rig = Rig { relay, shared, rx, gen, in_ports, rx_port: dest.port() };
        match rig_err {
            Some(err) => {
                rig.finish();
                Err(err)
            }
            None => Ok(rig),
        }
    }

    /// Let the last packets arrive, stop the receiver, return what it saw.
    fn finish(&mut self) -> RxReport {
        std::thread::sleep(DRAIN);
        self.shared.stop.store(true, Relaxed);
        self.rx.take().map(|h| h.join().expect("receiver thread panicked")).unwrap_or_default()
    }

    fn input_drops(&self) -> u64 {
        let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        let (first, last) = (self.in_ports[0], *self.in_ports.last().expect("at least one port"));
        procfs::parse_udp_drops_in(&table, first..=last).1
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(h) = self.rx.take() {
            let _ = h.join();
        }
    }
}

fn drops(port: u16) -> u64 {
    procfs::udp_drops(port).ok().flatten().unwrap_or(0)
}

/// The traffic of one measured run.
#[derive(Clone, Copy, Debug)]
enum Traffic {
    /// Stream 0 flat out.
    Blast { gso: bool },
    /// Every stream round robin at this total rate.
    Paced { total_pps: f64 },
}

/// One measured repetition of one relay.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// Other work on the relay's CPU in the window, % (NaN: not measured).
    foreign_percent: f64,
    offered_pps: f64,
    delivered_pps: f64,
    cpu_percent: f64,
    cpu_ns_per_pkt: f64,
    syscalls_per_pkt: f64,
    switches_per_pkt: f64,
    cycles_per_pkt: f64,
    instructions_per_pkt: f64,
    /// Drops at the relay's input sockets over the window (saturation:
    /// > 0 shows it was offered more than it carries).
    input_drops: u64,
    /// Drops at the receiver's socket over the window (must be 0: the
    /// receiver is not what is measured).
    receiver_drops: u64,
    /// Data packets sent and received over the whole run (paced runs:
    /// the difference is loss).
    sent: u64,
    received: u64,
    lost: u64,
    /// Streams that lost at least one packet.
    lost_streams: usize,
    send_errors: u64,
    generator_lag_ms: f64,
    /// What rtpmgrd itself counted as dropped (socket and ring-full
    /// drops), paced runs.
    relay_reported_drops: Option<u64>,
    counter_source: &'static str,
}

fn per_pkt(v: Option<f64>, pkts: u64) -> f64 {
    match v {
        Some(x) if pkts > 0 => x / pkts as f64,
        _ => f64::NAN,
    }
}

/// Start `kind` for `streams` streams of `shape`, drive `traffic` for
/// warm-up + window, count the relay's cost over the window.
#[allow(clippy::too_many_arguments)]
fn measure(
    kind: RelayKind,
    tools: &Tools,
    plan: &Plan,
    streams: usize,
    shape: Shape,
    traffic: Traffic,
    warmup: Duration,
    window: Duration,
) -> Result<Sample, String> {
    let mut rig = Rig::start_shaped(kind, tools, plan, streams, false, shape, &[], plan.relay_cpu())?;
    let mut counter = CountMeter::attach(rig.relay.pid(), plan.perf.as_ref());
    let source = counter.source();
    // perf needs a moment to attach before its window opens.
    let start = now_ns() + 150_000_000;
    let ws = start + warmup.as_nanos() as u64;
    let we = ws + window.as_nanos() as u64;
    rig.shared.window_start.store(ws, Relaxed);
    rig.shared.window_end.store(we, Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut gen = std::mem::replace(&mut rig.gen, Generator::new(vec![]).map_err(|e| e.to_string())?);
    let traffic_len = Duration::from_nanos(we - now_ns()) + Duration::from_millis(100);
    let driver = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::Builder::new()
            .name("bench-tx".into())
            .spawn(move || {
                let lag = match traffic {
                    Traffic::Blast { gso } => {
                        gen.blast(&stop, &sent, gso);
                        0
                    }
                    Traffic::Paced { total_pps } => gen.paced_counting(total_pps, traffic_len, &sent),
                };
                (gen, lag)
            })
            .map_err(|e| e.to_string())?
    };
    sleep_until(ws);
    let m0 = Meter::read(plan, &rig.relay);
    let (t0, sent0, in0, rx0) = (now_ns(), sent.load(Relaxed), rig.input_drops(), drops(rig.rx_port));
    counter.begin().map_err(|e| format!("counters: {e}"))?;
    sleep_until(we);
    let counts: Counts = counter.end().map_err(|e| format!("counters: {e}"))?;
    let (t1, sent1, in1, rx1) = (now_ns(), sent.load(Relaxed), rig.input_drops(), drops(rig.rx_port));
    let m1 = Meter::read(plan, &rig.relay);
    stop.store(true, Relaxed);
    let (gen, lag) = driver.join().map_err(|_| "generator thread panicked".to_string())?;
    rig.gen = gen;
    let rx = rig.finish();
    let reported = if kind.is_rtpmgrd() {
        rig.relay.status().ok().map(|s| s.streams.iter().map(|x| x.socket_drops + x.ring_full_drops).sum::<u64>())
    } else {
        None
    };
    rig.relay.check_alive()?;
    let secs = (t1 - t0) as f64 / 1e9;
    let pkts = rx.in_window;
    let gen_sent: u64 = rig.gen.sent.iter().sum();
    let lost_streams = rig.gen.sent.iter().zip(&rx.per_stream).filter(|(s, r)| s > r).count();
    Ok(Sample {
        foreign_percent: match (m0, m1) {
            (Some(a), Some(b)) => a.foreign_since(&b, false),
            _ => f64::NAN,
        },
        offered_pps: (sent1 - sent0) as f64 / secs,
        delivered_pps: pkts as f64 / window.as_secs_f64(),
        cpu_percent: counts.cpu_ns / 1e9 / secs * 100.0,
        cpu_ns_per_pkt: per_pkt(Some(counts.cpu_ns), pkts),
        syscalls_per_pkt: per_pkt(counts.syscalls, pkts),
        switches_per_pkt: per_pkt(counts.context_switches, pkts),
        cycles_per_pkt: per_pkt(counts.cycles, pkts),
        instructions_per_pkt: per_pkt(counts.instructions, pkts),
        input_drops: in1.saturating_sub(in0),
        receiver_drops: rx1.saturating_sub(rx0),
        sent: gen_sent,
        received: rx.data,
        lost: gen_sent.saturating_sub(rx.data),
        lost_streams,
        send_errors: rig.gen.send_errors,
        generator_lag_ms: lag as f64 / 1e6,
        relay_reported_drops: reported,
        counter_source: source,
    })
}

/// One repetition's result, as [`interleaved`] needs it.
trait Repetition {
    /// CPU time other work took on the machine while it ran, in percent.
    fn foreign_percent(&self) -> f64;
    /// Its figures for the progress log, after "WHAT KIND rep N: ".
    fn describe(&self) -> String;
}

impl Repetition for Sample {
    fn foreign_percent(&self) -> f64 {
        self.foreign_percent
    }
    fn describe(&self) -> String {
        format!(
            "delivered {:.0}/s of {:.0}/s offered, lost {} of {}, CPU {:.0} %, {:.0} ns/pkt, {:.3} syscalls/pkt, \
             {:.3} switches/pkt, drops in {} rx {}, other work {}",
            self.delivered_pps,
            self.offered_pps,
            self.lost,
            self.sent,
            self.cpu_percent,
            self.cpu_ns_per_pkt,
            self.syscalls_per_pkt,
            self.switches_per_pkt,
            self.input_drops,
            self.receiver_drops,
            pct(self.foreign_percent),
        )
    }
}

/// Samples, errors and repetitions made again for disturbance, per relay key.
type Runs<S> = (BTreeMap<&'static str, Vec<S>>, BTreeMap<&'static str, Vec<String>>, BTreeMap<&'static str, usize>);

/// Run `kinds` interleaved, `plan.repetitions` times, repeating disturbed
/// repetitions within the budget; samples and errors per relay key.
fn interleaved<S: Repetition>(
    what: &str,
    kinds: &[RelayKind],
    plan: &Plan,
    log: &mut dyn FnMut(&str),
    mut once: impl FnMut(RelayKind) -> Result<S, String>,
) -> Runs<S> {
    let mut samples: BTreeMap<&'static str, Vec<S>> = BTreeMap::new();
    let mut errors: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut retries: BTreeMap<&'static str, usize> = BTreeMap::new();
    for rep in 0..plan.repetitions {
        for &kind in kinds {
            for attempt in 1.. {
                match once(kind) {
                    Ok(s) => {
                        let again = s.foreign_percent() > DISTURBED_PERCENT && plan.repeat(attempt);
                        let note = if again { ": disturbed, repeating" } else { "" };
                        log(&format!("{what} {} rep {}: {}{note}", kind.key(), rep + 1, s.describe()));
                        if again {
                            *retries.entry(kind.key()).or_default() += 1;
                            continue;
                        }
                        samples.entry(kind.key()).or_default().push(s);
                    }
                    Err(e) => {
                        log(&format!("{what} {} rep {}: FAILED: {e}", kind.key(), rep + 1));
                        errors.entry(kind.key()).or_default().push(e);
                    }
                }
                break;
            }
        }
    }
    (samples, errors, retries)
}

/// The figures of one relay's samples under `prefix`; returns the stats
/// by short name for ratios.
fn push_figures(
    sec: &mut Section,
    prefix: &str,
    s: &[Sample],
    errs: &[String],
    retries: usize,
    skipped: Option<&str>,
) -> BTreeMap<&'static str, Stat> {
    let reason = errs.first().cloned().unwrap_or_else(|| "no repetition completed".into());
    let stat = |unit: &'static str, f: fn(&Sample) -> f64| -> Stat {
        if let Some(why) = skipped {
            return Stat::not_measured(unit, Status::Skipped, why);
        }
        let v: Vec<f64> = s.iter().map(f).collect();
        if !s.is_empty() && v.iter().all(|x| x.is_nan()) {
            return Stat::not_measured(unit, Status::Skipped, "not counted on this machine");
        }
        Stat::of(unit, &v, &reason)
    };
    let mut out = BTreeMap::new();
    out.insert("pps", stat("packets/s delivered", |x| x.delivered_pps));
    out.insert("cpu_ns_per_pkt", stat("ns CPU/packet", |x| x.cpu_ns_per_pkt));
    out.insert("syscalls_per_pkt", stat("syscalls/packet", |x| x.syscalls_per_pkt));
    out.insert("switches_per_pkt", stat("context switches/packet", |x| x.switches_per_pkt));
    out.insert("cycles_per_pkt", stat("cycles/packet", |x| x.cycles_per_pkt));
    out.insert("instructions_per_pkt", stat("instructions/packet", |x| x.instructions_per_pkt));
    out.insert("cpu_pct", stat("% of a core", |x| x.cpu_percent));
    out.insert("lost", stat("packets lost", |x| x.lost as f64));
    let main = Figure::new(out["pps"].clone())
        .with("offered_pps", Summary::of(&s.iter().map(|x| x.offered_pps).collect::<Vec<_>>()))
        .with("sent", s.iter().map(|x| x.sent).sum::<u64>())
        .with("received", s.iter().map(|x| x.received).sum::<u64>())
        .with("lost", s.iter().map(|x| x.lost).sum::<u64>())
        .with("lost_streams", s.iter().map(|x| x.lost_streams).max().unwrap_or(0))
        .with("input_drops", s.iter().map(|x| x.input_drops).sum::<u64>())
        .with("saturated_repetitions", s.iter().filter(|x| x.input_drops > 0).count())
        .with("receiver_drops", s.iter().map(|x| x.receiver_drops).sum::<u64>())
        .with("generator_send_errors", s.iter().map(|x| x.send_errors).sum::<u64>())
        .with("generator_lag_ms_max", s.iter().map(|x| x.generator_lag_ms).fold(0.0, f64::max))
        .with("relay_reported_drops", s.iter().filter_map(|x| x.relay_reported_drops).reduce(|a, b| a + b))
        .with("foreign_cpu_percent", Summary::of(&s.iter().map(|x| x.foreign_percent).collect::<Vec<_>>()))
        .with("disturbed_repetitions", s.iter().filter(|x| x.foreign_percent > DISTURBED_PERCENT).count())
        .with("repeated_for_disturbance", retries)
        .with("counters", s.first().map(|x| x.counter_source))
        .with("errors", errs);
    sec.figures.push(format!("{prefix}_pps"), main);
    for k in [
        "cpu_ns_per_pkt",
        "cpu_pct",
        "syscalls_per_pkt",
        "switches_per_pkt",
        "cycles_per_pkt",
        "instructions_per_pkt",
        "lost",
    ] {
        sec.figures.push(format!("{prefix}_{k}"), Figure::new(out[k].clone()));
    }
    out
}

// ------------------------------------------------------------- saturation

pub fn saturation(tools: &Tools, plan: &Plan, log: &mut dyn FnMut(&str)) -> Section {
    plan.budget(plan.repeat_budget);
    let gst_missing = tools.gst_launch.is_none();
    let kinds: Vec<RelayKind> =
        plan.saturation_relays.iter().copied().filter(|k| !(k.is_gstreamer() && gst_missing)).collect();
    let traffic = Traffic::Blast { gso: plan.generator_gso };
    let (mut samples, mut errors, retries) = interleaved("saturation", &kinds, plan, log, |kind| {
        measure(kind, tools, plan, 1, IPTV, traffic, plan.saturation_warmup, plan.saturation_window)
    });
    let mut sec = Section::default();
    let mut st: BTreeMap<&'static str, BTreeMap<&'static str, Stat>> = BTreeMap::new();
    for &kind in &plan.saturation_relays {
        let key = kind.key();
        let skipped = (kind.is_gstreamer() && gst_missing)
            .then_some("GStreamer (gst-launch-1.0 with udpsrc and udpsink) is not available");
        let s = samples.remove(key).unwrap_or_default();
        let e = errors.remove(key).unwrap_or_default();
        let r = retries.get(key).copied().unwrap_or(0);
        st.insert(key, push_figures(&mut sec, &format!("sat_{key}"), &s, &e, r, skipped));
    }
    let has = |k: RelayKind| plan.saturation_relays.contains(&k);
    let pps = |k: RelayKind| &st[k.key()]["pps"];
    if has(RelayKind::Rtpmgrd) && has(RelayKind::Bare) {
        // The default rtpmgrd sends with UDP GSO where a run of one stream
        // allows; udp_gso = false is the "without GSO" variant.
        let (target, name) = if has(RelayKind::RtpmgrdNoGso) {
            (1.25, "sat rtpmgrd (udp_gso)/bare_loop packets/s")
        } else {
            (1.0, "sat rtpmgrd/bare_loop packets/s")
        };
        sec.ratios.push(Ratio::of(name, pps(RelayKind::Rtpmgrd), pps(RelayKind::Bare), Some(target)));
    }
    for (name, a, b, target) in [
        ("sat rtpmgrd (no GSO)/bare_loop packets/s", RelayKind::RtpmgrdNoGso, RelayKind::Bare, Some(1.0)),
        ("sat rtpmgrd run-to-completion/threads packets/s", RelayKind::RtpmgrdRtc, RelayKind::Rtpmgrd, None),
        ("sat rtpmgrd/gstreamer_tuned packets/s", RelayKind::Rtpmgrd, RelayKind::GstreamerTuned, Some(2.0)),
        ("sat rtpmgrd/gstreamer (defaults) packets/s", RelayKind::Rtpmgrd, RelayKind::Gstreamer, None),
    ] {
        if has(a) && has(b) {
            sec.ratios.push(Ratio::of(name, pps(a), pps(b), target));
        }
    }
    if has(RelayKind::Rtpmgrd) && has(RelayKind::Bare) {
        sec.ratios.push(Ratio::bounded(
            "sat rtpmgrd/bare_loop CPU per packet",
            &st["rtpmgrd"]["cpu_ns_per_pkt"],
            &st["bare_loop"]["cpu_ns_per_pkt"],
            None,
            Bound::AtMost,
        ));
    }
    let pin = match plan.pin {
        Some((g, r)) => format!("The relay runs alone on CPU {r}; generator and receiver share CPU {g}. "),
        None => "No CPU pinning. ".into(),
    };
    let gen = if plan.generator_gso {
        format!(
            "sendmmsg of UDP GSO buffers ({} x {} datagrams per call; reference only: the relay's socket receives \
             the aggregates)",
            crate::load::BLAST_MSGS,
            crate::load::GSO_SEGMENTS
        )
    } else {
        format!(
            "plain sendmmsg of {} single datagrams per call (no GSO: every datagram reaches the relay's socket as \
             its own skb, as from a network)",
            crate::load::BATCH
        )
    };
    sec.method = format!(
        "Saturation, one stream. {pin}One generator thread sends {PACKET}-byte RTP datagrams ({PAYLOAD}-byte \
         payload) to the relay as fast as the socket takes them: {gen}. input_drops (the relay's input socket, \
         /proc/net/udp) > 0 shows the relay was offered more than it carried; receiver_drops are the receiver's \
         socket's. Delivered packets/s = datagrams arriving in a {:.1} s window that opens {:.1} s after the \
         start. {} Per packet = count over the window / packets delivered in it. {} repetitions; repetition k of \
         every relay runs back to back (interleaved), each with a fresh relay; ratios are of the medians, their \
         min/max/CI over the repetitions' own ratios. Every relay gets a {} MiB socket buffer. A repetition in \
         which other work took more than {DISTURBED_PERCENT:.0} % of the relay's CPU {}.",
        plan.saturation_window.as_secs_f64(),
        plan.saturation_warmup.as_secs_f64(),
        plan.counters_note(),
        plan.repetitions,
        crate::relay::RELAY_SOCKET_BUFFER >> 20,
        repeat_rule(plan)
    );
    sec
}

// ------------------------------------------------------------------ paced

pub fn paced(tools: &Tools, plan: &Plan, log: &mut dyn FnMut(&str)) -> Section {
    let mut sec = Section::default();
    let mut kinds = plan.paced_relays.clone();
    if !kinds.contains(&RelayKind::Bare) {
        kinds.push(RelayKind::Bare);
    }
    for load in &plan.loads {
        plan.budget(plan.repeat_budget);
        let traffic = Traffic::Paced { total_pps: load.offered_pps() };
        let what = format!("{} ({} x {:.0}/s)", load.name, load.streams, load.stream_pps);
        let (mut samples, mut errors, retries) = interleaved(&what, &kinds, plan, log, |kind| {
            measure(kind, tools, plan, load.streams, load.shape, traffic, plan.paced_warmup, plan.paced_window)
        });
        let mut st: BTreeMap<&'static str, BTreeMap<&'static str, Stat>> = BTreeMap::new();
        for &kind in &kinds {
            let key = kind.key();
            let s = samples.remove(key).unwrap_or_default();
            let e = errors.remove(key).unwrap_or_default();
            let r = retries.get(key).copied().unwrap_or(0);
            st.insert(key, push_figures(&mut sec, &format!("{}_{key}", load.name), &s, &e, r, None));
        }
        let n = load.name;
        for &kind in kinds.iter().filter(|k| k.is_rtpmgrd()) {
            let key = kind.key();
            let target = if kind == RelayKind::Rtpmgrd { load.cpu_ratio_target } else { None };
            sec.ratios.push(Ratio::bounded(
                &format!("{n} {key}/bare_loop CPU per packet"),
                &st[key]["cpu_ns_per_pkt"],
                &st["bare_loop"]["cpu_ns_per_pkt"],
                target,
                Bound::AtMost,
            ));
        }
        if let (Some((sys, sw)), Some(r)) = (load.wakeup_targets, st.get("rtpmgrd")) {
            sec.ratios.push(Ratio::check(
                &format!("{n} rtpmgrd syscalls per packet"),
                &r["syscalls_per_pkt"],
                sys,
                Bound::AtMost,
            ));
            sec.ratios.push(Ratio::check(
                &format!("{n} rtpmgrd context switches per packet"),
                &r["switches_per_pkt"],
                sw,
                Bound::AtMost,
            ));
        }
        if let (true, Some(r)) = (load.lossless_target, st.get("rtpmgrd")) {
            // Lossless: the worst repetition's loss.
            let mut lost = r["lost"].clone();
            lost.median = lost.max;
            sec.ratios.push(Ratio::check(
                &format!("{n} rtpmgrd packets lost (worst repetition)"),
                &lost,
                0.0,
                Bound::AtMost,
            ));
        }
    }
    let pin = match plan.pin {
        Some((g, r)) => {
            format!("The relay runs on CPU {r} only (all its threads); generator and receiver on CPU {g}. ")
        }
        None => "No CPU pinning. ".into(),
    };
    let loads: Vec<String> = plan
        .loads
        .iter()
        .map(|l| format!("{}: {} streams x {:.1} packets/s of {} bytes", l.name, l.streams, l.stream_pps, l.shape.len))
        .collect();
    sec.method = format!(
        "Paced streams, the normal IPTV and VoIP cases. {pin}Loads: {}. Each stream has its own UDP port on the \
         relay (consecutive ports), every relay delivers to one receiver, which counts per stream (SSRC). One \
         generator thread sends all streams round robin, evenly staggered, each packet due at j / rate; whatever \
         is due goes out in one sendmmsg (at most 64), then it sleeps until the next is due (timer slack 1 us). \
         rtpmgrd: sim backend, one relay stream per port through the loopback media port. Bare loop: bare-relay \
         --ports N, one level-triggered epoll over the N sockets, recvmmsg of up to 64 from each ready one, \
         sendmmsg of the same buffers. The window ({:.1} s, after {:.1} s of warm-up) gives CPU, system calls and \
         context switches per delivered packet: {} Loss: every packet sent over the whole run minus every one \
         that arrived, after a drain. {} repetitions, the relays interleaved; ratios of medians with the \
         repetitions' paired ratios' min/max/CI.",
        loads.join("; "),
        plan.paced_window.as_secs_f64(),
        plan.paced_warmup.as_secs_f64(),
        plan.counters_note(),
        plan.repetitions,
    );
    sec
}

// ---------------------------------------------------------------- latency

struct LatSample {
    foreign_percent: f64,
    p50: f64,
    p99: f64,
    p99_9: f64,
    samples: usize,
    lost: u64,
}

impl Repetition for LatSample {
    fn foreign_percent(&self) -> f64 {
        self.foreign_percent
    }
    fn describe(&self) -> String {
        format!(
            "p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us ({} samples, {} lost, other work {})",
            self.p50,
            self.p99,
            self.p99_9,
            self.samples,
            self.lost,
            pct(self.foreign_percent),
        )
    }
}

fn latency_once(kind: RelayKind, tools: &Tools, plan: &Plan) -> Result<LatSample, String> {
    let mut rig = Rig::start(kind, tools, plan, 1, true)?;
    let from = now_ns() + plan.latency_warmup.as_nanos() as u64;
    rig.shared.latency_from.store(from, Relaxed);
    rig.shared.latency_to.store(from + plan.latency_window.as_nanos() as u64, Relaxed);
    let m0 = Meter::read(plan, &rig.relay);
    rig.gen.paced(plan.latency_rate_pps, plan.latency_warmup + plan.latency_window);
    let m1 = Meter::read(plan, &rig.relay);
    let mut rx = rig.finish();
    rig.relay.check_alive()?;
    let sent: u64 = rig.gen.sent.iter().sum();
    rx.latencies_ns.sort_unstable();
    let us = |p: f64| percentile(&rx.latencies_ns, p).map_or(f64::NAN, |ns| ns as f64 / 1e3);
    if rx.latencies_ns.is_empty() {
        return Err(format!("{}: no packet arrived in the measuring window", kind.label()));
    }
    Ok(LatSample {
        foreign_percent: match (m0, m1) {
            (Some(a), Some(b)) => a.foreign_since(&b, true),
            _ => f64::NAN,
        },
        p50: us(50.0),
        p99: us(99.0),
        p99_9: us(99.9),
        samples: rx.latencies_ns.len(),
        lost: sent.saturating_sub(rx.data),
    })
}

pub fn latency(tools: &Tools, plan: &Plan, log: &mut dyn FnMut(&str)) -> Section {
    plan.budget(plan.repeat_budget);
    let kinds = [RelayKind::Rtpmgrd, RelayKind::Bare];
    let (mut samples, mut errors, retries) =
        interleaved("latency", &kinds, plan, log, |kind| latency_once(kind, tools, plan));
    let mut sec = Section::default();
    let mut p = BTreeMap::new();
    for kind in kinds {
        let s = samples.remove(kind.key()).unwrap_or_default();
        let errs = errors.remove(kind.key()).unwrap_or_default();
        let reason = errs.first().cloned().unwrap_or_else(|| "no repetition completed".into());
        let stat = |f: fn(&LatSample) -> f64| Stat::of("us", &s.iter().map(f).collect::<Vec<_>>(), &reason);
        let key = kind.key();
        let p50 = stat(|x| x.p50);
        let p99 = stat(|x| x.p99);
        sec.figures.push(
            format!("latency_{key}_p50"),
            Figure::new(p50.clone())
                .with("rate_pps", plan.latency_rate_pps)
                .with("samples_per_repetition", s.iter().map(|x| x.samples).collect::<Vec<_>>())
                .with("lost", s.iter().map(|x| x.lost).sum::<u64>())
                .with("foreign_cpu_percent", Summary::of(&s.iter().map(|x| x.foreign_percent).collect::<Vec<_>>()))
                .with("disturbed_repetitions", s.iter().filter(|x| x.foreign_percent > DISTURBED_PERCENT).count())
                .with("repeated_for_disturbance", retries.get(kind.key()).copied().unwrap_or(0))
                .with("errors", &errs),
        );
        sec.figures.push(format!("latency_{key}_p99"), Figure::new(p99.clone()));
        sec.figures.push(format!("latency_{key}_p99_9"), Figure::new(stat(|x| x.p99_9)));
        p.insert(key, (p50, p99));
    }
    sec.ratios = vec![
        Ratio::bounded("latency p50 rtpmgrd/bare_loop", &p["rtpmgrd"].0, &p["bare_loop"].0, None, Bound::AtMost),
        Ratio::bounded("latency p99 rtpmgrd/bare_loop", &p["rtpmgrd"].1, &p["bare_loop"].1, None, Bound::AtMost),
    ];
    let pin = match plan.pin {
        Some((g, r)) => format!(" The relay runs on CPU {r}, generator and receiver on CPU {g}."),
        None => String::new(),
    };
    sec.method = format!(
        "One RTP stream of {PACKET}-byte datagrams paced at {:.0} packets/s (sleeping, not spinning, between \
         packets; timer slack 1 us). The sender writes its monotonic clock into each payload just before \
         sendmmsg; the receiver, a thread of the same process, takes the clock when recvmmsg returns; the \
         difference is the latency through the relay, including both wake-ups. Percentiles by nearest rank \
         over the packets sent in a {:.1} s window after {:.1} s of warm-up; median/min/max over {} \
         repetitions, the two relays interleaved. A repetition in which other work took more than \
         {DISTURBED_PERCENT:.0} % of either CPU {}.{pin}",
        plan.latency_rate_pps,
        plan.latency_window.as_secs_f64(),
        plan.latency_warmup.as_secs_f64(),
        plan.repetitions,
        repeat_rule(plan)
    );
    sec
}

// -------------------------------------------------------------- callgrind

/// Total instructions callgrind counted (`summary:` / `totals:` line).
pub fn parse_callgrind_total(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
}

/// One relay under callgrind at `pps` for `secs`: (instructions, packets
/// delivered).
fn callgrind_once(
    kind: RelayKind,
    tools: &Tools,
    plan: &Plan,
    valgrind: &std::path::Path,
    pps: f64,
) -> Result<(f64, u64), String> {
    let out = Relay::new_dir().map_err(|e| e.to_string())?.join("callgrind.out");
    let wrapper = vec![
        valgrind.display().to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
        // Counting only: no cache or branch simulation.
        "--cache-sim=no".into(),
        "--branch-sim=no".into(),
    ];
    let mut rig = Rig::start_shaped(kind, tools, plan, 1, false, IPTV, &wrapper, None)?;
    rig.shared.window_start.store(0, Relaxed);
    rig.shared.window_end.store(u64::MAX, Relaxed);
    rig.gen.paced(pps, plan.callgrind_seconds);
    let rx = rig.finish();
    rig.relay.stop_within(Duration::from_secs(60));
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_dir_all(out.parent().expect("in a directory"));
    let ir = parse_callgrind_total(&text).ok_or("no total in callgrind's output")?;
    Ok((ir, rx.data))
}

pub fn callgrind(tools: &Tools, plan: &Plan, log: &mut dyn FnMut(&str)) -> Section {
    let mut sec = Section::default();
    let (r1, r2) = plan.callgrind_rates;
    let secs = plan.callgrind_seconds.as_secs_f64();
    sec.method = format!(
        "User-space instructions per relayed packet, valgrind --tool=callgrind (the machine's perf has no \
         hardware counters: cycles and instructions are not supported in this VM). Callgrind counts the relay \
         process's own instructions only, not the kernel's (system calls, the UDP stack), which is most of a \
         relay's work: read it as the user-space part. Each relay runs twice under callgrind, one stream of \
         {PACKET}-byte datagrams paced at {r1:.0} and {r2:.0} packets/s for {secs:.0} s each; instructions per \
         packet = (total of the faster run - total of the slower) / (packets delivered by the faster - by the \
         slower), which cancels start-up, configuration and idle wake-ups (both runs last as long)."
    );
    let Some(valgrind) = plan.valgrind.as_deref() else {
        for kind in &plan.callgrind_relays {
            let st = Stat::not_measured("instructions/packet", Status::Skipped, "valgrind is not installed");
            sec.figures.push(format!("callgrind_{}_instructions_per_pkt", kind.key()), Figure::new(st));
        }
        return sec;
    };
    let mut stats = BTreeMap::new();
    for &kind in &plan.callgrind_relays {
        if kind.is_gstreamer() && tools.gst_launch.is_none() {
            continue;
        }
        let r = callgrind_once(kind, tools, plan, valgrind, r1)
            .and_then(|a| callgrind_once(kind, tools, plan, valgrind, r2).map(|b| (a, b)));
        let (stat, detail) = match r {
            Ok(((ir1, p1), (ir2, p2))) if p2 > p1 => {
                let v = (ir2 - ir1) / (p2 - p1) as f64;
                log(&format!(
                    "callgrind {}: {ir1:.0} instructions for {p1} packets, {ir2:.0} for {p2}: {v:.0} per packet",
                    kind.key()
                ));
                (Stat::of("instructions/packet (user space)", &[v], ""), Some((ir1, p1, ir2, p2)))
            }
            Ok(((_, p1), (_, p2))) => {
                let why = format!("the faster run delivered no more packets ({p2}) than the slower ({p1})");
                log(&format!("callgrind {}: FAILED: {why}", kind.key()));
                (Stat::not_measured("instructions/packet (user space)", Status::Failed, &why), None)
            }
            Err(e) => {
                log(&format!("callgrind {}: FAILED: {e}", kind.key()));
                (Stat::not_measured("instructions/packet (user space)", Status::Failed, &e), None)
            }
        };
        let fig = Figure::new(stat.clone()).with(
            "runs",
            detail.map(|(a, p, b, q)| {
                serde_json::json!([{ "pps": r1, "instructions": a, "packets": p }, { "pps": r2, "instructions": b, "packets": q }])
            }),
        );
        sec.figures.push(format!("callgrind_{}_instructions_per_pkt", kind.key()), fig);
        stats.insert(kind.key(), stat);
    }
    if let (Some(a), Some(b)) = (stats.get("rtpmgrd"), stats.get("bare_loop")) {
        sec.ratios.push(Ratio::bounded(
            "callgrind rtpmgrd/bare_loop user instructions per packet",
            a,
            b,
            None,
            Bound::AtMost,
        ));
    }
    sec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callgrind_totals() {
        assert_eq!(parse_callgrind_total("events: Ir\nsummary: 301477\ntotals: 301477\n"), Some(301477.0));
        assert_eq!(parse_callgrind_total("totals: 12\n"), Some(12.0));
        assert_eq!(parse_callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn loads_of_the_issue() {
        let l = full_loads();
        let get = |n: &str| l.iter().find(|x| x.name == n).unwrap();
        assert_eq!(get("iptv64").streams, 64);
        assert_eq!(get("iptv256").streams, 256);
        assert!((get("iptv64").stream_pps - 949.85).abs() < 0.01);
        assert!((get("iptv150k").offered_pps() - 150_076.0).abs() < 10.0);
        assert_eq!((get("voip4000").streams, get("voip4000").stream_pps, get("voip4000").shape.len), (4000, 50.0, 172));
        assert_eq!(get("voip1000").offered_pps(), 50_000.0);
        let q = Plan::quick();
        assert!(q.loads.len() == 2 && q.repetitions == 1);
        assert!(Plan::full().repetitions >= 10);
    }
}
