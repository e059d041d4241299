// SPDX-License-Identifier: MIT
//! Running a check as another user: fork, drop to the given credentials in
//! the child, run the check there, and read its answer from the exit status.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, setgid, setgroups, setuid, ForkResult, Gid, Uid};

/// The exit status of a child that could not drop its credentials.
pub const CANNOT_DROP: i32 = 255;

/// In a forked child with supplementary groups `groups`, then group `gid`
/// and user `uid`, run `check` and exit with what it returns (0..=254);
/// returns that status. A child that could not drop its credentials, or
/// did not exit normally, is an error.
///
/// # Safety
///
/// The caller's process must be single-threaded, or `check` must call only
/// async-signal-safe functions: the child of a multi-threaded process may
/// find locks held by threads that no longer exist. The child leaves with
/// `_exit`, so the parent's atexit handlers and stdio buffers stay the
/// parent's.
pub unsafe fn as_user(uid: u32, gid: u32, groups: &[u32], check: impl FnOnce() -> i32) -> Result<i32, String> {
    let gids: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
    // SAFETY: the caller promises what fork needs (see # Safety).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            let code = if setgroups(&gids).is_err()
                || setgid(Gid::from_raw(gid)).is_err()
                || setuid(Uid::from_raw(uid)).is_err()
            {
                CANNOT_DROP
            } else {
                check().clamp(0, CANNOT_DROP - 1)
            };
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or flushing its copied stdio buffers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).map_err(|e| format!("waitpid: {e}"))? {
            WaitStatus::Exited(_, CANNOT_DROP) => Err("the child could not drop its credentials".into()),
            WaitStatus::Exited(_, code) => Ok(code),
            other => Err(format!("child: {other:?}")),
        },
    }
}
