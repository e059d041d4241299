// SPDX-License-Identifier: MIT
//! `rtpmgrd [--config PATH] [--check-config]`

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use rtpmgr_config::{BackendKind, Config};
use rtpmgr_device::{Backend, Device};
use rtpmgrd::daemon::signals;
use rtpmgrd::sim::SimBackend;
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_CONFIG: &str = "/etc/rtpmgr.toml";

const USAGE: &str = "\
usage: rtpmgrd [--config PATH] [--check-config]

Moves RTP between UDP sockets and the rtpmgr packet rings (/dev/rtpmgr).

  -c, --config PATH   configuration file (default /etc/rtpmgr.toml)
      --check-config  validate the configuration, print the result, exit 0 or 1
  -V, --version       print the version
  -h, --help          this text

Signals: SIGHUP reloads the configuration, SIGTERM/SIGINT stop after draining.
Logging: RUST_LOG overrides the configured log_level.";

struct Args {
    config: PathBuf,
    check_only: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args { config: PathBuf::from(DEFAULT_CONFIG), check_only: false };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" | "--config" => args.config = it.next().ok_or("--config needs a path")?.into(),
            "--check-config" => args.check_only = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("rtpmgrd {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(Some(args))
}

/// Open one session of the module, saying what a missing node most likely
/// means.
fn open_device(path: &Path) -> std::io::Result<Device> {
    Device::open(path).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            std::io::Error::new(e.kind(), format!("{e} (is the rtpmgr module loaded?)"))
        } else {
            e
        }
    })
}

/// First and longest pause between attempts to open a missing device.
const DEVICE_RETRY_MIN: Duration = Duration::from_millis(250);
const DEVICE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Open the device, waiting for it while it is not there yet: at boot the
/// daemon may start before the module is loaded or before udev has given
/// the node its group, and after `rmmod` for an upgrade the module comes
/// back. Retries with backoff while the device is missing (ENOENT, ENODEV,
/// ENXIO) or not yet ours (EACCES, EPERM); any other error is fatal.
/// SIGTERM or SIGINT ends the wait: `Ok(None)`.
fn open_device_waiting(path: &Path) -> std::io::Result<Option<Device>> {
    // The signals rtpmgrd handles are blocked from here on (daemon::run
    // reads them from its own signalfd); while waiting, read them here.
    let signals = signals::block_and_open()?;
    let mut delay = DEVICE_RETRY_MIN;
    let mut last = String::new();
    loop {
        match open_device(path) {
            Ok(k) => {
                if !last.is_empty() {
                    log::info!("{} is here", path.display());
                }
                return Ok(Some(k));
            }
            Err(e)
                if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied)
                    || matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENXIO)) =>
            {
                let msg = e.to_string();
                if msg != last {
                    log::warn!(
                        "waiting for {}: {msg}; retrying with backoff up to {DEVICE_RETRY_MAX:?}",
                        path.display()
                    );
                    last = msg;
                }
                let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::try_from(delay).unwrap_or(PollTimeout::MAX));
                while let Ok(Some(info)) = signals.read_signal() {
                    if info.ssi_signo != Signal::SIGHUP as u32 {
                        log::info!("stopped while waiting for {}", path.display());
                        return Ok(None);
                    }
                }
                delay = (delay * 2).min(DEVICE_RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtpmgrd: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rtpmgrd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_only {
        println!("{}: OK, {} stream(s)", args.config.display(), config.streams.len());
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::new()
        .filter_level(config.daemon.log_level)
        .parse_default_env()
        .format_timestamp_millis()
        .init();
    let backend: Arc<dyn Backend> = match config.daemon.backend {
        BackendKind::Sim => Arc::new(SimBackend::default()),
        BackendKind::Kernel => match open_device_waiting(&config.daemon.device) {
            Ok(Some(k)) => Arc::new(k),
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                log::error!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match rtpmgrd::daemon::run(&args.config, config, backend) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
