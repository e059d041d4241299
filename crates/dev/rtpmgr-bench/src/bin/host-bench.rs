// SPDX-License-Identifier: MIT
//! `host-bench`: the host half of ci/bench. rtpmgrd against a bare
//! recvmmsg/sendmmsg loop and GStreamer: saturation with one stream,
//! paced IPTV and VoIP loads, latency, and user-space instructions per
//! packet under callgrind; writes a JSON document (schema in
//! `rtpmgr_bench::report`) and prints a table.

use rtpmgr_bench::bench::{self, Plan};
use rtpmgr_bench::packet::{now_ns, PACKET, PAYLOAD};
use rtpmgr_bench::rate::parse_duration;
use rtpmgr_bench::relay::{pin_self, set_nice, RelayKind, Tools, BARE_BATCH, RELAY_SOCKET_BUFFER};
use rtpmgr_bench::report::{HostInfo, PacketInfo, Pinning, Report, SCHEMA};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

const USAGE: &str = "\
usage: host-bench [--quick] [--out FILE] [--bin-dir DIR] [--only LIST] [--reps N]
                  [--loads LIST] [--relays LIST] [--paced-relays LIST] [--window SECS]
                  [--generator-gso] [--nice N] [--no-pin] [--no-gstreamer] [--no-perf] [--strict]

  --quick          about 30 s: one short repetition, loads iptv64 and voip1000, no callgrind
  --out FILE       the JSON document (default target/bench/host.json)
  --bin-dir DIR    where rtpmgrd and bare-relay are (default: this program's directory)
  --only LIST      comma-separated subset of saturation,paced,latency,callgrind
  --reps N         repetitions per measurement, interleaved (default 10, quick 1)
  --loads LIST     paced loads: iptv64,iptv150k,iptv256,voip1000,voip4000 (default all)
  --relays LIST    saturation relays: rtpmgrd,rtpmgrd_nogso,rtpmgrd_rtc,rtpmgrd_coalesce,bare_loop,gstreamer,gstreamer_tuned
  --paced-relays LIST  rtpmgrd variants of the paced loads (the bare loop always runs)
  --window SECS    saturation and paced measuring window (default 2 and 3)
  --generator-gso  the saturating generator sends UDP GSO aggregates (reference only)
  --nice N         nice level of generator, receiver and relays (default -10, so
                   that other jobs on the host disturb less; 0 to leave it; below 0
                   needs root or CAP_SYS_NICE, else it stays unchanged)
  --no-pin         do not pin the relay and the load generator to separate CPUs
  --no-gstreamer   skip GStreamer even if gst-launch-1.0 is installed
  --no-perf        count from /proc even if perf is installed
  --strict         exit 1 when a target is missed or could not be measured";

const SECTIONS: [&str; 4] = ["saturation", "paced", "latency", "callgrind"];
const KINDS: [RelayKind; 7] = [
    RelayKind::Rtpmgrd,
    RelayKind::RtpmgrdNoGso,
    RelayKind::RtpmgrdRtc,
    RelayKind::RtpmgrdCoalesce,
    RelayKind::Bare,
    RelayKind::Gstreamer,
    RelayKind::GstreamerTuned,
];

struct Args {
    quick: bool,
    out: PathBuf,
    bin_dir: Option<PathBuf>,
    only: Vec<String>,
    reps: Option<usize>,
    loads: Option<Vec<String>>,
    relays: Option<Vec<RelayKind>>,
    paced_relays: Option<Vec<RelayKind>>,
    nice: i32,
    window: Option<Duration>,
    generator_gso: bool,
    pin: bool,
    gstreamer: bool,
    perf: bool,
    strict: bool,
}

fn kinds(list: &str) -> Result<Vec<RelayKind>, String> {
    list.split(',')
        .map(|k| KINDS.iter().copied().find(|x| x.key() == k).ok_or_else(|| format!("unknown relay {k:?}")))
        .collect()
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        quick: false,
        out: PathBuf::from("target/bench/host.json"),
        bin_dir: None,
        only: SECTIONS.iter().map(|s| s.to_string()).collect(),
        reps: None,
        loads: None,
        relays: None,
        paced_relays: None,
        nice: -10,
        window: None,
        generator_gso: false,
        pin: true,
        gstreamer: true,
        perf: true,
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
                if let Some(bad) = a.only.iter().find(|f| !SECTIONS.contains(&f.as_str())) {
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
            "--loads" => a.loads = Some(val()?.split(',').map(str::to_string).collect()),
            "--relays" => a.relays = Some(kinds(&val()?)?),
            "--paced-relays" => a.paced_relays = Some(kinds(&val()?)?),
            "--window" => a.window = Some(parse_duration(&val()?)?),
            "--generator-gso" => a.generator_gso = true,
            "--nice" => {
                a.nice = val()?.parse().map_err(|e| format!("--nice: {e}"))?;
                if !(-20..=19).contains(&a.nice) {
                    return Err("--nice must be -20..=19".into());
                }
            }
            "--no-pin" => a.pin = false,
            "--no-gstreamer" => a.gstreamer = false,
            "--no-perf" => a.perf = false,
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
    }
    if let Some(w) = args.window {
        plan.saturation_window = w;
        plan.paced_window = w;
    }
    if let Some(names) = &args.loads {
        let all = bench::full_loads();
        let mut loads = Vec::new();
        for n in names {
            match all.iter().find(|l| l.name == n) {
                Some(l) => loads.push(l.clone()),
                None => {
                    eprintln!("host-bench: --loads: unknown load {n:?}");
                    return ExitCode::from(2);
                }
            }
        }
        plan.loads = loads;
    }
    if let Some(r) = &args.relays {
        plan.saturation_relays = r.clone();
    }
    if let Some(r) = &args.paced_relays {
        plan.paced_relays = r.clone();
    }
    plan.generator_gso = args.generator_gso;
    if args.perf {
        plan.perf = rtpmgr_bench::perf::probe();
        match &plan.perf {
            Some(p) => log(&format!(
                "perf: counting {}{}",
                p.events.join(", "),
                if p.missing.is_empty() {
                    String::new()
                } else {
                    format!("; not on this machine: {}", p.missing.join(", "))
                }
            )),
            None => log("perf not usable: counting from /proc (no system calls)"),
        }
    }
    plan.valgrind = which("valgrind");
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
            loadavg_at_end: String::new(),
        },
        loads: plan.loads.iter().map(|l| l.name).collect(),
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
    for sec in SECTIONS {
        if !wants(sec) {
            continue;
        }
        let section = match sec {
            "saturation" => bench::saturation(&tools, &plan, &mut log),
            "paced" => bench::paced(&tools, &plan, &mut log),
            "latency" => bench::latency(&tools, &plan, &mut log),
            _ => bench::callgrind(&tools, &plan, &mut log),
        };
        report.add(sec, section);
    }
    let loadavg_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    report.host.loadavg_at_end = loadavg_end.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
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
