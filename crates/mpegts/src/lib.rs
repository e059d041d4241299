// SPDX-License-Identifier: MIT
//! MPEG transport stream (ISO/IEC 13818-1) for rtpmgr: what a receiver of
//! IPTV needs to judge a stream it relays without decoding it.
//!
//! * [`packet`]: a view of one 188-byte TS packet and the check of a raw
//!   UDP datagram as a whole number of them (`format = "udp-ts"`);
//! * [`cc`]: continuity counters per PID, turned into loss, duplicate and
//!   reordering counts (dependency-free, so the kernel module can compile
//!   the same file for its own `udp-ts` path);
//! * [`head`]: the datagram rule and the header fields judged from the
//!   first six bytes of each packet (dependency-free, the file the module
//!   compiles to accept `udp-ts` datagrams);
//! * [`psi`]: PSI section reassembly, the MPEG-2 CRC, PAT and PMT;
//! * [`tr101290`]: the ETSI TR 101 290 priority-1 indicators of a stream.
//!
//! Nothing here panics on input or allocates per packet: the analyser
//! allocates its tables once, when it is created.
//!
//! ```
//! use mpegts::tr101290::{Analyzer, AnalyzerConfig};
//!
//! let mut a = Analyzer::new(AnalyzerConfig::default());
//! let mut pkt = [0xffu8; 188];
//! pkt[..4].copy_from_slice(&[0x47, 0x01, 0x00, 0x10]); // PID 0x100, payload, CC 0
//! a.packet(&pkt, 0);
//! pkt[3] = 0x12; // CC 2: one packet of PID 0x100 lost
//! a.packet(&pkt, 1_000_000);
//! assert_eq!(a.counters().cc_error, 1);
//! assert_eq!(a.cc_counters().lost, 1);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cc;
pub mod head;
pub mod packet;
pub mod psi;
pub mod tr101290;

#[doc(hidden)]
pub mod fuzzing;

pub use packet::{check_datagram, DatagramError, TsPacket, PACKET_LEN, PID_NULL, PID_PAT, SYNC_BYTE};
