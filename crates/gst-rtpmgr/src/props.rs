// SPDX-License-Identifier: MIT
//! The properties every rtpmgr element has: which device and session, the
//! stream's id in it, the ring geometry and the configuration file. Both
//! elements declare these here, so they cannot drift apart (same names,
//! ranges and defaults), and store and read all but `config` here; `config`
//! lives in the element's endpoint settings (`endpoint::RxSettings`,
//! `TxSettings`), which resolve it. Each element adds its own properties.

use crate::session::{Geometry, Session};
use gst::glib;
use gst::prelude::*;
use std::path::Path;
use std::sync::Arc;

pub const DEFAULT_DEVICE: &str = "/dev/rtpmgr";
pub const DEFAULT_CONFIG: &str = "/etc/rtpmgr.toml";

/// The common settings' values (all but `config`).
#[derive(Clone, Debug)]
pub struct Common {
    pub device: String,
    /// The name of a session shared with other elements of the process.
    pub session: Option<String>,
    pub stream_id: u32,
    pub geometry: Geometry,
}

impl Default for Common {
    fn default() -> Self {
        Common { device: DEFAULT_DEVICE.into(), session: None, stream_id: 0, geometry: Geometry::default() }
    }
}

/// A string property's value; an empty string reads as unset.
pub fn opt_string(value: &glib::Value) -> Option<String> {
    value.get::<Option<String>>().expect("type checked").filter(|s| !s.is_empty())
}

/// The common properties' specifications, in the order `gst-inspect-1.0`
/// lists them.
pub fn specs() -> Vec<glib::ParamSpec> {
    let g = Geometry::default();
    vec![
        glib::ParamSpecString::builder("device")
            .nick("Device")
            .blurb("The rtpmgr device")
            .default_value(Some(DEFAULT_DEVICE))
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("session")
            .nick("Session")
            .blurb(
                "Share the device session of this name with the other rtpmgr elements of the process \
                 that name it (a sink and a source on a media port that returns packets); \
                 unset: a session of the element's own",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("stream-id")
            .nick("Stream id")
            .blurb("The stream's id in the session (0..63)")
            .maximum(rtpmgr_abi::MAX_STREAMS - 1)
            .default_value(0)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("slot-count")
            .nick("Slot count")
            .blurb("Slots per ring when the element opens the session (a power of two)")
            .minimum(rtpmgr_abi::MIN_SLOT_COUNT)
            .maximum(rtpmgr_abi::MAX_SLOT_COUNT)
            .default_value(g.slot_count)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("slot-size")
            .nick("Slot size")
            .blurb("Bytes per slot, 32 of them the slot header, when the element opens the session (a power of two)")
            .minimum(rtpmgr_abi::MIN_SLOT_SIZE)
            .maximum(rtpmgr_abi::MAX_SLOT_SIZE)
            .default_value(g.slot_size)
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("config")
            .nick("Configuration")
            .blurb("The rtpmgr configuration that names the streams")
            .default_value(Some(DEFAULT_CONFIG))
            .mutable_ready()
            .build(),
    ]
}

impl Common {
    /// Open the element's session, or join the named one of the process.
    pub fn open_session(&self) -> Result<Arc<Session>, gst::ErrorMessage> {
        Session::open(Path::new(&self.device), self.session.as_deref(), self.geometry)
    }

    /// Store a common property; false when `name` is not one of them.
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        match name {
            "device" => self.device = opt_string(value).unwrap_or_else(|| DEFAULT_DEVICE.into()),
            "session" => self.session = opt_string(value),
            "stream-id" => self.stream_id = value.get().expect("type checked"),
            "slot-count" => self.geometry.slot_count = value.get().expect("type checked"),
            "slot-size" => self.geometry.slot_size = value.get().expect("type checked"),
            _ => return false,
        }
        true
    }

    /// A common property's value; None when `name` is not one of them.
    pub fn get(&self, name: &str) -> Option<glib::Value> {
        Some(match name {
            "device" => self.device.to_value(),
            "session" => self.session.to_value(),
            "stream-id" => self.stream_id.to_value(),
            "slot-count" => self.geometry.slot_count.to_value(),
            "slot-size" => self.geometry.slot_size.to_value(),
            _ => return None,
        })
    }
}
