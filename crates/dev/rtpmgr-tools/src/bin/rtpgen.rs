// SPDX-License-Identifier: MIT
//! `rtpgen send|recv`: a paced RTP/MPEG-TS source and a verifying sink.

use nix::sys::socket::{setsockopt, sockopt};
use rtpmgr_tools::stream::{synthetic_payload, TsFile, PAYLOAD, PT_MP2T};
use rtpmgr_tools::verify::{Expect, Verifier};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage:
  rtpgen send --to ADDR [--from ADDR] [--input FILE.ts] [--bitrate BPS] [--count N] [--ssrc N] [--start-seq N] [--raw-ts]
  rtpgen recv --listen ADDR --count N [--input FILE.ts] [--start-seq N] [--timeout SECS] [--json] [--raw-ts]

send: RTP/MP2T (payload type 33, 7 TS packets per datagram, 90 kHz clock) to ADDR, paced
      at BPS (default 10M; suffixes k, M, G) or, with --input, at the file's PCR bit rate.
      Without --input a synthetic stream is sent whose content the receiver can check.
      --from binds the sending socket (source address and port; default any).
recv: count, verify and time a stream; exit 0 only if all N packets arrived once, in
      order and intact. --timeout is the idle time that ends reception (default 5).
--raw-ts: the same TS packets as raw UDP MPEG-TS (format = \"udp-ts\"), no RTP header;
      the synthetic stream only (recv checks datagram i against the i-th sent).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("send") => send(&args[1..]),
        Some("recv") => recv(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rtpgen: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(Default)]
struct Opts {
    to: Option<SocketAddr>,
    from: Option<SocketAddr>,
    listen: Option<SocketAddr>,
    input: Option<PathBuf>,
    bitrate: Option<f64>,
    count: Option<u64>,
    ssrc: u32,
    start_seq: u16,
    timeout: f64,
    json: bool,
    raw_ts: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let (num, mul) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('M') => (&s[..s.len() - 1], 1e6),
        Some('G') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad bit rate {s:?}"))?;
    if v <= 0.0 || !v.is_finite() {
        return Err(format!("bad bit rate {s:?}"));
    }
    Ok(v * mul)
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts { ssrc: 0x5254_504d, timeout: 5.0, ..Default::default() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--to" => o.to = Some(val()?.parse().map_err(|e| format!("--to: {e}"))?),
            "--from" => o.from = Some(val()?.parse().map_err(|e| format!("--from: {e}"))?),
            "--listen" => o.listen = Some(val()?.parse().map_err(|e| format!("--listen: {e}"))?),
            "--input" => o.input = Some(val()?.into()),
            "--bitrate" => o.bitrate = Some(parse_rate(&val()?)?),
            "--count" => o.count = Some(val()?.parse().map_err(|e| format!("--count: {e}"))?),
            "--ssrc" => o.ssrc = val()?.parse().map_err(|e| format!("--ssrc: {e}"))?,
            "--start-seq" => o.start_seq = val()?.parse().map_err(|e| format!("--start-seq: {e}"))?,
            "--timeout" => o.timeout = val()?.parse().map_err(|e| format!("--timeout: {e}"))?,
            "--json" => o.json = true,
            "--raw-ts" => o.raw_ts = true,
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(o)
}

fn send(args: &[String]) -> Result<bool, String> {
    let o = parse(args)?;
    let to = o.to.ok_or("send needs --to ADDR")?;
    if o.raw_ts && o.input.is_some() {
        return Err("--raw-ts sends the synthetic stream; it takes no --input".into());
    }
    let file = o.input.as_deref().map(TsFile::load).transpose().map_err(|e| e.to_string())?;
    let bitrate = match (&file, o.bitrate) {
        (_, Some(b)) => b,
        (Some(f), None) => f.pcr_bitrate.ok_or("the file has no two PCRs on one PID: give --bitrate")?,
        (None, None) => 10e6,
    };
    let payloads: Vec<&[u8]> = file.as_ref().map(|f| f.payloads().collect()).unwrap_or_default();
    let count = match (&file, o.count) {
        (_, Some(n)) => n,
        (Some(_), None) => payloads.len() as u64,
        (None, None) => 10_000,
    };
    let any: SocketAddr =
        if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let from = o.from.unwrap_or(any);
    let sock = UdpSocket::bind(from).map_err(|e| format!("bind {from}: {e}"))?;
    sock.connect(to).map_err(|e| format!("connect {to}: {e}"))?;
    let mut synthetic = [0u8; PAYLOAD];
    let mut buf = vec![0u8; PAYLOAD + 64];
    let start = Instant::now();
    let mut sent_bytes = 0u64;
    for i in 0..count {
        let seq = o.start_seq.wrapping_add(i as u16);
        // 90 kHz media clock at the paced rate.
        let ts = (sent_bytes as f64 * 8.0 / bitrate * 90_000.0) as u32;
        let payload: &[u8] = if o.raw_ts {
            // No RTP timestamp to carry it: the body derives from seq alone.
            synthetic_payload(seq, 0, &mut synthetic);
            &synthetic
        } else if payloads.is_empty() {
            synthetic_payload(seq, ts, &mut synthetic);
            &synthetic
        } else {
            payloads[(i as usize) % payloads.len()]
        };
        let n = if o.raw_ts {
            buf[..payload.len()].copy_from_slice(payload);
            payload.len()
        } else {
            rtp::RtpBuilder::new(PT_MP2T, seq, ts, o.ssrc)
                .marker(false)
                .write(payload, &mut buf)
                .map_err(|e| format!("building packet {i}: {e:?}"))?
        };
        // Absolute schedule: packet i leaves when the bytes before it have
        // taken their time at the bit rate, so sleeps never accumulate drift.
        let due = Duration::from_secs_f64(sent_bytes as f64 * 8.0 / bitrate);
        let now = start.elapsed();
        if due > now {
            let ahead = due - now;
            if ahead > Duration::from_micros(200) {
                std::thread::sleep(ahead - Duration::from_micros(100));
            }
            while start.elapsed() < due {
                std::hint::spin_loop();
            }
        }
        if let Err(e) = sock.send(&buf[..n]) {
            // ECONNREFUSED from an earlier ICMP: the peer is not up yet.
            if e.kind() != std::io::ErrorKind::ConnectionRefused {
                return Err(format!("send to {to}: {e}"));
            }
        }
        sent_bytes += payload.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "rtpgen send: {count} packets, {sent_bytes} payload bytes to {to} in {secs:.2} s ({:.2} Mbit/s)",
        sent_bytes as f64 * 8.0 / secs.max(1e-9) / 1e6
    );
    Ok(true)
}

/// `recv --raw-ts`: datagram i must be the i-th the sender made, whole.
fn recv_raw_ts(o: &Opts, listen: SocketAddr, count: u64) -> Result<bool, String> {
    let sock = UdpSocket::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs_f64(o.timeout))).map_err(|e| e.to_string())?;
    const RCVBUF: usize = 8 << 20;
    if setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &RCVBUF);
    }
    let (mut buf, mut want) = (vec![0u8; 65_536], [0u8; PAYLOAD]);
    let (mut n, mut bad) = (0u64, 0u64);
    while n < count {
        match sock.recv(&mut buf) {
            Ok(len) => {
                synthetic_payload(o.start_seq.wrapping_add(n as u16), 0, &mut want);
                if buf[..len] != want[..] {
                    bad += 1;
                }
                n += 1;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    let intact = n == count && bad == 0;
    println!(
        "rtpgen recv --raw-ts: {n} of {count} datagrams, {bad} not the one expected in their place -> {}",
        if intact { "INTACT" } else { "DAMAGED" }
    );
    Ok(intact)
}

fn recv(args: &[String]) -> Result<bool, String> {
    let o = parse(args)?;
    let listen = o.listen.ok_or("recv needs --listen ADDR")?;
    let count = o.count.ok_or("recv needs --count N")?;
    if o.raw_ts {
        return recv_raw_ts(&o, listen, count);
    }
    let file = o.input.as_deref().map(TsFile::load).transpose().map_err(|e| e.to_string())?;
    let expect = match &file {
        Some(f) => Expect::File { payloads: f.payloads().collect(), start_seq: o.start_seq },
        None => Expect::Synthetic,
    };
    let sock = UdpSocket::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs_f64(o.timeout))).map_err(|e| e.to_string())?;
    // The verifier must not be where packets are lost: a burst that
    // arrives while this process waits for a CPU goes into a large buffer
    // (past net.core.rmem_max when we may, else up to it).
    const RCVBUF: usize = 8 << 20;
    if setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF).is_err() {
        let _ = setsockopt(&sock, sockopt::RcvBuf, &RCVBUF);
    }
    let mut v = Verifier::new(expect);
    let mut buf = vec![0u8; 65_536];
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut n = 0u64;
    while n < count {
        match sock.recv(&mut buf) {
            Ok(len) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                v.packet(&buf[..len]);
                n += 1;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    let secs = first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0);
    let s = v.summary(Some(count), secs);
    let intact = s.intact(count);
    if o.json {
        println!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
    } else {
        println!(
            "rtpgen recv: {} of {count} packets ({} payload bytes) in {:.2} s = {:.2} Mbit/s; lost {}, duplicates {}, \
             reordered {}, corrupt {}, not RTP {} -> {}",
            s.unique,
            s.payload_bytes,
            s.seconds,
            s.mbit_per_s,
            s.lost,
            s.duplicates,
            s.reordered,
            s.corrupt,
            s.not_rtp,
            if intact { "INTACT" } else { "DAMAGED" }
        );
    }
    Ok(intact)
}
