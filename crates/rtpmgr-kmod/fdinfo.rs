// SPDX-License-Identifier: GPL-2.0-only

//! `/proc/PID/fdinfo/FD` of a session: its state, rings, counters and
//! streams, read in one critical section.

use crate::abi;
use crate::session::Session;
use kernel::seq_file::{seq_print, SeqFile};

impl Session {
    pub(crate) fn show_fdinfo(&self, m: &SeqFile) {
        let inner = self.inner.lock();
        let state = match inner.state() {
            abi::STATE_UNCONFIGURED => "unconfigured",
            abi::STATE_CONFIGURED => "configured",
            _ => "streaming",
        };
        seq_print!(m, "rtpmgr-state:\t{}\n", state);
        if let Some(r) = inner.region.as_ref() {
            let g = r.geometry();
            let (to, from) = r.fill();
            seq_print!(
                m,
                "rtpmgr-rings:\t{} x {} B, to-device fill {}, from-device fill {}\n",
                g.slot_count,
                g.slot_size,
                to,
                from
            );
        }
        let mut c = inner.counters;
        self.lockless.fill(&mut c);
        seq_print!(
            m,
            "rtpmgr-counters:\tto_dev {} pkts {} B, from_dev {} pkts {} B, invalid_slots {}, invalid_indices {}, ring_full_drops {}, kicks {}, sleeps {}, waits {}/{}\n",
            c.to_dev_packets,
            c.to_dev_bytes,
            c.from_dev_packets,
            c.from_dev_bytes,
            c.invalid_slots,
            c.invalid_indices,
            c.ring_full_drops,
            c.kicks,
            c.worker_sleeps,
            c.waits,
            c.wait_timeouts
        );
        for (id, s) in inner.streams.iter().enumerate() {
            if let Some(s) = s {
                seq_print!(
                    m,
                    "rtpmgr-stream:\t{} port {} dir {} to_dev {} from_dev {}\n",
                    id,
                    s.port_name(),
                    s.direction,
                    s.counters.to_dev_packets,
                    s.counters.from_dev_packets
                );
                if let Some(n) = s.net() {
                    // With what the socket helper counted (the fast path).
                    let c = &n.counters();
                    seq_print!(
                        m,
                        "rtpmgr-net:\t{} rx {} pkts {} B, tx {} pkts {} B, tx_errors {}, tx_blocked {}, tx_dropped {}, malformed {}, oversize {}, csum_errors {}, rx_errors {}, ring_full {}\n",
                        id,
                        c.rx_packets,
                        c.rx_bytes,
                        c.tx_packets,
                        c.tx_bytes,
                        c.tx_errors,
                        c.tx_blocked,
                        c.tx_dropped,
                        c.malformed,
                        c.oversize,
                        c.csum_errors,
                        c.rx_errors,
                        c.ring_full
                    );
                    if let Some(k) = n.forward_to {
                        seq_print!(
                            m,
                            "rtpmgr-fwd:\t{} -> {} fwd {} pkts {} B, forward_drops {}, tap {}, tap_drops {}, fast {}, copies {}, worker_wakeups {}\n",
                            id,
                            k,
                            c.fwd_packets,
                            c.fwd_bytes,
                            c.forward_drops,
                            c.tap_packets,
                            c.tap_drops,
                            c.fwd_fast_packets,
                            c.fwd_copies,
                            c.worker_wakeups
                        );
                    }
                }
            }
        }
    }
}
