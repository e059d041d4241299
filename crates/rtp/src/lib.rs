// SPDX-License-Identifier: MIT
//! RTP (RFC 3550) for rtpmgr: a zero-copy packet view that validates every
//! length once, a builder, and receiver statistics per source.
//!
//! Nothing here panics on input: malformed packets are a typed
//! [`ParseError`]; statistics accept any sequence of numbers.

pub mod header;
pub mod payload;
pub mod stats;

#[doc(hidden)]
pub mod fuzzing;

pub use header::{BuildError, ParseError, RtpBuilder, RtpPacket, FIXED_HEADER_LEN, MAX_CSRCS, RTP_VERSION};
pub use stats::{IntervalReport, PacketClass, SourceStats, StreamStats};
