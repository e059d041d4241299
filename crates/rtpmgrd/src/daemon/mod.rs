// SPDX-License-Identifier: MIT
//! The controller (rtpmgrd's main thread): [`run`] is its loop, which
//! waits in one `poll` for signals and control-socket clients and, at
//! least once a second, lets the supervisor check ports, multicast
//! memberships and failed streams, and logs the status line.
//!
//! * [`supervisor`]: the streams: start, stop, reload, retry, the
//!   graceful stop; [`Daemon`] lives there;
//! * [`threads`]: spawning, waking and stopping the data threads;
//! * [`report`]: the status report and the periodic log line;
//! * [`control`]: the control socket's wire protocol;
//! * [`signals`]: SIGHUP/SIGTERM/SIGINT through a signalfd.

mod control;
mod report;
pub mod signals;
mod streams;
mod supervisor;
mod threads;

pub use supervisor::Daemon;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rtpmgr_config::Config;
use rtpmgr_device::Backend;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the controller checks that every running stream's media port
/// is still there (a peripheral can be unbound or hot-unplugged) and that
/// multicast groups are joined on the interface their name now has.
const PORT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// `e` with `what` in front, so a log line says which call failed.
fn ctx(what: impl std::fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Run until SIGTERM/SIGINT.
pub fn run(config_path: &Path, config: Config, backend: Arc<dyn Backend>) -> io::Result<()> {
    // Before any thread starts, so all of them inherit the mask.
    let signals = signals::block_and_open()?;
    let control_path = config.daemon.control_socket.clone();
    let listener = control::bind_control(&control_path, config.daemon.control_socket_mode)?;
    let mut daemon = Daemon::start(config_path, config, backend)?;
    log::info!("rtpmgrd {} running; control socket {}", env!("CARGO_PKG_VERSION"), control_path.display());
    let mut next_status = Instant::now() + Duration::from_secs(daemon.status_interval_secs().into());
    let mut next_mc_check = Instant::now() + PORT_CHECK_INTERVAL;
    loop {
        let interval = daemon.status_interval_secs();
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
            while let Some(action) = signals::next(&signals) {
                match action {
                    signals::Action::Reload => {
                        log::info!("SIGHUP: reloading {}", config_path.display());
                        let _ = daemon.reload();
                    }
                    signals::Action::Stop => stop = true,
                }
            }
            if stop {
                break;
            }
        }
        if conn_ready {
            while let Ok((conn, _)) = listener.accept() {
                if let Err(e) = control::serve(&mut daemon, conn) {
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
