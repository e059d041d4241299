// SPDX-License-Identifier: MIT
//! The benchmark's JSON document and its table.
//!
//! Schema `rtpmgr-bench/host/2`, in the shape ci/bench merges with the
//! guest half (`figures` by name, `ratios` as a list). Every key listed is
//! always present; `null` where a value does not apply.
//!
//! ```text
//! {
//!   "schema": "rtpmgr-bench/host/2",
//!   "where": str,                          one line: host, CPUs, pinning
//!   "mode": "full" | "quick",
//!   "elapsed_s": f64,
//!   "host": { "cpus": n, "kernel": str, "gstreamer": str|null (version),
//!             "pinning": { "generator_cpu": n, "relay_cpu": n } | null,
//!             "nice": n|null, "loadavg_at_start": "1 5 15 min",
//!             "loadavg_at_end": "1 5 15 min" },
//!   "loads": [str],                        the paced loads measured
//!   "packet": { "rtp_payload_bytes": 1316, "datagram_bytes": 1328,
//!               "relay_batch": 64, "relay_socket_buffer_bytes": n },
//!   "methods": { "saturation"|"paced"|"latency"|"callgrind": str },
//!   "figures": { NAME: Figure, ... },      in run order:
//!       sat_RELAY_pps, LOAD_RELAY_pps            packets/s delivered in the window
//!           + "offered_pps": Summary|null, "sent", "received", "lost" (whole
//!             runs, all repetitions), "lost_streams" (worst repetition),
//!             "input_drops" (relay input sockets, /proc/net/udp),
//!             "saturated_repetitions", "receiver_drops" (the receiver's
//!             socket: must be 0), "generator_send_errors",
//!             "generator_lag_ms_max", "relay_reported_drops" (rtpmgrd's
//!             socket + ring-full drops)|null, "foreign_cpu_percent",
//!             "disturbed_repetitions", "repeated_for_disturbance",
//!             "counters": "perf stat"|"/proc", "errors": [str]
//!       ..._cpu_ns_per_pkt                      ns of the relay's CPU per delivered packet
//!       ..._cpu_pct                             % of a core
//!       ..._syscalls_per_pkt                    system calls per packet (perf)
//!       ..._switches_per_pkt                    context switches per packet
//!       ..._cycles_per_pkt, ..._instructions_per_pkt   hardware counters (skipped
//!                                               where the machine has none)
//!       ..._lost                                packets lost per repetition
//!           RELAY: rtpmgrd, rtpmgrd_nogso, rtpmgrd_rtc, rtpmgrd_coalesce, bare_loop, gstreamer,
//!           gstreamer_tuned; LOAD: iptv64, iptv150k, iptv256, voip1000, voip4000
//!       latency_{rtpmgrd,bare_loop}_{p50,p99,p99_9}  us
//!       callgrind_RELAY_instructions_per_pkt   user-space instructions per packet
//!   "ratios": [Ratio],                     the issue's targets, and informational ones
//!   "targets": { "met": n, "missed": n, "skipped": n, "all_met": bool }
//! }
//!
//! Figure  = { "unit": str, "status": "ok"|"skipped"|"failed", "reason": str|null,
//!             "median", "min", "max", "mean": f64|null,
//!             "ci95": [low, high]|null (95 % CI of the mean, Student's t),
//!             "n": repetitions, "samples": [f64] in run order, + extras }
//! Summary = { "median", "min", "max", "mean", "ci95", "n", "samples" }
//! Ratio   = { "name": str, "value": median(numerator)/median(denominator)
//!             (or, for a check of one figure, its median)|null,
//!             "min", "max", "mean", "ci95", "n" (over the repetitions' own
//!             ratios, repetition k of both sides measured back to back),
//!             "target": f64|null, "bound": "at_least"|"at_most",
//!             "met": bool|null (null: no target, or not measured),
//!             "status": "ok"|"skipped"|"failed", "reason": str|null }
//! ```

use crate::stats::Summary;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt::Write as _;

pub const SCHEMA: &str = "rtpmgr-bench/host/2";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
    Failed,
}

/// One measured quantity over repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct Stat {
    pub unit: &'static str,
    pub status: Status,
    pub reason: Option<String>,
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// 95 % confidence interval of the mean (Student's t).
    pub ci95: Option<[f64; 2]>,
    pub n: usize,
    pub samples: Vec<f64>,
}

impl Stat {
    /// From the repetitions that worked; `failed` with `reason_if_none`
    /// when there are none.
    pub fn of(unit: &'static str, samples: &[f64], reason_if_none: &str) -> Stat {
        match Summary::of(samples) {
            Some(s) => Stat {
                unit,
                status: Status::Ok,
                reason: None,
                median: Some(s.median),
                min: Some(s.min),
                max: Some(s.max),
                mean: Some(s.mean),
                ci95: s.ci95,
                n: s.n,
                samples: s.samples,
            },
            None => Stat::not_measured(unit, Status::Failed, reason_if_none),
        }
    }

    pub fn not_measured(unit: &'static str, status: Status, reason: &str) -> Stat {
        Stat {
            unit,
            status,
            reason: Some(reason.to_string()),
            median: None,
            min: None,
            max: None,
            mean: None,
            ci95: None,
            n: 0,
            samples: Vec::new(),
        }
    }
}

/// A figure: a [`Stat`] and what else explains it.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    #[serde(flatten)]
    pub stat: Stat,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Figure {
    pub fn new(stat: Stat) -> Figure {
        Figure { stat, extra: Map::new() }
    }

    pub fn with(mut self, key: &str, value: impl Serialize) -> Figure {
        self.extra.insert(key.into(), serde_json::to_value(value).expect("figure detail serialises"));
        self
    }
}

/// Figures by name, serialised as a JSON object in the order they ran.
#[derive(Clone, Debug, Default)]
pub struct Figures(pub Vec<(String, Figure)>);

impl Figures {
    pub fn push(&mut self, name: impl Into<String>, f: Figure) {
        self.0.push((name.into(), f));
    }

    pub fn get(&self, name: &str) -> Option<&Figure> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }
}

impl Serialize for Figures {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Which side of its target a checked value must be on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// `value >= target` (a speed-up).
    AtLeast,
    /// `value <= target` (a cost).
    AtMost,
}

/// A ratio of two measurements of the same run (or, from [`Ratio::check`],
/// one figure) against an optional target.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub name: String,
    pub value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Mean and 95 % confidence interval of the repetitions' own ratios
    /// (repetition k of both sides, measured back to back).
    pub mean: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    pub n: usize,
    pub target: Option<f64>,
    pub bound: Bound,
    pub met: Option<bool>,
    pub status: Status,
    pub reason: Option<String>,
}

impl Ratio {
    fn empty(name: &str, target: Option<f64>, bound: Bound) -> Ratio {
        Ratio {
            name: name.into(),
            value: None,
            min: None,
            max: None,
            mean: None,
            ci95: None,
            n: 0,
            target,
            bound,
            met: None,
            status: Status::Ok,
            reason: None,
        }
    }

    fn judge(&mut self) {
        self.met = match (self.target, self.value) {
            (Some(t), Some(v)) => Some(match self.bound {
                Bound::AtLeast => v >= t,
                Bound::AtMost => v <= t,
            }),
            _ => None,
        };
    }

    /// `num / den` against a lower bound: see [`Ratio::bounded`].
    pub fn of(name: &str, num: &Stat, den: &Stat, target: Option<f64>) -> Ratio {
        Ratio::bounded(name, num, den, target, Bound::AtLeast)
    }

    /// One figure against a target (its median is the value).
    pub fn check(name: &str, fig: &Stat, target: f64, bound: Bound) -> Ratio {
        let mut r = Ratio::empty(name, Some(target), bound);
        if fig.status != Status::Ok {
            r.status = fig.status;
            r.reason = fig.reason.clone();
            return r;
        }
        r.value = fig.median;
        r.min = fig.min;
        r.max = fig.max;
        r.mean = fig.mean;
        r.ci95 = fig.ci95;
        r.n = fig.n;
        r.judge();
        r
    }

    /// `num / den`: the value from the medians; min, max, mean and the
    /// confidence interval from the repetitions paired by index (only
    /// pairs where both worked). Skipped when either side was skipped,
    /// failed when either has no median.
    pub fn bounded(name: &str, num: &Stat, den: &Stat, target: Option<f64>, bound: Bound) -> Ratio {
        let mut r = Ratio::empty(name, target, bound);
        for side in [num, den] {
            if side.status != Status::Ok {
                r.status = side.status;
                r.reason = side.reason.clone();
                return r;
            }
        }
        let (Some(a), Some(b)) = (num.median, den.median) else { unreachable!("ok stats have medians") };
        if b <= 0.0 {
            r.status = Status::Failed;
            r.reason = Some("denominator is zero".into());
            return r;
        }
        r.value = Some(a / b);
        let pairs: Vec<f64> =
            num.samples.iter().zip(&den.samples).filter(|(_, d)| **d > 0.0).map(|(n, d)| n / d).collect();
        if let Some(s) = Summary::of(&pairs) {
            r.min = Some(s.min);
            r.max = Some(s.max);
            r.mean = Some(s.mean);
            r.ci95 = s.ci95;
            r.n = s.n;
        }
        r.judge();
        r
    }
}

/// What one figure function returns: its figures, ratios and method.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub method: String,
    pub figures: Figures,
    pub ratios: Vec<Ratio>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Pinning {
    pub generator_cpu: usize,
    pub relay_cpu: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub cpus: usize,
    pub kernel: String,
    pub gstreamer: Option<String>,
    pub pinning: Option<Pinning>,
    pub nice: Option<i32>,
    /// /proc/loadavg (1, 5, 15 min) when the run began and ended: other
    /// work on the host makes every figure noisier (the benchmark's own
    /// load is in the second).
    pub loadavg_at_start: String,
    pub loadavg_at_end: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct PacketInfo {
    pub rtp_payload_bytes: usize,
    pub datagram_bytes: usize,
    pub relay_batch: usize,
    pub relay_socket_buffer_bytes: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Targets {
    pub met: usize,
    pub missed: usize,
    pub skipped: usize,
    pub all_met: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    #[serde(rename = "where")]
    pub where_: String,
    pub mode: &'static str,
    pub elapsed_s: f64,
    pub host: HostInfo,
    /// The paced loads measured.
    pub loads: Vec<&'static str>,
    pub packet: PacketInfo,
    pub methods: Map<String, Value>,
    pub figures: Figures,
    pub ratios: Vec<Ratio>,
    pub targets: Targets,
}

impl Report {
    /// Add a figure function's results.
    pub fn add(&mut self, name: &str, s: Section) {
        self.methods.insert(name.into(), Value::String(s.method));
        self.figures.0.extend(s.figures.0);
        self.ratios.extend(s.ratios);
    }

    /// Count the ratios that have a target: met, missed, or not measured
    /// (skipped or failed).
    pub fn tally_targets(&mut self) {
        let mut t = Targets::default();
        for r in self.ratios.iter().filter(|r| r.target.is_some()) {
            match r.met {
                Some(true) => t.met += 1,
                Some(false) => t.missed += 1,
                None => t.skipped += 1,
            }
        }
        t.all_met = t.missed == 0 && t.skipped == 0 && t.met > 0;
        self.targets = t;
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "rtpmgr host benchmark ({} mode, {:.0} s): {}", self.mode, self.elapsed_s, self.where_);
        let _ =
            writeln!(o, "{:<44} {:>12} {:>12} {:>12} {:>25}  unit", "figure", "median", "min", "max", "95% CI of mean");
        for (name, f) in &self.figures.0 {
            let s = &f.stat;
            if s.status == Status::Ok {
                let _ = writeln!(
                    o,
                    "{name:<44} {:>12} {:>12} {:>12} {:>25}  {}",
                    num(s.median),
                    num(s.min),
                    num(s.max),
                    ci(s.ci95, num),
                    s.unit
                );
            } else {
                let status = format!("{:?}", s.status).to_uppercase();
                let _ = writeln!(o, "{name:<44} {status:>12}  {}", s.reason.as_deref().unwrap_or(""));
            }
        }
        let _ = writeln!(
            o,
            "\n{:<44} {:>12} {:>12} {:>12} {:>25}  target",
            "ratio or check (same run)", "value", "min", "max", "95% CI (paired)"
        );
        for r in &self.ratios {
            let op = match r.bound {
                Bound::AtLeast => ">=",
                Bound::AtMost => "<=",
            };
            let verdict = match (r.target, r.met) {
                (Some(t), Some(m)) => format!("{op} {t:.3}: {}", if m { "met" } else { "MISSED" }),
                (Some(t), None) => format!("{op} {t:.3}: {}", format!("{:?}", r.status).to_lowercase()),
                (None, _) => "-".into(),
            };
            let _ = writeln!(
                o,
                "{:<44} {:>12} {:>12} {:>12} {:>25}  {verdict}",
                r.name,
                num3(r.value),
                num3(r.min),
                num3(r.max),
                ci(r.ci95, num3)
            );
        }
        let t = &self.targets;
        let _ = writeln!(o, "\ntargets: {} met, {} missed, {} skipped", t.met, t.missed, t.skipped);
        o
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn ci(c: Option<[f64; 2]>, f: impl Fn(Option<f64>) -> String + Copy) -> String {
    match c {
        Some([lo, hi]) => format!("[{}, {}]", f(Some(lo)), f(Some(hi))),
        None => "-".into(),
    }
}

fn num3(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(samples: &[f64]) -> Stat {
        Stat::of("packets/s", samples, "none")
    }

    #[test]
    fn ratio_from_medians_and_pairs() {
        let a = stat(&[90.0, 100.0, 95.0]);
        let b = stat(&[100.0, 100.0, 100.0]);
        let r = Ratio::of("a/b", &a, &b, Some(0.9));
        assert_eq!(r.value, Some(0.95));
        assert_eq!((r.min, r.max), (Some(0.9), Some(1.0)));
        assert_eq!(r.met, Some(true));
        let r = Ratio::of("a/b", &a, &b, Some(0.96));
        assert_eq!(r.met, Some(false));
        let r = Ratio::of("a/b", &a, &b, None);
        assert_eq!(r.met, None);
        assert_eq!(r.status, Status::Ok);
    }

    #[test]
    fn upper_bounds_and_checks() {
        let cost = stat(&[110.0, 120.0, 100.0]);
        let base = stat(&[100.0, 100.0, 100.0]);
        let r = Ratio::bounded("cost", &cost, &base, Some(1.1), Bound::AtMost);
        assert_eq!((r.value, r.met), (Some(1.1), Some(true)));
        assert_eq!(r.n, 3);
        let [lo, hi] = r.ci95.unwrap();
        assert!(lo < 1.1 && hi > 1.1);
        let r = Ratio::bounded("cost", &cost, &base, Some(1.05), Bound::AtMost);
        assert_eq!(r.met, Some(false));
        let r = Ratio::check("syscalls", &stat(&[0.3, 0.2, 0.26]), 0.25, Bound::AtMost);
        assert_eq!((r.value, r.met), (Some(0.26), Some(false)));
        assert!(sample_report().table().contains("95% CI"));
    }

    #[test]
    fn ratio_with_a_skipped_side_is_skipped_not_failed() {
        let a = stat(&[1.0]);
        let g = Stat::not_measured("packets/s", Status::Skipped, "no GStreamer");
        let r = Ratio::of("a/g", &a, &g, Some(2.0));
        assert_eq!(r.status, Status::Skipped);
        assert_eq!(r.met, None);
        assert_eq!(r.value, None);
        assert_eq!(r.reason.as_deref(), Some("no GStreamer"));
        let f = stat(&[]);
        assert_eq!(f.status, Status::Failed);
        assert_eq!(Ratio::of("a/f", &a, &f, Some(2.0)).status, Status::Failed);
    }

    fn sample_report() -> Report {
        let rtpmgrd = stat(&[95.0, 96.0, 97.0, 94.0, 95.5]);
        let bare = stat(&[100.0; 5]);
        let gst = Stat::not_measured("packets/s", Status::Skipped, "gst-launch-1.0 not found");
        let mut sec = Section { method: "saturation".into(), ..Default::default() };
        sec.ratios.push(Ratio::of("rtpmgrd/bare_loop", &rtpmgrd, &bare, Some(0.9)));
        sec.ratios.push(Ratio::of("rtpmgrd/gstreamer", &rtpmgrd, &gst, Some(2.0)));
        sec.ratios.push(Ratio::of("rtpmgrd/bare_loop p50", &rtpmgrd, &bare, None));
        sec.figures.push("throughput_rtpmgrd", Figure::new(rtpmgrd).with("offered_pps", Summary::of(&[200.0])));
        sec.figures.push("throughput_bare_loop", Figure::new(bare).with("input_drops", 10u64));
        sec.figures.push("throughput_gstreamer", Figure::new(gst));
        let mut r = Report {
            schema: SCHEMA,
            where_: "host".into(),
            mode: "quick",
            elapsed_s: 1.0,
            host: HostInfo {
                cpus: 2,
                kernel: "6.1".into(),
                gstreamer: None,
                pinning: None,
                nice: None,
                loadavg_at_start: "0.00 0.00 0.00".into(),
                loadavg_at_end: "0.00 0.00 0.00".into(),
            },
            loads: vec![],
            packet: PacketInfo {
                rtp_payload_bytes: 1316,
                datagram_bytes: 1328,
                relay_batch: 64,
                relay_socket_buffer_bytes: 4 << 20,
            },
            methods: Map::new(),
            figures: Figures::default(),
            ratios: Vec::new(),
            targets: Targets::default(),
        };
        r.add("throughput", sec);
        r.tally_targets();
        r
    }

    #[test]
    fn json_shape() {
        let r = sample_report();
        let text = serde_json::to_string_pretty(&r).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["where"], "host");
        assert_eq!(v["methods"]["throughput"], "saturation");
        // Figures keep their run order in the object.
        let a = text.find("\"throughput_rtpmgrd\"").unwrap();
        let b = text.find("\"throughput_bare_loop\"").unwrap();
        let c = text.find("\"throughput_gstreamer\"").unwrap();
        assert!(a < b && b < c);
        // Stat fields and extras side by side in each figure.
        let rt = &v["figures"]["throughput_rtpmgrd"];
        assert_eq!(rt["unit"], "packets/s");
        assert_eq!(rt["median"], 95.5);
        assert_eq!(rt["min"], 94.0);
        assert_eq!(rt["max"], 97.0);
        assert_eq!(rt["status"], "ok");
        assert_eq!(rt["samples"].as_array().unwrap().len(), 5);
        assert_eq!(rt["offered_pps"]["median"], 200.0);
        assert_eq!(v["figures"]["throughput_bare_loop"]["input_drops"], 10);
        let g = &v["figures"]["throughput_gstreamer"];
        assert_eq!(g["status"], "skipped");
        assert!(g["median"].is_null());
        let ratios = v["ratios"].as_array().unwrap();
        assert_eq!(ratios[0]["name"], "rtpmgrd/bare_loop");
        assert_eq!(ratios[0]["target"], 0.9);
        assert_eq!(ratios[0]["met"], true);
        assert_eq!(ratios[1]["status"], "skipped");
        assert!(ratios[1]["met"].is_null());
        // An informational ratio counts toward no target.
        assert!(ratios[2]["target"].is_null());
        assert_eq!(v["targets"]["met"], 1);
        assert_eq!(v["targets"]["missed"], 0);
        assert_eq!(v["targets"]["skipped"], 1);
        assert_eq!(v["targets"]["all_met"], false);
    }

    #[test]
    fn a_missed_target_is_counted_and_shown() {
        let mut r = sample_report();
        let slow = stat(&[50.0]);
        r.ratios.push(Ratio::of("slow/bare", &slow, &stat(&[100.0]), Some(0.9)));
        r.tally_targets();
        assert_eq!((r.targets.met, r.targets.missed), (1, 1));
        assert!(r.table().contains(">= 0.900: MISSED"));
    }

    #[test]
    fn table_names_every_figure_and_verdict() {
        let t = sample_report().table();
        assert!(t.contains("throughput_rtpmgrd"), "{t}");
        assert!(t.contains("95.5         94.0         97.0              [94.1, 96.9]  packets/s"), "{t}");
        assert!(t.contains(">= 0.900: met"), "{t}");
        assert!(t.contains(">= 2.000: skipped"), "{t}");
        assert!(t.contains("SKIPPED  gst-launch-1.0 not found"), "{t}");
        assert!(t.contains("targets: 1 met, 0 missed, 1 skipped"), "{t}");
    }
}
