// SPDX-License-Identifier: MIT
//! Test harness: runs the real `rtpmgrd` binary on loopback with the sim
//! backend, sends RTP into it and collects what it relays.

#![allow(dead_code)] // each test binary uses a different part

use nix::sys::socket::{setsockopt, sockopt};
use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seven MPEG-TS packets: the usual RTP/MP2T payload.
pub const TS_PAYLOAD: usize = 7 * 188;

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "rtpmgrd-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bin(name: &str) -> PathBuf {
    let rtpmgrd = PathBuf::from(env!("CARGO_BIN_EXE_rtpmgrd"));
    if name == "rtpmgrd" {
        return rtpmgrd;
    }
    let p = rtpmgrd.with_file_name(name);
    assert!(p.exists(), "{} not built: run the tests with `cargo test --workspace`", p.display());
    p
}

/// A relay stream configuration with the sim backend.
pub fn relay_config(dir: &TempDir, streams: &[(&str, u16, u16)]) -> String {
    let mut c = format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\nlog_level = \"info\"\n\n\
         [buffer]\nslot_count = 1024\nslot_size = 2048\n",
        dir.path("control.sock").display()
    );
    for (name, port, dest) in streams {
        c.push_str(&format!(
            "\n[[stream]]\nname = \"{name}\"\ndirection = \"relay\"\nbind = \"127.0.0.1:{port}\"\n\
             destination = \"127.0.0.1:{dest}\"\npayload_type = 33\nmedia_port = \"loopback\"\n"
        ));
    }
    c
}

/// The daemon process; killed on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(dir: &TempDir, config: &str) -> Daemon {
        Daemon::start_with(dir, config, |p| Command::new(p))
    }

    /// Start with a command prefix (e.g. `ip netns exec NS`).
    pub fn start_with(dir: &TempDir, config: &str, command: impl Fn(&Path) -> Command) -> Daemon {
        let path = dir.path("rtpmgr.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path("rtpmgrd.log");
        let child = command(&bin("rtpmgrd"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { child, socket: dir.path("control.sock"), config: path, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while rtpmgr_control::request(&d.socket, rtpmgr_control::Request::Ping, Duration::from_secs(1)).is_err() {
            assert!(Instant::now() < deadline, "rtpmgrd did not come up:\n{}", d.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status(&self) -> rtpmgr_control::StatusReport {
        rtpmgr_control::status(&self.socket, Duration::from_secs(5)).unwrap()
    }

    /// `rtpmgrctl status --json`, run as a user would.
    pub fn ctl_status_json(&self) -> serde_json::Value {
        let out = Command::new(bin("rtpmgrctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "rtpmgrctl failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "rtpmgrd did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Payload of packet `seq`: seven TS packets, sync byte and a pattern.
pub fn ts_payload(seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; TS_PAYLOAD];
    for (i, b) in p.iter_mut().enumerate() {
        *b = if i % 188 == 0 { 0x47 } else { (seq as usize * 31 + i) as u8 };
    }
    p
}

/// RTP/MP2T packet with sequence `seq` (mod 2^16) and a 90 kHz timestamp
/// advancing 1 ms per packet.
pub fn rtp_packet(ssrc: u32, seq: u32) -> Vec<u8> {
    rtp::RtpBuilder::new(rtp::PT_MP2T, seq as u16, seq.wrapping_mul(90), ssrc).to_vec(&ts_payload(seq))
}

/// Collects everything that arrives on a UDP port, in arrival order.
pub struct Sink {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    pub count: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    pub fn start() -> Sink {
        Sink::on(UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    /// A sink on a socket of the caller's (another namespace's).
    pub fn on(sock: UdpSocket) -> Sink {
        let _ = setsockopt(&sock, sockopt::RcvBufForce, &(8 << 20));
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (received, count, stop) = (Arc::clone(&received), Arc::clone(&count), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        received.lock().unwrap().push(buf[..n].to_vec());
                        count.fetch_add(1, Ordering::Release);
                    }
                }
            })
        };
        Sink { port, received, count, stop, thread: Some(thread) }
    }

    /// Wait until `n` datagrams arrived (or fail after `timeout`).
    pub fn wait_for(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count.load(Ordering::Acquire) < n {
            assert!(Instant::now() < deadline, "only {} of {n} packets arrived", self.count.load(Ordering::Acquire));
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn take(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

/// Sends datagrams to `port`, keeping at most `window` in flight (sent but
/// not yet seen by `sink`), as a paced real-time source would: a burst the
/// size of the window never overflows a socket buffer.
pub fn send_windowed(port: u16, packets: &[Vec<u8>], sink: &Sink, window: u64) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(("127.0.0.1", port)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, p) in packets.iter().enumerate() {
        while (i as u64).saturating_sub(sink.count.load(Ordering::Acquire)) >= window {
            assert!(Instant::now() < deadline, "relay stalled at packet {i}");
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        sock.send(p).unwrap();
    }
}

/// Send without flow control, with a pause every `burst` packets.
pub fn send_paced(port: u16, packets: &[Vec<u8>], burst: usize, pause: Duration) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(("127.0.0.1", port)).unwrap();
    for chunk in packets.chunks(burst) {
        for p in chunk {
            sock.send(p).unwrap();
        }
        std::thread::sleep(pause);
    }
}

pub fn write_config(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A network namespace of the test's own, with its loopback up, removed on
/// drop: what crosses a "network" in these tests never leaves the machine.
/// Needs root and iproute2, as CI has; `create` returns None otherwise.
pub struct Netns(pub String);

impl Netns {
    pub fn create(tag: &str) -> Option<Netns> {
        if !nix::unistd::Uid::effective().is_root() || Command::new("ip").arg("-V").output().is_err() {
            eprintln!("this test needs root and iproute2 (ip netns); not run here");
            return None;
        }
        let name = format!("rtpmgr-{tag}-{}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output().unwrap();
        assert!(out.status.success(), "ip netns add: {}", String::from_utf8_lossy(&out.stderr));
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// `ip -n NS ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").arg("-n").arg(&self.0).args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `program` run inside the namespace.
    pub fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }

    pub fn rtpgen(&self, args: &[&str]) -> std::process::Output {
        self.cmd(&bin("rtpgen")).args(args).output().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A relay stream of raw MPEG-TS over UDP (`format = "udp-ts"`), sim
/// backend; `extra` is appended to the stream's table.
pub fn ts_relay_config(dir: &TempDir, port: u16, dest: u16, extra: &str) -> String {
    format!(
        "[daemon]\nbackend = \"sim\"\ncontrol_socket = \"{}\"\nstatus_interval_secs = 0\n\n\
         [[stream]]\nname = \"iptv\"\ndirection = \"relay\"\nbind = \"127.0.0.1:{port}\"\n\
         destination = \"127.0.0.1:{dest}\"\nformat = \"udp-ts\"\n{extra}",
        dir.path("control.sock").display()
    )
}

/// Program 1 of the crafted transport streams: its PMT PID and the
/// elementary PIDs it names (video, audio).
pub const TS_PMT_PID: u16 = 0x1000;
pub const TS_VIDEO: u16 = 0x100;
pub const TS_AUDIO: u16 = 0x101;

/// Writes transport packets with a running continuity counter per PID.
pub struct TsMux {
    cc: Vec<u8>,
    /// Packets written per PID, for content that tells packets apart.
    n: Vec<u32>,
}

impl Default for TsMux {
    fn default() -> Self {
        TsMux { cc: vec![0; 8192], n: vec![0; 8192] }
    }
}

impl TsMux {
    /// One packet of `pid` with `payload` (at most 184 bytes, the rest
    /// 0xFF stuffing), the PID's next continuity counter.
    pub fn packet(&mut self, pid: u16, pusi: bool, payload: &[u8]) -> [u8; 188] {
        let mut b = [0xffu8; 188];
        let cc = &mut self.cc[usize::from(pid)];
        b[0] = 0x47;
        b[1] = (pid >> 8) as u8 | if pusi { 0x40 } else { 0 };
        b[2] = pid as u8;
        b[3] = 0x10 | *cc;
        *cc = (*cc + 1) & 15;
        b[4..4 + payload.len()].copy_from_slice(payload);
        b
    }

    /// A PSI section in one packet (pointer field 0).
    pub fn section(&mut self, pid: u16, section: &[u8]) -> [u8; 188] {
        let mut p = vec![0u8];
        p.extend_from_slice(section);
        self.packet(pid, true, &p)
    }

    pub fn pat(&mut self) -> [u8; 188] {
        self.section(0, &mpegts::psi::build_pat(1, 0, &[(1, TS_PMT_PID)]))
    }

    pub fn pmt(&mut self) -> [u8; 188] {
        self.section(TS_PMT_PID, &mpegts::psi::build_pmt(1, 0, TS_VIDEO, &[(0x02, TS_VIDEO), (0x04, TS_AUDIO)]))
    }

    /// An elementary-stream packet whose body is unique to (pid, count).
    pub fn es(&mut self, pid: u16) -> [u8; 188] {
        let k = self.n[usize::from(pid)];
        self.n[usize::from(pid)] += 1;
        let mut body = [0u8; 184];
        for (i, b) in body.iter_mut().enumerate() {
            *b = (k.wrapping_mul(31).wrapping_add(i as u32 * 7) ^ u32::from(pid)) as u8;
        }
        self.packet(pid, false, &body)
    }
}

/// Seven packets in one datagram, as `pkt_size=1316` senders do.
pub fn ts_datagram(packets: &[[u8; 188]]) -> Vec<u8> {
    packets.iter().flatten().copied().collect()
}

/// The path of an external program a test drives (ffmpeg, GStreamer).
/// `ci/test` installs them (`ensure_host_tools` in ci/lib.sh); a test that
/// needs one fails, rather than skips, where it is missing.
pub fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_default();
    found.unwrap_or_else(|| {
        panic!(
            "{name} not found: this test needs Debian's {package}; ci/test installs it \
             (ensure_host_tools in ci/lib.sh), or: apt-get install {package}"
        )
    })
}

/// A child process (GStreamer, ffmpeg) killed on drop.
pub struct Peer {
    pub child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl Peer {
    /// Start `cmd`, its stdout and stderr into `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Peer {
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd.stdout(f.try_clone().unwrap()).stderr(f).stdin(Stdio::null()).spawn().unwrap();
        Peer { child, name, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `text`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(text) {
            assert!(Instant::now() < deadline, "{} did not print {text:?}:\n{}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT (GStreamer's -e turns it into end-of-stream) and wait.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGINT)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "{} did not stop on SIGINT:\n{}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the process to exit by itself.
    pub fn wait(mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "{} did not finish:\n{}", self.name, self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `f` holds (polling), or fail naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two network namespaces joined by a veth pair: `a` (10.99.0.1, device
/// va) and `b` (10.99.0.2, device vb). What crosses between them can be
/// dropped on the way (`iptables-legacy` in `b`), as a lossy access
/// network would; removed on drop. Needs root and iproute2; `create`
/// returns None without them, like [`Netns::create`].
pub struct NetnsPair {
    pub a: Netns,
    pub b: Netns,
}

impl NetnsPair {
    pub const A: &'static str = "10.99.0.1";
    pub const B: &'static str = "10.99.0.2";

    pub fn create(tag: &str) -> Option<NetnsPair> {
        let a = Netns::create(&format!("{tag}a"))?;
        let b = Netns::create(&format!("{tag}b"))?;
        let out = Command::new("ip")
            .args(["link", "add", "va", "netns", &a.0, "type", "veth", "peer", "name", "vb", "netns", &b.0])
            .output()
            .unwrap();
        assert!(out.status.success(), "veth: {}", String::from_utf8_lossy(&out.stderr));
        a.ip(&["addr", "add", "10.99.0.1/24", "dev", "va"]);
        a.ip(&["link", "set", "va", "up"]);
        b.ip(&["addr", "add", "10.99.0.2/24", "dev", "vb"]);
        b.ip(&["link", "set", "vb", "up"]);
        Some(NetnsPair { a, b })
    }
}

impl Netns {
    /// A UDP socket bound to `addr` inside the namespace: a thread enters
    /// it (setns affects only the calling thread) and binds; the socket
    /// stays in the namespace whichever thread uses it.
    pub fn bind_udp(&self, addr: &str) -> UdpSocket {
        let (path, addr) = (format!("/var/run/netns/{}", self.0), addr.to_string());
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns with a namespace file descriptor we hold open and
            // CLONE_NEWNET; it changes only this thread's network namespace.
            let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            UdpSocket::bind(&addr).unwrap()
        })
        .join()
        .unwrap()
    }

    /// `program ARGS` in the namespace, which must succeed; its stdout.
    pub fn run(&self, program: &Path, args: &[&str]) -> String {
        let out = self.cmd(program).args(args).output().unwrap();
        assert!(out.status.success(), "{} {args:?}: {}", program.display(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
