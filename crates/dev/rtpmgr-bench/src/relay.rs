// SPDX-License-Identifier: MIT
//! The relays under test, as child processes: rtpmgrd (sim backend), the
//! bare `recvmmsg`→`sendmmsg` loop and GStreamer's `udpsrc ! udpsink`.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rtpmgr_test_kit::{procfs, PT_MP2T};
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddrV4;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Socket buffer every relay gets: rtpmgrd's default
/// `socket_buffer_bytes`, given to the other two as well.
pub const RELAY_SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams per `recvmmsg`/`sendmmsg` of the bare loop: rtpmgrd's.
pub const BARE_BATCH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayKind {
    /// rtpmgrd (sim backend) as configured by default.
    Rtpmgrd,
    /// rtpmgrd with UDP GSO on transmit turned off (`udp_gso = false`).
    RtpmgrdNoGso,
    /// rtpmgrd with the run-to-completion layout
    /// (`layout = "run-to-completion"`).
    RtpmgrdRtc,
    /// rtpmgrd with interrupt moderation (`rx_coalesce_us = 500`).
    RtpmgrdCoalesce,
    /// `bare-relay`: `recvmmsg`/`sendmmsg` of 64, one socket per stream
    /// (epoll above one).
    Bare,
    /// GStreamer `udpsrc ! udpsink` with the elements' defaults
    /// (`sync=true`, sender addresses retrieved).
    Gstreamer,
    /// GStreamer tuned: `retrieve-sender-address=false`, `sync=false`,
    /// `async=false`.
    GstreamerTuned,
}

impl RelayKind {
    /// Key in the JSON document.
    pub fn key(self) -> &'static str {
        match self {
            RelayKind::Rtpmgrd => "rtpmgrd",
            RelayKind::RtpmgrdNoGso => "rtpmgrd_nogso",
            RelayKind::RtpmgrdRtc => "rtpmgrd_rtc",
            RelayKind::RtpmgrdCoalesce => "rtpmgrd_coalesce",
            RelayKind::Bare => "bare_loop",
            RelayKind::Gstreamer => "gstreamer",
            RelayKind::GstreamerTuned => "gstreamer_tuned",
        }
    }

    /// Name in the table.
    pub fn label(self) -> &'static str {
        match self {
            RelayKind::Rtpmgrd => "rtpmgrd (sim)",
            RelayKind::RtpmgrdNoGso => "rtpmgrd (sim, udp_gso = false)",
            RelayKind::RtpmgrdRtc => "rtpmgrd (sim, run-to-completion)",
            RelayKind::RtpmgrdCoalesce => "rtpmgrd (sim, rx_coalesce_us = 500)",
            RelayKind::Bare => "bare loop",
            RelayKind::Gstreamer => "GStreamer (defaults)",
            RelayKind::GstreamerTuned => "GStreamer (tuned)",
        }
    }

    pub fn is_rtpmgrd(self) -> bool {
        matches!(
            self,
            RelayKind::Rtpmgrd | RelayKind::RtpmgrdNoGso | RelayKind::RtpmgrdRtc | RelayKind::RtpmgrdCoalesce
        )
    }

    pub fn is_gstreamer(self) -> bool {
        matches!(self, RelayKind::Gstreamer | RelayKind::GstreamerTuned)
    }

    /// `[daemon]` lines of an rtpmgrd variant.
    fn daemon_lines(self) -> &'static str {
        match self {
            RelayKind::RtpmgrdNoGso => "udp_gso = false\n",
            RelayKind::RtpmgrdRtc => "layout = \"run-to-completion\"\n",
            RelayKind::RtpmgrdCoalesce => "rx_coalesce_us = 500\n",
            _ => "",
        }
    }
}

/// The programs to run.
#[derive(Clone, Debug)]
pub struct Tools {
    pub rtpmgrd: PathBuf,
    pub bare_relay: PathBuf,
    /// `None`: GStreamer is not available (its figures are skipped).
    pub gst_launch: Option<PathBuf>,
}

/// The rtpmgrd configuration for relay streams `bench0..` from
/// `127.0.0.1:in_ports[i]` to `dest`, all through the simulator's loopback
/// port.
pub fn rtpmgrd_config(control_socket: &Path, in_ports: &[u16], dest: SocketAddrV4) -> String {
    rtpmgrd_relay_config(RtpmgrdBackend::Sim, control_socket, in_ports, dest, PT_MP2T)
}

/// [`rtpmgrd_config`] for datagrams of payload type `pt`, with the extra
/// `[daemon]` lines `daemon_extra`.
pub fn rtpmgrd_config_with(
    control_socket: &Path,
    in_ports: &[u16],
    dest: SocketAddrV4,
    pt: u8,
    daemon_extra: &str,
) -> String {
    let t = rtpmgrd_relay_config(RtpmgrdBackend::Sim, control_socket, in_ports, dest, pt);
    t.replacen("\n\n[buffer]", &format!("\n{daemon_extra}\n[buffer]"), 1)
}

/// Where rtpmgrd's rings come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpmgrdBackend {
    /// The in-process simulator (host benchmarks).
    Sim,
    /// `/dev/rtpmgr` (the guest benchmarks, with the real module).
    Kernel,
}

/// The rtpmgrd configuration for relay streams `bench0..` from
/// `127.0.0.1:in_ports[i]` to `dest` through the `loopback` media port of
/// `backend`, each checking payload type `payload_type` (one with a static
/// clock rate, so no `clock_rate` is needed).
pub fn rtpmgrd_relay_config(
    backend: RtpmgrdBackend,
    control_socket: &Path,
    in_ports: &[u16],
    dest: SocketAddrV4,
    payload_type: u8,
) -> String {
    let backend = match backend {
        RtpmgrdBackend::Sim => "backend = \"sim\"\n",
        RtpmgrdBackend::Kernel => "backend = \"kernel\"\ndevice = \"/dev/rtpmgr\"\n",
    };
    let mut t = format!(
        "[daemon]\n{backend}control_socket = \"{}\"\nstatus_interval_secs = 0\nlog_level = \"warn\"\n\
         socket_buffer_bytes = {RELAY_SOCKET_BUFFER}\n\n[buffer]\nslot_count = 1024\nslot_size = 2048\n",
        control_socket.display()
    );
    for (i, port) in in_ports.iter().enumerate() {
        let _ = write!(
            t,
            "\n[[stream]]\nname = \"bench{i}\"\ndirection = \"relay\"\nbind = \"127.0.0.1:{port}\"\n\
             destination = \"{dest}\"\npayload_type = {payload_type}\nmedia_port = \"loopback\"\n"
        );
    }
    t
}

/// Run `cmd` on CPU `cpu` only, if given, and at nice level `nice`, if
/// given (set in the child before exec, so every thread it starts
/// inherits them).
pub fn place_command(cmd: &mut Command, cpu: Option<usize>, nice: Option<i32>) {
    // SAFETY: the closure runs between fork and exec and only makes plain
    // system calls (sched_setaffinity on a CpuSet on its stack,
    // setpriority): no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(cpu) = cpu {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).map_err(io::Error::from)?;
                nix::sched::sched_setaffinity(Pid::from_raw(0), &set).map_err(io::Error::from)?;
            }
            if let Some(n) = nice {
                set_nice(n)?;
            }
            Ok(())
        });
    }
}

/// Set the calling thread's nice level (threads it starts later inherit
/// it). Below 0 needs CAP_SYS_NICE.
pub fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority only reads its integer arguments.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pin the calling thread (and the threads it starts later) to `cpu`.
pub fn pin_self(cpu: usize) -> io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)?;
    Ok(())
}

/// A running relay; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Relay {
    pub kind: RelayKind,
    child: Option<Child>,
    dir: PathBuf,
    control: PathBuf,
}

impl Relay {
    /// Start `kind` relaying `127.0.0.1:in_ports[i]` to `dest` (the bare
    /// loop and GStreamer carry one stream only), on CPU `cpu` and at nice
    /// level `nice` if given.
    pub fn start(
        kind: RelayKind,
        tools: &Tools,
        in_ports: &[u16],
        dest: SocketAddrV4,
        cpu: Option<usize>,
        nice: Option<i32>,
    ) -> io::Result<Relay> {
        Relay::start_with(kind, tools, in_ports, dest, cpu, nice, PT_MP2T, &[])
    }

    /// [`Relay::start`] for datagrams of payload type `pt` (rtpmgrd checks
    /// it), run under `wrapper` (e.g. valgrind and its options; empty:
    /// none). The bare loop takes consecutive `in_ports` (`--ports N`).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        kind: RelayKind,
        tools: &Tools,
        in_ports: &[u16],
        dest: SocketAddrV4,
        cpu: Option<usize>,
        nice: Option<i32>,
        pt: u8,
        wrapper: &[String],
    ) -> io::Result<Relay> {
        let dir = Relay::new_dir()?;
        let control = dir.join("control.sock");
        if kind.is_gstreamer() && in_ports.len() != 1 {
            return Err(io::Error::other(format!("{} relays one stream only", kind.label())));
        }
        if kind == RelayKind::Bare && in_ports.windows(2).any(|w| w[1] != w[0] + 1) {
            return Err(io::Error::other("the bare loop listens on consecutive ports only"));
        }
        let input = format!("127.0.0.1:{}", in_ports[0]);
        let (program, mut args): (PathBuf, Vec<String>) = match kind {
            RelayKind::Rtpmgrd | RelayKind::RtpmgrdNoGso | RelayKind::RtpmgrdRtc | RelayKind::RtpmgrdCoalesce => {
                let conf = dir.join("rtpmgr.toml");
                std::fs::write(&conf, rtpmgrd_config_with(&control, in_ports, dest, pt, kind.daemon_lines()))?;
                (tools.rtpmgrd.clone(), vec!["--config".into(), conf.display().to_string()])
            }
            RelayKind::Bare => (
                tools.bare_relay.clone(),
                vec![
                    "--listen".into(),
                    input,
                    "--ports".into(),
                    in_ports.len().to_string(),
                    "--to".into(),
                    dest.to_string(),
                    "--batch".into(),
                    BARE_BATCH.to_string(),
                    "--buffer".into(),
                    RELAY_SOCKET_BUFFER.to_string(),
                ],
            ),
            RelayKind::Gstreamer | RelayKind::GstreamerTuned => {
                let gst = tools.gst_launch.as_ref().ok_or_else(|| io::Error::other("GStreamer is not available"))?;
                let mut a: Vec<String> = vec!["-q".into(), "udpsrc".into(), "address=127.0.0.1".into()];
                a.push(format!("port={}", in_ports[0]));
                a.push(format!("buffer-size={RELAY_SOCKET_BUFFER}"));
                if kind == RelayKind::GstreamerTuned {
                    a.push("retrieve-sender-address=false".into());
                }
                a.extend([
                    "!".into(),
                    "udpsink".into(),
                    format!("host={}", dest.ip()),
                    format!("port={}", dest.port()),
                ]);
                if kind == RelayKind::GstreamerTuned {
                    a.extend(["sync=false".into(), "async=false".into()]);
                }
                (gst.clone(), a)
            }
        };
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        args.shrink_to_fit();
        cmd.args(&args);
        if kind.is_rtpmgrd() {
            cmd.env_remove("RUST_LOG");
        }
        place_command(&mut cmd, cpu, nice);
        Relay::spawn(kind, cmd, dir, control)
    }

    /// A new scratch directory for one relay (its configuration, control
    /// socket and log), removed when the relay is dropped.
    pub fn new_dir() -> io::Result<PathBuf> {
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rtpmgr-bench-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Run `cmd` as relay `kind` with its output in `dir`/relay.log (`dir`
    /// from [`Relay::new_dir`]; `control`: rtpmgrd's control socket). For
    /// relays set up differently from [`Relay::start`]'s, such as the
    /// guest benchmark's rtpmgrd on the kernel backend.
    pub fn spawn(kind: RelayKind, mut cmd: Command, dir: PathBuf, control: PathBuf) -> io::Result<Relay> {
        let log = std::fs::File::create(dir.join("relay.log"))?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", Path::new(cmd.get_program()).display())))?;
        Ok(Relay { kind, child: Some(child), dir, control })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Err with the end of its log if the relay has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else { return Err("relay stopped".into()) };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("{} exited ({status}): {}", self.kind.label(), self.log_tail())),
            Err(e) => Err(format!("{}: {e}", self.kind.label())),
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("relay.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// CPU time (user + system, all threads) the relay used so far.
    pub fn cpu_seconds(&self) -> io::Result<f64> {
        procfs::cpu_seconds(self.pid())
    }

    /// rtpmgrd's `status` (rtpmgrd only).
    pub fn status(&self) -> io::Result<rtpmgr_control::StatusReport> {
        rtpmgr_control::status(&self.control, Duration::from_secs(2))
    }

    /// Stop the relay: SIGTERM, up to 5 s to exit (rtpmgrd drains), then
    /// SIGKILL.
    pub fn stop(&mut self) {
        self.stop_within(Duration::from_secs(5));
    }

    /// [`Relay::stop`] with `grace` before SIGKILL (a relay under
    /// valgrind needs longer to write its profile).
    pub fn stop_within(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(None) = child.try_wait() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtpmgrd_config_has_one_relay_per_port() {
        let t = rtpmgrd_config(Path::new("/tmp/x/control.sock"), &[5000, 5002], "127.0.0.1:6000".parse().unwrap());
        assert!(t.contains("backend = \"sim\""));
        assert!(t.contains("control_socket = \"/tmp/x/control.sock\""));
        assert_eq!(t.matches("[[stream]]").count(), 2);
        assert!(t.contains("name = \"bench1\"\ndirection = \"relay\"\nbind = \"127.0.0.1:5002\""));
        assert_eq!(t.matches("destination = \"127.0.0.1:6000\"").count(), 2);
        assert_eq!(t.matches("payload_type = 33").count(), 2);
    }

    #[test]
    fn variant_configs_validate() {
        for kind in [RelayKind::Rtpmgrd, RelayKind::RtpmgrdNoGso, RelayKind::RtpmgrdRtc] {
            let t = rtpmgrd_config_with(
                Path::new("/tmp/x/c.sock"),
                &[7000, 7001],
                "127.0.0.1:6000".parse().unwrap(),
                0,
                kind.daemon_lines(),
            );
            assert!(t.contains(kind.daemon_lines()), "{t}");
            let c =
                rtpmgr_config::Config::parse(&t, Path::new("bench.toml")).unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
            assert_eq!(c.streams.len(), 2);
            assert_eq!(c.streams[1].payload_type, Some(0));
        }
    }

    #[test]
    fn kernel_backend_config_validates_with_its_payload_type() {
        let text = rtpmgrd_relay_config(
            RtpmgrdBackend::Kernel,
            Path::new("/tmp/x/c.sock"),
            &[7000, 7001, 7002],
            "127.0.0.1:6000".parse().unwrap(),
            0,
        );
        let c = rtpmgr_config::Config::parse(&text, Path::new("bench.toml")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.daemon.backend, rtpmgr_config::BackendKind::Kernel);
        assert_eq!(c.daemon.device, Path::new("/dev/rtpmgr"));
        assert_eq!(c.streams.len(), 3);
        assert_eq!(c.streams[2].bind, "127.0.0.1:7002".parse().unwrap());
        assert!(c.streams.iter().all(|s| s.payload_type == Some(0) && s.media_port == "loopback"));
    }

    #[test]
    fn rtpmgrd_config_validates_up_to_the_stream_limit() {
        let ports: Vec<u16> = (0..64).map(|i| 20_000 + i).collect();
        let text = rtpmgrd_config(Path::new("/tmp/x/control.sock"), &ports, "127.0.0.1:6000".parse().unwrap());
        let c = rtpmgr_config::Config::parse(&text, Path::new("bench.toml")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.daemon.backend, rtpmgr_config::BackendKind::Sim);
        assert_eq!(c.daemon.socket_buffer_bytes as usize, RELAY_SOCKET_BUFFER);
        assert_eq!(c.streams.len(), 64);
        assert_eq!(c.streams[63].bind, "127.0.0.1:20063".parse().unwrap());
        assert_eq!(c.streams[0].payload_type, Some(33));
        assert_eq!(c.streams[0].direction, rtpmgr_config::Direction::Relay);
    }
}
