// SPDX-License-Identifier: MIT
//! The signals rtpmgrd handles (SIGHUP reload, SIGTERM and SIGINT stop),
//! read from a `signalfd` instead of handlers: they are blocked in every
//! thread, so no handler ever runs in the middle of the data path, and the
//! controller waits for them in the same `poll` as the control socket.
//! `main` uses the same set while it waits for the device to appear.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io;

/// What a signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGHUP: re-read the configuration.
    Reload,
    /// SIGTERM or SIGINT: drain and stop.
    Stop,
}

/// Block SIGHUP, SIGTERM and SIGINT in the calling thread, and so in every
/// thread it starts afterwards (they inherit the mask), and return a
/// non-blocking signalfd that reads them. Call it before any thread starts.
pub fn block_and_open() -> io::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().map_err(io::Error::from)?;
    Ok(SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?)
}

/// The next pending signal's action, `None` when none is pending. Signals
/// outside the set (none can arrive: only these are routed here) are skipped.
pub fn next(signals: &SignalFd) -> Option<Action> {
    while let Ok(Some(info)) = signals.read_signal() {
        match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGHUP) => return Some(Action::Reload),
            Ok(s) => {
                log::info!("{s}: stopping");
                return Some(Action::Stop);
            }
            Err(_) => {}
        }
    }
    None
}
