// SPDX-License-Identifier: MIT
//! RTP (RFC 3550) packet views, builders and receiver statistics.

pub mod payload;
