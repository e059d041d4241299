// SPDX-License-Identifier: MIT
//! What a relay process costs over a measuring window: CPU time, context
//! switches, system calls and, where the machine has hardware counters,
//! cycles and instructions.
//!
//! With `perf` (linux-perf) the counts come from `perf stat -p PID`
//! attached to every thread of the relay, started with its events disabled
//! and switched on and off exactly at the window's edges through
//! `--control fifo:...` (so perf's own start-up is outside the window).
//! Events the machine lacks are left out after a probe at start (a VM
//! without a PMU has no `cycles`; `raw_syscalls:sys_enter` needs tracefs,
//! i.e. root). Without perf, CPU time comes from `/proc/PID/stat` (all
//! threads) and context switches from `/proc/PID/task/*/status`; system
//! calls are then not counted.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The events asked of perf, in this order; the first is required.
pub const EVENTS: [&str; 5] = ["task-clock", "context-switches", "raw_syscalls:sys_enter", "cycles", "instructions"];

/// Counts over one window. `None`: not counted on this machine.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// CPU time of all the relay's threads, ns.
    pub cpu_ns: f64,
    pub context_switches: Option<f64>,
    pub syscalls: Option<f64>,
    pub cycles: Option<f64>,
    pub instructions: Option<f64>,
}

/// Which of [`EVENTS`] this machine's perf counts (`None`: no perf at all).
#[derive(Clone, Debug)]
pub struct PerfEvents {
    pub perf: PathBuf,
    pub events: Vec<&'static str>,
    /// Events perf knows but this machine cannot count, for the report.
    pub missing: Vec<&'static str>,
}

/// Find perf and which events it can count here: each is tried on `true`.
pub fn probe() -> Option<PerfEvents> {
    let perf =
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("perf")).find(|p| p.is_file())?;
    let mut events = Vec::new();
    let mut missing = Vec::new();
    for ev in EVENTS {
        let out = Command::new(&perf).args(["stat", "-x,", "-e", ev, "--", "true"]).stderr(Stdio::piped()).output();
        let counted = out.is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stderr).lines().any(|l| {
                    l.split(',').nth(2) == Some(ev) && parse_count(l.split(',').next().unwrap_or("")).is_some()
                })
        });
        if counted {
            events.push(ev);
        } else {
            missing.push(ev);
        }
    }
    events.first().is_some_and(|e| *e == "task-clock").then_some(PerfEvents { perf, events, missing })
}

fn parse_count(field: &str) -> Option<f64> {
    field.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Parse `perf stat -x,` output into counts (task-clock is in msec).
pub fn parse_perf_csv(text: &str) -> Option<Counts> {
    let mut c = Counts::default();
    let mut cpu = None;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 3 {
            continue;
        }
        let v = parse_count(f[0]);
        match f[2] {
            "task-clock" => cpu = v.map(|ms| ms * 1e6),
            "context-switches" => c.context_switches = v.or(Some(0.0)).filter(|_| !f[0].contains("not supported")),
            "raw_syscalls:sys_enter" => c.syscalls = v.or(Some(0.0)).filter(|_| !f[0].contains("not supported")),
            "cycles" => c.cycles = v,
            "instructions" => c.instructions = v,
            _ => {}
        }
    }
    // "<not counted>" for an event that never ran in the window: the
    // relay did nothing then, which is zero.
    c.cpu_ns = match cpu {
        Some(ns) => ns,
        None if text.contains("task-clock") => 0.0,
        None => return None,
    };
    Some(c)
}

/// A meter attached to one process.
pub enum Meter {
    Perf(PerfSession),
    Proc { pid: u32, start: Option<ProcSnapshot> },
}

impl Meter {
    /// Attach to `pid` (perf if `events` is given and starts, else /proc).
    pub fn attach(pid: u32, events: Option<&PerfEvents>) -> Meter {
        if let Some(ev) = events {
            match PerfSession::start(pid, ev) {
                Ok(s) => return Meter::Perf(s),
                Err(e) => eprintln!("perf stat -p {pid}: {e}; counting from /proc"),
            }
        }
        Meter::Proc { pid, start: None }
    }

    /// The window begins.
    pub fn begin(&mut self) -> io::Result<()> {
        match self {
            Meter::Perf(s) => s.command("enable"),
            Meter::Proc { pid, start } => {
                *start = Some(ProcSnapshot::read(*pid)?);
                Ok(())
            }
        }
    }

    /// The window ends: what it counted.
    pub fn end(self) -> io::Result<Counts> {
        match self {
            Meter::Perf(s) => s.finish(),
            Meter::Proc { pid, start } => {
                let a = start.ok_or_else(|| io::Error::other("window never began"))?;
                let b = ProcSnapshot::read(pid)?;
                Ok(Counts {
                    cpu_ns: (b.cpu_s - a.cpu_s) * 1e9,
                    context_switches: Some(b.switches.saturating_sub(a.switches) as f64),
                    ..Default::default()
                })
            }
        }
    }

    pub fn source(&self) -> &'static str {
        match self {
            Meter::Perf(_) => "perf stat",
            Meter::Proc { .. } => "/proc",
        }
    }
}

/// `perf stat -p PID` with its events off until [`Meter::begin`].
pub struct PerfSession {
    child: Child,
    dir: PathBuf,
    ctl: File,
    ack: BufReader<File>,
    enabled: bool,
}

impl PerfSession {
    fn start(pid: u32, ev: &PerfEvents) -> io::Result<PerfSession> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rtpmgr-bench-perf-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let (ctl_path, ack_path) = (dir.join("ctl"), dir.join("ack"));
        for p in [&ctl_path, &ack_path] {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)?;
        }
        // Read-write opens of a FIFO do not block waiting for the other
        // end (Linux), so a perf that fails to start cannot hang us here.
        let ctl = OpenOptions::new().read(true).write(true).open(&ctl_path)?;
        let ack = OpenOptions::new().read(true).write(true).open(&ack_path)?;
        let child = Command::new(&ev.perf)
            .args(["stat", "-x,", "-e", &ev.events.join(","), "-D", "-1", "--control"])
            .arg(format!("fifo:{},{}", ctl_path.display(), ack_path.display()))
            .arg("-o")
            .arg(dir.join("out.csv"))
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(PerfSession { child, dir, ctl, ack: BufReader::new(ack), enabled: false })
    }

    fn command(&mut self, cmd: &str) -> io::Result<()> {
        self.ctl.write_all(format!("{cmd}\n").as_bytes())?;
        // perf answers "ack" once the events are switched.
        let fd = self.ack.get_ref().as_fd();
        let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        let ready = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(5000u16)).map_err(io::Error::from)?;
        if ready == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("perf did not acknowledge {cmd:?}")));
        }
        let mut line = String::new();
        self.ack.read_line(&mut line)?;
        self.enabled = cmd == "enable";
        Ok(())
    }

    fn finish(mut self) -> io::Result<Counts> {
        if self.enabled {
            self.command("disable")?;
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGINT);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(io::Error::other("perf did not stop"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = std::fs::read_to_string(self.dir.join("out.csv"))?;
        parse_perf_csv(&text).ok_or_else(|| io::Error::other(format!("no task-clock in perf's output: {text}")))
    }
}

impl Drop for PerfSession {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU time and context switches of a process, from /proc.
#[derive(Clone, Copy, Debug)]
pub struct ProcSnapshot {
    pub cpu_s: f64,
    pub switches: u64,
}

impl ProcSnapshot {
    pub fn read(pid: u32) -> io::Result<ProcSnapshot> {
        let cpu_s = rtpmgr_test_kit::procfs::cpu_seconds(pid)?;
        let mut switches = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
                switches += parse_switches(&status);
            }
        }
        Ok(ProcSnapshot { cpu_s, switches })
    }
}

/// voluntary + nonvoluntary context switches from a `status` file.
pub fn parse_switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_csv() {
        let text = "# started on Thu Dec  3 12:21:14 2026\n\n\
                    251.25,msec,task-clock,251245596,100.00,0.314,CPUs utilized\n\
                    64,,context-switches,251245596,100.00,254.731,/sec\n\
                    7,,raw_syscalls:sys_enter,251245596,100.00,0.000,/sec\n\
                    <not supported>,,cycles,0,100.00,,\n";
        let c = parse_perf_csv(text).unwrap();
        assert_eq!(c.cpu_ns, 251.25e6);
        assert_eq!(c.context_switches, Some(64.0));
        assert_eq!(c.syscalls, Some(7.0));
        assert_eq!(c.cycles, None);
        assert_eq!(c.instructions, None);
        // An idle relay: perf says "not counted", which is zero.
        let idle = "<not counted>,msec,task-clock,0,100.00,,\n<not counted>,,context-switches,0,100.00,,\n";
        let c = parse_perf_csv(idle).unwrap();
        assert_eq!((c.cpu_ns, c.context_switches), (0.0, Some(0.0)));
        assert_eq!(parse_perf_csv("garbage"), None);
    }

    #[test]
    fn switches_from_status() {
        let s = "Name:\trtpmgrd\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t545\n";
        assert_eq!(parse_switches(s), 695);
    }

    #[test]
    fn proc_meter_counts_this_process() {
        let mut m = Meter::attach(std::process::id(), None);
        m.begin().unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        let c = m.end().unwrap();
        assert!(c.cpu_ns >= 0.0 && x > 0);
        assert!(c.context_switches.is_some() && c.syscalls.is_none());
    }
}
