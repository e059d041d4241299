// SPDX-License-Identifier: MIT
//! The control socket: a Unix stream socket, one request line in
//! (`status`, `reload`, `ping`, at most 256 bytes), one JSON line out
//! (`rtpmgr_control`'s types). Only the wire lives here: what a request
//! does is the supervisor's (`reload`) or the report's (`status`).

use super::ctx;
use super::supervisor::Daemon;
use rtpmgr_control::{Reply, Request};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// Bind the control socket: stale file removed, parent created, mode set.
pub(super) fn bind_control(path: &Path, mode: u32) -> io::Result<UnixListener> {
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

pub(super) fn serve(daemon: &mut Daemon, conn: UnixStream) -> io::Result<()> {
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
