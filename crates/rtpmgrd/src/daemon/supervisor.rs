// SPDX-License-Identifier: MIT
//! The supervisor: owns the configured streams and their lifecycle. It
//! configures the device, starts every stream on the path its `mode`
//! asks for (user space, the module, or user space as a fallback),
//! retries the ones that fail with backoff, stops streams whose media
//! port went away, re-joins multicast groups whose interface came back,
//! applies a reload as the difference between two configurations, and
//! stops everything gracefully. Everything here runs on the controller
//! thread; the data threads see only the published [`StreamTable`].

use super::report::dir_name;
use super::streams::{StreamState, Streams};
use super::threads::DataThreads;
use super::{ctx, PORT_CHECK_INTERVAL};
use crate::kernel_path;
use crate::net;
use crate::stream::{direction_bits, Stream, StreamTable};
use rtpmgr_abi as abi;
use rtpmgr_config::{Config, DataPath, Direction, StreamConfig};
use rtpmgr_device::{find_port, Backend};
use rtpmgr_ring::{Region, RingId};
use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a graceful stop waits for the rings to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// A stream that cannot start (its port gone, its interface not up yet,
/// its address taken) is retried after this, doubling up to
/// [`RETRY_MAX`]: it comes back by itself, and a dead one costs a log
/// line per half minute.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A configured stream that is not running, and when to try it again.
pub(super) struct Waiting {
    pub config: StreamConfig,
    pub error: String,
    pub attempts: u32,
    pub next_try: Instant,
}

impl Waiting {
    pub(super) fn new(config: StreamConfig, error: String) -> Waiting {
        Waiting { config, error, attempts: 1, next_try: Instant::now() + RETRY_MIN }
    }

    /// The delay before the next attempt, after `attempts` failed ones.
    fn backoff(attempts: u32) -> Duration {
        RETRY_MIN.saturating_mul(1 << attempts.saturating_sub(1).min(5)).min(RETRY_MAX)
    }
}

pub struct Daemon {
    pub(super) config_path: PathBuf,
    pub(super) config: Config,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) region: Arc<Region>,
    /// Every configured stream and what it is doing.
    pub(super) streams: Streams,
    /// Where [`Daemon::free_ids`] looks first.
    next_id: Cell<u32>,
    next_port_check: Instant,
    pub(super) threads: DataThreads,
    pub(super) started: Instant,
    /// Stream ids of the device: `0..max_streams`.
    max_streams: u32,
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
        let threads = DataThreads::spawn(&config, &backend, &region, &table)?;
        let mut daemon = Daemon {
            config_path: config_path.to_owned(),
            config: Config { streams: Vec::new(), ..config.clone() },
            backend,
            region,
            streams: Streams::new(table),
            next_id: Cell::new(0),
            next_port_check: Instant::now() + PORT_CHECK_INTERVAL,
            threads,
            started: Instant::now(),
            max_streams: info.max_streams.clamp(1, abi::MAX_STREAM_IDS),
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
        let start = self.next_id.get();
        let max = self.max_streams;
        let ids: Vec<u32> =
            (0..max).map(|i| (start + i) % max).filter(|&id| !self.streams.uses_id(id)).take(n).collect();
        if ids.len() < n {
            return Err(io::Error::other(format!("no free stream id (at most {max})")));
        }
        if let Some(last) = ids.last() {
            self.next_id.set((last + 1) % max);
        }
        Ok(ids)
    }

    /// How often the status line is logged (0: never); a reload may change it.
    pub fn status_interval_secs(&self) -> u32 {
        self.config.daemon.status_interval_secs
    }

    /// Start a stream on the path its `mode` asks for; a `mode = "kernel"`
    /// stream the device cannot run starts in user space, with a log line.
    /// The state it runs in is the caller's to record.
    fn start_any(&self, cfg: &StreamConfig) -> io::Result<StreamState> {
        let mut fallback = None;
        if let (DataPath::Kernel, Some(reason)) = (cfg.mode, user_space_only(cfg)) {
            log::warn!("stream {}: mode = \"kernel\" is not available: {reason}; running it in user space", cfg.name);
            fallback = Some(reason);
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
                    return Ok(StreamState::Kernel(k));
                }
                Err(kernel_path::StartError::Failed(e)) => return Err(e),
                Err(kernel_path::StartError::Unsupported(reason)) => {
                    log::warn!(
                        "stream {}: mode = \"kernel\" is not available: {reason}; running it in user space",
                        cfg.name
                    );
                    fallback = Some(reason);
                }
            }
        }
        let stream = self.start_stream(cfg)?;
        Ok(match fallback {
            Some(reason) => StreamState::Fallback { stream, reason },
            None => StreamState::Running(stream),
        })
    }

    /// Open a user-space stream's sockets and start it on the device; the
    /// caller publishes it to the data threads.
    fn start_stream(&self, cfg: &StreamConfig) -> io::Result<Arc<Stream>> {
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
        let fec_sockets = net::open_fec_sockets(cfg, self.config.daemon.socket_buffer_bytes)?;
        let leg2_socket = match cfg.leg2_view() {
            Some(leg) => Some(
                net::open_stream_socket(
                    &leg,
                    self.config.daemon.socket_buffer_bytes,
                    self.config.daemon.receive_timestamps,
                )
                .map_err(|e| ctx(format_args!("leg2 {}", leg.bind), e))?,
            ),
            None => None,
        };
        // Every socket is open before START_STREAM: what fails after it
        // would leave the id started on the device.
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
        stream.fec_sockets = fec_sockets;
        stream.leg2_socket = leg2_socket;
        log::info!(
            "stream {} started: {} {} via port {} (id {id})",
            cfg.name,
            dir_name(cfg.direction),
            cfg.bind,
            cfg.media_port
        );
        Ok(Arc::new(stream))
    }

    /// Record the state a stream now runs in (publishing a user-space one
    /// to the data threads) or its failure.
    fn record(&mut self, state: StreamState) {
        let user = state.user_stream().is_some();
        self.streams.put(state);
        if user {
            self.threads.wake();
        }
    }

    /// Stop a running stream and forget it; a failed one is only forgotten.
    fn stop_stream(&mut self, name: &str) {
        match self.streams.take(name) {
            Some(StreamState::Running(s) | StreamState::Fallback { stream: s, .. }) => {
                // Out of the threads' table (take) and the threads told,
                // before the device forgets the id.
                self.threads.wake();
                if let Err(e) = self.backend.stop_stream(s.id) {
                    log::warn!("stream {name}: STOP_STREAM: {e}");
                }
                log::info!("stream {name} stopped");
            }
            Some(StreamState::Kernel(k)) => {
                k.stop(self.backend.as_ref());
                log::info!("stream {name} stopped (kernel)");
            }
            Some(StreamState::Failed(_)) | None => {}
        }
    }

    /// Make the running streams match `wanted`: stop what is gone or
    /// changed, start what is new or changed, leave the rest untouched.
    fn apply_streams(&mut self, wanted: &[StreamConfig]) {
        let stale: Vec<String> = self
            .streams
            .in_report_order()
            .into_iter()
            .filter(|s| s.is_running() && !wanted.iter().any(|w| w == s.config()))
            .map(|s| s.config().name.clone())
            .collect();
        for name in stale {
            self.stop_stream(&name);
        }
        // Failed streams start afresh: the wanted ones are tried now.
        for name in self.streams.failed_names() {
            self.streams.take(&name);
        }
        for w in wanted {
            if self.streams.is_running(&w.name) {
                continue; // unchanged and running
            }
            match self.start_any(w) {
                Ok(state) => self.record(state),
                Err(e) => {
                    log::error!("stream {}: cannot start: {e}; retrying in {RETRY_MIN:?}", w.name);
                    self.record(StreamState::Failed(Waiting::new(w.clone(), e.to_string())));
                }
            }
        }
    }

    /// Try the streams whose retry time has come; called from the control
    /// loop, at least once a second.
    pub(super) fn retry_failed(&mut self) {
        let now = Instant::now();
        for name in self.streams.failed_names() {
            let Some(w) = self.streams.waiting_mut(&name) else { continue };
            if w.next_try > now {
                continue;
            }
            let config = w.config.clone();
            match self.start_any(&config) {
                Ok(state) => {
                    if let Some(StreamState::Failed(w)) = self.streams.take(&name) {
                        log::info!("stream {name}: running again after {} failed attempts", w.attempts);
                    }
                    self.record(state);
                }
                Err(e) => {
                    let Some(w) = self.streams.waiting_mut(&name) else { continue };
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
                }
            }
        }
    }

    /// Stop the streams whose media port went away (unbound or unplugged
    /// peripheral) and queue them for restart: when the port comes back,
    /// under the same name, so do they.
    pub(super) fn check_ports(&mut self) {
        let now = Instant::now();
        if now < self.next_port_check {
            return;
        }
        self.next_port_check = now + PORT_CHECK_INTERVAL;
        let on_ports: Vec<(u32, StreamConfig)> = self
            .streams
            .in_report_order()
            .into_iter()
            .filter_map(|state| match state {
                StreamState::Running(s) | StreamState::Fallback { stream: s, .. } => Some((s.port, s.config.clone())),
                StreamState::Kernel(k) => Some((k.port?, k.config.clone())),
                StreamState::Failed(_) => None,
            })
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
            self.record(StreamState::Failed(Waiting::new(config, error)));
        }
    }

    /// Join the groups again whose named interface came back with another
    /// index (removed and created again: a VLAN, a USB or PPP link, a
    /// re-plugged NIC): the kernel dropped the old membership with the old
    /// device. Down and up keeps the index, and the kernel re-sends its
    /// reports by itself. Called with the port check, once a second.
    pub(super) fn check_multicast(&self) {
        for s in self.streams.in_report_order().into_iter().filter_map(StreamState::user_stream) {
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
            self.streams.failed_names().len()
        );
        log::info!("{msg}");
        Ok(msg)
    }

    fn running_names(&self) -> Vec<String> {
        self.streams.running_names()
    }

    /// Graceful stop: stop reading the network, let the device and the
    /// transmitter drain both rings, then stop the streams.
    pub fn shutdown(mut self) {
        self.threads.stop_receiver();
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
        self.threads.stop_transmitter();
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
