// SPDX-License-Identifier: MIT
//! The GStreamer plugin `rtpmgr` (`libgstrtpmgr.so`): the multimedia
//! pipeline's door into the rtpmgr rings.
//!
//! ```text
//! gst-launch-1.0 rtpmgrsrc stream=tv1 ! rtpmp2tdepay ! tsdemux ! ...
//! gst-launch-1.0 filesrc location=in.ts ! tsparse ! rtpmp2tpay ! rtpmgrsink media-port=media0
//! ```
//!
//! # rtpmgrsrc
//!
//! Reads the packets of one stream from a session's from-device ring and
//! pushes them as buffer lists (up to 64 packets each), with RTP caps
//! (`application/x-rtp`, RTP/MP2T payload type 33 at 90 kHz unless the
//! configuration or the `caps` property says otherwise) or, for a
//! `format = "udp-ts"` stream, `video/mpegts, packetsize=188`. Each buffer's
//! PTS and DTS are the packet's arrival, from its slot header's
//! `CLOCK_MONOTONIC` timestamp taken by the module, as running time of the
//! pipeline clock; a packet after a drop (`SLOT_F_AFTER_DROP`) is marked
//! `DISCONT`. The element is live.
//!
//! Where the packets come from, in this order: `media-port` (what a port
//! of the device returns), `address` (`IP:PORT`, a multicast group is
//! joined), or `stream`, a stream of `/etc/rtpmgr.toml` (`config`) by name.
//! For a named stream the element receives what rtpmgrd delivers of it on
//! this host (its destination, when that is a loopback address or a
//! multicast group), or else a copy of its multicast group; a unicast
//! stream rtpmgrd relays elsewhere cannot be shared and is refused
//! (`docs/ARCHITECTURE.md`, "GStreamer elements", says why). In each case
//! the element opens a session of its own (or joins the one named by
//! `session`) with a `udp` stream on a socket of its own: the module
//! receives the datagrams, checks RTP (`NET_F_RTP`, for RTP streams), and
//! writes them into the element's ring; no system call per packet.
//!
//! **Memory.** With `zero-copy` (the default) a buffer's memory *is* the
//! packet's slot in the mapped ring (read-only; a writer downstream makes
//! its own copy), given back to the kernel when the buffer is freed. The
//! ring returns slots in order only (one consumer index), so a buffer that
//! stays downstream holds back every slot after it: the element wraps at
//! most half the ring at a time and copies the packets beyond that (one
//! copy, into memory of its own, the slot going back at once), so the
//! kernel keeps the other half whatever downstream holds. While slots are
//! lent the device polls readable (the ring is not empty), so after a
//! wake-up that brought nothing new the element waits 1 ms before polling
//! again instead of spinning. A pipeline that
//! keeps buffers for long (a long jitterbuffer) or keeps one buffer for
//! good (a paused branch of a tee) should set `zero-copy=false`: every
//! packet is then copied once. `stats` shows both counts.
//!
//! # rtpmgrsink
//!
//! Copies each buffer (one copy, as `udpsink`'s `sendmsg` would) into a
//! to-device slot of its stream, stamped with `CLOCK_MONOTONIC`, and
//! publishes each run of free slots at once (one `KICK` per run at most,
//! only when the kernel sleeps); waits for room when the ring is full.
//! The stream runs on `destination` (`IP:PORT`: a `udp` stream, the module
//! sends), `media-port`, the media port of the configuration's `stream`,
//! or `media0`. At stop it waits (2 s at most) for the kernel to take
//! what is left in the ring. In a pipeline that a live source makes live
//! (an `rtpmgrsrc` of the same session), a sink fed from a file wants
//! `sync=false async=false`, as `udpsink` does there: otherwise it waits
//! in preroll.
//!
//! # Sessions
//!
//! Each element opens a session of its own (`slot-count`, `slot-size`:
//! the ring geometry), unless `session` names one to share with the
//! other rtpmgr elements of the process: a sink and a source with the
//! same `stream-id` on one media port then run the stream in both
//! directions, and the source ends (EOS) once everything the sink wrote
//! before its EOS came back. One source per session (it owns the
//! from-device ring), any number of sinks.
//!
//! # Errors
//!
//! A missing device (`resource: not found`, "is the rtpmgr module
//! loaded?"), a device the user may not open, a busy stream (the id in
//! use, the address taken by another receiver, the ring taken by another
//! source: `resource: busy`), an unknown stream or port (`not found`) and
//! caps that do not fit the stream (`core: negotiation`) are element
//! errors that name the cause.
//!
//! # Workspace
//!
//! This crate is a cargo workspace of its own under `crates/` (like the
//! fuzz crates), excluded from the root workspace, with its own
//! `Cargo.lock`: the GStreamer bindings stay out of rtpmgrd's dependency
//! set and out of the crate list of its Yocto recipe. It uses the
//! project's crates by path (`rtpmgr-abi`, `rtpmgr-ring`, `rtpmgr-device`,
//! `rtpmgr-config`).

use gst::glib;

mod endpoint;
mod props;
mod rtpmgrsink;
mod rtpmgrsrc;
mod rx;
mod session;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtpmgrsrc::register(plugin)?;
    rtpmgrsink::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    rtpmgr,
    "GStreamer elements on the rtpmgr kernel module's packet rings",
    plugin_init,
    env!("CARGO_PKG_VERSION"),
    "MIT/X11",
    "gst-rtpmgr",
    "rtpmgr",
    "https://github.com/rtpmgr/rtpmgr"
);
