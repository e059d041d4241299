// SPDX-License-Identifier: MIT
//! Layout pins. A failure here means the ABI changed: bump `ABI_VERSION`
//! and update both sides, never just the expected numbers.

use super::*;
use core::mem::{align_of, offset_of, size_of};

#[test]
fn argument_sizes_are_pinned() {
    assert_eq!(size_of::<Info>(), 48);
    assert_eq!(size_of::<BufferConfig>(), 40);
    assert_eq!(size_of::<StreamSpec>(), 24);
    assert_eq!(size_of::<StreamStop>(), 8);
    assert_eq!(size_of::<SessionCounters>(), 88);
    assert_eq!(size_of::<StreamCounters>(), 56);
    assert_eq!(size_of::<Status>(), 160);
    assert_eq!(size_of::<WaitArgs>(), 16);
    assert_eq!(size_of::<PortInfo>(), 48);
    // 8-byte alignment at most, and identical on 32-bit targets because
    // every u64 sits at an 8-byte offset (checked field by field below).
    assert!(align_of::<Status>() <= 8);
}

#[test]
fn argument_offsets_are_pinned() {
    assert_eq!(offset_of!(Info, size), 0);
    assert_eq!(offset_of!(Info, port_count), 32);
    assert_eq!(offset_of!(Info, slot_header_size), 36);
    assert_eq!(offset_of!(Info, max_session_bytes), 40);

    assert_eq!(offset_of!(BufferConfig, slot_count), 8);
    assert_eq!(offset_of!(BufferConfig, slot_size), 12);
    assert_eq!(offset_of!(BufferConfig, mmap_size), 16);
    assert_eq!(offset_of!(BufferConfig, to_dev_slots_offset), 24);
    assert_eq!(offset_of!(BufferConfig, from_dev_slots_offset), 32);

    assert_eq!(offset_of!(StreamSpec, stream_id), 4);
    assert_eq!(offset_of!(StreamSpec, port), 8);
    assert_eq!(offset_of!(StreamSpec, direction), 12);
    assert_eq!(offset_of!(StreamSpec, flags), 16);
    assert_eq!(offset_of!(StreamSpec, reserved), 20);

    assert_eq!(offset_of!(StreamStop, stream_id), 4);

    assert_eq!(offset_of!(Status, stream_id), 4);
    assert_eq!(offset_of!(Status, state), 8);
    assert_eq!(offset_of!(Status, session), 16);
    assert_eq!(offset_of!(Status, stream), 104);
    assert_eq!(offset_of!(SessionCounters, invalid_slots), 32);
    assert_eq!(offset_of!(SessionCounters, wait_timeouts), 80);
    assert_eq!(offset_of!(StreamCounters, to_dev_packets), 16);
    assert_eq!(offset_of!(StreamCounters, ring_full_drops), 48);

    assert_eq!(offset_of!(WaitArgs, flags), 4);
    assert_eq!(offset_of!(WaitArgs, timeout_ms), 8);
    assert_eq!(offset_of!(WaitArgs, ready), 12);

    assert_eq!(offset_of!(PortInfo, kind), 8);
    assert_eq!(offset_of!(PortInfo, users), 12);
    assert_eq!(offset_of!(PortInfo, name), 16);
}

#[test]
fn shared_region_layout_is_pinned() {
    assert_eq!(size_of::<SharedHeader>(), 72);
    assert_eq!(offset_of!(SharedHeader, stats_offset), 56);
    assert_eq!(offset_of!(SharedHeader, stats_records), 68);
    assert_eq!(size_of::<StatsRecord>(), 512);
    assert_eq!(offset_of!(StatsRecord, updated_ns), 16);
    assert_eq!(offset_of!(StatsRecord, counters), 24);
    assert_eq!(STATS_AREA_SIZE, 32_768);
    assert_eq!(offset_of!(SharedHeader, slot_count), 16);
    assert_eq!(offset_of!(SharedHeader, to_dev_slots_offset), 32);
    assert_eq!(offset_of!(SharedHeader, mmap_size), 48);

    assert_eq!(size_of::<RingCtrl>(), 384);
    assert_eq!(align_of::<RingCtrl>(), 128);
    assert_eq!(offset_of!(RingCtrl, producer), RING_PRODUCER_OFFSET as usize);
    assert_eq!(offset_of!(RingCtrl, consumer), RING_CONSUMER_OFFSET as usize);
    assert_eq!(offset_of!(RingCtrl, flags), RING_FLAGS_OFFSET as usize);
    assert_eq!((RING_PRODUCER_OFFSET, RING_CONSUMER_OFFSET, RING_FLAGS_OFFSET), (0, 128, 256));
    assert_eq!((TO_DEV_CTRL_OFFSET, FROM_DEV_CTRL_OFFSET), (0x400, 0x800));
    // Ring control blocks are cache-line aligned inside the header page.
    assert_eq!(TO_DEV_CTRL_OFFSET % CACHE_LINE, 0);
    assert_eq!(FROM_DEV_CTRL_OFFSET % CACHE_LINE, 0);

    assert_eq!(size_of::<SlotHeader>(), 32);
    assert_eq!(offset_of!(SlotHeader, len), 0);
    assert_eq!(offset_of!(SlotHeader, flags), 4);
    assert_eq!(offset_of!(SlotHeader, stream_id), 8);
    assert_eq!(offset_of!(SlotHeader, timestamp_ns), 16);
    assert_eq!(SHARED_MAGIC.to_le_bytes(), *b"RTPM");
}

/// Values hand-computed from `_IOC(dir, 0xB7, nr, size)`.
#[test]
fn ioctl_numbers_are_pinned() {
    assert_eq!(RTPMGR_IOC_GET_INFO, 0x8030_B700); // _IOR,  48 bytes
    assert_eq!(RTPMGR_IOC_CONFIGURE_BUFFER, 0xC028_B701); // _IOWR, 40
    assert_eq!(RTPMGR_IOC_START_STREAM, 0x4018_B702); // _IOW,  24
    assert_eq!(RTPMGR_IOC_STOP_STREAM, 0x4008_B703); // _IOW,   8
    assert_eq!(RTPMGR_IOC_GET_STATUS, 0xC0A0_B704); // _IOWR, 160
    assert_eq!(RTPMGR_IOC_RESET, 0x0000_B705); // _IO
    assert_eq!(RTPMGR_IOC_KICK, 0x0000_B706); // _IO
    assert_eq!(RTPMGR_IOC_WAIT, 0xC010_B707); // _IOWR, 16
    assert_eq!(RTPMGR_IOC_GET_PORT, 0xC030_B708); // _IOWR, 48
}

#[test]
fn ioctl_numbers_decode_to_dir_type_nr_size() {
    let table: [(u32, u32, u32, usize); 9] = [
        (RTPMGR_IOC_GET_INFO, IOC_READ, 0, size_of::<Info>()),
        (RTPMGR_IOC_CONFIGURE_BUFFER, IOC_READ | IOC_WRITE, 1, size_of::<BufferConfig>()),
        (RTPMGR_IOC_START_STREAM, IOC_WRITE, 2, size_of::<StreamSpec>()),
        (RTPMGR_IOC_STOP_STREAM, IOC_WRITE, 3, size_of::<StreamStop>()),
        (RTPMGR_IOC_GET_STATUS, IOC_READ | IOC_WRITE, 4, size_of::<Status>()),
        (RTPMGR_IOC_RESET, IOC_NONE, 5, 0),
        (RTPMGR_IOC_KICK, IOC_NONE, 6, 0),
        (RTPMGR_IOC_WAIT, IOC_READ | IOC_WRITE, 7, size_of::<WaitArgs>()),
        (RTPMGR_IOC_GET_PORT, IOC_READ | IOC_WRITE, 8, size_of::<PortInfo>()),
    ];
    for (cmd, dir, nr, size) in table {
        assert_eq!(ioc_dir(cmd), dir, "dir of {cmd:#x}");
        assert_eq!(ioc_type(cmd), RTPMGR_IOC_MAGIC, "type of {cmd:#x}");
        assert_eq!(ioc_nr(cmd), nr, "nr of {cmd:#x}");
        assert_eq!(ioc_size(cmd) as usize, size, "size of {cmd:#x}");
    }
}

/// Cross-check our `_IOC` against nix's independent implementation of the
/// Linux encoding.
#[test]
// nix's request type is the C `unsigned long`: u64 here, u32 on 32-bit.
#[allow(clippy::unnecessary_cast)]
fn encoding_matches_nix() {
    assert_eq!(RTPMGR_IOC_GET_INFO as u64, nix::request_code_read!(RTPMGR_IOC_MAGIC, 0, size_of::<Info>()) as u64);
    assert_eq!(
        RTPMGR_IOC_START_STREAM as u64,
        nix::request_code_write!(RTPMGR_IOC_MAGIC, 2, size_of::<StreamSpec>()) as u64
    );
    assert_eq!(
        RTPMGR_IOC_GET_STATUS as u64,
        nix::request_code_readwrite!(RTPMGR_IOC_MAGIC, 4, size_of::<Status>()) as u64
    );
    assert_eq!(RTPMGR_IOC_KICK as u64, nix::request_code_none!(RTPMGR_IOC_MAGIC, 6) as u64);
}

#[test]
fn ioctl_numbers_are_distinct() {
    let all = [
        RTPMGR_IOC_GET_INFO,
        RTPMGR_IOC_CONFIGURE_BUFFER,
        RTPMGR_IOC_START_STREAM,
        RTPMGR_IOC_STOP_STREAM,
        RTPMGR_IOC_GET_STATUS,
        RTPMGR_IOC_RESET,
        RTPMGR_IOC_KICK,
        RTPMGR_IOC_WAIT,
        RTPMGR_IOC_GET_PORT,
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn geometry_validation() {
    let big = u64::MAX;
    assert_eq!(Geometry::new(1024, 2048, big), Ok(Geometry { slot_count: 1024, slot_size: 2048 }));
    assert_eq!(Geometry::new(1000, 2048, big), Err(GeometryError::SlotCount));
    assert_eq!(Geometry::new(4, 2048, big), Err(GeometryError::SlotCount));
    assert_eq!(Geometry::new(65_536, 2048, big), Err(GeometryError::SlotCount));
    assert_eq!(Geometry::new(1024, 3000, big), Err(GeometryError::SlotSize));
    assert_eq!(Geometry::new(1024, 128, big), Err(GeometryError::SlotSize));
    assert_eq!(Geometry::new(1024, 131_072, big), Err(GeometryError::SlotSize));
    // 4096 + 2 × 1024 × 2048 + 32768 (statistics) = 4_231_168 bytes.
    assert_eq!(Geometry::new(1024, 2048, 4_231_168).map(|g| g.region_bytes()), Ok(4_231_168));
    assert_eq!(Geometry::new(1024, 2048, 4_231_167), Err(GeometryError::TooLarge));
    // The largest geometry: 4096 + 2 × 2^31 + 32768 bytes, no overflow.
    let g = Geometry::new(MAX_SLOT_COUNT, MAX_SLOT_SIZE, big).unwrap();
    assert_eq!(g.region_bytes(), 4096 + (1u64 << 32) + 32_768);
}

#[test]
fn geometry_layout() {
    let g = Geometry::new(8, 256, u64::MAX).unwrap();
    assert_eq!(g.to_dev_slots_offset(), 4096);
    assert_eq!(g.from_dev_slots_offset(), 4096 + 2048);
    assert_eq!(g.stats_offset(), 8192);
    assert_eq!(g.region_bytes(), 8192 + 32_768);
    assert_eq!(g.mmap_size(4096), 40_960);
    assert_eq!(g.mmap_size(16_384), 49_152);
    assert_eq!(g.mmap_size(65_536), 65_536);
    assert_eq!(g.payload_capacity(), 224);
    let h = g.shared_header(4096);
    assert_eq!(h.magic, SHARED_MAGIC);
    assert_eq!(h.mmap_size, 40_960);
    assert_eq!(h.from_dev_slots_offset, 6144);
    assert_eq!((h.stats_offset, h.stats_record_size, h.stats_records), (8192, 512, 64));
}

#[test]
fn ring_fill_rejects_impossible_indices() {
    assert_eq!(ring_fill(0, 0, 8), Some(0));
    assert_eq!(ring_fill(8, 0, 8), Some(8));
    assert_eq!(ring_fill(9, 0, 8), None); // producer jumped past the consumer
    assert_eq!(ring_fill(0, 1, 8), None); // producer behind the consumer
                                          // Free-running indices across the u32 wrap.
    assert_eq!(ring_fill(3, u32::MAX - 2, 8), Some(6));
    assert_eq!(ring_fill(u32::MAX, u32::MAX - 8, 8), Some(8));
}

#[test]
fn slot_header_check() {
    let ok = SlotHeader { len: 224, stream_id: 63, ..Default::default() };
    assert_eq!(ok.check(256), Ok(()));
    assert_eq!(SlotHeader { len: 225, ..ok }.check(256), Err(SlotError::Length));
    assert_eq!(SlotHeader { len: u32::MAX, ..ok }.check(256), Err(SlotError::Length));
    assert_eq!(SlotHeader { flags: SLOT_F_AFTER_DROP, ..ok }.check(256), Err(SlotError::Flags));
    assert_eq!(SlotHeader { stream_id: 64, ..ok }.check(256), Err(SlotError::StreamId));
    assert_eq!(SlotHeader { len: 0, ..ok }.check(256), Ok(()));
    // A device with more ids (the simulator's MAX_STREAM_IDS).
    assert_eq!(SlotHeader { stream_id: 64, ..ok }.check_ids(256, MAX_STREAM_IDS), Ok(()));
    assert_eq!(SlotHeader { stream_id: 4095, ..ok }.check_ids(256, MAX_STREAM_IDS), Ok(()));
    assert_eq!(SlotHeader { stream_id: 4096, ..ok }.check_ids(256, MAX_STREAM_IDS), Err(SlotError::StreamId));
    const { assert!(MAX_STREAM_IDS >= 4096 && MAX_STREAMS <= MAX_STREAM_IDS) };
}

#[test]
fn port_name_round_trip() {
    let mut p = PortInfo::default();
    p.set_name("loopback");
    assert_eq!(p.name_str(), Some("loopback"));
    p.set_name("a-very-long-port-name-that-does-not-fit");
    assert_eq!(p.name_str().map(str::len), Some(PORT_NAME_LEN - 1));
    p.name = [0xff; PORT_NAME_LEN];
    assert_eq!(p.name_str(), None);
}

#[test]
fn net_stream_abi_is_pinned() {
    assert_eq!(size_of::<NetStreamSpec>(), 32);
    assert_eq!(align_of::<NetStreamSpec>(), 4);
    assert_eq!(offset_of!(NetStreamSpec, fd), 24);
    assert_eq!(size_of::<NetCounters>(), 256);
    assert_eq!(offset_of!(NetCounters, fwd_fast_packets), 232);
    assert_eq!(offset_of!(NetCounters, fwd_copies), 240);
    assert_eq!(offset_of!(NetCounters, worker_wakeups), 248);
    assert_eq!(offset_of!(NetCounters, socket_drops), 192);
    assert_eq!(offset_of!(NetCounters, rx_errors), 200);
    assert_eq!(offset_of!(NetCounters, tx_dropped), 208);
    assert_eq!(offset_of!(NetCounters, ts_packets), 216);
    assert_eq!(offset_of!(NetCounters, ts_cc_errors), 224);
    assert_eq!(size_of::<NetStatus>(), 272);
    assert_eq!(offset_of!(NetStatus, counters), 16);
    assert_eq!(RTPMGR_IOC_START_NET_STREAM, 0x4020_B709); // _IOW, 32
    assert_eq!(RTPMGR_IOC_GET_NET_STATUS, 0xC110_B70A); // _IOWR, 272
    assert_eq!(FEATURE_NET_STREAMS, 8);
    assert_eq!(FEATURE_POLL, 32);
    assert_eq!((NET_F_RTP, NET_F_TAP, NET_F_TS, NET_F_MASK), (1, 2, 4, 7));
    assert_eq!(NET_TS_CONTINUITY, 4);
    // Version 2: START_NET_STREAM takes a socket (a new size, so a new
    // number: a version-1 caller gets ENOTTY), NetCounters grew. Version 3:
    // NET_F_TS, and NetCounters grew into the stats record's reserved bytes
    // (GET_NET_STATUS has a new number again).
    assert_eq!(ABI_VERSION, 4);
}

/// The kernel's check over a private header copy accepts exactly what the
/// `rtp` crate's parser accepts.
#[test]
fn rtp_header_check_agrees_with_the_rtp_crate() {
    let mut rng = rtpmgr_test_kit::Rng::new(0x1234_5678_9abc_def0);
    let mut next = move || rng.next();
    let mut buf = [0u8; 200];
    for round in 0..200_000 {
        let len = (next() % 120) as usize;
        for b in buf.iter_mut().take(len) {
            *b = next() as u8;
        }
        // Bias towards version 2 and small extension lengths.
        if len > 0 && round % 4 != 0 {
            buf[0] = (buf[0] & 0x3f) | 0x80;
        }
        if round % 3 == 0 {
            let cc = if len > 0 { (buf[0] & 0x0f) as usize } else { 0 };
            let at = 12 + 4 * cc + 2;
            if at < len {
                buf[at] = 0;
                if at + 1 < len {
                    buf[at + 1] %= 8;
                }
            }
        }
        let pkt = &buf[..len];
        let head = &pkt[..len.min(RTP_CHECK_BYTES)];
        let last = pkt.last().copied().unwrap_or(0);
        let ours = rtp_header_check(head, len, last);
        let theirs = rtp::RtpPacket::parse(pkt);
        assert_eq!(ours.is_ok(), theirs.is_ok(), "{pkt:02x?}: {ours:?} vs {:?}", theirs.err());
        if let (Ok(h), Ok(p)) = (ours, theirs) {
            assert_eq!(h, p.header_len());
        }
    }
}

#[test]
fn net_stream_spec_rules() {
    let ok = NetStreamSpec {
        size: NetStreamSpec::SIZE,
        stream_id: 3,
        direction: DIR_FROM_DEVICE,
        flags: NET_F_RTP | NET_F_TAP,
        forward_to: 4,
        clock_rate: 90_000,
        fd: 7,
        reserved: 0,
    };
    let checked = ok.check().expect("a valid spec");
    assert_eq!(
        checked,
        NetSpec {
            stream_id: 3,
            direction: DIR_FROM_DEVICE,
            flags: NET_F_RTP | NET_F_TAP,
            forward_to: Some(4),
            clock_rate: 90_000,
            fd: 7
        }
    );
    let sender = NetStreamSpec { direction: DIR_TO_DEVICE, flags: 0, forward_to: NET_NO_FORWARD, ..ok };
    assert_eq!(sender.check().unwrap().forward_to, None);
    let refused = |spec: NetStreamSpec| spec.check().unwrap_err();
    assert_eq!(refused(NetStreamSpec { flags: 1 << 31, ..ok }), NetSpecError::UnknownFlags);
    assert_eq!(refused(NetStreamSpec { reserved: 1, ..ok }), NetSpecError::UnknownFlags);
    assert_eq!(refused(NetStreamSpec { flags: NET_F_RTP | NET_F_TS, ..ok }), NetSpecError::RtpAndTs);
    assert_eq!(refused(NetStreamSpec { stream_id: MAX_STREAMS, ..ok }), NetSpecError::StreamId);
    assert_eq!(refused(NetStreamSpec { direction: 0, ..ok }), NetSpecError::Direction);
    assert_eq!(refused(NetStreamSpec { direction: DIR_BOTH << 1, ..ok }), NetSpecError::Direction);
    // Forwarding: receive-only, in range, not to itself.
    assert_eq!(refused(NetStreamSpec { direction: DIR_BOTH, ..ok }), NetSpecError::ForwardTo);
    assert_eq!(refused(NetStreamSpec { forward_to: MAX_STREAMS, ..ok }), NetSpecError::ForwardTo);
    assert_eq!(refused(NetStreamSpec { forward_to: 3, ..ok }), NetSpecError::ForwardTo);
    assert_eq!(refused(NetStreamSpec { forward_to: NET_NO_FORWARD, ..ok }), NetSpecError::TapWithoutForward);
    assert_eq!(refused(NetStreamSpec { fd: -1, ..ok }), NetSpecError::Fd);
    // A refusal has a message of its own.
    extern crate std;
    use std::string::ToString;
    assert!(refused(NetStreamSpec { fd: -1, ..ok }).to_string().contains("descriptor"));
}
