// SPDX-License-Identifier: MIT
//! The simulator against the contract the module implements: errnos,
//! loopback content, hostile ring writes, counters.

use super::*;
use rtpmgr_abi::{DIR_BOTH, DIR_TO_DEVICE, PORT_LOOPBACK, PORT_NULL, WAIT_FROM_DEV_READY, WAIT_TO_DEV_SPACE};

fn errno_of<T: std::fmt::Debug>(r: io::Result<T>) -> Errno {
    Errno::from_raw(r.expect_err("expected an errno").raw_os_error().expect("an OS error"))
}

#[test]
fn ioctl_errnos() {
    let sim = SimBackend::default();
    assert_eq!(errno_of(sim.start_stream(0, PORT_LOOPBACK, DIR_BOTH)), Errno::ENOTCONN);
    assert_eq!(errno_of(sim.kick()), Errno::ENOTCONN);
    assert_eq!(errno_of(sim.wait(WAIT_FROM_DEV_READY, 0)), Errno::ENOTCONN);
    assert_eq!(sim.status(abi::STATUS_SESSION_ONLY).unwrap().state, abi::STATE_UNCONFIGURED);
    assert_eq!(errno_of(sim.configure(1000, 2048)), Errno::EINVAL);
    assert_eq!(errno_of(sim.configure(1024, 100)), Errno::EINVAL);
    assert_eq!(errno_of(sim.configure(32_768, 65_536)), Errno::ENOMEM);
    let region = sim.configure(64, 2048).unwrap();
    assert_eq!(sim.status(abi::STATUS_SESSION_ONLY).unwrap().state, abi::STATE_CONFIGURED);
    assert_eq!(errno_of(sim.start_stream(SIM_STREAMS, PORT_LOOPBACK, DIR_BOTH)), Errno::EINVAL);
    // The simulator takes every id the ABI has room for, beyond the module's table.
    sim.start_stream(SIM_STREAMS - 1, PORT_NULL, DIR_TO_DEVICE).unwrap();
    sim.stop_stream(SIM_STREAMS - 1).unwrap();
    assert_eq!(errno_of(sim.start_stream(0, PORT_LOOPBACK, 0)), Errno::EINVAL);
    assert_eq!(errno_of(sim.start_stream(0, PORT_LOOPBACK, 4)), Errno::EINVAL);
    assert_eq!(errno_of(sim.start_stream(0, 7, DIR_BOTH)), Errno::ENODEV);
    sim.start_stream(0, PORT_LOOPBACK, DIR_BOTH).unwrap();
    assert_eq!(errno_of(sim.start_stream(0, PORT_NULL, DIR_TO_DEVICE)), Errno::EEXIST);
    assert_eq!(sim.status(0).unwrap().state, abi::STATE_STREAMING);
    assert_eq!(sim.status(0).unwrap().stream.running, 1);
    assert_eq!(errno_of(sim.status(SIM_STREAMS)), Errno::EINVAL);
    assert_eq!(errno_of(sim.configure(64, 2048)), Errno::EBUSY);
    assert_eq!(errno_of(sim.stop_stream(1)), Errno::ENOENT);
    assert_eq!(errno_of(sim.stop_stream(SIM_STREAMS + 1)), Errno::EINVAL);
    sim.stop_stream(0).unwrap();
    // Resizing while the old region is still held: the old one stays valid
    // for its holder, the session has the new one.
    assert_eq!(sim.configure(128, 2048).unwrap().geometry().slot_count, 128);
    assert_eq!(region.geometry().slot_count, 64);
    assert_eq!(errno_of(sim.wait(0, 10)), Errno::EINVAL);
    assert_eq!(errno_of(sim.wait(8, 10)), Errno::EINVAL);
    assert_eq!(errno_of(sim.wait(WAIT_FROM_DEV_READY, abi::MAX_WAIT_MS + 1)), Errno::EINVAL);
    assert_eq!(errno_of(sim.wait(WAIT_FROM_DEV_READY, 20)), Errno::ETIMEDOUT);
    assert_eq!(sim.wait(WAIT_TO_DEV_SPACE | WAIT_FROM_DEV_READY, 0).unwrap(), WAIT_TO_DEV_SPACE);
    assert_eq!(errno_of(sim.port(2)), Errno::ENODEV);
    assert_eq!(rtpmgr_device::find_port(&sim, "null").unwrap().index, PORT_NULL);
    let e = rtpmgr_device::find_port(&sim, "media0").unwrap_err().to_string();
    assert!(e.contains("media port \"media0\" does not exist on the sim backend (ports: loopback, null)"), "{e}");
}

/// A user-space session: writes packets to-device, reads them back.
struct User {
    sim: SimBackend,
    region: Arc<Region>,
    tx: Producer,
    rx: Consumer,
}

impl User {
    fn new(slot_count: u32, slot_size: u32) -> User {
        let sim = SimBackend::default();
        let region = sim.configure(slot_count, slot_size).unwrap();
        let tx = region.producer(RingId::ToDevice);
        let rx = region.consumer(RingId::FromDevice);
        User { sim, region, tx, rx }
    }

    /// Send `packets` (stream id, bytes) and collect what comes back.
    fn round_trip(&mut self, packets: &[(u32, Vec<u8>)], expect_back: usize) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < expect_back || sent < packets.len() {
            assert!(Instant::now() < deadline, "stalled: sent {sent}, got {}", out.len());
            let want = (packets.len() - sent).min(32) as u32;
            let free = self.tx.free(want).min(want);
            for i in 0..free {
                let (sid, data) = &packets[sent + i as usize];
                self.tx.payload_mut(i)[..data.len()].copy_from_slice(data);
                self.tx.set_header(i, &SlotHeader { len: data.len() as u32, stream_id: *sid, ..Default::default() });
            }
            sent += free as usize;
            if self.tx.publish(free) {
                self.sim.kick().unwrap();
            }
            let n = self.rx.available().unwrap();
            for i in 0..n {
                let h = self.rx.header(i);
                out.push((h.stream_id, self.rx.payload(i, h.len).to_vec()));
            }
            if self.rx.release(n) {
                self.sim.kick().unwrap();
            }
            if n == 0 && out.len() < expect_back {
                let _ = self.sim.wait(WAIT_FROM_DEV_READY, 50);
            }
        }
        out
    }
}

fn packet(seq: usize, cap: usize) -> Vec<u8> {
    let len = (seq * 7919) % (cap + 1);
    (0..len).map(|j| (seq as u8) ^ (j as u8)).collect()
}

#[test]
fn loopback_returns_every_packet_intact_in_order() {
    let mut u = User::new(256, 2048);
    u.sim.start_stream(3, PORT_LOOPBACK, DIR_BOTH).unwrap();
    let cap = 2048 - 32;
    let packets: Vec<_> = (0..100_000).map(|s| (3, packet(s, cap))).collect();
    let back = u.round_trip(&packets, packets.len());
    assert_eq!(back.len(), packets.len());
    for (i, (sent, got)) in packets.iter().zip(&back).enumerate() {
        assert_eq!(sent, got, "packet {i}");
    }
    let st = u.sim.status(3).unwrap();
    let bytes: u64 = packets.iter().map(|p| p.1.len() as u64).sum();
    assert_eq!((st.stream.to_dev_packets, st.stream.from_dev_packets), (100_000, 100_000));
    assert_eq!((st.stream.to_dev_bytes, st.stream.from_dev_bytes), (bytes, bytes));
    assert_eq!(st.session.invalid_slots, 0);
    // Need-wakeup works: far fewer kicks than packets.
    assert!(st.session.kicks < 100_000, "kicks {}", st.session.kicks);
}

#[test]
fn null_port_consumes_and_counts() {
    let mut u = User::new(64, 512);
    u.sim.start_stream(1, PORT_NULL, DIR_TO_DEVICE).unwrap();
    let packets: Vec<_> = (0..1000).map(|s| (1, packet(s, 480))).collect();
    assert!(u.round_trip(&packets, 0).is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    while u.sim.status(1).unwrap().stream.to_dev_packets < 1000 {
        assert!(Instant::now() < deadline);
        let _ = u.sim.wait(WAIT_TO_DEV_SPACE, 10);
    }
    assert_eq!(u.sim.status(1).unwrap().stream.from_dev_packets, 0);
}

#[test]
fn hostile_slots_are_counted_and_skipped() {
    let mut u = User::new(64, 256);
    u.sim.start_stream(0, PORT_LOOPBACK, DIR_BOTH).unwrap();
    u.sim.start_stream(1, PORT_NULL, DIR_TO_DEVICE).unwrap();
    // Five bad slots between good ones: length past the slot, unknown flag,
    // stream id out of range, a stream that is not running, and to-device
    // traffic on... all must be skipped and counted, the good ones relayed.
    let bad = [
        SlotHeader { len: 225, stream_id: 0, ..Default::default() },
        SlotHeader { len: 4, flags: 1, stream_id: 0, ..Default::default() },
        SlotHeader { len: 4, stream_id: 64, ..Default::default() },
        SlotHeader { len: 4, stream_id: 9, ..Default::default() },
        SlotHeader { len: u32::MAX, stream_id: u32::MAX, flags: u32::MAX, ..Default::default() },
    ];
    assert!(u.tx.free(12) >= 12);
    let mut n = 0;
    for (k, h) in bad.iter().enumerate() {
        u.tx.payload_mut(n)[..4].copy_from_slice(&[k as u8; 4]);
        u.tx.set_header(n, &SlotHeader { len: 4, stream_id: 0, ..Default::default() });
        n += 1;
        u.tx.set_header(n, h);
        n += 1;
    }
    if u.tx.publish(n) {
        u.sim.kick().unwrap();
    }
    let back = u.round_trip(&[], 5);
    assert_eq!(back, (0..5u8).map(|k| (0, vec![k; 4])).collect::<Vec<_>>());
    assert_eq!(u.sim.status(abi::STATUS_SESSION_ONLY).unwrap().session.invalid_slots, 5);
}

#[test]
fn producer_index_jumping_past_the_consumer_is_refused() {
    let mut u = User::new(64, 256);
    u.sim.start_stream(0, PORT_LOOPBACK, DIR_BOTH).unwrap();
    // Hostile: publish a producer index 1000 slots ahead, then kick.
    u.region.ctrl_word(RingId::ToDevice, CtrlWord::Producer).store(1000, Relaxed);
    u.sim.kick().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while u.sim.status(abi::STATUS_SESSION_ONLY).unwrap().session.invalid_indices == 0 {
        assert!(Instant::now() < deadline, "bad index never counted");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Nothing was consumed from the bogus range.
    assert_eq!(u.region.snapshot(RingId::ToDevice).1, 0);
    assert_eq!(u.sim.status(0).unwrap().stream.to_dev_packets, 0);
    // Repair the index (RESET), and the session serves traffic again.
    u.sim.reset().unwrap();
    u.tx = u.region.producer(RingId::ToDevice);
    u.rx = u.region.consumer(RingId::FromDevice);
    u.sim.start_stream(0, PORT_LOOPBACK, DIR_BOTH).unwrap();
    let packets: Vec<_> = (0..500).map(|s| (0, packet(s, 224))).collect();
    assert_eq!(u.round_trip(&packets, 500), packets);
    assert_eq!(u.sim.status(abi::STATUS_SESSION_ONLY).unwrap().session.invalid_indices, 0, "reset zeroes counters");
}

#[test]
fn loopback_backpressure_holds_to_device_until_space() {
    // The user does not read from-device: the worker must stop at a full
    // from-device ring (not drop, not overwrite) and resume when kicked.
    let mut u = User::new(8, 256);
    u.sim.start_stream(0, PORT_LOOPBACK, DIR_BOTH).unwrap();
    for round in 0..2u8 {
        let free = u.tx.free(8);
        for i in 0..free {
            u.tx.payload_mut(i)[0] = round * 8 + i as u8;
            u.tx.set_header(i, &SlotHeader { len: 1, stream_id: 0, ..Default::default() });
        }
        if u.tx.publish(free) {
            u.sim.kick().unwrap();
        }
        if round == 0 {
            // Let the worker move the first 8 and the ring drain.
            let deadline = Instant::now() + Duration::from_secs(5);
            while u.tx.free(8) < 8 {
                assert!(Instant::now() < deadline);
                let _ = u.sim.wait(WAIT_TO_DEV_SPACE, 10);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(u.region.snapshot(RingId::FromDevice).0, 8, "from-device full, nothing overwritten");
    assert_eq!(u.region.snapshot(RingId::ToDevice).1, 8, "second round held in to-device");
    let back = u.round_trip(&[], 16);
    assert_eq!(back.iter().map(|p| p.1[0]).collect::<Vec<_>>(), (0..16).collect::<Vec<u8>>());
}

/// The simulated `poll`: an armed eventfd becomes readable when the worker
/// publishes from-device entries, an unarmed one stays quiet.
#[test]
fn poll_fd_wakes_an_armed_waiter_only() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::BorrowedFd;
    let mut u = User::new(64, 2048);
    assert!(u.sim.info().unwrap().features & abi::FEATURE_POLL != 0);
    u.sim.start_stream(3, PORT_LOOPBACK, DIR_BOTH).unwrap();
    let raw = u.sim.poll_fd().expect("the simulator has a poll descriptor");
    // SAFETY: the descriptor lives as long as `u.sim`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    let readable = |ms: u16| {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).unwrap();
        fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN))
    };
    // Unarmed: a round trip writes nothing.
    let back = u.round_trip(&[(3, vec![1u8; 100])], 1);
    assert_eq!(back.len(), 1);
    assert!(!readable(50), "unarmed poll descriptor became readable");
    // Armed: the next published entry makes it readable.
    u.sim.arm_poll();
    assert_eq!(u.rx.available().unwrap(), 0);
    u.tx.payload_mut(0)[..10].copy_from_slice(&[2u8; 10]);
    u.tx.set_header(0, &SlotHeader { len: 10, stream_id: 3, ..Default::default() });
    if u.tx.publish(1) {
        u.sim.kick().unwrap();
    }
    assert!(readable(5000), "armed poll descriptor did not become readable");
    u.sim.clear_poll();
    assert!(!readable(0), "clear_poll left it readable");
    assert_eq!(u.rx.available().unwrap(), 1);
}
