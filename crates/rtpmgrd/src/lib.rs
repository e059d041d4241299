// SPDX-License-Identifier: MIT
//! rtpmgrd: moves RTP between UDP sockets and the rtpmgr packet rings.
//!
//! * [`sim`]: the simulator backend, the module played in-process; the
//!   real device and the trait both implement (`rtpmgr_device::Backend`)
//!   live in `rtpmgr-device`;
//! * [`receiver`]: UDP/RTP → to-device ring (`recvmmsg` into ring slots);
//! * [`transmitter`]: from-device ring → UDP (`sendmmsg` from ring slots);
//! * [`daemon`]: the controller (configuration, streams, control socket,
//!   signals, status);
//! * [`kernel_path`]: streams the module runs by itself (`mode = "kernel"`);
//! * [`net`]: socket set-up, multicast joins;
//! * [`rtcp`]: a stream's RTCP: reports, NACKs, what peers report.

pub mod daemon;
pub mod kernel_path;
pub mod net;
pub mod receiver;
pub mod rtc;
pub mod rtcp;
pub mod sim;
pub mod stream;
pub mod transmitter;
pub mod wait;

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64,
        Err(_) => 0,
    }
}
