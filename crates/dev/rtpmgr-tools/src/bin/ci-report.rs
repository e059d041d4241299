// SPDX-License-Identifier: MIT
//! `ci-report`: the reports the ci/ scripts print from the JSON their runs
//! write, and the JSON documents they merge. Keys keep the order they have
//! in the input, so tables list figures in the order the benchmarks wrote
//! them and rewritten documents keep their layout.

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::process::ExitCode;

const USAGE: &str = "\
usage:
  ci-report bench DIR
  ci-report soak DIR SEED GUEST_OK LOG
  ci-report demo RECV.json STATUS.json COUNT
  ci-report packets BITRATE SECONDS
  ci-report get [--nonempty] FILE|- KEY...

bench:   merges DIR/guest.json and DIR/host.json (those that exist) into
         DIR/results.json, fails unless the guest's kernel data plane
         comparison is complete, prints the figures and ratios (ci/bench).
soak:    prints the soak's samples, streams and memory bounds from
         DIR/guest.json, writes DIR/results.json with \"result\" added; fails
         unless the soak passed and GUEST_OK is 1 (ci/soak).
demo:    the demo's summary from the host receiver's and rtpmgrctl's JSON;
         fails unless all COUNT packets arrived intact (ci/demo).
packets: RTP packets (1316-byte payloads) for SECONDS at BITRATE (suffixes
         k, M, G), at least 1.
get:     the value at KEY... (object keys, array indices) in a JSON
         document (FILE, or - for stdin); strings bare, anything else as
         JSON; fails if it is absent, or with --nonempty null or empty.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        ["bench", dir] => bench(dir),
        ["soak", dir, seed, guest_ok, log] => soak(dir, seed, *guest_ok == "1", log),
        ["demo", recv, status, count] => demo(recv, status, count),
        ["packets", bitrate, seconds] => packets(bitrate, seconds).map(|n| {
            println!("{n}");
            true
        }),
        ["get", "--nonempty", file, keys @ ..] => get(file, keys, true),
        ["get", file, keys @ ..] => get(file, keys, false),
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A JSON value whose objects keep their keys in document order.
#[derive(Clone, Debug, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

static NULL: J = J::Null;

impl J {
    /// The member KEY of an object (`Null` if absent or not an object).
    fn get(&self, key: &str) -> &J {
        match self {
            J::Obj(m) => m.iter().find(|(k, _)| k == key).map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }
    fn has(&self, key: &str) -> bool {
        matches!(self, J::Obj(m) if m.iter().any(|(k, _)| k == key))
    }
    fn num(&self) -> Option<f64> {
        match *self {
            J::Int(i) => Some(i as f64),
            J::UInt(u) => Some(u as f64),
            J::Float(f) => Some(f),
            J::Bool(b) => Some(f64::from(u8::from(b))),
            _ => None,
        }
    }
    /// The number, or 0 for anything else (the reports' fixed-point fields).
    fn f(&self) -> f64 {
        self.num().unwrap_or(0.0)
    }
    fn entries(&self) -> &[(String, J)] {
        match self {
            J::Obj(m) => m,
            _ => &[],
        }
    }
    fn items(&self) -> &[J] {
        match self {
            J::Arr(v) => v,
            _ => &[],
        }
    }
    /// Python's truth value.
    fn truthy(&self) -> bool {
        match self {
            J::Null => false,
            J::Bool(b) => *b,
            J::Int(i) => *i != 0,
            J::UInt(u) => *u != 0,
            J::Float(f) => *f != 0.0,
            J::Str(s) => !s.is_empty(),
            J::Arr(v) => !v.is_empty(),
            J::Obj(m) => !m.is_empty(),
        }
    }
    fn set(&mut self, key: &str, value: J) {
        if let J::Obj(m) = self {
            match m.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = value,
                None => m.push((key.to_string(), value)),
            }
        }
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_none<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<J, E> {
                Ok(J::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<J, E> {
                Ok(J::Int(i))
            }
            fn visit_u64<E>(self, u: u64) -> Result<J, E> {
                Ok(J::UInt(u))
            }
            fn visit_f64<E>(self, f: f64) -> Result<J, E> {
                Ok(J::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<J, E> {
                Ok(J::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<J, E> {
                Ok(J::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(J::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut m: Vec<(String, J)> = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, J>()? {
                    // A repeated key: the last one wins, in the first one's place.
                    match m.iter_mut().find(|(x, _)| *x == k) {
                        Some((_, old)) => *old = v,
                        None => m.push((k, v)),
                    }
                }
                Ok(J::Obj(m))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Int(i) => s.serialize_i64(*i),
            J::UInt(u) => s.serialize_u64(*u),
            J::Float(f) => s.serialize_f64(*f),
            J::Str(x) => s.serialize_str(x),
            J::Arr(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            J::Obj(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

fn load(path: &str) -> Result<J, String> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?
    };
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

/// DIR/NAME as Python's os.path.join writes it.
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() || dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Written as Python's json.dump(indent=2) lays it out.
fn save(path: &str, v: &J) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))
}

// Python's number formatting, for the same tables as before.

/// str(x) of a float: the shortest repr, ".0" on whole numbers, an
/// exponent below 1e-4 and from 1e16.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let e = format!("{f:e}"); // 1e-7, 1.5e16
        let (m, x) = e.split_once('e').expect("exponent");
        let x: i32 = x.parse().expect("exponent");
        return format!("{m}e{}{:02}", if x < 0 { '-' } else { '+' }, x.abs());
    }
    if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// str(x) for a JSON value as Python prints it.
fn py_str(v: &J) -> String {
    match v {
        J::Str(s) => s.clone(),
        _ => py_repr(v),
    }
}

fn py_repr(v: &J) -> String {
    match v {
        J::Null => "None".into(),
        J::Bool(b) => if *b { "True" } else { "False" }.into(),
        J::Int(i) => i.to_string(),
        J::UInt(u) => u.to_string(),
        J::Float(f) => py_float(*f),
        J::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        J::Arr(v) => format!("[{}]", v.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        J::Obj(m) => {
            format!("{{{}}}", m.iter().map(|(k, v)| format!("'{k}': {}", py_repr(v))).collect::<Vec<_>>().join(", "))
        }
    }
}

/// format(x, ".{prec}g"): PREC significant digits, trailing zeros dropped,
/// an exponent below 1e-4 and from 10^PREC.
fn fmt_g(f: f64, prec: usize) -> String {
    if !f.is_finite() {
        return py_float(f);
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let p = prec.max(1);
    let e = format!("{:.*e}", p - 1, f);
    let (m, x) = e.split_once('e').expect("exponent");
    let x: i32 = x.parse().expect("exponent");
    let trim = |s: &str| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if x < -4 || x >= p as i32 {
        format!("{}e{}{:02}", trim(m), if x < 0 { '-' } else { '+' }, x.abs())
    } else {
        trim(&format!("{:.*}", (p as i32 - 1 - x) as usize, f))
    }
}

/// format(x, ",.0f"): rounded, thousands separated by commas.
fn fmt_thousands(f: f64) -> String {
    let s = format!("{f:.0}");
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// The benchmark table's cell: "-" for none, 4 significant digits below
/// 1000, whole numbers with commas from there.
fn fmt_fig(v: &J) -> String {
    match v {
        J::Null => "-".into(),
        J::Bool(_) | J::Int(_) | J::UInt(_) | J::Float(_) => {
            let f = v.f();
            if f.abs() >= 1000.0 {
                fmt_thousands(f)
            } else {
                match v {
                    J::Float(_) => fmt_g(f, 4),
                    // An integer below 1000 has at most 4 digits: itself.
                    _ => format!("{}", f as i64),
                }
            }
        }
        _ => py_str(v),
    }
}

/// format(x, "+"): the sign always.
fn fmt_plus(v: &J) -> String {
    let s = py_str(v);
    if v.f() >= 0.0 && !s.starts_with('-') {
        format!("+{s}")
    } else {
        s
    }
}

// ci/bench

fn bench(out: &str) -> Result<bool, String> {
    let mut parts: Vec<(String, J)> = Vec::new();
    for name in ["guest", "host"] {
        let path = join(out, &format!("{name}.json"));
        if std::path::Path::new(&path).exists() {
            parts.push((name.to_string(), load(&path)?));
        }
    }
    let parts = J::Obj(parts);
    let results = join(out, "results.json");
    save(&results, &parts)?;

    // The kernel data plane comparison must be there, every relay of both
    // profiles measured with the sink's check clean (quick or not; no
    // figure is judged).
    let figs = parts.get("guest").get("figures");
    let mut missing = Vec::new();
    for prof in ["iptv", "voip"] {
        if !figs.get(&format!("relay_{prof}")).has("streams") {
            missing.push(format!("relay_{prof}"));
        }
        for kind in ["kernel", "rtpmgrd", "bare"] {
            for fig in ["pps", "loss_pct", "cpu_us_per_pkt", "marginal_us_per_pkt"] {
                let name = format!("relay_{prof}_{kind}_{fig}");
                if figs.get(&name).get("median").num().is_none() {
                    missing.push(name);
                }
            }
            let check = figs.get(&format!("relay_{prof}_{kind}_check"));
            let zero = |k: &str| check.get(k).num() == Some(0.0);
            if !check.get("received").truthy() || !zero("duplicates") || !zero("malformed") {
                missing.push(format!("relay_{prof}_{kind}_check (nothing received, or duplicates/malformed)"));
            }
        }
    }
    if !missing.is_empty() {
        return Err(format!("guest results lack the relay comparison: {}", missing.join(", ")));
    }
    print!("{}", bench_table(&parts));
    println!("\nresults: {results}");
    Ok(true)
}

fn bench_table(parts: &J) -> String {
    let mut o = String::new();
    for (name, part) in parts.entries() {
        let _ = writeln!(o, "\n== {name}: {} ==", py_str_or(part.get("where"), ""));
        let _ = writeln!(o, "{:40} {:>14} {:>14} {:>14}  unit", "figure", "median", "min", "max");
        for (fig, v) in part.get("figures").entries() {
            if v.has("median") {
                let _ = writeln!(
                    o,
                    "{fig:40} {:>14} {:>14} {:>14}  {}",
                    fmt_fig(v.get("median")),
                    fmt_fig(v.get("min")),
                    fmt_fig(v.get("max")),
                    py_str(v.get("unit"))
                );
            } else {
                let extra: Vec<String> = v
                    .entries()
                    .iter()
                    .filter(|(k, _)| k != "unit" && k != "samples")
                    .map(|(k, x)| format!("{k} {}", fmt_fig(x)))
                    .collect();
                let _ = writeln!(o, "{fig:40} {}  {}", extra.join("  "), py_str_or(v.get("unit"), ""));
            }
        }
        let _ = writeln!(o, "\n{:40} {:>14}  target", "ratio", "value");
        for r in part.get("ratios").items() {
            let met = match r.get("met") {
                J::Bool(true) => "met",
                J::Bool(false) => "MISSED",
                _ => "",
            };
            let target = r.get("target");
            let target = if target.truthy() { py_str(target) } else { String::new() };
            let _ = writeln!(o, "{:40} {:>14}  {target} {met}", py_str(r.get("name")), fmt_fig(r.get("value")));
        }
    }
    o
}

/// d.get(key, default) for a member that may be absent.
fn py_str_or(v: &J, default: &str) -> String {
    match v {
        J::Null => default.to_string(),
        _ => py_str(v),
    }
}

// ci/soak

fn soak(out: &str, seed: &str, guest_ok: bool, log: &str) -> Result<bool, String> {
    let seed: u64 = seed.parse().map_err(|_| format!("seed {seed}: not a number"))?;
    let mut g = load(&join(out, "guest.json"))?;
    let (text, ok) = soak_report(&g, seed, guest_ok, log);
    print!("{text}");
    g.set("result", J::Str(if ok { "PASS" } else { "FAIL" }.into()));
    let results = join(out, "results.json");
    save(&results, &g)?;
    println!("results: {results}");
    Ok(ok)
}

fn soak_report(g: &J, seed: u64, guest_ok: bool, log: &str) -> (String, bool) {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n== ci/soak: seed {seed}, {} streams x {} packets/s, {} min, loss {}%, reorder {}% ==",
        py_str(g.get("streams")),
        fmt_g(g.get("rate_per_stream").f(), 6),
        fmt_g(g.get("minutes").f(), 6),
        py_str(g.get("loss_pct")),
        py_str(g.get("reorder_pct"))
    );
    let _ = writeln!(o, "\nsamples (each at a quiet point: the generator held, the relay drained):");
    let _ = writeln!(
        o,
        "{:>8} {:>14} {:>11} {:>10} {:>11} {:>12} {:>13} {:>11} {:>9}",
        "t (s)",
        "rtpmgrd VmRSS",
        "RssAnon",
        "Slab",
        "SUnreclaim",
        "VmallocUsed",
        "MemAvailable",
        "packets in",
        "CPU busy"
    );
    for s in g.get("samples").items() {
        let note = if s.get("loaded").truthy() { "" } else { "  (after the run)" };
        let p = |k: &str| py_str(s.get(k));
        let _ = writeln!(
            o,
            "{:8.1} {:>10} KiB {:>7} KiB {:>6} KiB {:>7} KiB {:>8} KiB {:>9} KiB {:>11} {:>8.0}%{note}",
            s.get("t").f(),
            p("rss_kib"),
            p("rss_anon_kib"),
            p("slab_kib"),
            p("sunreclaim_kib"),
            p("vmalloc_kib"),
            p("available_kib"),
            p("packets"),
            s.get("cpu_busy_pct").f()
        );
    }
    let t = g.get("totals");
    let _ = writeln!(
        o,
        "\n{:8} {:9} {:>7} {:>13} {:>14} {:>10}",
        "stream", "port", "sent", "lost inj/rep", "reord inj/rep", "delivered"
    );
    for s in g.get("per_stream").items() {
        let (i, r, d) = (s.get("injected"), s.get("rtpmgrd"), s.get("destination"));
        let _ = writeln!(
            o,
            "{:8} {:9} {:>7} {:>6}/{:<6} {:>7}/{:<6} {:>10}",
            py_str(s.get("name")),
            py_str(s.get("media_port")),
            py_str(s.get("sent")),
            py_str(i.get("lost")),
            py_str(r.get("lost")),
            py_str(i.get("reordered")),
            py_str(r.get("reordered")),
            py_str(d.get("delivered"))
        );
    }
    let p = |k: &str| py_str(t.get(k));
    let _ = writeln!(
        o,
        "{:8} {:9} {:>7} {:>6}/{:<6} {:>7}/{:<6} {:>10}",
        "total",
        "",
        p("sent"),
        p("injected_lost"),
        p("rtpmgrd_lost"),
        p("injected_reordered"),
        p("rtpmgrd_reordered"),
        p("delivered")
    );
    let f = g.get("flat");
    let _ = writeln!(o);
    if f.truthy() {
        let pair = |k: &str, i: usize| py_str(f.get(k).items().get(i).unwrap_or(&NULL));
        let _ = writeln!(
            o,
            "memory, median of the first {} samples from t={:.0} s (after the {:.0} s warm-up) -> median of the last {} (to t={:.0} s):",
            py_str(f.get("median_of")),
            f.get("from_t").f(),
            g.get("warmup_s").f(),
            py_str(f.get("median_of")),
            f.get("to_t").f()
        );
        for (label, key) in [("rtpmgrd VmRSS", "rss"), ("SUnreclaim", "sunreclaim"), ("Slab", "slab")] {
            let _ = writeln!(
                o,
                "  {label:13} {} -> {} KiB ({} KiB, bound {})",
                pair(&format!("{key}_kib"), 0),
                pair(&format!("{key}_kib"), 1),
                fmt_plus(f.get(&format!("{key}_growth_kib"))),
                py_str(f.get(&format!("{key}_bound_kib")))
            );
        }
    }
    let gen = g.get("generator");
    let _ = writeln!(
        o,
        "drained {:.1} s after the last packet; the longest hold for a sample {:.1} s",
        g.get("drain_s").f(),
        g.get("max_quiesce_s").f()
    );
    let _ = writeln!(
        o,
        "generator: {:.1} s, at most {:.1} ms behind its schedule, {} send errors",
        gen.get("seconds").f(),
        gen.get("max_late_ms").f(),
        py_str(gen.get("send_errors"))
    );
    let checks = g.get("checks").items();
    let failed: Vec<&J> = checks.iter().filter(|c| !c.get("ok").truthy()).collect();
    for c in &failed {
        let _ = writeln!(o, "FAILED {}: {}", py_str(c.get("name")), py_str(c.get("detail")));
    }
    let ok = g.get("pass").truthy() && guest_ok;
    let _ = writeln!(
        o,
        "\nRESULT ci/soak: {} ({} checks, {} failed{}); replay: ci/soak --seed {seed} --minutes {}",
        if ok { "PASS" } else { "FAIL" },
        checks.len(),
        failed.len(),
        if guest_ok { String::new() } else { format!("; the guest reported a failure, see {log}") },
        fmt_g(g.get("minutes").f(), 6)
    );
    (o, ok)
}

// ci/demo

fn demo(recv: &str, status: &str, count: &str) -> Result<bool, String> {
    let count: u64 = count.parse().map_err(|_| format!("count {count}: not a number"))?;
    let (text, ok) = demo_report(&load(recv)?, &load(status)?, count)?;
    print!("{text}");
    Ok(ok)
}

fn demo_report(recv: &J, status: &J, count: u64) -> Result<(String, bool), String> {
    let s = status
        .get("streams")
        .items()
        .iter()
        .find(|x| x.get("name") == &J::Str("tv1".into()))
        .ok_or("no stream tv1 in rtpmgrctl's report")?;
    let r = |k: &str| py_str(recv.get(k));
    let st = |k: &str| py_str(s.get(k));
    let sess = status.get("session");
    let mut o = String::new();
    let _ = writeln!(o);
    let _ =
        writeln!(o, "==== rtpmgr demo summary: host -> qemuarm64 guest (rtpmgrd, /dev/rtpmgr, media0) -> host ====");
    let _ = writeln!(o, "sent            {count} packets");
    let _ = writeln!(o, "received        {} packets, {} payload bytes", r("unique"), r("payload_bytes"));
    let _ = writeln!(o, "lost            {}", r("lost"));
    let _ = writeln!(o, "duplicates      {}", r("duplicates"));
    let _ = writeln!(o, "reordered       {}", r("reordered"));
    let _ = writeln!(o, "corrupt         {}", r("corrupt"));
    let _ =
        writeln!(o, "throughput      {:.2} Mbit/s over {:.2} s", recv.get("mbit_per_s").f(), recv.get("seconds").f());
    let _ = writeln!(
        o,
        "rtpmgrd tv1     in {} pkts, lost {}, jitter {:.3} ms, malformed {}, socket drops {}, ring-full drops {}, out {} pkts",
        st("packets"),
        st("lost"),
        s.get("jitter_ms").f(),
        st("malformed"),
        st("socket_drops"),
        st("ring_full_drops"),
        st("sent_packets")
    );
    let _ = writeln!(
        o,
        "kernel session  {} to device, {} from device, {} kicks",
        py_str(sess.get("to_device_packets")),
        py_str(sess.get("from_device_packets")),
        py_str(sess.get("kicks"))
    );
    let is = |v: &J, n: u64| v.num() == Some(n as f64);
    let ok = is(recv.get("unique"), count)
        && is(recv.get("received"), count)
        && is(recv.get("lost"), 0)
        && is(recv.get("duplicates"), 0)
        && is(recv.get("reordered"), 0)
        && is(recv.get("corrupt"), 0)
        && is(s.get("packets"), count)
        && is(s.get("sent_packets"), count);
    let _ = writeln!(o, "RESULT          {}", if ok { "stream arrived intact" } else { "STREAM DAMAGED" });
    Ok((o, ok))
}

/// Packets of 1316-byte payloads for SECONDS at BITRATE (k, M, G).
fn packets(bitrate: &str, seconds: &str) -> Result<u64, String> {
    let bad = || format!("bit rate {bitrate}: a number with an optional k, M or G");
    let (num, mult) = match bitrate.char_indices().last() {
        Some((i, 'k' | 'K')) => (&bitrate[..i], 1e3),
        Some((i, 'M')) => (&bitrate[..i], 1e6),
        Some((i, 'G')) => (&bitrate[..i], 1e9),
        _ => (bitrate, 1.0),
    };
    let b: f64 = num.parse().map_err(|_| bad())?;
    let secs: f64 = seconds.parse().map_err(|_| format!("seconds {seconds}: not a number"))?;
    if !(b.is_finite() && b > 0.0 && secs.is_finite() && secs > 0.0) {
        return Err(bad());
    }
    Ok(((b * mult * secs / (1316.0 * 8.0)) as u64).max(1))
}

fn get(file: &str, keys: &[&str], nonempty: bool) -> Result<bool, String> {
    let doc = load(file)?;
    let mut v = &doc;
    for k in keys {
        v = match v {
            J::Obj(m) => m.iter().find(|(x, _)| x == k).map(|(_, y)| y),
            J::Arr(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("{file}: no {}", keys.join(".")))?;
    }
    if nonempty && matches!(v, J::Null | J::Arr(_) | J::Obj(_) | J::Str(_)) && !v.truthy() {
        return Err(format!("{file}: {} is empty", keys.join(".")));
    }
    match v {
        J::Str(s) => println!("{s}"),
        _ => println!("{}", serde_json::to_string(v).map_err(|e| e.to_string())?),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_formats() {
        assert_eq!(fmt_g(883.4, 4), "883.4");
        assert_eq!(fmt_g(0.0042, 4), "0.0042");
        assert_eq!(fmt_g(0.000012345, 4), "1.234e-05");
        assert_eq!(fmt_g(2.0469999, 4), "2.047");
        assert_eq!(fmt_g(999.96, 4), "1000");
        assert_eq!(fmt_g(20.0, 6), "20");
        assert_eq!(fmt_g(0.5, 6), "0.5");
        assert_eq!(fmt_g(1234567.0, 6), "1.23457e+06");
        assert_eq!(fmt_thousands(1328.0), "1,328");
        assert_eq!(fmt_thousands(-5514.2), "-5,514");
        assert_eq!(fmt_thousands(1234567.5), "1,234,568");
        assert_eq!(py_float(3.0), "3.0");
        assert_eq!(py_float(0.015625), "0.015625");
        assert_eq!(py_float(1e-7), "1e-07");
        assert_eq!(fmt_fig(&J::Int(33)), "33");
        assert_eq!(fmt_fig(&J::Null), "-");
        assert_eq!(fmt_plus(&J::Int(12)), "+12");
        assert_eq!(fmt_plus(&J::Int(-3)), "-3");
        assert_eq!(fmt_plus(&J::Int(0)), "+0");
    }

    #[test]
    fn keys_keep_their_order() {
        let v: J = serde_json::from_str(r#"{"b": 1, "a": [true, null, 1.5], "c": {"z": "x", "y": 2}}"#).unwrap();
        let keys: Vec<&str> = v.entries().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "c"]);
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"b":1,"a":[true,null,1.5],"c":{"z":"x","y":2}}"#);
    }

    #[test]
    fn soak_memory_lines_as_before() {
        let g: J = serde_json::from_str(
            r#"{"warmup_s": 60, "flat": {"median_of": 5, "from_t": 60.2, "to_t": 300.7,
                "rss_kib": [4100, 4108], "rss_growth_kib": 8, "rss_bound_kib": 2048,
                "sunreclaim_kib": [9000, 8990], "sunreclaim_growth_kib": -10, "sunreclaim_bound_kib": 4096,
                "slab_kib": [20000, 20016], "slab_growth_kib": 16, "slab_bound_kib": 8192}}"#,
        )
        .unwrap();
        let (text, _) = soak_report(&g, 1, true, "log");
        for line in [
            "  rtpmgrd VmRSS 4100 -> 4108 KiB (+8 KiB, bound 2048)",
            "  SUnreclaim    9000 -> 8990 KiB (-10 KiB, bound 4096)",
            "  Slab          20000 -> 20016 KiB (+16 KiB, bound 8192)",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
    }

    #[test]
    fn demo_packets() {
        assert_eq!(packets("10M", "10").unwrap(), 9498);
        assert_eq!(packets("10M", "2").unwrap(), 1899);
        assert_eq!(packets("2.5k", "1").unwrap(), 1);
        assert_eq!(packets("500000", "3").unwrap(), 142);
        assert!(packets("10X", "1").is_err());
        assert!(packets("1M; import os", "1").is_err());
    }

    /// The table ci/bench's Python printed for the same document.
    #[test]
    fn bench_table_as_before() {
        let guest: J = serde_json::from_str(
            r#"{"where": "qemuarm64 guest (TCG)", "figures": {
                "ring_pps_64": {"median": 26856.2, "min": 19666.0, "max": 99229.5, "unit": "pkt/s"},
                "lat": {"p50": 660.44, "max": 32217.0, "samples": 5, "unit": "us"},
                "x": {"median": 0.000012345, "min": null, "max": 3, "unit": "u"}},
              "ratios": [{"name": "a", "value": 15.123, "target": ">= 3", "met": true},
                {"name": "b", "value": 2.047, "target": null, "met": null},
                {"name": "c", "value": 0.5, "target": 0.015625, "met": false}]}"#,
        )
        .unwrap();
        let parts = J::Obj(vec![("guest".into(), guest)]);
        let want = "
== guest: qemuarm64 guest (TCG) ==
figure                                           median            min            max  unit
ring_pps_64                                      26,856         19,666         99,230  pkt/s
lat                                      p50 660.4  max 32,217  us
x                                             1.234e-05              -              3  u

ratio                                             value  target
a                                                 15.12  >= 3 met
b                                                 2.047   
c                                                   0.5  0.015625 MISSED
";
        assert_eq!(bench_table(&parts), want);
    }
}
