// SPDX-License-Identifier: MIT
//! `host-bench`: the host half of ci/bench. Measures rtpmgrd's relay
//! throughput against a bare recvmmsg/sendmmsg loop and GStreamer, its
//! stream capacity and CPU time per stream, and its latency; writes a JSON
//! document (schema in `rtpmgr_bench::report`) and prints a table.

use rtpmgr_bench::bench::{self, Plan};
use rtpmgr_bench::packet::{now_ns, PACKET, PAYLOAD};
use rtpmgr_bench::rate::{parse_duration, parse_rate};
use rtpmgr_bench::relay::{pin_self, set_nice, Tools, BARE_BATCH, RELAY_SOCKET_BUFFER};
use rtpmgr_bench::report::{HostInfo, PacketInfo, Pinning, Report, SCHEMA};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

const USAGE: &str = "\
usage: host-bench [--quick] [--out FILE] [--bin-dir DIR] [--only LIST] [--reps N]
                  [--window SECS] [--latency-rate PPS] [--stream-bitrate BPS]
                  [--capacity-max N] [--capacity-seconds SECS]
                  [--nice N] [--no-pin] [--no-gstreamer] [--strict]

  --quick          about 20 s: 3 short repetitions, capacity capped at 4 streams
  --out FILE       the JSON document (default target/bench/host.json)
  --bin-dir DIR    where rtpmgrd and bare-relay are (default: this program's directory)
  --only LIST      comma-separated subset of throughput,capacity,latency
  --reps N         repetitions per measurement (default 5, quick 3)
  --window SECS    throughput and latency measuring window (default 3, quick 0.5)
  --latency-rate PPS       paced rate of the latency stream (default 4k)
  --stream-bitrate BPS     bit rate of each capacity stream (default 10M)
  --capacity-max N         highest stream count tried (default 64, quick 4)
  --capacity-seconds SECS  length of each confirming capacity run (default 30, quick 2)
  --nice N         nice level of generator, receiver and relays (default -10, so
                   that other jobs on the host disturb less; 0 to leave it; below 0
                   needs root or CAP_SYS_NICE, else it stays unchanged)
  --no-pin         do not pin the relay and the load generator to separate CPUs
  --no-gstreamer   skip GStreamer even if gst-launch-1.0 is installed
  --strict         exit 1 when a target is missed or could not be measured";

struct Args {
    quick: bool,
    out: PathBuf,
    bin_dir: Option<PathBuf>,
    only: Vec<String>,
    reps: Option<usize>,
    nice: i32,
    window: Option<Duration>,
    latency_rate: Option<f64>,
    stream_bitrate: Option<f64>,
    capacity_max: Option<usize>,
    capacity_seconds: Option<Duration>,
    pin: bool,
    gstreamer: bool,
    strict: bool,
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        quick: false,
        out: PathBuf::from("target/bench/host.json"),
        bin_dir: None,
        only: vec!["throughput".into(), "capacity".into(), "latency".into()],
        reps: None,
        nice: -10,
        window: None,
        latency_rate: None,
        stream_bitrate: None,
        capacity_max: None,
        capacity_seconds: None,
        pin: true,
        gstreamer: true,
        strict: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--out" => a.out = val()?.into(),
            "--bin-dir" => a.bin_dir = Some(val()?.into()),
            "--only" => {
                a.only = val()?.split(',').map(str::to_string).collect();
                if let Some(bad) = a.only.iter().find(|f| !["throughput", "capacity", "latency"].contains(&f.as_str()))
                {
                    return Err(format!("--only: unknown figure {bad:?}"));
                }
            }
            "--reps" => {
                let n: usize = val()?.parse().map_err(|e| format!("--reps: {e}"))?;
                if n == 0 {
                    return Err("--reps must be at least 1".into());
                }
                a.reps = Some(n);
            }
            "--window" => a.window = Some(parse_duration(&val()?)?),
            "--latency-rate" => a.latency_rate = Some(parse_rate(&val()?)?),
            "--stream-bitrate" => a.stream_bitrate = Some(parse_rate(&val()?)?),
            "--capacity-max" => {
                let n: usize = val()?.parse().map_err(|e| format!("--capacity-max: {e}"))?;
                if !(1..=bench::MAX_STREAMS).contains(&n) {
                    return Err(format!("--capacity-max must be 1..={}", bench::MAX_STREAMS));
                }
                a.capacity_max = Some(n);
            }
            "--capacity-seconds" => a.capacity_seconds = Some(parse_duration(&val()?)?),
            "--nice" => {
                a.nice = val()?.parse().map_err(|e| format!("--nice: {e}"))?;
                if !(-20..=19).contains(&a.nice) {
                    return Err("--nice must be -20..=19".into());
                }
            }
            "--no-pin" => a.pin = false,
            "--no-gstreamer" => a.gstreamer = false,
            "--strict" => a.strict = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(Some(a))
}

/// The program `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

fn quiet_ok(cmd: &Path, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// gst-launch-1.0 and its version, if it and the udpsrc/udpsink elements
/// are installed.
fn find_gstreamer(log: &mut dyn FnMut(&str)) -> Option<(PathBuf, String)> {
    let Some(launch) = which("gst-launch-1.0") else {
        log("GStreamer: gst-launch-1.0 not found: its figures are skipped");
        return None;
    };
    let inspect = launch.with_file_name("gst-inspect-1.0");
    for element in ["udpsrc", "udpsink"] {
        if !quiet_ok(&inspect, &[element]) {
            log(&format!(
                "GStreamer: element {element} not found (gstreamer1.0-plugins-good): its figures are skipped"
            ));
            return None;
        }
    }
    let version = Command::new(&launch)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    Some((launch, version))
}

/// The first two CPUs this process may run on.
fn two_cpus() -> Option<(usize, usize)> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let mut cpus = (0..nix::sched::CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false));
    Some((cpus.next()?, cpus.next()?))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("host-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let t0 = now_ns();
    let mut log = |m: &str| eprintln!("[{:6.1} s] {m}", (now_ns() - t0) as f64 / 1e9);

    let bin_dir = match args
        .bin_dir
        .clone()
        .or_else(|| std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)))
    {
        Some(d) => d,
        None => {
            eprintln!("host-bench: cannot tell where the binaries are: give --bin-dir");
            return ExitCode::from(2);
        }
    };
    let gst = if args.gstreamer { find_gstreamer(&mut log) } else { None };
    let tools = Tools {
        rtpmgrd: bin_dir.join("rtpmgrd"),
        bare_relay: bin_dir.join("bare-relay"),
        gst_launch: gst.as_ref().map(|g| g.0.clone()),
    };
    for p in [&tools.rtpmgrd, &tools.bare_relay] {
        if !p.is_file() {
            eprintln!("host-bench: {} not found (build it, or give --bin-dir)", p.display());
            return ExitCode::from(2);
        }
    }

    let mut plan = if args.quick { Plan::quick() } else { Plan::full() };
    if let Some(n) = args.reps {
        plan.repetitions = n;
        plan.capacity_confirm_reps = n;
    }
    if let Some(w) = args.window {
        plan.throughput_window = w;
        plan.latency_window = w;
    }
    if let Some(r) = args.latency_rate {
        plan.latency_rate_pps = r;
    }
    if let Some(b) = args.stream_bitrate {
        plan.stream_bitrate = b;
    }
    if let Some(n) = args.capacity_max {
        plan.capacity_max = n;
        plan.capacity_start = plan.capacity_start.min(n);
    }
    if let Some(d) = args.capacity_seconds {
        plan.capacity_confirm = d;
        plan.capacity_search = plan.capacity_search.min(d);
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if args.pin {
        // Before any thread starts: they all inherit the generator's CPU.
        match two_cpus() {
            Some((gen, relay)) => match pin_self(gen) {
                Ok(()) => plan.pin = Some((gen, relay)),
                Err(e) => log(&format!("cannot pin to CPU {gen}: {e}; running unpinned")),
            },
            None => log("fewer than two CPUs: running unpinned"),
        }
    }
    if args.nice != 0 {
        match set_nice(args.nice) {
            Ok(()) => plan.nice = Some(args.nice),
            Err(e) => log(&format!("cannot set nice {}: {e}; running at the default priority", args.nice)),
        }
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg = loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    log(&format!(
        "{} run; relay CPU {:?}, generator CPU {:?}, nice {:?}, load average {loadavg}; GStreamer {}",
        if args.quick { "quick" } else { "full" },
        plan.pin.map(|p| p.1),
        plan.pin.map(|p| p.0),
        plan.nice,
        gst.as_ref().map_or("skipped", |g| g.1.as_str())
    ));

    let wants = |f: &str| args.only.iter().any(|x| x == f);
    let mut report = Report {
        schema: SCHEMA,
        where_: format!(
            "host, {cpus} CPUs, Linux {kernel}, 127.0.0.1; {}",
            match plan.pin {
                Some((g, r)) => format!("relay pinned to CPU {r}, load generator and receiver to CPU {g}"),
                None => "no CPU pinning".into(),
            }
        ),
        mode: if args.quick { "quick" } else { "full" },
        elapsed_s: 0.0,
        host: HostInfo {
            cpus,
            kernel,
            gstreamer: gst.map(|g| g.1),
            pinning: plan.pin.map(|(g, r)| Pinning { generator_cpu: g, relay_cpu: r }),
            nice: plan.nice,
            loadavg_at_start: loadavg,
        },
        packet: PacketInfo {
            rtp_payload_bytes: PAYLOAD,
            datagram_bytes: PACKET,
            relay_batch: BARE_BATCH,
            relay_socket_buffer_bytes: RELAY_SOCKET_BUFFER,
        },
        methods: Default::default(),
        figures: Default::default(),
        ratios: Vec::new(),
        targets: Default::default(),
    };
    if wants("throughput") {
        report.add("throughput", bench::throughput(&tools, &plan, &mut log));
    }
    if wants("capacity") {
        report.add("capacity", bench::capacity(&tools, &plan, &mut log));
    }
    if wants("latency") {
        report.add("latency", bench::latency(&tools, &plan, &mut log));
    }
    report.elapsed_s = (now_ns() - t0) as f64 / 1e9;
    report.tally_targets();
    let json = serde_json::to_string_pretty(&report).expect("report serialises");
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("host-bench: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = std::fs::write(&args.out, json + "\n") {
        eprintln!("host-bench: {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    println!("{}", report.table());
    println!("JSON: {}", args.out.display());
    if args.strict && !report.targets.all_met {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
