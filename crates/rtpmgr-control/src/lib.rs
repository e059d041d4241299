// SPDX-License-Identifier: MIT
//! The control-socket protocol between `rtpmgrd` and `rtpmgrctl` (or any
//! script): one request line in, one JSON document out, over a Unix stream
//! socket (default `/run/rtpmgr/control.sock`).
//!
//! Requests: `status`, `reload`, `ping`. Every answer is a JSON object with
//! `"ok": true|false`; failures carry `"error"`.

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const DEFAULT_SOCKET: &str = "/run/rtpmgr/control.sock";

/// A request, as sent on the wire (one line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    Reload,
    Ping,
}

impl Request {
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Reload => "reload",
            Request::Ping => "ping",
        }
    }

    pub fn parse(line: &str) -> Option<Request> {
        match line.trim() {
            "status" => Some(Request::Status),
            "reload" => Some(Request::Reload),
            "ping" => Some(Request::Ping),
            _ => None,
        }
    }
}

/// The answer to `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub ok: bool,
    pub version: String,
    pub backend: String,
    pub uptime_secs: f64,
    pub config: String,
    /// Ring geometry and fill.
    pub rings: RingsReport,
    /// Kernel (or simulator) session counters.
    pub session: SessionReport,
    pub streams: Vec<StreamReport>,
    /// The data threads' own counters (receiver `rx`, transmitter `tx`).
    #[serde(default)]
    pub threads: Vec<ThreadReport>,
}

/// What one data thread did since the daemon started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadReport {
    pub name: String,
    /// Sleeps (epoll or WAIT) that ended with something to do.
    pub wakeups: u64,
    /// Sleeps that ended by timeout (at most one a second when idle).
    pub timeouts: u64,
    /// Batches moved.
    pub batches: u64,
    /// Packets moved.
    pub packets: u64,
    /// `sendmsg` calls with `UDP_SEGMENT`, each several datagrams.
    #[serde(default)]
    pub gso_sends: u64,
    /// Data-path system calls (recvmmsg, sendmmsg/sendmsg, KICK, WAIT, epoll_wait).
    pub syscalls: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RingsReport {
    pub slot_count: u32,
    pub slot_size: u32,
    pub to_device_fill: u32,
    pub from_device_fill: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    pub to_device_packets: u64,
    pub from_device_packets: u64,
    pub invalid_slots: u64,
    pub invalid_indices: u64,
    pub ring_full_drops: u64,
    pub kicks: u64,
    pub worker_sleeps: u64,
    /// From-device packets naming no stream that sends (stopped meanwhile).
    pub unroutable: u64,
}

/// One stream's statistics. `packets`/`bytes` count datagrams accepted
/// from the network into the device; `sent_*` count packets the daemon sent
/// out of the device to the network. For `format = "rtp"`, loss,
/// duplicates, reordering and jitter are RFC 3550 receiver statistics of
/// the incoming stream (all SSRCs, in RTP packets); for `udp-ts` they come
/// from the TS continuity counters and count TS packets (jitter is 0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    pub name: String,
    /// `running`, or `failed` (then `error` says why).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub id: u32,
    pub direction: String,
    /// `user` (rtpmgrd's threads move the packets) or `kernel` (the
    /// module's in-kernel data plane does; `mode = "kernel"`).
    #[serde(default)]
    pub mode: String,
    /// What the datagrams carry: `rtp` or `udp-ts` (raw MPEG-TS).
    #[serde(default)]
    pub format: String,
    /// Why a `mode = "kernel"` stream runs in user space instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub media_port: String,
    pub bind: String,
    pub destination: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    pub lost: i64,
    pub duplicates: u64,
    pub reordered: u64,
    pub jitter_ms: f64,
    pub malformed: u64,
    pub wrong_payload_type: u64,
    pub oversize: u64,
    /// Datagrams the stream's socket dropped because its buffer overflowed
    /// (the socket's drop count, read with SO_MEMINFO): with
    /// `ring_full = "wait"`, what a full ring costs.
    pub socket_drops: u64,
    /// Datagrams discarded while the to-device ring was full, under
    /// `ring_full = "drop"`.
    pub ring_full_drops: u64,
    /// `mode = "kernel"`: datagrams its target (media port or sending
    /// socket) could not take, dropped in the kernel.
    #[serde(default)]
    pub forward_drops: u64,
    /// `mode = "kernel"`: of `packets`, those the module forwarded in
    /// softirq on the fast path, those of them whose headers it copied,
    /// and the times a datagram queued the module's worker (ABI 4).
    #[serde(default)]
    pub fast_packets: u64,
    #[serde(default)]
    pub fast_copies: u64,
    #[serde(default)]
    pub worker_wakeups: u64,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub send_errors: u64,
    pub ssrc: Option<u32>,
    pub ssrc_changes: u64,
    /// Kernel-side counters of this stream.
    pub device_to_packets: u64,
    pub device_from_packets: u64,
    pub device_ring_full_drops: u64,
    /// MPEG-TS health of what arrives (ETSI TR 101 290), for streams
    /// that carry TS (`udp-ts`, RTP with payload type 33 or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<TsReport>,
    /// The reorder buffer of a stream with `reorder_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<ReorderReport>,
    /// RTCP of a stream with `rtcp` on: reports, NACKs, retransmissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtcp: Option<RtcpReport>,
    /// SMPTE 2022-1 FEC of a stream with `fec = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fec: Option<FecReport>,
    /// The second leg of a SMPTE 2022-7 stream (the first leg's figures
    /// are the stream's own `packets`, `lost`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg2: Option<LegReport>,
    /// Times a multicast group was joined again (its interface came back
    /// with another index).
    #[serde(default)]
    pub rejoins: u64,
}

/// What arrived on a second leg (`leg2`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegReport {
    pub bind: String,
    /// RTP packets received on the leg.
    pub packets: u64,
    pub bytes: u64,
    /// RFC 3550 statistics of the leg alone.
    pub lost: i64,
    pub duplicates: u64,
    pub reordered: u64,
    pub malformed: u64,
    pub socket_drops: u64,
}

/// SMPTE 2022-1 FEC decoding (`fec = true`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FecReport {
    /// Matrix columns (L) and rows (D), from the FEC headers.
    pub l: u32,
    pub d: u32,
    /// Column and row FEC packets received.
    pub columns: u64,
    pub rows: u64,
    /// Media packets rebuilt.
    pub recovered: u64,
    /// FEC packets that expired with two or more of their packets
    /// missing: losses FEC could not repair.
    pub unrecoverable: u64,
    pub malformed: u64,
    /// FEC packets dropped because 64 were waiting already.
    pub overflow: u64,
}

/// A stream's RTCP (`rtcp`, `nack`, `rtx_payload_type`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcpReport {
    /// `port+1` or `mux`.
    pub mode: String,
    /// Our SSRC in receiver reports and NACKs.
    pub ssrc: u32,
    /// Where reports and NACKs about the received stream go.
    pub peer: Option<String>,
    pub rr_sent: u64,
    pub sr_sent: u64,
    /// Generic NACK packets sent, and the sequence numbers they asked for
    /// (retries included).
    pub nack_sent: u64,
    pub nack_requested: u64,
    /// RTCP packets received, and what they were.
    pub received: u64,
    pub sr_received: u64,
    pub rr_received: u64,
    pub nack_received: u64,
    pub malformed: u64,
    /// Retransmissions received: RFC 4588 RTX and RIST.
    pub rtx_received: u64,
    pub rist_received: u64,
    /// Retransmissions that filled a gap in time.
    pub repaired: u64,
    pub send_errors: u64,
}

/// A reorder buffer's counters (`reorder_ms`): what it put back in order,
/// and what it had to give up or drop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReorderReport {
    /// How long a packet waits for earlier missing ones.
    pub delay_ms: u32,
    /// Packets it can hold.
    pub window: u64,
    /// Packets held now.
    pub held: u64,
    /// Packets released in order.
    pub released: u64,
    /// Released packets that had arrived out of order.
    pub reordered: u64,
    /// Dropped: arrived after their place was given up.
    pub late: u64,
    /// Dropped: copies of packets released or held.
    pub duplicates: u64,
    /// Sequence numbers given up (lost at the output).
    pub skipped: u64,
    /// Of those, given up early because the window was full.
    pub overflow_skipped: u64,
    /// Start-overs (new SSRC, sequence restart).
    pub restarts: u64,
}

/// ETSI TR 101 290 indicators of a stream's transport stream, as event
/// counts since the stream started: priority 1 (1.1 to 1.6) and the two
/// of priority 2 the analysis gets for free (2.1, 2.2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TsReport {
    /// 188-byte TS packets analysed.
    pub ts_packets: u64,
    /// 1.1 TS_sync_loss.
    pub sync_loss: u64,
    /// 1.2 Sync_byte_error.
    pub sync_byte_error: u64,
    /// 1.3 PAT_error_2.
    pub pat_error: u64,
    /// 1.4 Continuity_count_error.
    pub cc_error: u64,
    /// 1.5 PMT_error_2.
    pub pmt_error: u64,
    /// 1.6 PID_error.
    pub pid_error: u64,
    /// 2.1 Transport_error (transport_error_indicator set).
    pub transport_error: u64,
    /// 2.2 CRC_error in PAT and PMT sections.
    pub crc_error: u64,
    /// Programs of the last PAT.
    pub programs: u64,
    /// Elementary PIDs the PMTs name.
    pub es_pids: u64,
    /// Continuity counters: TS packets missing, repeated and late.
    pub cc_lost: u64,
    pub cc_duplicates: u64,
    pub cc_reordered: u64,
    /// A `mode = "kernel"` stream: the module judges continuity only
    /// (`ts_packets`, `cc_error` and the `cc_*` counts); the other
    /// indicators need the packets' payload, which user space reads in
    /// `mode = "user"`, and are 0 here. Datagrams with a bad sync byte are
    /// counted in the stream's `malformed`.
    #[serde(default)]
    pub continuity_only: bool,
}

/// Generic answer to `ping`/`reload` and failures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Send one request and return the raw JSON answer.
pub fn request(socket: &Path, req: Request, timeout: Duration) -> io::Result<String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {}: {e}", socket.display())))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(req.as_str().as_bytes())?;
    s.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "rtpmgrd closed the connection without answering"));
    }
    Ok(line)
}

/// `status`, decoded.
pub fn status(socket: &Path, timeout: Duration) -> io::Result<StatusReport> {
    let raw = request(socket, Request::Status, timeout)?;
    serde_json::from_str(&raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        for r in [Request::Status, Request::Reload, Request::Ping] {
            assert_eq!(Request::parse(&format!("{}\n", r.as_str())), Some(r));
        }
        assert_eq!(Request::parse("stats"), None);
    }

    #[test]
    fn status_json_round_trip() {
        let rep = StatusReport {
            ok: true,
            streams: vec![StreamReport { name: "tv1".into(), lost: -2, jitter_ms: 1.5, ..Default::default() }],
            ..Default::default()
        };
        let json = serde_json::to_string(&rep).unwrap();
        assert!(json.contains(r#""name":"tv1""#));
        assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), rep);
    }
}
