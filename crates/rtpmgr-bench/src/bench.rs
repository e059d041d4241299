// SPDX-License-Identifier: MIT
//! The three figures: how each is measured.

use crate::load::{free_ports, Generator, Receiver, RxReport, RxShared};
use crate::packet::{now_ns, PACKET, PAYLOAD};
use crate::procfs;
use crate::rate::packets_per_s;
use crate::relay::{Relay, RelayKind, Tools};
use crate::report::{Figure, Ratio, Section, Stat, Status, Trial};
use crate::stats::{percentile, Summary};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// The stream limit of one rtpmgrd session (`rtpmgr_abi::MAX_STREAMS`).
pub const MAX_STREAMS: usize = 64;

/// How long a relay may take from start to passing the first probe.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the last packets to come through before the receiver stops.
const DRAIN: Duration = Duration::from_millis(200);

/// What to run and how long.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    pub repetitions: usize,
    pub throughput_warmup: Duration,
    pub throughput_window: Duration,
    pub latency_rate_pps: f64,
    pub latency_warmup: Duration,
    pub latency_window: Duration,
    pub stream_bitrate: f64,
    pub capacity_start: usize,
    pub capacity_max: usize,
    pub capacity_search: Duration,
    pub capacity_confirm: Duration,
    pub capacity_confirm_reps: usize,
    /// (generator CPU, relay CPU)
    pub pin: Option<(usize, usize)>,
    /// Nice level of the relays (the generator sets its own).
    pub nice: Option<i32>,
    /// Attempts at a disturbed repetition (1: never repeat).
    pub attempts: usize,
    /// Repeats each figure may spend, throughput and latency (capacity,
    /// whose runs are long, gets a third); bounds the time on a busy host.
    pub repeat_budget: usize,
    repeats_left: Cell<usize>,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            repetitions: 5,
            throughput_warmup: Duration::from_millis(500),
            throughput_window: Duration::from_secs(3),
            latency_rate_pps: 4000.0,
            latency_warmup: Duration::from_millis(200),
            latency_window: Duration::from_secs(3),
            stream_bitrate: 10e6,
            capacity_start: 8,
            capacity_max: MAX_STREAMS,
            capacity_search: Duration::from_secs(5),
            capacity_confirm: Duration::from_secs(30),
            capacity_confirm_reps: 5,
            pin: None,
            nice: None,
            attempts: 3,
            repeat_budget: 6,
            repeats_left: Cell::new(0),
        }
    }

    /// About 20 s: enough to show every path works and the JSON is sound.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            repetitions: 3,
            throughput_warmup: Duration::from_millis(200),
            throughput_window: Duration::from_millis(500),
            latency_warmup: Duration::from_millis(100),
            latency_window: Duration::from_millis(500),
            capacity_start: 2,
            capacity_max: 4,
            capacity_search: Duration::from_secs(1),
            capacity_confirm: Duration::from_secs(2),
            capacity_confirm_reps: 1,
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

    /// Foreign CPU since `self`, % of the wall time: on the relay's CPU,
    /// and the larger of both CPUs when `both`.
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

/// A percentage for the log; "-" for not measured.
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
        let e = |e: std::io::Error| e.to_string();
        let receiver = Receiver::bind().map_err(e)?;
        let dest = receiver.addr().map_err(e)?;
        let in_ports = free_ports(streams).map_err(e)?;
        let mut relay = Relay::start(kind, tools, &in_ports, dest, plan.relay_cpu(), plan.nice).map_err(e)?;
        let shared = RxShared::new(streams);
        let rx = Some(receiver.spawn(Arc::clone(&shared), latency));
        let mut gen = Generator::new(in_ports.iter().map(|&p| loopback(p)).collect()).map_err(e)?;
        let mut rig_err = None;
        if let Err(err) = gen.probe(&shared, START_TIMEOUT, &mut || relay.check_alive()) {
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
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(h) = self.rx.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------- figure 1

struct TpSample {
    /// Other work on the relay's CPU in the window, % (NaN: not measured).
    foreign_percent: f64,
    delivered_pps: f64,
    offered_pps: f64,
    cpu_percent: f64,
    input_drops: u64,
    receiver_drops: u64,
}

fn drops(port: u16) -> u64 {
    procfs::udp_drops(port).ok().flatten().unwrap_or(0)
}

fn throughput_once(kind: RelayKind, tools: &Tools, plan: &Plan) -> Result<TpSample, String> {
    let mut rig = Rig::start(kind, tools, plan, 1, false)?;
    let start = now_ns();
    let ws = start + plan.throughput_warmup.as_nanos() as u64;
    let we = ws + plan.throughput_window.as_nanos() as u64;
    rig.shared.window_start.store(ws, Relaxed);
    rig.shared.window_end.store(we, Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut gen = std::mem::replace(&mut rig.gen, Generator::new(vec![]).map_err(|e| e.to_string())?);
    let blaster = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::Builder::new()
            .name("bench-tx".into())
            .spawn(move || {
                gen.blast(&stop, &sent);
                gen
            })
            .map_err(|e| e.to_string())?
    };
    let snapshot = |rig: &Rig| {
        let m = Meter::read(plan, &rig.relay);
        (now_ns(), sent.load(Relaxed), drops(rig.in_ports[0]), drops(rig.rx_port), rig.relay.cpu_seconds().ok(), m)
    };
    sleep_until(ws);
    let a = snapshot(&rig);
    sleep_until(we);
    let b = snapshot(&rig);
    stop.store(true, Relaxed);
    rig.gen = blaster.join().map_err(|_| "generator thread panicked".to_string())?;
    let rx = rig.finish();
    rig.relay.check_alive()?;
    let secs = (b.0 - a.0) as f64 / 1e9;
    Ok(TpSample {
        foreign_percent: match (a.5, b.5) {
            (Some(x), Some(y)) => x.foreign_since(&y, false),
            _ => f64::NAN,
        },
        delivered_pps: rx.in_window as f64 / plan.throughput_window.as_secs_f64(),
        offered_pps: (b.1 - a.1) as f64 / secs,
        cpu_percent: match (a.4, b.4) {
            (Some(x), Some(y)) => (y - x) / secs * 100.0,
            _ => f64::NAN,
        },
        input_drops: b.2.saturating_sub(a.2),
        receiver_drops: b.3.saturating_sub(a.3),
    })
}

pub fn throughput(tools: &Tools, plan: &Plan, log: &mut dyn FnMut(&str)) -> Section {
    plan.budget(plan.repeat_budget);
    let mut kinds = vec![RelayKind::Rtpmgrd, RelayKind::Bare];
    let gst_missing = tools.gst_launch.is_none();
    if !gst_missing {
        kinds.push(RelayKind::Gstreamer);
    }
    let mut samples: BTreeMap<&'static str, Vec<TpSample>> = BTreeMap::new();
    let mut errors: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    // Interleaved: repetition k of every relay runs back to back, so a
    // change of background load hits all of them alike.
    let mut retries: BTreeMap<&'static str, usize> = BTreeMap::new();
    for rep in 0..plan.repetitions {
        for &kind in &kinds {
            for attempt in 1.. {
                match throughput_once(kind, tools, plan) {
                    Ok(s) => {
                        let again = s.foreign_percent > DISTURBED_PERCENT && plan.repeat(attempt);
                        log(&format!(
                            "throughput {} rep {}: {:.0} packets/s delivered, {:.0} offered, relay CPU {:.0} %, \
                             {} input drops, {} receiver drops, other work on the relay CPU {}{}",
                            kind.key(),
                            rep + 1,
                            s.delivered_pps,
                            s.offered_pps,
                            s.cpu_percent,
                            s.input_drops,
                            s.receiver_drops,
                            pct(s.foreign_percent),
                            if again { ": disturbed, repeating" } else { "" }
                        ));
                        if again {
                            *retries.entry(kind.key()).or_default() += 1;
                            continue;
                        }
                        samples.entry(kind.key()).or_default().push(s);
                    }
                    Err(e) => {
                        log(&format!("throughput {} rep {}: FAILED: {e}", kind.key(), rep + 1));
                        errors.entry(kind.key()).or_default().push(e);
                    }
                }
                break;
            }
        }
    }
    let mut sec = Section::default();
    let (mut delivered, mut cpu, mut per_cpu) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for kind in [RelayKind::Rtpmgrd, RelayKind::Bare, RelayKind::Gstreamer] {
        let key = kind.key();
        let s = samples.remove(key).unwrap_or_default();
        let errs = errors.remove(key).unwrap_or_default();
        let (d, c, e) = if kind == RelayKind::Gstreamer && gst_missing {
            let why = "GStreamer (gst-launch-1.0 with udpsrc and udpsink) is not available";
            let skip = |unit| Stat::not_measured(unit, Status::Skipped, why);
            (skip("packets/s"), skip("% of a core"), skip("packets/CPU-s"))
        } else {
            let reason = errs.first().cloned().unwrap_or_else(|| "no repetition completed".into());
            let pick = |f: fn(&TpSample) -> f64| s.iter().map(f).filter(|v| v.is_finite()).collect::<Vec<_>>();
            (
                Stat::of("packets/s", &pick(|x| x.delivered_pps), &reason),
                Stat::of("% of a core", &pick(|x| x.cpu_percent), &reason),
                Stat::of("packets/CPU-s", &pick(|x| x.delivered_pps / (x.cpu_percent / 100.0)), &reason),
            )
        };
        let main = Figure::new(d.clone())
            .with("offered_pps", Summary::of(&s.iter().map(|x| x.offered_pps).collect::<Vec<_>>()))
            .with("input_drops", s.iter().map(|x| x.input_drops).sum::<u64>())
            .with("saturated_repetitions", s.iter().filter(|x| x.input_drops > 0).count())
            .with("receiver_drops", s.iter().map(|x| x.receiver_drops).sum::<u64>())
            .with("foreign_cpu_percent", Summary::of(&s.iter().map(|x| x.foreign_percent).collect::<Vec<_>>()))
            .with("disturbed_repetitions", s.iter().filter(|x| x.foreign_percent > DISTURBED_PERCENT).count())
            .with("repeated_for_disturbance", retries.get(key).copied().unwrap_or(0))
            .with("errors", &errs);
        sec.figures.push(format!("throughput_{key}"), main);
        delivered.insert(key, d);
        cpu.insert(key, c);
        per_cpu.insert(key, e);
    }
    for key in ["rtpmgrd", "bare_loop", "gstreamer"] {
        sec.figures.push(format!("throughput_{key}_cpu"), Figure::new(cpu[key].clone()));
    }
    for key in ["rtpmgrd", "bare_loop", "gstreamer"] {
        sec.figures.push(format!("throughput_{key}_per_cpu"), Figure::new(per_cpu[key].clone()));
    }
    sec.ratios = vec![
        Ratio::of("rtpmgrd/bare_loop", &delivered["rtpmgrd"], &delivered["bare_loop"], Some(0.9)),
        Ratio::of("rtpmgrd/gstreamer", &delivered["rtpmgrd"], &delivered["gstreamer"], Some(2.0)),
        Ratio::of("rtpmgrd/bare_loop per CPU-s", &per_cpu["rtpmgrd"], &per_cpu["bare_loop"], None),
        Ratio::of("rtpmgrd/gstreamer per CPU-s", &per_cpu["rtpmgrd"], &per_cpu["gstreamer"], None),
    ];
    let pin = match plan.pin {
        Some((g, r)) => format!("The relay runs alone on CPU {r}; generator and receiver share CPU {g}. "),
        None => "No CPU pinning. ".into(),
    };
    sec.method = format!(
        "Saturation. {pin}One generator thread sends {PACKET}-byte RTP datagrams ({PAYLOAD}-byte payload) to the \
         relay as fast as the socket takes them, with sendmmsg of UDP GSO buffers ({} x {} datagrams per call, \
         split by the kernel so the relay receives single datagrams; plain sendmmsg of 64 without GSO): one \
         thread then offers several times what any of the relays carries, which the relay's input-socket drops \
         in /proc/net/udp show (input_drops; saturated_repetitions counts the windows that had them). The \
         receiver counts the datagrams arriving in a {:.1} s window that opens {:.1} s after the start; \
         delivered packets/s = that count / window. Each repetition starts a fresh relay; repetition k of the \
         relays runs back to back (ratio min/max pair them). Every relay gets a {} MiB socket buffer. _cpu: the \
         relay's utime+stime (/proc/<pid>/stat) over the window; _per_cpu: delivered packets per second of that \
         CPU time. A repetition in which other work took more than {DISTURBED_PERCENT:.0} % of the relay's CPU \
         (/proc/stat busy minus the relay) {}.",
        crate::load::BLAST_MSGS,
        crate::load::GSO_SEGMENTS,
        plan.throughput_window.as_secs_f64(),
        plan.throughput_warmup.as_secs_f64(),
        crate::relay::RELAY_SOCKET_BUFFER >> 20,
        repeat_rule(plan)
    );
    sec
}

// ---------------------------------------------------------------- figure 2

fn capacity_trial(tools: &Tools, plan: &Plan, streams: usize, dur: Duration, phase: &'static str) -> Trial {
    let mut t = Trial { phase, streams, seconds: dur.as_secs_f64(), ..Default::default() };
    let mut rig = match Rig::start(RelayKind::Rtpmgrd, tools, plan, streams, false) {
        Ok(r) => r,
        Err(e) => {
            t.error = Some(e);
            return t;
        }
    };
    let pps = packets_per_s(plan.stream_bitrate, PAYLOAD) * streams as f64;
    let m0 = Meter::read(plan, &rig.relay);
    let cpu0 = rig.relay.cpu_seconds().ok();
    let t0 = now_ns();
    let lag = rig.gen.paced(pps, dur);
    let t1 = now_ns();
    let cpu1 = rig.relay.cpu_seconds().ok();
    if let (Some(a), Some(b)) = (m0, Meter::read(plan, &rig.relay)) {
        t.foreign_cpu_percent = Some(a.foreign_since(&b, true));
    }
    let rx = rig.finish();
    let status = rig.relay.status();
    if let Err(e) = rig.relay.check_alive() {
        t.error = Some(e);
        return t;
    }
    t.generator_lag_ms = lag as f64 / 1e6;
    t.sent = rig.gen.sent.iter().sum();
    t.received = rx.data;
    t.lost_streams = rig.gen.sent.iter().zip(&rx.per_stream).filter(|(s, r)| s != r).count();
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        t.cpu_percent = Some((b - a) / ((t1 - t0) as f64 / 1e9) * 100.0);
    }
    match status {
        Ok(s) => {
            t.rtpmgrd_lost = Some(s.streams.iter().map(|x| x.lost).sum());
            t.rtpmgrd_ring_drops = Some(s.streams.iter().map(|x| x.socket_drops + x.ring_full_drops).sum());
        }
        Err(e) => t.error = Some(format!("rtpmgrd status: {e}")),
    }
    t.passed = t.error.is_none()
        && t.sent > 0
        && t.lost_streams == 0
        && t.received == t.sent
        && t.rtpmgrd_ring_drops == Some(0);
    t
}

/// The largest count in 1..=`max` that `passes`, taking passing as
/// monotone (fewer streams never fail where more pass): doubling from
/// `start` until a failure or `max`, then bisection between the last pass
/// and the first failure. 0 when even 1 fails.
pub fn search_capacity(start: usize, max: usize, mut passes: impl FnMut(usize) -> bool) -> usize {
    let max = max.max(1);
    let (mut good, mut n) = (0, start.clamp(1, max));
    let bad = loop {
        if !passes(n) {
            break n;
        }
        good = n;
        if n == max {
            return good;
        }
        n = (n * 2).min(max);
    };
    let mut bad = bad;
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        if passes(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

/// Confirm `n` by `reps` runs that all pass (stopping at the first that
/// fails); after a failure step down by an eighth (at least 1) and confirm
/// again, `step_downs` times at most. The confirmed count, or `None`.
pub fn confirm_capacity(
    mut n: usize,
    reps: usize,
    step_downs: usize,
    mut passes: impl FnMut(usize) -> bool,
) -> Option<usize> {
    for _ in 0..=step_downs {
        if n == 0 {
            return None;
        }
        if (0..reps).all(|_| passes(n)) {
            return Some(n);
        }
        n -= (n / 8).max(1);
    }
    None
}

pub fn capacity(tools: &Tools, plan: &Plan, log: &mut dyn FnMut(&str)) -> Section {
    plan.budget(plan.repeat_budget / 3);
    let max = plan.capacity_max.clamp(1, MAX_STREAMS);
    let mut trials: Vec<Trial> = Vec::new();
    // A run that lost packets while other work took the CPUs is repeated
    // (see Plan::repeat): the loss may not be rtpmgrd's.
    let mut run = |n: usize, dur: Duration, phase: &'static str, trials: &mut Vec<Trial>| -> bool {
        for attempt in 1.. {
            let t = capacity_trial(tools, plan, n, dur, phase);
            let disturbed = t.foreign_cpu_percent.is_some_and(|f| f > DISTURBED_PERCENT);
            let again = !t.passed && disturbed && plan.repeat(attempt);
            log(&format!(
                "capacity {phase} {n} streams x {:.0} s: {} (sent {}, received {}, streams with loss {}, CPU {}, \
                 generator lag {:.1} ms, other work {}{}){}",
                dur.as_secs_f64(),
                if t.passed { "zero loss" } else { "FAILED" },
                t.sent,
                t.received,
                t.lost_streams,
                t.cpu_percent.map_or("-".into(), |c| format!("{c:.1} %")),
                t.generator_lag_ms,
                t.foreign_cpu_percent.map_or("-".into(), |c| format!("{c:.0} %")),
                t.error.as_deref().map_or(String::new(), |e| format!(", {e}")),
                if again { ": disturbed, repeating" } else { "" }
            ));
            let ok = t.passed;
            trials.push(t);
            if !again {
                return ok;
            }
        }
        unreachable!("the loop returns")
    };
    let found = search_capacity(plan.capacity_start, max, |n| run(n, plan.capacity_search, "search", &mut trials));
    let result = confirm_capacity(found, plan.capacity_confirm_reps, 2, |n| {
        run(n, plan.capacity_confirm, "confirm", &mut trials)
    });
    let (confirmed, good) = (result.is_some(), result.unwrap_or(0));
    let confirming: Vec<usize> = (0..trials.len())
        .filter(|&i| trials[i].phase == "confirm" && trials[i].streams == good && trials[i].passed)
        .collect();
    let limited_by = match (confirmed, good) {
        (false, _) => "failed",
        (true, g) if g == MAX_STREAMS => "max_streams",
        (true, g) if g == max => "search_cap",
        _ => "loss",
    };
    let pick =
        |f: &dyn Fn(&Trial) -> Option<f64>| -> Vec<f64> { confirming.iter().filter_map(|&i| f(&trials[i])).collect() };
    let reason = if confirmed { "no CPU figures" } else { "no stream count was carried without loss" };
    let count = Stat::of("streams", &pick(&|t| Some(t.streams as f64)), reason);
    let cpu_total = Stat::of("% of a core", &pick(&|t| t.cpu_percent), reason);
    let cpu_stream = Stat::of("% of a core", &pick(&|t| t.cpu_percent.map(|c| c / t.streams as f64)), reason);
    let cpu_pkt =
        Stat::of("us", &pick(&|t| t.cpu_percent.map(|c| c / 100.0 * t.seconds * 1e6 / t.sent.max(1) as f64)), reason);
    let pin = match plan.pin {
        Some((g, r)) => format!("rtpmgrd runs on CPU {r} only, generator and receiver on CPU {g}. "),
        None => String::new(),
    };
    let method = format!(
        "{pin}N relay streams in one rtpmgrd (sim backend, loopback media port), each fed a paced {:.0} Mbit/s \
         RTP stream ({:.1} packets/s of {PAYLOAD}-byte payloads; the streams evenly staggered) from one \
         generator and all delivered to one receiver, which counts per stream (SSRC). A run passes with every \
         packet of every stream delivered and rtpmgrd reporting no socket drops. N doubles from {} up to {max} \
         in {:.0} s runs, then bisects between the last passing and first failing count; the answer is then \
         confirmed by {} runs of {:.0} s each (after a loss it steps down by 1/8 and confirms again, twice at \
         most). CPU = utime + stime of rtpmgrd from /proc/<pid>/stat over each confirming run (clock ticks, \
         1/{} s), divided by its wall time (and by N per stream, by the packets per packet). A run that lost \
         packets while other work took more than {DISTURBED_PERCENT:.0} % of a CPU {}.",
        plan.stream_bitrate / 1e6,
        packets_per_s(plan.stream_bitrate, PAYLOAD),
        plan.capacity_start.clamp(1, max),
        plan.capacity_search.as_secs_f64(),
        plan.capacity_confirm_reps,
        plan.capacity_confirm.as_secs_f64(),
        procfs::clock_ticks_per_s(),
        repeat_rule(plan)
    );
    let mut sec = Section { method, ..Default::default() };
    let streams = Figure::new(count)
        .with("limited_by", limited_by)
        .with("confirmed", confirmed)
        .with("search_limit", max)
        .with("stream_bitrate_bps", plan.stream_bitrate)
        .with("stream_pps", packets_per_s(plan.stream_bitrate, PAYLOAD))
        .with("seconds", plan.capacity_confirm.as_secs_f64())
        .with("trials", &trials);
    sec.figures.push("capacity_streams", streams);
    sec.figures.push("capacity_cpu_per_stream", Figure::new(cpu_stream));
    sec.figures.push("capacity_cpu_total", Figure::new(cpu_total));
    sec.figures.push("capacity_cpu_per_packet", Figure::new(cpu_pkt));
    sec
}

// ---------------------------------------------------------------- figure 3

struct LatSample {
    foreign_percent: f64,
    p50: f64,
    p99: f64,
    p99_9: f64,
    samples: usize,
    lost: u64,
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
    let mut samples: BTreeMap<&'static str, Vec<LatSample>> = BTreeMap::new();
    let mut errors: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut retries: BTreeMap<&'static str, usize> = BTreeMap::new();
    for rep in 0..plan.repetitions {
        for kind in kinds {
            for attempt in 1.. {
                match latency_once(kind, tools, plan) {
                    Ok(s) => {
                        let again = s.foreign_percent > DISTURBED_PERCENT && plan.repeat(attempt);
                        log(&format!(
                            "latency {} rep {}: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us ({} samples, {} lost, \
                             other work {}){}",
                            kind.key(),
                            rep + 1,
                            s.p50,
                            s.p99,
                            s.p99_9,
                            s.samples,
                            s.lost,
                            pct(s.foreign_percent),
                            if again { ": disturbed, repeating" } else { "" }
                        ));
                        if again {
                            *retries.entry(kind.key()).or_default() += 1;
                            continue;
                        }
                        samples.entry(kind.key()).or_default().push(s);
                    }
                    Err(e) => {
                        log(&format!("latency {} rep {}: FAILED: {e}", kind.key(), rep + 1));
                        errors.entry(kind.key()).or_default().push(e);
                    }
                }
                break;
            }
        }
    }
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
        Ratio::of("latency p50 rtpmgrd/bare_loop", &p["rtpmgrd"].0, &p["bare_loop"].0, None),
        Ratio::of("latency p99 rtpmgrd/bare_loop", &p["rtpmgrd"].1, &p["bare_loop"].1, None),
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
         over the packets sent in a {:.1} s window after {:.1} s of warm-up; median/min/max over the \
         repetitions. A repetition in which other work took more than {DISTURBED_PERCENT:.0} % of either CPU \
         {}.{pin}",
        plan.latency_rate_pps,
        plan.latency_window.as_secs_f64(),
        plan.latency_warmup.as_secs_f64(),
        repeat_rule(plan)
    );
    sec
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `search_capacity` against a relay that carries `limit` streams.
    fn search(start: usize, max: usize, limit: usize) -> (usize, Vec<usize>) {
        let mut tried = Vec::new();
        let got = search_capacity(start, max, |n| {
            tried.push(n);
            n <= limit
        });
        (got, tried)
    }

    #[test]
    fn search_doubles_then_bisects() {
        let (got, tried) = search(8, 64, 37);
        assert_eq!(got, 37);
        assert_eq!(tried, vec![8, 16, 32, 64, 48, 40, 36, 38, 37]);
    }

    #[test]
    fn search_stops_at_the_limit_when_everything_passes() {
        assert_eq!(search(8, 64, 1000), (64, vec![8, 16, 32, 64]));
        // A start above the limit is clamped, a limit that is no power of
        // two is still tried.
        assert_eq!(search(100, 48, 1000), (48, vec![48]));
        assert_eq!(search(8, 20, 1000), (20, vec![8, 16, 20]));
    }

    #[test]
    fn search_below_the_start_and_nothing_at_all() {
        assert_eq!(search(8, 64, 5), (5, vec![8, 4, 6, 5]));
        assert_eq!(search(8, 64, 0), (0, vec![8, 4, 2, 1]));
        assert_eq!(search(1, 1, 1), (1, vec![1]));
    }

    #[test]
    fn confirmation_steps_down_after_a_loss() {
        // Passes at 64 only sometimes: the second confirming run fails.
        let mut runs = Vec::new();
        let mut count = 0;
        let got = confirm_capacity(64, 5, 2, |n| {
            runs.push(n);
            count += 1;
            n <= 56 || count != 2
        });
        assert_eq!(got, Some(56));
        assert_eq!(runs, vec![64, 64, 56, 56, 56, 56, 56]);
    }

    #[test]
    fn confirmation_gives_up() {
        let mut runs = Vec::new();
        assert_eq!(
            confirm_capacity(8, 3, 2, |n| {
                runs.push(n);
                false
            }),
            None
        );
        // 8, then 8 - 1 = 7, then 7 - 1 = 6; each fails at its first run.
        assert_eq!(runs, vec![8, 7, 6]);
        assert_eq!(confirm_capacity(0, 3, 2, |_| true), None);
        assert_eq!(confirm_capacity(4, 1, 0, |_| true), Some(4));
    }
}
