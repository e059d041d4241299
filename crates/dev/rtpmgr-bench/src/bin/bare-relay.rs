// SPDX-License-Identifier: MIT
//! `bare-relay`: the smallest UDP relay that batches like rtpmgrd, as the
//! yardstick for its throughput and latency.
//!
//! One socket bound to `--listen`; `recvmmsg` (blocking for the first
//! datagram, then whatever else is queued, up to `--batch`) into fixed
//! buffers, and the same buffers straight back out with `sendmmsg` to
//! `--to`, from the same socket. No parsing, no copying, no threads. Runs
//! until killed.
//!
//! `--ports N` (the guest's many-stream benchmark): N sockets on
//! consecutive ports from `--listen`'s, one per stream as rtpmgrd and the
//! in-kernel relay have them, watched with one level-triggered epoll; each
//! ready socket is drained the same way (`recvmmsg` without waiting). With
//! the default of 1 the loop is the single blocking one above, so the host
//! figures measured with it stay comparable.

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{setsockopt, sockopt};
use rtpmgr_bench::mmsg::Mmsg;
use std::io::ErrorKind;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::process::ExitCode;

const USAGE: &str =
    "usage: bare-relay --listen ADDR:PORT --to ADDR:PORT [--batch N (64)] [--buffer BYTES (4194304)] [--ports N (1)]
IPv4 only. Relays every datagram received on --listen (and the N-1 ports after it) to --to, in batches of up
to N; runs until killed.";

struct Args {
    listen: SocketAddrV4,
    to: SocketAddrV4,
    batch: usize,
    buffer: usize,
    ports: u16,
}

fn v4(s: &str) -> Result<SocketAddrV4, String> {
    match s.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) => Ok(a),
        Ok(SocketAddr::V6(_)) => Err(format!("{s}: IPv4 only")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

fn parse() -> Result<Args, String> {
    let (mut listen, mut to, mut batch, mut buffer, mut ports) = (None, None, 64usize, 4usize << 20, 1u16);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = Some(v4(&val()?)?),
            "--to" => to = Some(v4(&val()?)?),
            "--batch" => batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--buffer" => buffer = val()?.parse().map_err(|e| format!("--buffer: {e}"))?,
            "--ports" => ports = val()?.parse().map_err(|e| format!("--ports: {e}"))?,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if !(1..=1024).contains(&batch) {
        return Err("--batch must be 1..=1024".into());
    }
    let listen: SocketAddrV4 = listen.ok_or(USAGE)?;
    if ports == 0 || u32::from(listen.port()) + u32::from(ports) - 1 > 65_535 {
        return Err("--ports must be at least 1 and keep the last port <= 65535".into());
    }
    Ok(Args { listen, to: to.ok_or(USAGE)?, batch, buffer, ports })
}

/// Bind `addr` with rtpmgrd's socket buffers.
fn bind(addr: SocketAddrV4, buffer: usize) -> Result<UdpSocket, String> {
    let sock = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    // The same socket buffers as rtpmgrd (socket_buffer_bytes).
    if setsockopt(&sock, sockopt::RcvBufForce, &buffer).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &buffer);
    }
    if setsockopt(&sock, sockopt::SndBufForce, &buffer).is_err() {
        let _ = setsockopt(&sock, sockopt::SndBuf, &buffer);
    }
    Ok(sock)
}

/// Receive a batch from `sock` and send it on to `to`; `flags` as for
/// `recvmmsg`. Returns how many datagrams were relayed.
fn relay_batch(mm: &mut Mmsg, sock: &UdpSocket, to: SocketAddrV4, flags: libc::c_int) -> Result<usize, String> {
    let n = match mm.recv(sock.as_fd(), flags) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => return Ok(0),
        Err(e) => return Err(format!("recvmmsg: {e}")),
    };
    for i in 0..n {
        let len = mm.received_len(i);
        mm.prepare_send(i, len, Some(to));
    }
    mm.send_all(sock.as_fd(), n);
    Ok(n)
}

fn run(args: &Args) -> Result<(), String> {
    let socks = (0..args.ports)
        .map(|i| bind(SocketAddrV4::new(*args.listen.ip(), args.listen.port() + i), args.buffer))
        .collect::<Result<Vec<_>, _>>()?;
    // 2048-byte buffers like rtpmgrd's ring slots.
    let mut mm = Mmsg::new(args.batch, 2048);
    if let [sock] = &socks[..] {
        loop {
            relay_batch(&mut mm, sock, args.to, libc::MSG_WAITFORONE)?;
        }
    }
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("epoll_create: {e}"))?;
    for (i, s) in socks.iter().enumerate() {
        ep.add(s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64)).map_err(|e| format!("epoll_ctl: {e}"))?;
    }
    let mut events = vec![EpollEvent::empty(); 256];
    loop {
        let n = match ep.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        };
        for ev in &events[..n] {
            relay_batch(&mut mm, &socks[ev.data() as usize], args.to, libc::MSG_DONTWAIT)?;
        }
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare-relay: {e}");
            ExitCode::FAILURE
        }
    }
}
