// SPDX-License-Identifier: MIT
//! `rtpmgrsink`: RTP (or MPEG-TS) buffers into a session's to-device ring,
//! for a stream of a media port or a UDP socket the module sends on.

use gst::glib;
use gst::prelude::*;

glib::wrapper! {
    pub struct RtpmgrSink(ObjectSubclass<imp::RtpmgrSink>) @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "rtpmgrsink", gst::Rank::NONE, RtpmgrSink::static_type())
}

mod imp {
    use crate::endpoint::{self, TxEndpoint, TxSettings};
    use crate::props;
    use crate::session::{self, Role, Session, StreamClaim, Target, Wait, Waker};
    use gst::glib;
    use gst::prelude::*;
    use gst::subclass::prelude::*;
    use gst_base::subclass::prelude::*;
    use nix::poll::PollFlags;
    use rtpmgr_abi::SlotHeader;
    use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
    use std::time::Duration;

    static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
        gst::DebugCategory::new("rtpmgrsink", gst::DebugColorFlags::empty(), Some("rtpmgr ring sink"))
    });

    /// How long `stop` waits for the kernel to take what is in the ring.
    const DRAIN: Duration = Duration::from_secs(2);

    #[derive(Clone, Debug)]
    struct Settings {
        common: props::Common,
        tx: TxSettings,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                common: props::Common::default(),
                tx: TxSettings { config: props::DEFAULT_CONFIG.into(), ..Default::default() },
            }
        }
    }

    #[derive(Clone, Copy, Debug, Default)]
    struct Counters {
        packets: u64,
        bytes: u64,
        /// Times the ring was full and the sink waited for the kernel.
        ring_full_waits: u64,
    }

    struct Running {
        session: Arc<Session>,
        claim: Option<StreamClaim>,
        stream_id: u32,
        payload_cap: usize,
        counters: Counters,
    }

    pub struct RtpmgrSink {
        settings: Mutex<Settings>,
        running: Mutex<Option<Running>>,
        waker: Waker,
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[glib::object_subclass]
    impl ObjectSubclass for RtpmgrSink {
        const NAME: &'static str = "GstRtpmgrSink";
        type Type = super::RtpmgrSink;
        type ParentType = gst_base::BaseSink;

        fn new() -> Self {
            RtpmgrSink {
                settings: Mutex::new(Settings::default()),
                running: Mutex::new(None),
                waker: Waker::new().expect("eventfd"),
            }
        }
    }

    impl ObjectImpl for RtpmgrSink {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
                let mut specs = props::specs();
                specs.extend([
                    glib::ParamSpecString::builder("stream")
                        .nick("Stream")
                        .blurb("A stream of the configuration, by name: write to its media port")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("media-port")
                        .nick("Media port")
                        .blurb("The media port to write to (default media0, or the stream's)")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("destination")
                        .nick("Destination")
                        .blurb("Send to IP:PORT through the module (a UDP stream) instead of a media port")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                        .nick("Statistics")
                        .blurb("Packets and bytes written, waits for a full ring, and the module's stream counters")
                        .read_only()
                        .build(),
                ]);
                specs
            });
            PROPS.as_ref()
        }

        fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
            let mut s = lock(&self.settings);
            if s.common.set(pspec.name(), value) {
                return;
            }
            let opt = props::opt_string;
            match pspec.name() {
                "config" => s.tx.config = opt(value).unwrap_or_else(|| props::DEFAULT_CONFIG.into()),
                "stream" => s.tx.stream = opt(value),
                "media-port" => s.tx.media_port = opt(value),
                "destination" => s.tx.destination = opt(value),
                other => unreachable!("no property {other}"),
            }
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            let s = lock(&self.settings);
            if let Some(v) = s.common.get(pspec.name()) {
                return v;
            }
            match pspec.name() {
                "config" => s.tx.config.to_value(),
                "stream" => s.tx.stream.to_value(),
                "media-port" => s.tx.media_port.to_value(),
                "destination" => s.tx.destination.to_value(),
                "stats" => {
                    drop(s);
                    self.stats().to_value()
                }
                other => unreachable!("no property {other}"),
            }
        }
    }

    impl GstObjectImpl for RtpmgrSink {}

    impl ElementImpl for RtpmgrSink {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "rtpmgr ring sink",
                    "Sink/Network/RTP",
                    "Writes RTP (or MPEG-TS) packets into the rtpmgr kernel module's to-device ring, for a media \
                     port or a UDP destination the module sends to",
                    "rtpmgr maintainers <maintainers@users.noreply.r-seed-dde5812d.example>",
                )
            });
            Some(&*META)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                let caps = crate::endpoint::template_caps();
                vec![gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &caps)
                    .expect("valid template")]
            });
            TEMPLATES.as_ref()
        }
    }

    impl RtpmgrSink {
        fn stats(&self) -> gst::Structure {
            let running = lock(&self.running);
            let mut b = gst::Structure::builder("application/x-rtpmgrsink-stats");
            if let Some(r) = running.as_ref() {
                b = b
                    .field("packets", r.counters.packets)
                    .field("bytes", r.counters.bytes)
                    .field("ring-full-waits", r.counters.ring_full_waits);
                if let Some(c) = r.session.stream_counters(r.stream_id) {
                    b = b.field("kernel-to-dev-packets", c.to_dev_packets).field("kernel-to-dev-bytes", c.to_dev_bytes);
                }
            }
            b.build()
        }

        fn open(&self, s: &Settings) -> Result<Running, gst::ErrorMessage> {
            let (ep, why) = endpoint::resolve_tx(&s.tx)?;
            let target = match ep {
                TxEndpoint::Port(p) => Target::Port(p),
                TxEndpoint::Udp(dest) => Target::Udp {
                    socket: endpoint::tx_socket(dest).map_err(|e| {
                        gst::error_msg!(gst::ResourceError::OpenWrite, ("Could not send to {dest}: {e}"))
                    })?,
                    rtp: false,
                    clock_rate: 0,
                },
            };
            let session = s.common.open_session()?;
            let claim = session.claim(s.common.stream_id, Role::Sink, target)?;
            gst::info!(CAT, imp = self, "writing stream {} of {} ({why})", s.common.stream_id, session.describe());
            Ok(Running {
                payload_cap: session.region().geometry().payload_capacity() as usize,
                session,
                claim: Some(claim),
                stream_id: s.common.stream_id,
                counters: Counters::default(),
            })
        }

        /// Copy `buffers` into to-device slots, waiting for room when the
        /// ring is full; one publish (and at most one kick) per batch of
        /// free slots.
        fn write(&self, buffers: &[&gst::BufferRef]) -> Result<gst::FlowSuccess, gst::FlowError> {
            let (session, id, cap) = {
                let r = lock(&self.running);
                let r = r.as_ref().ok_or(gst::FlowError::Flushing)?;
                (Arc::clone(&r.session), r.stream_id, r.payload_cap)
            };
            for b in buffers {
                if b.size() > cap {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        (
                            "A packet of {} bytes does not fit a slot ({} bytes of payload): use a larger slot-size or a smaller MTU upstream",
                            b.size(),
                            cap
                        )
                    );
                    return Err(gst::FlowError::Error);
                }
            }
            let mut next = 0;
            let (mut packets, mut bytes, mut waits) = (0u64, 0u64, 0u64);
            while next < buffers.len() {
                if self.waker.flushing() {
                    return Err(gst::FlowError::Flushing);
                }
                let kick = {
                    let mut tx = session.tx();
                    let want = (buffers.len() - next) as u32;
                    let n = tx.free(want).min(want);
                    let now = session::monotonic_ns();
                    for i in 0..n {
                        let b = buffers[next + i as usize];
                        let map = b.map_readable().map_err(|_| gst::FlowError::Error)?;
                        tx.payload_mut(i)[..map.len()].copy_from_slice(&map);
                        tx.set_header(
                            i,
                            &SlotHeader {
                                len: map.len() as u32,
                                stream_id: id,
                                timestamp_ns: now,
                                ..Default::default()
                            },
                        );
                        bytes += map.len() as u64;
                    }
                    next += n as usize;
                    packets += n as u64;
                    if n == 0 {
                        None
                    } else {
                        Some(tx.publish(n))
                    }
                };
                match kick {
                    Some(true) => session.kick(),
                    Some(false) => {}
                    None => {
                        waits += 1;
                        gst::debug!(CAT, imp = self, "to-device ring full: waiting for room");
                        match session.wait(PollFlags::POLLOUT, &self.waker, Some(Duration::from_millis(500))) {
                            Ok(Wait::Woken) => return Err(gst::FlowError::Flushing),
                            Ok(Wait::Ready | Wait::Timeout) => {}
                            Err(e) => {
                                gst::element_imp_error!(
                                    self,
                                    gst::ResourceError::Write,
                                    ("Waiting for the device: {e}")
                                );
                                return Err(gst::FlowError::Error);
                            }
                        }
                    }
                }
            }
            gst::log!(CAT, imp = self, "wrote {packets} packets ({bytes} bytes), {waits} waits for room");
            if let Some(r) = lock(&self.running).as_mut() {
                r.counters.packets += packets;
                r.counters.bytes += bytes;
                r.counters.ring_full_waits += waits;
            }
            Ok(gst::FlowSuccess::Ok)
        }
    }

    impl BaseSinkImpl for RtpmgrSink {
        fn start(&self) -> Result<(), gst::ErrorMessage> {
            let s = lock(&self.settings).clone();
            let r = self.open(&s)?;
            *lock(&self.running) = Some(r);
            Ok(())
        }

        fn stop(&self) -> Result<(), gst::ErrorMessage> {
            let r = lock(&self.running).take();
            if let Some(mut r) = r {
                // What is still in the ring must reach the port before the
                // stream stops (its slots would be invalid afterwards).
                if !r.session.drain_tx(DRAIN) {
                    gst::warning!(CAT, imp = self, "the kernel did not take the last packets within {DRAIN:?}");
                }
                r.claim.take();
            }
            Ok(())
        }

        fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
            let s = caps.structure(0).ok_or_else(|| gst::loggable_error!(CAT, "empty caps"))?;
            match s.name().as_str() {
                "application/x-rtp" => Ok(()),
                "video/mpegts" if s.get::<i32>("packetsize").map_or(true, |p| p == 188) => Ok(()),
                _ => {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Negotiation,
                        ("rtpmgrsink takes RTP (application/x-rtp) or 188-byte MPEG-TS (video/mpegts), not {caps}")
                    );
                    Err(gst::loggable_error!(CAT, "refused caps {caps}"))
                }
            }
        }

        fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
            self.write(&[buffer.as_ref()])
        }

        fn render_list(&self, list: &gst::BufferList) -> Result<gst::FlowSuccess, gst::FlowError> {
            let bufs: Vec<&gst::BufferRef> = list.iter().collect();
            self.write(&bufs)
        }

        fn event(&self, event: gst::Event) -> bool {
            if let gst::EventView::Eos(_) = event.view() {
                if let Some(r) = lock(&self.running).as_ref() {
                    gst::debug!(CAT, imp = self, "EOS after {} packets", r.counters.packets);
                    // A source of this session reading the same stream (a
                    // port that returns packets) ends once all are back.
                    r.session.sink_finished(r.stream_id, r.counters.packets);
                }
            }
            self.parent_event(event)
        }

        fn unlock(&self) -> Result<(), gst::ErrorMessage> {
            self.waker.wake();
            Ok(())
        }

        fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
            self.waker.reset();
            Ok(())
        }
    }
}
