// SPDX-License-Identifier: MIT
//! Stream generation and verification shared by `rtpgen send` and
//! `rtpgen recv`: a synthetic MPEG-TS stream whose every byte follows from
//! the RTP header it travels in, so a receiver can check content without
//! having seen the sender.

pub mod stream;
pub mod verify;
