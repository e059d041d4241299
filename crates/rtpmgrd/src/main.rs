// SPDX-License-Identifier: MIT
//! `rtpmgrd [--config PATH] [--check-config]`

use rtpmgr_config::{BackendKind, Config};
use rtpmgrd::backend::{kernel::KernelBackend, sim::SimBackend, Backend};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
        BackendKind::Kernel => match KernelBackend::open(&config.daemon.device) {
            Ok(k) => Arc::new(k),
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
