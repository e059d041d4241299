// SPDX-License-Identifier: MIT
//! What serde reads: every field optional (required keys are checked in
//! `validate`, where the stream can be named), checked values spanned.

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub daemon: Option<RawDaemon>,
    pub buffer: Option<RawBuffer>,
    #[serde(default, rename = "stream")]
    pub streams: Vec<Spanned<RawStream>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawBackend {
    Kernel,
    Sim,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub backend: Option<RawBackend>,
    pub device: Option<Spanned<String>>,
    pub control_socket: Option<Spanned<String>>,
    pub control_socket_mode: Option<Spanned<String>>,
    pub log_level: Option<Spanned<String>>,
    pub status_interval_secs: Option<Spanned<u32>>,
    pub socket_buffer_bytes: Option<Spanned<u32>>,
    pub layout: Option<RawLayout>,
    pub udp_gso: Option<bool>,
    pub receive_timestamps: Option<bool>,
    pub rx_coalesce_us: Option<toml::Spanned<u32>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawLayout {
    Threads,
    RunToCompletion,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {
    pub slot_count: Option<Spanned<u32>>,
    pub slot_size: Option<Spanned<u32>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawDirection {
    Ingress,
    Egress,
    Relay,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub name: Option<Spanned<String>>,
    pub direction: Option<Spanned<RawDirection>>,
    pub bind: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub source: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
    pub destination: Option<Spanned<String>>,
    pub multicast_ttl: Option<Spanned<u32>>,
    pub payload_type: Option<Spanned<u32>>,
    pub clock_rate: Option<Spanned<u32>>,
    pub media_port: Option<Spanned<String>>,
    pub ring_full: Option<Spanned<RawRingFull>>,
    pub mode: Option<Spanned<RawMode>>,
    pub format: Option<Spanned<RawFormat>>,
    pub pid_timeout_ms: Option<Spanned<u32>>,
    pub reorder_ms: Option<Spanned<u32>>,
    pub rtcp: Option<Spanned<RawRtcp>>,
    pub rtcp_peer: Option<Spanned<String>>,
    pub nack: Option<Spanned<bool>>,
    pub rtx_payload_type: Option<Spanned<u32>>,
    pub fec: Option<Spanned<bool>>,
    pub leg2: Option<Spanned<RawLeg>>,
}

/// The second leg of a SMPTE 2022-7 stream: `leg2 = { bind = ..., ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLeg {
    pub bind: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub source: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawRingFull {
    Wait,
    Drop,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    User,
    Kernel,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    #[serde(rename = "rtp")]
    Rtp,
    #[serde(rename = "udp-ts")]
    UdpTs,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum RawRtcp {
    #[serde(rename = "off")]
    Off,
    #[serde(rename = "port+1")]
    PortPlus1,
    #[serde(rename = "mux")]
    Mux,
}
