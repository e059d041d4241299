// SPDX-License-Identifier: MIT
//! The status report: what `rtpmgrctl status` shows and the periodic log
//! line prints. It reads the supervisor's streams, the device's counters
//! and the data threads' counters and never changes anything, so it lives
//! apart from the code that starts and stops streams; its JSON shape is
//! `rtpmgr_control::StatusReport`'s, which tests and rtpmgrctl pin.

use super::streams::StreamState;
use super::supervisor::Daemon;
use crate::net;
use crate::stream::Stream;
use crate::wait::ThreadStats;
use rtpmgr_abi as abi;
use rtpmgr_config::{DataPath, Direction, StreamConfig, StreamFormat};
use rtpmgr_control::{
    FecReport, LegReport, ReorderReport, RingsReport, RtcpReport, SessionReport, StatusReport, StreamReport,
    ThreadReport, TsReport,
};
use rtpmgr_ring::RingId;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Daemon {
    pub fn status(&self) -> StatusReport {
        let session = self.backend.status(abi::STATUS_SESSION_ONLY).map(|s| s.session).unwrap_or_default();
        let g = self.region.geometry();
        let fill = |ring| {
            let (p, c, _) = self.region.snapshot(ring);
            abi::ring_fill(p, c, g.slot_count).unwrap_or(u32::MAX)
        };
        let reports: Vec<StreamReport> = self
            .streams
            .in_report_order()
            .into_iter()
            .map(|state| match state {
                StreamState::Running(s) => self.stream_report(s, None),
                StreamState::Fallback { stream, reason } => self.stream_report(stream, Some(reason)),
                StreamState::Kernel(k) => k.report(self.backend.as_ref(), config_report(&k.config)),
                StreamState::Failed(w) => {
                    let retry = w.next_try.saturating_duration_since(Instant::now());
                    StreamReport {
                        state: "failed".into(),
                        error: Some(format!("{} (attempt {}, next in {:.0?})", w.error, w.attempts, retry)),
                        ..config_report(&w.config)
                    }
                }
            })
            .collect();
        StatusReport {
            ok: true,
            version: env!("CARGO_PKG_VERSION").into(),
            backend: self.backend.name().into(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            config: self.config_path.display().to_string(),
            rings: RingsReport {
                slot_count: g.slot_count,
                slot_size: g.slot_size,
                to_device_fill: fill(RingId::ToDevice),
                from_device_fill: fill(RingId::FromDevice),
            },
            session: SessionReport {
                to_device_packets: session.to_dev_packets,
                from_device_packets: session.from_dev_packets,
                invalid_slots: session.invalid_slots,
                invalid_indices: session.invalid_indices,
                ring_full_drops: session.ring_full_drops,
                kicks: session.kicks,
                worker_sleeps: session.worker_sleeps,
                unroutable: self.threads.unroutable.load(Ordering::Relaxed),
            },
            streams: reports,
            threads: ["rx", "tx"]
                .iter()
                .zip(&self.threads.stats)
                .map(|(name, t)| ThreadReport {
                    name: (*name).into(),
                    wakeups: ThreadStats::get(&t.wakeups),
                    timeouts: ThreadStats::get(&t.timeouts),
                    batches: ThreadStats::get(&t.batches),
                    packets: ThreadStats::get(&t.packets),
                    syscalls: ThreadStats::get(&t.syscalls),
                    gso_sends: ThreadStats::get(&t.gso_sends),
                })
                .collect(),
        }
    }

    /// A user-space stream's report; `fallback`: why its `mode = "kernel"`
    /// runs in user space.
    fn stream_report(&self, s: &Stream, fallback: Option<&String>) -> StreamReport {
        let dev = self.backend.status(s.id).map(|st| st.stream).unwrap_or_default();
        let c = s.counters();
        let (mut lost, mut duplicates, mut reordered) = (0i64, 0u64, 0u64);
        for src in c.rtp.sources() {
            lost += src.lost();
            duplicates += src.duplicates();
            reordered += src.reordered();
        }
        let current = c.rtp.current();
        let ts = c.ts.as_deref().map(ts_report);
        let reorder = c.reorder.as_ref().map(|rb| {
            let st = rb.stats();
            ReorderReport {
                delay_ms: s.config.reorder_ms,
                window: rb.window() as u64,
                held: rb.held() as u64,
                released: st.released,
                reordered: st.reordered,
                late: st.late,
                duplicates: st.duplicates,
                skipped: st.skipped,
                overflow_skipped: st.overflow_skipped,
                restarts: st.restarts,
            }
        });
        if s.config.format == StreamFormat::UdpTs {
            if let Some(t) = &ts {
                (lost, duplicates, reordered) = (t.cc_lost as i64, t.cc_duplicates, t.cc_reordered);
            }
        }
        let leg2 = c.leg2.as_ref().map(|l| {
            let (mut lost, mut duplicates, mut reordered) = (0i64, 0u64, 0u64);
            for src in l.rtp.sources() {
                lost += src.lost();
                duplicates += src.duplicates();
                reordered += src.reordered();
            }
            LegReport {
                bind: s.config.leg2.as_ref().map(|l| l.bind.to_string()).unwrap_or_default(),
                packets: l.packets,
                bytes: l.bytes,
                lost,
                duplicates,
                reordered,
                malformed: l.malformed,
                socket_drops: s.leg2_socket.as_ref().and_then(net::socket_drops).unwrap_or(0),
            }
        });
        let fec = c.fec.as_ref().map(|f| {
            let st = f.stats();
            FecReport {
                l: st.l.into(),
                d: st.d.into(),
                columns: st.columns,
                rows: st.rows,
                recovered: st.recovered,
                unrecoverable: st.unrecoverable,
                malformed: st.malformed,
                overflow: st.overflow,
            }
        });
        let rtcp = c.rtcp.as_ref().map(|rt| {
            let k = rt.counters;
            RtcpReport {
                mode: s.config.rtcp.as_str().into(),
                ssrc: rt.ssrc,
                peer: rt.upstream(&s.config).map(|a| a.to_string()),
                rr_sent: k.rr_sent,
                sr_sent: k.sr_sent,
                nack_sent: k.nack_sent,
                nack_requested: k.nack_requested,
                received: k.received,
                sr_received: k.sr_received,
                rr_received: k.rr_received,
                nack_received: k.nack_received,
                malformed: k.malformed,
                rtx_received: k.rtx_received,
                rist_received: k.rist_received,
                repaired: k.repaired,
                send_errors: k.send_errors,
            }
        });
        StreamReport {
            id: s.id,
            state: "running".into(),
            mode: "user".into(),
            fallback: fallback.cloned(),
            packets: c.packets,
            bytes: c.bytes,
            lost,
            duplicates,
            reordered,
            jitter_ms: current.map(|src| src.jitter_ms()).unwrap_or(0.0),
            malformed: c.malformed,
            wrong_payload_type: c.wrong_payload_type,
            oversize: c.oversize,
            // Under ring_full = "wait", where a ring that stays full shows.
            socket_drops: net::socket_drops(&s.socket).unwrap_or(0),
            ring_full_drops: c.ring_full_drops,
            sent_packets: c.sent_packets,
            sent_bytes: c.sent_bytes,
            send_errors: c.send_errors,
            ssrc: current.map(|src| src.ssrc()),
            ssrc_changes: c.rtp.ssrc_changes(),
            device_to_packets: dev.to_dev_packets,
            device_from_packets: dev.from_dev_packets,
            device_ring_full_drops: dev.ring_full_drops,
            ts,
            reorder,
            rtcp,
            fec,
            leg2,
            rejoins: s.rejoins.load(Ordering::Relaxed),
            ..config_report(&s.config)
        }
    }

    /// One log line per stream.
    pub(super) fn log_status(&self) {
        for s in self.status().streams {
            if s.state != "running" {
                log::warn!("{}: not running: {}", s.name, s.error.unwrap_or_default());
                continue;
            }
            let ts = s.ts.as_ref().map_or(String::new(), |t| {
                format!(
                    "; TR 101 290: sync loss {}, sync byte {}, PAT {}, CC {}, PMT {}, PID {}",
                    t.sync_loss, t.sync_byte_error, t.pat_error, t.cc_error, t.pmt_error, t.pid_error
                )
            });
            log::info!(
                "{} ({}, {}): rx {} pkts {} B, lost {}, dup {}, reord {}, jitter {:.3} ms, malformed {}, socket drops {}, ring-full drops {}, forward drops {}; tx {} pkts, errors {}{ts}",
                s.name,
                s.mode,
                s.format,
                s.packets,
                s.bytes,
                s.lost,
                s.duplicates,
                s.reordered,
                s.jitter_ms,
                s.malformed,
                s.socket_drops,
                s.ring_full_drops,
                s.forward_drops,
                s.sent_packets,
                s.send_errors
            );
        }
    }
}

pub(super) fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
        Direction::Relay => "relay",
    }
}

fn ts_report(a: &mpegts::tr101290::Analyzer) -> TsReport {
    let c = a.counters();
    let cc = a.cc_counters();
    TsReport {
        ts_packets: c.ts_packets,
        sync_loss: c.sync_loss,
        sync_byte_error: c.sync_byte_error,
        pat_error: c.pat_error,
        cc_error: c.cc_error,
        pmt_error: c.pmt_error,
        pid_error: c.pid_error,
        transport_error: c.transport_error,
        crc_error: c.crc_error,
        programs: a.programs() as u64,
        es_pids: a.es_pids() as u64,
        cc_lost: cc.lost,
        cc_duplicates: cc.duplicates,
        cc_reordered: cc.reordered,
        continuity_only: false,
    }
}

fn config_report(cfg: &StreamConfig) -> StreamReport {
    StreamReport {
        name: cfg.name.clone(),
        direction: dir_name(cfg.direction).into(),
        mode: match cfg.mode {
            DataPath::User => "user",
            DataPath::Kernel => "kernel",
        }
        .into(),
        format: cfg.format.as_str().into(),
        media_port: cfg.media_port.clone(),
        bind: cfg.bind.to_string(),
        destination: cfg.destination.map(|d| d.to_string()),
        ..Default::default()
    }
}
