// SPDX-License-Identifier: MIT
//! The controller: configures the device, starts the data threads and the
//! streams, serves the control socket, logs status, reloads on SIGHUP and
//! stops gracefully on SIGTERM/SIGINT.

use crate::backend::{find_port, Backend};
use crate::kernel_path::{self, KernelStream};
use crate::net;
use crate::receiver::Receiver;
use crate::stream::{direction_bits, Stream, StreamTable};
use crate::transmitter::Transmitter;
use crate::wait::{ThreadStats, Waker};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rtpmgr_abi as abi;
use rtpmgr_config::{Config, DataPath, Direction, Layout, StreamConfig, StreamFormat};
use rtpmgr_control::{
    FecReport, LegReport, ReorderReport, Reply, Request, RingsReport, RtcpReport, SessionReport, StatusReport,
    StreamReport, ThreadReport, TsReport,
};
use rtpmgr_ring::{Region, RingId};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a graceful stop waits for the rings to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// A stream that cannot start (its port gone, its interface not up yet,
/// its address taken) is retried after this, doubling up to
/// [`RETRY_MAX`]: it comes back by itself, and a dead one costs a log
/// line per half minute.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How often the controller checks that every running stream's media port
/// is still there (a peripheral can be unbound or hot-unplugged).
const PORT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A configured stream that is not running, and when to try it again.
struct Waiting {
    config: StreamConfig,
    error: String,
    attempts: u32,
    next_try: Instant,
}

impl Waiting {
    fn new(config: StreamConfig, error: String) -> Waiting {
        Waiting { config, error, attempts: 1, next_try: Instant::now() + RETRY_MIN }
    }

    /// The delay before the next attempt, after `attempts` failed ones.
    fn backoff(attempts: u32) -> Duration {
        RETRY_MIN.saturating_mul(1 << attempts.saturating_sub(1).min(5)).min(RETRY_MAX)
    }
}

pub struct Daemon {
    config_path: PathBuf,
    config: Config,
    backend: Arc<dyn Backend>,
    region: Arc<Region>,
    table: Arc<StreamTable>,
    /// `mode = "kernel"` streams the module runs.
    kernel: Vec<KernelStream>,
    /// `mode = "kernel"` streams running in user space instead, and why.
    fallbacks: HashMap<String, String>,
    /// Where [`Daemon::free_ids`] looks first.
    next_id: Cell<u32>,
    /// Streams of the configuration that are not running, with the reason;
    /// retried with backoff.
    failed: Vec<Waiting>,
    next_port_check: Instant,
    rx_stop: Arc<AtomicBool>,
    tx_stop: Arc<AtomicBool>,
    receiver: Option<JoinHandle<()>>,
    transmitter: Option<JoinHandle<()>>,
    unroutable: Arc<AtomicU64>,
    started: Instant,
    /// Stream ids of the device: `0..max_streams`.
    max_streams: u32,
    /// The receiver's and the transmitter's: woken when the stream table
    /// changes and to stop.
    wakers: [Arc<Waker>; 2],
    /// The receiver's and the transmitter's counters.
    thread_stats: [Arc<ThreadStats>; 2],
}

fn ctx(what: impl std::fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Daemon {
    /// Configure the device and start everything the configuration names.
    /// Streams that fail to start are logged and reported, not fatal: one
    /// bad multicast interface must not take the other channels down.
    pub fn start(config_path: &Path, config: Config, backend: Arc<dyn Backend>) -> io::Result<Daemon> {
        let info = backend.info().map_err(|e| ctx("GET_INFO", e))?;
        if info.abi_version != abi::ABI_VERSION {
            return Err(io::Error::other(format!(
                "device speaks ABI version {}, this rtpmgrd speaks {}",
                info.abi_version,
                abi::ABI_VERSION
            )));
        }
        let b = &config.buffer;
        let region = backend.configure(b.slot_count, b.slot_size).map_err(|e| {
            ctx(format_args!("CONFIGURE_BUFFER slot_count={} slot_size={}", b.slot_count, b.slot_size), e)
        })?;
        log::info!(
            "{} backend: {} slots of {} bytes per ring, {} KiB shared",
            backend.name(),
            b.slot_count,
            b.slot_size,
            region.len() / 1024
        );
        let table = Arc::new(StreamTable::default());
        let rx_stop = Arc::new(AtomicBool::new(false));
        let tx_stop = Arc::new(AtomicBool::new(false));
        let unroutable = Arc::new(AtomicU64::new(0));
        let rx_waker = Arc::new(Waker::new()?);
        let tx_waker = Arc::new(Waker::new()?);
        let rx_stats = Arc::new(ThreadStats::default());
        let tx_stats = Arc::new(ThreadStats::default());
        // The threads build their ring ends themselves: nix's preallocated
        // message headers hold raw pointers and are not Send.
        let rtc = config.daemon.layout == Layout::RunToCompletion;
        if rtc && backend.poll_fd().is_none() {
            log::warn!("layout = \"run-to-completion\" needs a device that answers poll; using the threads layout");
        }
        let rtc = rtc && backend.poll_fd().is_some();
        let gso = config.daemon.udp_gso;
        let coalesce = config.daemon.rx_coalesce_us;
        let (receiver, transmitter) = if rtc {
            let (backend, region, table, rx_stop, tx_stop, unroutable) = (
                Arc::clone(&backend),
                Arc::clone(&region),
                Arc::clone(&table),
                Arc::clone(&rx_stop),
                Arc::clone(&tx_stop),
                Arc::clone(&unroutable),
            );
            let (rx_waker, tx_waker, rx_stats, tx_stats) =
                (Arc::clone(&rx_waker), Arc::clone(&tx_waker), Arc::clone(&rx_stats), Arc::clone(&tx_stats));
            log::info!("layout: run-to-completion (one thread receives and transmits)");
            let h = std::thread::Builder::new().name("rtpmgr-rtc".into()).spawn(move || {
                let rx = Receiver::new(
                    Arc::clone(&backend),
                    &region,
                    Arc::clone(&table),
                    Arc::clone(&rx_stop),
                    rx_waker,
                    rx_stats,
                )
                .map(|r| r.with_coalesce(coalesce));
                let tx = Transmitter::new(
                    Arc::clone(&backend),
                    &region,
                    table,
                    Arc::clone(&tx_stop),
                    unroutable,
                    gso,
                    tx_waker,
                    tx_stats,
                );
                match (rx, tx) {
                    (Ok(rx), Ok(tx)) => crate::rtc::run(rx, tx, backend, rx_stop, tx_stop),
                    (Err(e), _) | (_, Err(e)) => log::error!("run-to-completion thread: cannot start: {e}"),
                }
            })?;
            // Joined after the transmitter's stop, as the transmitter is.
            (None, h)
        } else {
            let receiver = {
                let (backend, region, table, stop, waker, stats) = (
                    Arc::clone(&backend),
                    Arc::clone(&region),
                    Arc::clone(&table),
                    Arc::clone(&rx_stop),
                    Arc::clone(&rx_waker),
                    Arc::clone(&rx_stats),
                );
                std::thread::Builder::new().name("rtpmgr-rx".into()).spawn(move || {
                    match Receiver::new(backend, &region, table, stop, waker, stats) {
                        Ok(r) => r.with_coalesce(coalesce).run(),
                        Err(e) => log::error!("receiver: cannot start: {e}"),
                    }
                })?
            };
            let transmitter = {
                let (backend, region, table, stop, unroutable, waker, stats) = (
                    Arc::clone(&backend),
                    Arc::clone(&region),
                    Arc::clone(&table),
                    Arc::clone(&tx_stop),
                    Arc::clone(&unroutable),
                    Arc::clone(&tx_waker),
                    Arc::clone(&tx_stats),
                );
                std::thread::Builder::new().name("rtpmgr-tx".into()).spawn(move || {
                    match Transmitter::new(backend, &region, table, stop, unroutable, gso, waker, stats) {
                        Ok(t) => t.run(),
                        Err(e) => log::error!("transmitter: cannot start: {e}"),
                    }
                })?
            };
            (Some(receiver), transmitter)
        };
        let mut daemon = Daemon {
            config_path: config_path.to_owned(),
            config: Config { streams: Vec::new(), ..config.clone() },
            backend,
            region,
            table,
            kernel: Vec::new(),
            fallbacks: HashMap::new(),
            next_id: Cell::new(0),
            failed: Vec::new(),
            next_port_check: Instant::now() + PORT_CHECK_INTERVAL,
            rx_stop,
            tx_stop,
            receiver,
            transmitter: Some(transmitter),
            unroutable,
            started: Instant::now(),
            max_streams: info.max_streams.clamp(1, abi::MAX_STREAM_IDS),
            wakers: [rx_waker, tx_waker],
            thread_stats: [rx_stats, tx_stats],
        };
        daemon.apply_streams(&config.streams);
        daemon.config = config;
        Ok(daemon)
    }

    /// `n` stream ids neither path uses, round-robin from the one after the
    /// last handed out: a stopped stream's slots may still wait in the
    /// to-device ring, and its id must not name a new stream (perhaps a
    /// kernel sender to another destination) before the device took them.
    fn free_ids(&self, n: usize) -> io::Result<Vec<u32>> {
        let (_, running) = self.table.snapshot();
        let start = self.next_id.get();
        let max = self.max_streams;
        let ids: Vec<u32> = (0..max)
            .map(|i| (start + i) % max)
            .filter(|id| {
                running.iter().all(|s| s.id != *id) && self.kernel.iter().all(|k| k.rx_id != *id && k.target_id != *id)
            })
            .take(n)
            .collect();
        if ids.len() < n {
            return Err(io::Error::other(format!("no free stream id (at most {max})")));
        }
        if let Some(last) = ids.last() {
            self.next_id.set((last + 1) % max);
        }
        Ok(ids)
    }

    /// The stream table changed, or a stop was asked for: the data threads
    /// look now, not after their idle timeout.
    fn wake_threads(&self) {
        for w in &self.wakers {
            w.wake();
        }
    }

    fn is_running(&self, name: &str) -> bool {
        self.table.get(name).is_some() || self.kernel.iter().any(|k| k.config.name == name)
    }

    /// Start a stream on the path its `mode` asks for; a `mode = "kernel"`
    /// stream the device cannot run starts in user space, with a log line.
    fn start_any(&mut self, cfg: &StreamConfig) -> io::Result<()> {
        self.fallbacks.remove(&cfg.name);
        if let (DataPath::Kernel, Some(reason)) = (cfg.mode, user_space_only(cfg)) {
            log::warn!("stream {}: mode = \"kernel\" is not available: {reason}; running it in user space", cfg.name);
            self.fallbacks.insert(cfg.name.clone(), reason);
        } else if cfg.mode == DataPath::Kernel {
            let ids = self.free_ids(2)?;
            let buffer = self.config.daemon.socket_buffer_bytes;
            match kernel_path::start(self.backend.as_ref(), cfg, ids[0], ids[1], buffer) {
                Ok(k) => {
                    log::info!(
                        "stream {} started in the kernel: {} {} {} (ids {} and {})",
                        cfg.name,
                        dir_name(cfg.direction),
                        cfg.bind,
                        match (cfg.direction, cfg.destination) {
                            (Direction::Relay, Some(d)) => format!("to {d}"),
                            _ => format!("into port {}", cfg.media_port),
                        },
                        k.rx_id,
                        k.target_id
                    );
                    self.kernel.push(k);
                    return Ok(());
                }
                Err(kernel_path::StartError::Failed(e)) => return Err(e),
                Err(kernel_path::StartError::Unsupported(reason)) => {
                    log::warn!(
                        "stream {}: mode = \"kernel\" is not available: {reason}; running it in user space",
                        cfg.name
                    );
                    self.fallbacks.insert(cfg.name.clone(), reason);
                }
            }
        }
        self.start_stream(cfg)
    }

    fn start_stream(&self, cfg: &StreamConfig) -> io::Result<()> {
        let port = find_port(self.backend.as_ref(), &cfg.media_port)?;
        let id = self.free_ids(1)?[0];
        let socket = net::open_stream_socket(
            cfg,
            self.config.daemon.socket_buffer_bytes,
            self.config.daemon.receive_timestamps,
        )?;
        let rtcp_socket = match cfg.rtcp_port() {
            Some(_) => Some(net::open_rtcp_socket(cfg)?),
            None => None,
        };
        self.backend.start_stream(id, port.index, direction_bits(cfg.direction)).map_err(|e| ctx("START_STREAM", e))?;
        // Started on the device before the threads see it, so no slot ever
        // names a stream the device does not know.
        let max_packet = self.region.geometry().slot_size.saturating_sub(abi::SLOT_HEADER_SIZE) as usize;
        let mut stream = Stream::new(id, cfg.clone(), port.index, socket, max_packet);
        for (leg, c) in [Some(cfg.clone()), cfg.leg2_view()].iter().enumerate() {
            if let Some(index) = c.as_ref().and_then(joined_index) {
                stream.joined_ifindex[leg].store(index, Ordering::Relaxed);
            }
        }
        stream.rtcp_socket = rtcp_socket;
        stream.fec_sockets = net::open_fec_sockets(cfg, self.config.daemon.socket_buffer_bytes)?;
        if let Some(leg) = cfg.leg2_view() {
            let s = net::open_stream_socket(
                &leg,
                self.config.daemon.socket_buffer_bytes,
                self.config.daemon.receive_timestamps,
            )
            .map_err(|e| ctx(format_args!("leg2 {}", leg.bind), e))?;
            stream.leg2_socket = Some(s);
        }
        self.table.insert(Arc::new(stream));
        self.wake_threads();
        log::info!(
            "stream {} started: {} {} via port {} (id {id})",
            cfg.name,
            dir_name(cfg.direction),
            cfg.bind,
            cfg.media_port
        );
        Ok(())
    }

    fn stop_stream(&mut self, name: &str) {
        if let Some(s) = self.table.remove(name) {
            self.wake_threads();
            if let Err(e) = self.backend.stop_stream(s.id) {
                log::warn!("stream {name}: STOP_STREAM: {e}");
            }
            log::info!("stream {name} stopped");
        }
        if let Some(i) = self.kernel.iter().position(|k| k.config.name == name) {
            self.kernel.remove(i).stop(self.backend.as_ref());
            log::info!("stream {name} stopped (kernel)");
        }
        self.fallbacks.remove(name);
    }

    /// Make the running streams match `wanted`: stop what is gone or
    /// changed, start what is new or changed, leave the rest untouched.
    fn apply_streams(&mut self, wanted: &[StreamConfig]) {
        let (_, running) = self.table.snapshot();
        let running = running.iter().map(|s| &s.config).chain(self.kernel.iter().map(|k| &k.config));
        let stale: Vec<String> = running.filter(|c| !wanted.iter().any(|w| w == *c)).map(|c| c.name.clone()).collect();
        for name in stale {
            self.stop_stream(&name);
        }
        self.failed.clear();
        for w in wanted {
            if self.is_running(&w.name) {
                continue; // unchanged and running
            }
            if let Err(e) = self.start_any(w) {
                log::error!("stream {}: cannot start: {e}; retrying in {RETRY_MIN:?}", w.name);
                self.failed.push(Waiting::new(w.clone(), e.to_string()));
            }
        }
    }

    /// Try the streams whose retry time has come; called from the control
    /// loop, at least once a second.
    fn retry_failed(&mut self) {
        let now = Instant::now();
        let mut still = Vec::with_capacity(self.failed.len());
        for mut w in std::mem::take(&mut self.failed) {
            if w.next_try > now {
                still.push(w);
                continue;
            }
            match self.start_any(&w.config) {
                Ok(()) => log::info!("stream {}: running again after {} failed attempts", w.config.name, w.attempts),
                Err(e) => {
                    let delay = Waiting::backoff(w.attempts);
                    let error = e.to_string();
                    if error != w.error {
                        log::error!("stream {}: cannot start: {error}; retrying in {delay:?}", w.config.name);
                    } else {
                        log::warn!("stream {}: still cannot start; retrying in {delay:?}", w.config.name);
                    }
                    w.attempts += 1;
                    w.error = error;
                    w.next_try = now + delay;
                    still.push(w);
                }
            }
        }
        self.failed = still;
    }

    /// Stop the streams whose media port went away (unbound or unplugged
    /// peripheral) and queue them for restart: when the port comes back,
    /// under the same name, so do they.
    fn check_ports(&mut self) {
        let now = Instant::now();
        if now < self.next_port_check {
            return;
        }
        self.next_port_check = now + PORT_CHECK_INTERVAL;
        let (_, running) = self.table.snapshot();
        let on_ports: Vec<(u32, StreamConfig)> = running
            .iter()
            .map(|s| (s.port, s.config.clone()))
            .chain(self.kernel.iter().filter_map(|k| Some((k.port?, k.config.clone()))))
            .collect();
        for (port, config) in on_ports {
            let gone = match self.backend.port(port) {
                Ok(p) if p.name_str() == Some(config.media_port.as_str()) => continue,
                Ok(p) => format!("port index {port} is now {:?}", p.name_str().unwrap_or("?")),
                Err(e) => e.to_string(),
            };
            log::error!(
                "stream {}: media port {} went away ({gone}); stopping the stream until it returns",
                config.name,
                config.media_port
            );
            self.stop_stream(&config.name);
            let error = format!("media port {} went away: {gone}", config.media_port);
            self.failed.push(Waiting::new(config, error));
        }
    }

    /// Join the groups again whose named interface came back with another
    /// index (removed and created again: a VLAN, a USB or PPP link, a
    /// re-plugged NIC): the kernel dropped the old membership with the old
    /// device. Down and up keeps the index, and the kernel re-sends its
    /// reports by itself. Called with the port check, once a second.
    fn check_multicast(&self) {
        let (_, running) = self.table.snapshot();
        for s in &running {
            let legs = [(Some(s.config.clone()), Some(&s.socket)), (s.config.leg2_view(), s.leg2_socket.as_ref())];
            for (leg, (cfg, sock)) in legs.iter().enumerate() {
                let (Some(cfg), Some(sock)) = (cfg, sock) else { continue };
                let (Some(group), Some(name)) = (cfg.group, cfg.interface.as_deref()) else { continue };
                let old = s.joined_ifindex[leg].load(Ordering::Relaxed);
                let Ok(new) = nix::net::if_::if_nametoindex(name) else {
                    if old != 0 {
                        log::warn!(
                            "stream {}: interface {name} is gone; {group} is joined again when it returns",
                            s.config.name
                        );
                        s.joined_ifindex[leg].store(u32::MAX, Ordering::Relaxed);
                    }
                    continue;
                };
                if new == old {
                    continue;
                }
                match net::rejoin(sock, group, cfg.source, old, new) {
                    Ok(()) => {
                        s.joined_ifindex[leg].store(new, Ordering::Relaxed);
                        s.rejoins.fetch_add(1, Ordering::Relaxed);
                        log::info!(
                            "stream {}: joined {group} again on {name} (interface index {new}, was {})",
                            s.config.name,
                            if old == u32::MAX { "gone".to_string() } else { old.to_string() }
                        );
                    }
                    Err(e) => log::warn!("stream {}: re-join {group} on {name}: {e}", s.config.name),
                }
            }
        }
    }

    /// Re-read the configuration file. A bad file changes nothing.
    pub fn reload(&mut self) -> Result<String, String> {
        let new = Config::load(&self.config_path).map_err(|e| {
            let msg = format!("reload refused, keeping the running configuration: {e}");
            log::error!("{msg}");
            msg
        })?;
        let old = self.config.clone();
        if new.buffer != old.buffer
            || new.daemon.backend != old.daemon.backend
            || new.daemon.device != old.daemon.device
        {
            log::warn!("reload: [buffer] and the backend/device take effect on restart only");
        }
        if new.daemon.control_socket != old.daemon.control_socket {
            log::warn!("reload: control_socket takes effect on restart only");
        }
        if new.daemon.layout != old.daemon.layout
            || new.daemon.udp_gso != old.daemon.udp_gso
            || new.daemon.rx_coalesce_us != old.daemon.rx_coalesce_us
        {
            log::warn!("reload: layout, udp_gso and rx_coalesce_us take effect on restart only");
        }
        if std::env::var_os("RUST_LOG").is_none() {
            log::set_max_level(new.daemon.log_level);
        }
        // What needs a restart keeps describing what runs; the rest (status
        // interval, log level, socket buffers of new streams) applies now.
        let daemon = rtpmgr_config::DaemonConfig {
            backend: old.daemon.backend,
            device: old.daemon.device,
            control_socket: old.daemon.control_socket,
            control_socket_mode: old.daemon.control_socket_mode,
            layout: old.daemon.layout,
            udp_gso: old.daemon.udp_gso,
            rx_coalesce_us: old.daemon.rx_coalesce_us,
            ..new.daemon
        };
        self.config = Config { daemon, buffer: old.buffer, streams: new.streams };
        let before = self.running_names();
        let wanted = self.config.streams.clone();
        self.apply_streams(&wanted);
        let after = self.running_names();
        let started = after.iter().filter(|s| !before.contains(s)).count();
        let msg = format!(
            "reloaded {}: {} streams running ({} started), {} failed",
            self.config_path.display(),
            after.len(),
            started,
            self.failed.len()
        );
        log::info!("{msg}");
        Ok(msg)
    }

    fn running_names(&self) -> Vec<String> {
        let (_, running) = self.table.snapshot();
        running.iter().map(|s| &s.config).chain(self.kernel.iter().map(|k| &k.config)).map(|c| c.name.clone()).collect()
    }

    pub fn status(&self) -> StatusReport {
        let session = self.backend.status(abi::STATUS_SESSION_ONLY).map(|s| s.session).unwrap_or_default();
        let g = self.region.geometry();
        let fill = |ring| {
            let (p, c, _) = self.region.snapshot(ring);
            abi::ring_fill(p, c, g.slot_count).unwrap_or(u32::MAX)
        };
        let (_, streams) = self.table.snapshot();
        let mut reports: Vec<StreamReport> = streams.iter().map(|s| self.stream_report(s)).collect();
        for k in &self.kernel {
            reports.push(k.report(self.backend.as_ref(), config_report(&k.config)));
        }
        for w in &self.failed {
            let retry = w.next_try.saturating_duration_since(Instant::now());
            reports.push(StreamReport {
                state: "failed".into(),
                error: Some(format!("{} (attempt {}, next in {:.0?})", w.error, w.attempts, retry)),
                ..config_report(&w.config)
            });
        }
        StatusReport {
            ok: true,
            version: env!("CARGO_PKG_VERSION").into(),
            backend: self.backend.name().into(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            config: self.config_path.display().to_string(),
            rings: RingsReport {
                slot_count: g.slot_count,
                slot_size: g.slot_size,
                to_device_fill: fill(RingId::ToDevice),
                from_device_fill: fill(RingId::FromDevice),
            },
            session: SessionReport {
                to_device_packets: session.to_dev_packets,
                from_device_packets: session.from_dev_packets,
                invalid_slots: session.invalid_slots,
                invalid_indices: session.invalid_indices,
                ring_full_drops: session.ring_full_drops,
                kicks: session.kicks,
                worker_sleeps: session.worker_sleeps,
                unroutable: self.unroutable.load(Ordering::Relaxed),
            },
            streams: reports,
            threads: ["rx", "tx"]
                .iter()
                .zip(&self.thread_stats)
                .map(|(name, t)| ThreadReport {
                    name: (*name).into(),
                    wakeups: ThreadStats::get(&t.wakeups),
                    timeouts: ThreadStats::get(&t.timeouts),
                    batches: ThreadStats::get(&t.batches),
                    packets: ThreadStats::get(&t.packets),
                    syscalls: ThreadStats::get(&t.syscalls),
                    gso_sends: ThreadStats::get(&t.gso_sends),
                })
                .collect(),
        }
    }

    fn stream_report(&self, s: &Stream) -> StreamReport {
        let dev = self.backend.status(s.id).map(|st| st.stream).unwrap_or_default();
        let c = s.counters();
        let (mut lost, mut duplicates, mut reordered) = (0i64, 0u64, 0u64);
        for src in c.rtp.sources() {
            lost += src.lost();
            duplicates += src.duplicates();
            reordered += src.reordered();
        }
        let current = c.rtp.current();
        let ts = c.ts.as_deref().map(ts_report);
        let reorder = c.reorder.as_ref().map(|rb| {
            let st = rb.stats();
            ReorderReport {
                delay_ms: s.config.reorder_ms,
                window: rb.window() as u64,
                held: rb.held() as u64,
                released: st.released,
                reordered: st.reordered,
                late: st.late,
                duplicates: st.duplicates,
                skipped: st.skipped,
                overflow_skipped: st.overflow_skipped,
                restarts: st.restarts,
            }
        });
        if s.config.format == StreamFormat::UdpTs {
            if let Some(t) = &ts {
                (lost, duplicates, reordered) = (t.cc_lost as i64, t.cc_duplicates, t.cc_reordered);
            }
        }
        let leg2 = c.leg2.as_ref().map(|l| {
            let (mut lost, mut duplicates, mut reordered) = (0i64, 0u64, 0u64);
            for src in l.rtp.sources() {
                lost += src.lost();
                duplicates += src.duplicates();
                reordered += src.reordered();
            }
            LegReport {
                bind: s.config.leg2.as_ref().map(|l| l.bind.to_string()).unwrap_or_default(),
                packets: l.packets,
                bytes: l.bytes,
                lost,
                duplicates,
                reordered,
                malformed: l.malformed,
                socket_drops: s.leg2_socket.as_ref().and_then(net::socket_drops).unwrap_or(0),
            }
        });
        let fec = c.fec.as_ref().map(|f| {
            let st = f.stats();
            FecReport {
                l: st.l.into(),
                d: st.d.into(),
                columns: st.columns,
                rows: st.rows,
                recovered: st.recovered,
                unrecoverable: st.unrecoverable,
                malformed: st.malformed,
                overflow: st.overflow,
            }
        });
        let rtcp = c.rtcp.as_ref().map(|rt| {
            let k = rt.counters;
            RtcpReport {
                mode: s.config.rtcp.as_str().into(),
                ssrc: rt.ssrc,
                peer: rt.upstream(&s.config).map(|a| a.to_string()),
                rr_sent: k.rr_sent,
                sr_sent: k.sr_sent,
                nack_sent: k.nack_sent,
                nack_requested: k.nack_requested,
                received: k.received,
                sr_received: k.sr_received,
                rr_received: k.rr_received,
                nack_received: k.nack_received,
                malformed: k.malformed,
                rtx_received: k.rtx_received,
                rist_received: k.rist_received,
                repaired: k.repaired,
                send_errors: k.send_errors,
            }
        });
        StreamReport {
            id: s.id,
            state: "running".into(),
            mode: "user".into(),
            fallback: self.fallbacks.get(&s.config.name).cloned(),
            packets: c.packets,
            bytes: c.bytes,
            lost,
            duplicates,
            reordered,
            jitter_ms: current.map(|src| src.jitter_ms()).unwrap_or(0.0),
            malformed: c.malformed,
            wrong_payload_type: c.wrong_payload_type,
            oversize: c.oversize,
            // Under ring_full = "wait", where a ring that stays full shows.
            socket_drops: net::socket_drops(&s.socket).unwrap_or(0),
            ring_full_drops: c.ring_full_drops,
            sent_packets: c.sent_packets,
            sent_bytes: c.sent_bytes,
            send_errors: c.send_errors,
            ssrc: current.map(|src| src.ssrc()),
            ssrc_changes: c.rtp.ssrc_changes(),
            device_to_packets: dev.to_dev_packets,
            device_from_packets: dev.from_dev_packets,
            device_ring_full_drops: dev.ring_full_drops,
            ts,
            reorder,
            rtcp,
            fec,
            leg2,
            rejoins: s.rejoins.load(Ordering::Relaxed),
            ..config_report(&s.config)
        }
    }

    /// One log line per stream.
    fn log_status(&self) {
        for s in self.status().streams {
            if s.state != "running" {
                log::warn!("{}: not running: {}", s.name, s.error.unwrap_or_default());
                continue;
            }
            let ts = s.ts.as_ref().map_or(String::new(), |t| {
                format!(
                    "; TR 101 290: sync loss {}, sync byte {}, PAT {}, CC {}, PMT {}, PID {}",
                    t.sync_loss, t.sync_byte_error, t.pat_error, t.cc_error, t.pmt_error, t.pid_error
                )
            });
            log::info!(
                "{} ({}, {}): rx {} pkts {} B, lost {}, dup {}, reord {}, jitter {:.3} ms, malformed {}, socket drops {}, ring-full drops {}, forward drops {}; tx {} pkts, errors {}{ts}",
                s.name,
                s.mode,
                s.format,
                s.packets,
                s.bytes,
                s.lost,
                s.duplicates,
                s.reordered,
                s.jitter_ms,
                s.malformed,
                s.socket_drops,
                s.ring_full_drops,
                s.forward_drops,
                s.sent_packets,
                s.send_errors
            );
        }
    }

    /// Graceful stop: stop reading the network, let the device and the
    /// transmitter drain both rings, then stop the streams.
    pub fn shutdown(mut self) {
        self.rx_stop.store(true, Ordering::Release);
        // Woken also when one thread does both (run-to-completion): it
        // stops reading the sockets and goes on transmitting.
        self.wakers[0].wake();
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut quiet = 0;
        while quiet < 3 && Instant::now() < deadline {
            let (tp, tc, _) = self.region.snapshot(RingId::ToDevice);
            let (fp, fc, _) = self.region.snapshot(RingId::FromDevice);
            if tp == tc && fp == fc {
                quiet += 1;
            } else {
                quiet = 0;
                // A sleeping device worker needs a kick to take the rest.
                let _ = self.backend.kick();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if quiet < 3 {
            log::warn!("stopping with packets still in the rings after {DRAIN_TIMEOUT:?}");
        }
        self.tx_stop.store(true, Ordering::Release);
        self.wakers[1].wake();
        if let Some(h) = self.transmitter.take() {
            let _ = h.join();
        }
        for name in self.running_names() {
            self.stop_stream(&name);
        }
        log::info!("stopped");
    }
}

/// Why a `mode = "kernel"` stream needs the user-space path whatever the
/// device offers: a setting the module's data path does not implement yet.
fn user_space_only(cfg: &StreamConfig) -> Option<String> {
    if cfg.reorder_ms > 0 {
        return Some("the module's kernel path has no reorder buffer (reorder_ms)".into());
    }
    if cfg.rtcp != rtpmgr_config::RtcpMode::Off {
        return Some("the module's kernel path sends no RTCP (rtcp)".into());
    }
    if cfg.fec {
        return Some("the module's kernel path has no FEC decoder (fec)".into());
    }
    if cfg.leg2.is_some() {
        return Some("the module's kernel path does not merge two legs (leg2)".into());
    }
    None
}

/// The index of the interface a stream's group is joined on by name.
fn joined_index(cfg: &StreamConfig) -> Option<u32> {
    cfg.group?;
    nix::net::if_::if_nametoindex(cfg.interface.as_deref()?).ok()
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
        Direction::Relay => "relay",
    }
}

fn ts_report(a: &mpegts::tr101290::Analyzer) -> TsReport {
    let c = a.counters();
    let cc = a.cc_counters();
    TsReport {
        ts_packets: c.ts_packets,
        sync_loss: c.sync_loss,
        sync_byte_error: c.sync_byte_error,
        pat_error: c.pat_error,
        cc_error: c.cc_error,
        pmt_error: c.pmt_error,
        pid_error: c.pid_error,
        transport_error: c.transport_error,
        crc_error: c.crc_error,
        programs: a.programs() as u64,
        es_pids: a.es_pids() as u64,
        cc_lost: cc.lost,
        cc_duplicates: cc.duplicates,
        cc_reordered: cc.reordered,
        continuity_only: false,
    }
}

fn config_report(cfg: &StreamConfig) -> StreamReport {
    StreamReport {
        name: cfg.name.clone(),
        direction: dir_name(cfg.direction).into(),
        mode: match cfg.mode {
            DataPath::User => "user",
            DataPath::Kernel => "kernel",
        }
        .into(),
        format: cfg.format.as_str().into(),
        media_port: cfg.media_port.clone(),
        bind: cfg.bind.to_string(),
        destination: cfg.destination.map(|d| d.to_string()),
        ..Default::default()
    }
}

/// Bind the control socket: stale file removed, parent created, mode set.
fn bind_control(path: &Path, mode: u32) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ctx(format_args!("create {}", dir.display()), e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ctx(format_args!("remove stale {}", path.display()), e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| ctx(format_args!("bind {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn serve(daemon: &mut Daemon, conn: UnixStream) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    conn.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut line = String::new();
    BufReader::new(&conn).take_line(&mut line)?;
    let answer = match Request::parse(&line) {
        Some(Request::Status) => serde_json::to_string(&daemon.status()),
        Some(Request::Ping) => {
            serde_json::to_string(&Reply { ok: true, message: Some("pong".into()), ..Default::default() })
        }
        Some(Request::Reload) => serde_json::to_string(&match daemon.reload() {
            Ok(m) => Reply { ok: true, message: Some(m), ..Default::default() },
            Err(e) => Reply { ok: false, error: Some(e), ..Default::default() },
        }),
        None => serde_json::to_string(&Reply {
            ok: false,
            error: Some(format!("unknown request {:?}; known: status, reload, ping", line.trim())),
            ..Default::default()
        }),
    }
    .map_err(io::Error::other)?;
    let mut conn = conn;
    conn.write_all(answer.as_bytes())?;
    conn.write_all(b"\n")
}

/// Read one line of at most 256 bytes: a client cannot make us buffer more.
trait TakeLine {
    fn take_line(self, line: &mut String) -> io::Result<usize>;
}

impl<R: io::Read> TakeLine for BufReader<R> {
    fn take_line(self, line: &mut String) -> io::Result<usize> {
        io::Read::take(self, 256).read_line(line)
    }
}

/// Run until SIGTERM/SIGINT. Signals are blocked in every thread and read
/// from a signalfd here, so no handler runs in the middle of the data path.
pub fn run(config_path: &Path, config: Config, backend: Arc<dyn Backend>) -> io::Result<()> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    // Block before any thread starts, so all of them inherit the mask.
    mask.thread_block().map_err(io::Error::from)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let control_path = config.daemon.control_socket.clone();
    let listener = bind_control(&control_path, config.daemon.control_socket_mode)?;
    let mut daemon = Daemon::start(config_path, config, backend)?;
    log::info!("rtpmgrd {} running; control socket {}", env!("CARGO_PKG_VERSION"), control_path.display());
    let mut next_status = Instant::now() + Duration::from_secs(daemon.config.daemon.status_interval_secs.into());
    let mut next_mc_check = Instant::now() + PORT_CHECK_INTERVAL;
    loop {
        let interval = daemon.config.daemon.status_interval_secs;
        let timeout = if interval == 0 {
            PollTimeout::from(1000u16)
        } else {
            let left = next_status.saturating_duration_since(Instant::now()).as_millis().min(1000) as u16;
            PollTimeout::from(left)
        };
        let (sig_ready, conn_ready) = {
            let mut fds =
                [PollFd::new(signals.as_fd(), PollFlags::POLLIN), PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            (ready(&fds[0]), ready(&fds[1]))
        };
        if sig_ready {
            let mut stop = false;
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => {
                        log::info!("SIGHUP: reloading {}", config_path.display());
                        let _ = daemon.reload();
                    }
                    Ok(s) => {
                        log::info!("{s}: stopping");
                        stop = true;
                    }
                    Err(_) => {}
                }
            }
            if stop {
                break;
            }
        }
        if conn_ready {
            while let Ok((conn, _)) = listener.accept() {
                if let Err(e) = serve(&mut daemon, conn) {
                    log::debug!("control client: {e}");
                }
            }
        }
        daemon.check_ports();
        if Instant::now() >= next_mc_check {
            daemon.check_multicast();
            next_mc_check = Instant::now() + PORT_CHECK_INTERVAL;
        }
        daemon.retry_failed();
        if interval != 0 && Instant::now() >= next_status {
            daemon.log_status();
            next_status = Instant::now() + Duration::from_secs(interval.into());
        }
    }
    daemon.shutdown();
    let _ = std::fs::remove_file(&control_path);
    Ok(())
}
