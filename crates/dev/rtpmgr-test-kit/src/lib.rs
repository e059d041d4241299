// SPDX-License-Identifier: MIT
//! What rtpmgr's test, soak, benchmark and tool programs share, written
//! once (issue 19): the guest tests, soak, fuzzer and guest benchmark
//! (`crates/dev/rtpmgr-guest-tests`), the host benchmarks (`crates/dev/rtpmgr-bench`),
//! `rtpgen` (`crates/dev/rtpmgr-tools`) and the daemon's end-to-end tests
//! (`crates/rtpmgrd/tests`).
//!
//! * [`packet`]: RTP packets, made with the `rtp` crate's builder only
//!   (no test assembles an RTP header by hand), and [`PT_MP2T`];
//! * [`procfs`]: CPU time and UDP drop counters from `/proc`;
//! * [`rng`]: the seeded generator whose printed seed replays a run;
//! * [`mcast`]: RFC 3678 multicast joins, any-source and source-specific;
//! * [`sender`]: the bounded sender, with junk between the packets;
//! * [`user`]: running a closure in a child with other credentials.
//!
//! Not a product crate (`publish = false`), and portable: the guest tests
//! cross-compile it for aarch64 and 32-bit armv7, so it depends on nothing
//! host-only.

pub mod mcast;
pub mod packet;
pub mod procfs;
pub mod rng;
pub mod sender;
pub mod user;

pub use rng::Rng;
pub use rtp::PT_MP2T;
