// SPDX-License-Identifier: MIT
//! `rtpmgrctl [--socket PATH] status [--json] | reload | ping`

use rtpmgr_control::{Reply, Request, StatusReport, DEFAULT_SOCKET};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: rtpmgrctl [--socket PATH] COMMAND

Commands:
  status [--json]   per-stream statistics as a table, or the raw JSON
  reload            make rtpmgrd re-read its configuration (as SIGHUP does)
  ping              check that rtpmgrd answers

  -s, --socket PATH   control socket (default $RTPMGR_CONTROL_SOCKET or /run/rtpmgr/control.sock)";

const TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rtpmgrctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut socket = std::env::var_os("RTPMGR_CONTROL_SOCKET").map(PathBuf::from).unwrap_or(DEFAULT_SOCKET.into());
    let mut json = false;
    let mut command = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-s" | "--socket" => socket = args.next().ok_or("--socket needs a path")?.into(),
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            c if command.is_none() => {
                command = Some(Request::parse(c).ok_or(format!("unknown command {c:?}\n\n{USAGE}"))?)
            }
            other => return Err(format!("unexpected argument {other:?}\n\n{USAGE}")),
        }
    }
    let command = command.ok_or(USAGE)?;
    let raw = rtpmgr_control::request(&socket, command, TIMEOUT).map_err(|e| e.to_string())?;
    if command == Request::Status {
        if json {
            print!("{raw}");
            return Ok(ExitCode::SUCCESS);
        }
        let report: StatusReport = serde_json::from_str(&raw).map_err(|e| format!("bad status answer: {e}"))?;
        print!("{}", table(&report));
        let failed = report.streams.iter().any(|s| s.state != "running");
        return Ok(if failed { ExitCode::from(3) } else { ExitCode::SUCCESS });
    }
    let reply: Reply = serde_json::from_str(&raw).map_err(|e| format!("bad answer: {e}"))?;
    if json {
        print!("{raw}");
    } else if let Some(m) = &reply.message {
        println!("{m}");
    }
    if reply.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(reply.error.unwrap_or_else(|| "request failed".into()))
    }
}

/// The status as an aligned table, one row per stream.
fn table(r: &StatusReport) -> String {
    let mut out = format!(
        "rtpmgrd {} ({} backend), up {:.1} s, config {}\nrings: {} slots x {} B; to-device fill {}, from-device fill {}; \
         device: {} in, {} out, {} invalid slots, {} kicks\n\n",
        r.version,
        r.backend,
        r.uptime_secs,
        r.config,
        r.rings.slot_count,
        r.rings.slot_size,
        r.rings.to_device_fill,
        r.rings.from_device_fill,
        r.session.to_device_packets,
        r.session.from_device_packets,
        r.session.invalid_slots,
        r.session.kicks,
    );
    let header = [
        "STREAM",
        "DIR",
        "PORT",
        "MODE",
        "STATE",
        "PACKETS",
        "BYTES",
        "LOST",
        "DUP",
        "REORD",
        "JITTER_MS",
        "MALFORMED",
        "SOCK_DROPS",
        "RING_DROPS",
        "FWD_DROPS",
        "SENT",
        "SEND_ERR",
        // mode = "kernel": forwarded on the module's fast path, of them
        // with a header copy, and the module worker's wake-ups. After the
        // columns that scripts read by number (ci/guest/init).
        "FAST",
        "FAST_COPIES",
        "WAKEUPS",
        // Last, so that scripts reading the columns before it by number
        // (ci/guest/init) keep working.
        "FORMAT",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for s in &r.streams {
        rows.push(vec![
            s.name.clone(),
            s.direction.clone(),
            s.media_port.clone(),
            s.mode.clone(),
            s.state.clone(),
            s.packets.to_string(),
            s.bytes.to_string(),
            s.lost.to_string(),
            s.duplicates.to_string(),
            s.reordered.to_string(),
            format!("{:.3}", s.jitter_ms),
            (s.malformed + s.wrong_payload_type + s.oversize).to_string(),
            s.socket_drops.to_string(),
            s.ring_full_drops.to_string(),
            s.forward_drops.to_string(),
            s.sent_packets.to_string(),
            s.send_errors.to_string(),
            s.fast_packets.to_string(),
            s.fast_copies.to_string(),
            s.worker_wakeups.to_string(),
            s.format.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c < 5 || c == header.len() - 1 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&ts_table(r));
    out.push_str(&reorder_table(r));
    out.push_str(&rtcp_table(r));
    for s in r.streams.iter().filter(|s| s.error.is_some()) {
        out.push_str(&format!("\n{}: {}\n", s.name, s.error.as_deref().unwrap_or_default()));
    }
    for s in r.streams.iter().filter(|s| s.fallback.is_some()) {
        out.push_str(&format!(
            "\n{}: mode = \"kernel\" unavailable, running in user space: {}\n",
            s.name,
            s.fallback.as_deref().unwrap_or_default()
        ));
    }
    out
}

/// Right-aligned columns but the first.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(
                |(c, cell)| {
                    if c == 0 {
                        format!("{cell:<w$}", w = widths[c])
                    } else {
                        format!("{cell:>w$}", w = widths[c])
                    }
                },
            )
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The reorder buffers (`reorder_ms`), as a table; empty when none.
fn reorder_table(r: &StatusReport) -> String {
    let header = ["STREAM", "DELAY_MS", "WINDOW", "HELD", "RELEASED", "REORDERED", "LATE", "DUP", "SKIPPED"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for s in &r.streams {
        let Some(b) = &s.reorder else { continue };
        let mut row = vec![s.name.clone(), b.delay_ms.to_string()];
        for v in [b.window, b.held, b.released, b.reordered, b.late, b.duplicates, b.skipped] {
            row.push(v.to_string());
        }
        rows.push(row);
    }
    if rows.len() == 1 {
        return String::new();
    }
    format!("\nReorder buffers (reorder_ms):\n{}", columns(&rows))
}

/// RTCP and retransmission of the streams with `rtcp` on; empty when none.
fn rtcp_table(r: &StatusReport) -> String {
    let header = [
        "STREAM", "RTCP", "PEER", "RR_SENT", "SR_SENT", "NACKS", "NACKED", "RTCP_IN", "SR_IN", "RTX_IN", "RIST_IN",
        "REPAIRED",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for s in &r.streams {
        let Some(t) = &s.rtcp else { continue };
        let mut row = vec![s.name.clone(), t.mode.clone(), t.peer.clone().unwrap_or_else(|| "-".into())];
        for v in [
            t.rr_sent,
            t.sr_sent,
            t.nack_sent,
            t.nack_requested,
            t.received,
            t.sr_received,
            t.rtx_received,
            t.rist_received,
            t.repaired,
        ] {
            row.push(v.to_string());
        }
        rows.push(row);
    }
    if rows.len() == 1 {
        return String::new();
    }
    format!("\nRTCP and retransmission:\n{}", columns(&rows))
}

/// The TR 101 290 indicators of the streams that carry MPEG-TS, as a
/// second table; empty when none does.
fn ts_table(r: &StatusReport) -> String {
    let header = [
        "STREAM",
        "TS_PACKETS",
        "SYNC_LOSS",
        "SYNC_BYTE",
        "PAT",
        "CC",
        "PMT",
        "PID",
        "TEI",
        "CRC",
        "PROGRAMS",
        "ES_PIDS",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for s in &r.streams {
        let Some(t) = &s.ts else { continue };
        // Continuity is all the module judges: "-" for what it does not.
        let psi = |v: u64| if t.continuity_only { "-".to_string() } else { v.to_string() };
        rows.push(vec![
            s.name.clone(),
            t.ts_packets.to_string(),
            psi(t.sync_loss),
            psi(t.sync_byte_error),
            psi(t.pat_error),
            t.cc_error.to_string(),
            psi(t.pmt_error),
            psi(t.pid_error),
            psi(t.transport_error),
            psi(t.crc_error),
            psi(t.programs),
            psi(t.es_pids),
        ]);
    }
    if rows.len() == 1 {
        return String::new();
    }
    format!("\nMPEG-TS health (ETSI TR 101 290: priority 1, and 2.1 TEI, 2.2 CRC):\n{}", columns(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtpmgr_control::StreamReport;

    #[test]
    fn table_aligns_columns_and_lists_failures() {
        let r = StatusReport {
            version: "0.1.0".into(),
            backend: "sim".into(),
            streams: vec![
                StreamReport {
                    name: "tv1".into(),
                    state: "running".into(),
                    mode: "kernel".into(),
                    format: "rtp".into(),
                    packets: 100_000,
                    lost: 3,
                    forward_drops: 7,
                    ..Default::default()
                },
                StreamReport {
                    name: "tv2".into(),
                    state: "running".into(),
                    mode: "user".into(),
                    format: "udp-ts".into(),
                    ts: Some(rtpmgr_control::TsReport {
                        ts_packets: 7_000,
                        cc_error: 12,
                        pat_error: 3,
                        ..Default::default()
                    }),
                    fallback: Some("the device has no in-kernel network streams".into()),
                    ..Default::default()
                },
                StreamReport {
                    name: "radio-long-name".into(),
                    state: "failed".into(),
                    error: Some("bind 0.0.0.0:5004: Address in use".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        let head = lines.iter().position(|l| l.starts_with("STREAM")).unwrap();
        // The PACKETS column is right-aligned: its end lines up on all rows.
        let end = lines[head].find("PACKETS").unwrap() + "PACKETS".len();
        assert_eq!(&lines[head + 1][end - 6..end], "100000");
        // The STREAM column is as wide as its longest name.
        assert!(lines[head + 1].starts_with(&format!("{:<15}  ", "tv1")), "{t}");
        assert!(t.contains("radio-long-name: bind 0.0.0.0:5004: Address in use"));
        // MODE is a left-aligned column; FWD_DROPS shows the kernel's drops.
        let mode = lines[head].find("MODE").unwrap();
        assert_eq!(&lines[head + 1][mode..mode + 7], "kernel ");
        let end = lines[head].find("FWD_DROPS").unwrap() + "FWD_DROPS".len();
        assert_eq!(&lines[head + 1][end - 2..end], " 7");
        assert!(t.contains("tv2: mode = \"kernel\" unavailable, running in user space: the device has no"), "{t}");
        // FORMAT is the last column; the TS table lists only streams with TS.
        assert!(lines[head].ends_with("SEND_ERR  FAST  FAST_COPIES  WAKEUPS  FORMAT"), "{t}");
        assert!(lines[head + 2].ends_with(" udp-ts"), "{t}");
        assert!(lines[head + 1].ends_with(" rtp"), "{t}");
        let ts = lines.iter().position(|l| l.starts_with("MPEG-TS health")).expect("a TS table");
        assert!(lines[ts + 1].starts_with("STREAM  TS_PACKETS  SYNC_LOSS  SYNC_BYTE  PAT  CC  PMT  PID"), "{t}");
        let row: Vec<&str> = lines[ts + 2].split_whitespace().collect();
        assert_eq!(row[..8], ["tv2", "7000", "0", "0", "3", "12", "0", "0"], "{t}");
        assert!(!lines[ts + 3..].iter().any(|l| l.starts_with("tv1")), "{t}");
    }
}
