// SPDX-License-Identifier: MIT
//! Host benchmarks of rtpmgrd (`host-bench`, run by `ci/bench-host`) and the
//! bare `recvmmsg`→`sendmmsg` relay loop it is measured against
//! (`bare-relay`).
//!
//! 1. Relay throughput at 1316-byte payloads: rtpmgrd (sim backend) versus
//!    the bare loop and GStreamer `udpsrc ! udpsink`.
//! 2. Capacity: concurrent 10 Mbit/s streams one rtpmgrd carries without
//!    loss, and its CPU time per stream.
//! 3. Latency through rtpmgrd and through the bare loop.
//!
//! How each is measured is in [`bench`]; the JSON document in [`report`].

pub mod bench;
pub mod load;
pub mod mmsg;
pub mod packet;
pub mod perf;
pub mod rate;
pub mod relay;
pub mod report;
pub mod stats;
