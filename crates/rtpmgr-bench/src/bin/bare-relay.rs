// SPDX-License-Identifier: MIT
//! `bare-relay`: the smallest UDP relay that batches like rtpmgrd, as the
//! yardstick for its throughput and latency.
//!
//! One socket bound to `--listen`; `recvmmsg` (blocking for the first
//! datagram, then whatever else is queued, up to `--batch`) into fixed
//! buffers, and the same buffers straight back out with `sendmmsg` to
//! `--to`, from the same socket. No parsing, no copying, no threads. Runs
//! until killed.

use nix::sys::socket::{setsockopt, sockopt};
use rtpmgr_bench::mmsg::Mmsg;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::process::ExitCode;

const USAGE: &str = "usage: bare-relay --listen ADDR:PORT --to ADDR:PORT [--batch N (64)] [--buffer BYTES (4194304)]
IPv4 only. Relays every datagram received on --listen to --to, in batches of up to N; runs until killed.";

struct Args {
    listen: SocketAddrV4,
    to: SocketAddrV4,
    batch: usize,
    buffer: usize,
}

fn v4(s: &str) -> Result<SocketAddrV4, String> {
    match s.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) => Ok(a),
        Ok(SocketAddr::V6(_)) => Err(format!("{s}: IPv4 only")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

fn parse() -> Result<Args, String> {
    let (mut listen, mut to, mut batch, mut buffer) = (None, None, 64usize, 4usize << 20);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = Some(v4(&val()?)?),
            "--to" => to = Some(v4(&val()?)?),
            "--batch" => batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--buffer" => buffer = val()?.parse().map_err(|e| format!("--buffer: {e}"))?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if !(1..=1024).contains(&batch) {
        return Err("--batch must be 1..=1024".into());
    }
    Ok(Args { listen: listen.ok_or(USAGE)?, to: to.ok_or(USAGE)?, batch, buffer })
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let sock = match UdpSocket::bind(args.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bare-relay: bind {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    // The same socket buffers as rtpmgrd (socket_buffer_bytes).
    if setsockopt(&sock, sockopt::RcvBufForce, &args.buffer).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &args.buffer);
    }
    if setsockopt(&sock, sockopt::SndBufForce, &args.buffer).is_err() {
        let _ = setsockopt(&sock, sockopt::SndBuf, &args.buffer);
    }
    // 2048-byte buffers like rtpmgrd's ring slots.
    let mut mm = Mmsg::new(args.batch, 2048);
    loop {
        let n = match mm.recv(sock.as_fd(), libc::MSG_WAITFORONE) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("bare-relay: recvmmsg: {e}");
                return ExitCode::FAILURE;
            }
        };
        for i in 0..n {
            let len = mm.received_len(i);
            mm.prepare_send(i, len, Some(args.to));
        }
        mm.send_all(sock.as_fd(), n);
    }
}
