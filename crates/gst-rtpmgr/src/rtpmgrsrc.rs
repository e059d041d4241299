// SPDX-License-Identifier: MIT
//! `rtpmgrsrc`: the packets of one stream, out of a session's from-device
//! ring. See the crate documentation for the properties and the memory
//! model.

use gst::glib;
use gst::prelude::*;

glib::wrapper! {
    pub struct RtpmgrSrc(ObjectSubclass<imp::RtpmgrSrc>) @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "rtpmgrsrc", gst::Rank::NONE, RtpmgrSrc::static_type())
}

mod imp {
    use crate::endpoint::{self, Format, RxEndpoint, RxPlan, RxSettings};
    use crate::props;
    use crate::rx::{PacketData, Reader};
    use crate::session::{self, Role, StreamClaim, Target, Wait, Waker};
    use gst::glib;
    use gst::prelude::*;
    use gst::subclass::prelude::*;
    use gst_base::prelude::*;
    use gst_base::subclass::base_src::CreateSuccess;
    use gst_base::subclass::prelude::*;
    use nix::poll::PollFlags;
    use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
        gst::DebugCategory::new("rtpmgrsrc", gst::DebugColorFlags::empty(), Some("rtpmgr ring source"))
    });

    /// Packets per buffer list: at most one ring pass's worth.
    const MAX_BATCH: usize = 64;
    /// How long to wait, without polling the device, after a wake-up that
    /// brought no new packet while slots are lent downstream.
    const STALE_WAIT: Duration = Duration::from_millis(1);

    #[derive(Clone, Debug)]
    struct Settings {
        common: props::Common,
        rx: RxSettings,
        caps: Option<gst::Caps>,
        buffer_size: u32,
        zero_copy: bool,
        idle_timeout: u64,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                common: props::Common::default(),
                rx: RxSettings { config: props::DEFAULT_CONFIG.into(), ..Default::default() },
                caps: None,
                buffer_size: 0,
                zero_copy: true,
                idle_timeout: 0,
            }
        }
    }

    /// What runs between start and stop.
    struct Running {
        reader: Arc<Reader>,
        /// Dropped in `stop`: stops the stream (unless a sink of the
        /// session still uses it).
        claim: Option<StreamClaim>,
        caps: gst::Caps,
        idle_timeout: Option<Duration>,
        zero_copy: bool,
        /// When the last packet came (for `idle-timeout`).
        last_packet: Option<Instant>,
        discont: bool,
        /// Packets delivered (for a shared stream's EOS).
        delivered: u64,
        udp: bool,
    }

    pub struct RtpmgrSrc {
        settings: Mutex<Settings>,
        running: Mutex<Option<Running>>,
        waker: Waker,
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[glib::object_subclass]
    impl ObjectSubclass for RtpmgrSrc {
        const NAME: &'static str = "GstRtpmgrSrc";
        type Type = super::RtpmgrSrc;
        type ParentType = gst_base::PushSrc;

        fn new() -> Self {
            RtpmgrSrc {
                settings: Mutex::new(Settings::default()),
                running: Mutex::new(None),
                waker: Waker::new().expect("eventfd"),
            }
        }
    }

    impl ObjectImpl for RtpmgrSrc {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
                let mut specs = props::specs();
                specs.extend([
                    glib::ParamSpecString::builder("stream")
                        .nick("Stream")
                        .blurb(
                            "A stream of the configuration, by name: receive what rtpmgrd delivers of it on this \
                             host (a loopback or multicast destination), else a copy of its multicast group",
                        )
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("address")
                        .nick("Address")
                        .blurb("Receive what arrives at IP:PORT instead (a multicast group is joined)")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("multicast-iface")
                        .nick("Multicast interface")
                        .blurb("The interface to join a multicast group on (default: by route, or the stream's)")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecString::builder("media-port")
                        .nick("Media port")
                        .blurb("Receive what a media port of the device returns instead of a UDP stream")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecBoxed::builder::<gst::Caps>("caps")
                        .nick("Caps")
                        .blurb("The caps of the packets (default: RTP/MP2T, or what the stream's configuration says)")
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt::builder("buffer-size")
                        .nick("Socket buffer size")
                        .blurb("SO_RCVBUF of the UDP socket in bytes (0: the system's default)")
                        .default_value(0)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecBoolean::builder("zero-copy")
                        .nick("Zero copy")
                        .blurb(
                            "Wrap ring slots in buffers instead of copying, for at most half the ring at a time \
                             (slots go back in ring order: a buffer held downstream holds the slots after it)",
                        )
                        .default_value(true)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecUInt64::builder("idle-timeout")
                        .nick("Idle timeout")
                        .blurb("End the stream (EOS) when no packet came for this long after the first one, in ns (0: never)")
                        .default_value(0)
                        .mutable_ready()
                        .build(),
                    glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                        .nick("Statistics")
                        .blurb("Packets and bytes delivered, zero-copy and copied, and the module's counters of a UDP stream")
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
                "config" => s.rx.config = opt(value).unwrap_or_else(|| props::DEFAULT_CONFIG.into()),
                "stream" => s.rx.stream = opt(value),
                "address" => s.rx.address = opt(value),
                "multicast-iface" => s.rx.multicast_iface = opt(value),
                "media-port" => s.rx.media_port = opt(value),
                "caps" => s.caps = value.get().expect("type checked"),
                "buffer-size" => s.buffer_size = value.get().expect("type checked"),
                "zero-copy" => s.zero_copy = value.get().expect("type checked"),
                "idle-timeout" => s.idle_timeout = value.get().expect("type checked"),
                other => unreachable!("no property {other}"),
            }
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            let s = lock(&self.settings);
            if let Some(v) = s.common.get(pspec.name()) {
                return v;
            }
            match pspec.name() {
                "config" => s.rx.config.to_value(),
                "stream" => s.rx.stream.to_value(),
                "address" => s.rx.address.to_value(),
                "multicast-iface" => s.rx.multicast_iface.to_value(),
                "media-port" => s.rx.media_port.to_value(),
                "caps" => s.caps.to_value(),
                "buffer-size" => s.buffer_size.to_value(),
                "zero-copy" => s.zero_copy.to_value(),
                "idle-timeout" => s.idle_timeout.to_value(),
                "stats" => {
                    drop(s);
                    self.stats().to_value()
                }
                other => unreachable!("no property {other}"),
            }
        }

        fn constructed(&self) {
            self.parent_constructed();
            let obj = self.obj();
            obj.set_live(true);
            obj.set_format(gst::Format::Time);
            obj.set_do_timestamp(false);
        }
    }

    impl GstObjectImpl for RtpmgrSrc {}

    impl ElementImpl for RtpmgrSrc {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "rtpmgr ring source",
                    "Source/Network/RTP",
                    "Receives the RTP (or raw MPEG-TS) packets of a stream through the rtpmgr kernel module's \
                     from-device ring, timestamped with their arrival",
                    "rtpmgr maintainers <maintainers@users.noreply.r-seed-dde5812d.example>",
                )
            });
            Some(&*META)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                let caps = crate::endpoint::template_caps();
                vec![gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &caps)
                    .expect("valid template")]
            });
            TEMPLATES.as_ref()
        }
    }

    impl RtpmgrSrc {
        fn stats(&self) -> gst::Structure {
            let running = lock(&self.running);
            let mut b = gst::Structure::builder("application/x-rtpmgrsrc-stats");
            if let Some(r) = running.as_ref() {
                let c = r.reader.counters();
                b = b
                    .field("packets", c.packets)
                    .field("bytes", c.bytes)
                    .field("zero-copy", c.zero_copy)
                    .field("copied", c.copied)
                    .field("held", r.reader.held())
                    .field("after-drop", c.after_drop)
                    .field("other-streams", c.other_streams);
                if r.udp {
                    // The module's counters of the udp stream, from the
                    // region's statistics area: no system call.
                    if let Some(rec) = r.reader.session().region().stream_stats(r.reader.stream_id()) {
                        let n = rec.counters;
                        b = b
                            .field("kernel-rx-packets", n.rx_packets)
                            .field("malformed", n.malformed)
                            .field("oversize", n.oversize)
                            .field("socket-drops", n.socket_drops)
                            .field("ring-full", n.ring_full)
                            .field("rtp-lost", n.rtp_lost)
                            .field("rtp-jitter", n.jitter_units)
                            .field("ssrc", n.ssrc);
                    }
                }
            }
            b.build()
        }

        fn open(&self, s: &Settings) -> Result<Running, gst::ErrorMessage> {
            let plan = endpoint::resolve_rx(&s.rx)?;
            let caps = match &s.caps {
                Some(c) => {
                    plan.format.check_caps(c).map_err(|m| gst::error_msg!(gst::CoreError::Negotiation, ("{m}")))?;
                    c.clone()
                }
                None => plan.format.default_caps(),
            };
            gst::info!(CAT, imp = self, "receiving {} as {caps}", plan.why);
            // The socket first: a busy address is the answer whatever the
            // device says.
            let target = self.target(&plan, s)?;
            let udp = matches!(target, Target::Udp { .. });
            let session = s.common.open_session()?;
            if !session.take_rx() {
                return Err(gst::error_msg!(
                    gst::ResourceError::Busy,
                    (
                        "The from-device ring of {} is busy: another rtpmgrsrc reads it (one source per session)",
                        session.describe()
                    )
                ));
            }
            // The reader owns the ring's consumer from here on (and gives it
            // back when it goes); the stream starts after it, so no packet
            // of it is ever skipped as another stream's.
            let reader = Reader::new(Arc::clone(&session), s.common.stream_id);
            let claim = session.claim(s.common.stream_id, Role::Source, target)?;
            Ok(Running {
                reader,
                claim: Some(claim),
                caps,
                idle_timeout: (s.idle_timeout > 0).then(|| Duration::from_nanos(s.idle_timeout)),
                zero_copy: s.zero_copy,
                last_packet: None,
                discont: true,
                delivered: 0,
                udp,
            })
        }

        fn target(&self, plan: &RxPlan, s: &Settings) -> Result<Target, gst::ErrorMessage> {
            Ok(match &plan.endpoint {
                RxEndpoint::Port(p) => Target::Port(p.clone()),
                RxEndpoint::Udp { bind, group, source, interface } => {
                    let socket = endpoint::rx_socket(*bind, *group, *source, interface.as_deref(), s.buffer_size)
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::AddrInUse => gst::error_msg!(
                                gst::ResourceError::Busy,
                                ("The stream at {bind} is busy: another program receives on that address \
                                     (a unicast stream has one receiver)"),
                                ["{e}"]
                            ),
                            _ => gst::error_msg!(gst::ResourceError::OpenRead, ("Could not receive at {bind}: {e}")),
                        })?;
                    let (rtp, clock_rate) = match plan.format {
                        Format::Rtp { clock_rate, .. } => (true, clock_rate),
                        Format::UdpTs => (false, 0),
                    };
                    Target::Udp { socket, rtp, clock_rate }
                }
            })
        }

        /// The pipeline clock's time for a CLOCK_MONOTONIC instant, as
        /// running time.
        fn running_time_of(&self, mono_ns: u64, offset: Option<(u64, gst::ClockTime)>) -> Option<gst::ClockTime> {
            let (mono_now, clock_now) = offset?;
            super::arrival_running_time(mono_ns, mono_now, clock_now, self.obj().base_time()?)
        }
    }

    impl BaseSrcImpl for RtpmgrSrc {
        fn start(&self) -> Result<(), gst::ErrorMessage> {
            let s = lock(&self.settings).clone();
            let r = self.open(&s)?;
            gst::info!(CAT, imp = self, "reading stream {} of {}", s.common.stream_id, r.reader.session().describe());
            *lock(&self.running) = Some(r);
            Ok(())
        }

        fn stop(&self) -> Result<(), gst::ErrorMessage> {
            // The stream stops with the claim; the reader (and the mapping)
            // lives on while buffers downstream still hold slots.
            *lock(&self.running) = None;
            Ok(())
        }

        fn is_seekable(&self) -> bool {
            false
        }

        fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
            let caps = match lock(&self.running).as_ref() {
                Some(r) => r.caps.clone(),
                None => self.obj().src_pad().pad_template_caps(),
            };
            Some(match filter {
                Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
                None => caps,
            })
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

    impl PushSrcImpl for RtpmgrSrc {
        fn create(&self, _buffer: Option<&mut gst::BufferRef>) -> Result<CreateSuccess, gst::FlowError> {
            let (reader, zero_copy, idle) = {
                let r = lock(&self.running);
                let r = r.as_ref().ok_or(gst::FlowError::Flushing)?;
                (Arc::clone(&r.reader), r.zero_copy, r.idle_timeout)
            };
            let session = Arc::clone(reader.session());
            // The device polls readable while the from-device ring holds
            // any entry not handed back, the slots lent to buffers
            // downstream included. A wake-up that brought nothing new while
            // slots are lent would make the next poll return at once: wait
            // on the waker and the clock only (STALE_WAIT) before polling
            // the device again, so a held buffer costs at most ~1 ms of
            // latency, never a busy loop.
            let mut stale = false;
            loop {
                if self.waker.flushing() {
                    return Err(gst::FlowError::Flushing);
                }
                let packets = reader.read(MAX_BATCH, zero_copy).map_err(|m| {
                    gst::element_imp_error!(self, gst::ResourceError::Read, ("{m}"));
                    gst::FlowError::Error
                })?;
                if !packets.is_empty() {
                    gst::log!(CAT, imp = self, "{} packets", packets.len());
                    return Ok(CreateSuccess::NewBufferList(self.buffers(packets)));
                }
                // Nothing ready. A stream shared with a sink of this
                // session ends when everything the sink wrote came back.
                let mut timeout = None;
                let (last, delivered) = {
                    let r = lock(&self.running);
                    let r = r.as_ref().ok_or(gst::FlowError::Flushing)?;
                    (r.last_packet, r.delivered)
                };
                if let Some(total) = session.sink_finished_count(reader.stream_id()) {
                    let returned = session.stream_counters(reader.stream_id());
                    gst::log!(
                        CAT,
                        imp = self,
                        "the sink wrote {total}, {delivered} back; device counters {returned:?}"
                    );
                    let all_back = delivered >= total
                        || returned.is_some_and(|c| c.to_dev_packets >= total && c.from_dev_packets <= delivered);
                    if all_back {
                        gst::info!(
                            CAT,
                            imp = self,
                            "the sink of stream {} ended: {delivered} packets back",
                            reader.stream_id()
                        );
                        return Err(gst::FlowError::Eos);
                    }
                    timeout = Some(Duration::from_millis(20));
                }
                if let (Some(idle), Some(last)) = (idle, last) {
                    let left = idle.saturating_sub(last.elapsed());
                    if left.is_zero() {
                        gst::info!(CAT, imp = self, "no packet for {idle:?}: end of stream");
                        return Err(gst::FlowError::Eos);
                    }
                    timeout = Some(timeout.map_or(left, |t: Duration| t.min(left)));
                }
                let events = if stale {
                    timeout = Some(timeout.map_or(STALE_WAIT, |t: Duration| t.min(STALE_WAIT)));
                    PollFlags::empty()
                } else {
                    PollFlags::POLLIN
                };
                match session.wait(events, &self.waker, timeout) {
                    Ok(Wait::Woken) => return Err(gst::FlowError::Flushing),
                    Ok(Wait::Ready) => stale = reader.held() > 0,
                    Ok(Wait::Timeout) => stale = false,
                    Err(e) => {
                        gst::element_imp_error!(self, gst::ResourceError::Read, ("Waiting for the device: {e}"));
                        return Err(gst::FlowError::Error);
                    }
                }
            }
        }
    }

    impl RtpmgrSrc {
        /// The packets as a buffer list, timestamped with their arrival.
        fn buffers(&self, packets: Vec<crate::rx::Packet>) -> gst::BufferList {
            let clock = self.obj().clock();
            let offset = clock.map(|c| (session::monotonic_ns(), c.time()));
            let mut list = gst::BufferList::new_sized(packets.len());
            let mut running = lock(&self.running);
            let r = running.as_mut().expect("running while creating");
            let n = packets.len() as u64;
            {
                let l = list.get_mut().expect("new list");
                for p in packets {
                    let mut buf = match p.data {
                        PacketData::Slot(slot) => gst::Buffer::from_slice(slot),
                        PacketData::Copy(v) => gst::Buffer::from_mut_slice(v),
                    };
                    {
                        let b = buf.get_mut().expect("new buffer");
                        let ts = self.running_time_of(p.header.timestamp_ns, offset);
                        b.set_pts(ts);
                        b.set_dts(ts);
                        if r.discont || p.header.flags & rtpmgr_abi::SLOT_F_AFTER_DROP != 0 {
                            b.set_flags(gst::BufferFlags::DISCONT);
                            r.discont = false;
                        }
                    }
                    l.add(buf);
                }
            }
            r.delivered += n;
            r.last_packet = Some(Instant::now());
            list
        }
    }

    impl Drop for RtpmgrSrc {
        fn drop(&mut self) {
            if let Some(r) = lock(&self.running).as_mut() {
                r.claim.take();
            }
        }
    }
}

/// A packet's arrival as running time: the kernel stamped it at `mono_ns`
/// (CLOCK_MONOTONIC); `mono_now` and `clock_now` are one instant read on
/// CLOCK_MONOTONIC and on the pipeline clock. The packet's age is taken off
/// the pipeline clock's now (a stamp after `mono_now`, read just before, is
/// age 0), then the base time; `None` for an arrival before the base time
/// (the pipeline was not running yet), which GStreamer cannot express.
fn arrival_running_time(
    mono_ns: u64,
    mono_now: u64,
    clock_now: gst::ClockTime,
    base: gst::ClockTime,
) -> Option<gst::ClockTime> {
    let age = mono_now.saturating_sub(mono_ns);
    clock_now.nseconds().checked_sub(age)?.checked_sub(base.nseconds()).map(gst::ClockTime::from_nseconds)
}

#[cfg(test)]
mod tests {
    use super::arrival_running_time;
    use gst::ClockTime;

    const MS: u64 = 1_000_000;

    #[test]
    fn arrival_is_the_clock_now_less_the_age_less_the_base() {
        // Arrived 3 ms before now; the pipeline clock reads 10 s, base 4 s.
        let t = arrival_running_time(100 * MS, 103 * MS, ClockTime::from_seconds(10), ClockTime::from_seconds(4));
        assert_eq!(t, Some(ClockTime::from_nseconds(6_000 * MS - 3 * MS)));
        // Another clock offset, the same instants: the same running time.
        let u = arrival_running_time(100 * MS, 103 * MS, ClockTime::from_seconds(20), ClockTime::from_seconds(14));
        assert_eq!(t, u);
    }

    #[test]
    fn a_stamp_after_the_monotonic_read_is_now() {
        let t = arrival_running_time(105 * MS, 103 * MS, ClockTime::from_seconds(10), ClockTime::from_seconds(4));
        assert_eq!(t, Some(ClockTime::from_seconds(6)));
    }

    #[test]
    fn arrivals_before_the_base_time_or_the_clock_origin_have_none() {
        // 2 s old, but the pipeline started 1 s ago.
        assert_eq!(
            arrival_running_time(1_000 * MS, 3_000 * MS, ClockTime::from_seconds(5), ClockTime::from_seconds(4)),
            None
        );
        // Older than the pipeline clock itself.
        assert_eq!(arrival_running_time(0, 3_000 * MS, ClockTime::from_seconds(1), ClockTime::ZERO), None);
        // Exactly at the base time: running time zero.
        assert_eq!(
            arrival_running_time(2_000 * MS, 3_000 * MS, ClockTime::from_seconds(5), ClockTime::from_seconds(4)),
            Some(ClockTime::ZERO)
        );
    }
}
