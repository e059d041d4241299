// SPDX-License-Identifier: MIT
//! RTP (RFC 3550) for rtpmgr: a zero-copy packet view that validates every
//! length once, a builder that writes into caller memory, and receiver
//! statistics per source (RFC 3550 appendix A.1, A.3 and A.8, plus duplicate
//! and reordering counts).
//!
//! Nothing here panics on input: malformed packets are a typed
//! [`ParseError`], and the statistics accept any sequence of numbers. The
//! only documented panic is [`RtpBuilder::to_vec`] on builder misuse.
//!
//! ```
//! use rtp::{PacketClass, RtpBuilder, RtpPacket, StreamStats};
//!
//! let mut stats = StreamStats::new(90_000, 4);
//! for seq in 0..3u16 {
//!     let bytes = RtpBuilder::new(33, seq, u32::from(seq) * 1800, 0xcafe).to_vec(&[0x47; 188]);
//!     let pkt = RtpPacket::parse(&bytes)?;
//!     assert_eq!(pkt.payload().len(), 188);
//!     let class = stats.update(&pkt, u64::from(seq) * 20_000_000);
//!     assert_eq!(class, if seq == 0 { PacketClass::Probation } else { PacketClass::InOrder });
//! }
//! let src = stats.current().expect("one source");
//! assert_eq!((src.ssrc(), src.received(), src.lost(), src.jitter_units()), (0xcafe, 3, 0, 0));
//! # Ok::<(), rtp::ParseError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fec;
pub mod header;
pub mod nack;
pub mod payload;
pub mod reorder;
pub mod rtcp;
pub mod rtx;
pub mod rules;
pub mod seqstats;
pub mod stats;

#[doc(hidden)]
pub mod fuzzing;

pub use header::{BuildError, ParseError, RtpBuilder, RtpPacket, FIXED_HEADER_LEN, MAX_CSRCS, RTP_VERSION};
pub use rules::PT_MP2T;
pub use stats::{IntervalReport, PacketClass, SourceStats, StreamStats};
