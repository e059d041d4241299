// SPDX-License-Identifier: MIT
//! Two threads move slots through a real mapped region; every byte is
//! checked. As in the product, one side of each ring (the kernel's) sleeps
//! with the need-wakeup flag and the other side blocks the way `WAIT` does:
//! under a lock, woken by the kernel side after every batch.

use rtpmgr_abi::{Geometry, SlotHeader};
use rtpmgr_ring::{anonymous_region, CtrlWord, RingId};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A doorbell: what KICK is to the kernel worker.
#[derive(Default)]
struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Bell {
    /// What the kernel does for `WAIT` sleepers after each batch.
    fn notify_all(&self) {
        let _guard = self.rung.lock().unwrap();
        self.cv.notify_all();
    }
    /// `WAIT`: sleep until `ready()` holds, checking it under the lock so
    /// that a notification cannot slip between check and sleep.
    fn wait_until(&self, mut ready: impl FnMut() -> bool) {
        let mut guard = self.rung.lock().unwrap();
        while !ready() {
            let (g, t) = self.cv.wait_timeout(guard, Duration::from_secs(10)).unwrap();
            assert!(!t.timed_out(), "lost wake-up: WAIT slept 10 s");
            guard = g;
        }
    }
    fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.cv.notify_one();
    }
    fn wait(&self) {
        let mut rung = self.rung.lock().unwrap();
        while !*rung {
            // A lost wake-up would hang here; the timeout turns it into a
            // test failure instead of a hung CI job.
            let (r, t) = self.cv.wait_timeout(rung, Duration::from_secs(10)).unwrap();
            assert!(!t.timed_out(), "lost wake-up: slept 10 s with the bell silent");
            rung = r;
        }
        *rung = false;
    }
}

fn packet_len(seq: u64, cap: u32) -> u32 {
    // Mixed sizes: 0..=cap, hitting both ends regularly.
    match seq % 7 {
        0 => cap,
        1 => 0,
        _ => (seq.wrapping_mul(2_654_435_761) % (cap as u64 + 1)) as u32,
    }
}

fn byte(seq: u64, j: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(j as u8)
}

/// Which side of the ring plays the kernel and sleeps on need-wakeup.
#[derive(Clone, Copy, PartialEq)]
enum Sleeper {
    /// To-device: the kernel consumes.
    Consumer,
    /// From-device: the kernel produces.
    Producer,
}

fn run(ring: RingId, sleeper: Sleeper, total: u64, slot_count: u32, slot_size: u32, start_index: u32) {
    let geometry = Geometry::new(slot_count, slot_size, u64::MAX).unwrap();
    let region = anonymous_region(geometry).unwrap();
    // Start near the u32 wrap so free-running indices wrap mid-test.
    for w in [CtrlWord::Producer, CtrlWord::Consumer] {
        region.ctrl_word(ring, w).store(start_index, Ordering::Relaxed);
    }
    let cap = geometry.payload_capacity();
    // `kick` wakes the need-wakeup sleeper; `wait` is the WAIT ioctl's queue.
    let kick = Arc::new(Bell::default());
    let wait = Arc::new(Bell::default());

    let consumer_thread = {
        let region = Arc::clone(&region);
        let kick = Arc::clone(&kick);
        let wait = Arc::clone(&wait);
        std::thread::spawn(move || {
            let mut c = region.consumer(ring);
            let mut seq = 0u64;
            let mut kicks = 0u64;
            while seq < total {
                let n = c.available().expect("indices stay valid");
                if n == 0 {
                    match sleeper {
                        Sleeper::Consumer => {
                            if c.prepare_sleep() {
                                kick.wait();
                                c.clear_need_wakeup();
                            }
                        }
                        Sleeper::Producer => wait.wait_until(|| c.available() != Ok(0)),
                    }
                    continue;
                }
                for i in 0..n {
                    let h = c.header(i);
                    assert_eq!(h.stream_id as u64, seq % 64, "stream id of packet {seq}");
                    assert_eq!(h.timestamp_ns, seq, "timestamp of packet {seq}");
                    assert_eq!(h.len, packet_len(seq, cap), "length of packet {seq}");
                    let p = c.payload(i, h.len);
                    for (j, &b) in p.iter().enumerate() {
                        assert_eq!(b, byte(seq, j), "byte {j} of packet {seq}");
                    }
                    seq += 1;
                }
                let need_kick = c.release(n);
                match sleeper {
                    Sleeper::Consumer => wait.notify_all(),
                    Sleeper::Producer if need_kick => {
                        kicks += 1;
                        kick.ring();
                    }
                    Sleeper::Producer => {}
                }
            }
            (seq, kicks)
        })
    };

    let mut p = region.producer(ring);
    let mut seq = 0u64;
    let mut kicks = 0u64;
    while seq < total {
        let want = ((total - seq).min(64)) as u32;
        let free = p.free(want).min(want);
        if free == 0 {
            match sleeper {
                Sleeper::Producer => {
                    if p.prepare_sleep() {
                        kick.wait();
                        p.clear_need_wakeup();
                    }
                }
                Sleeper::Consumer => wait.wait_until(|| p.free(1) > 0),
            }
            continue;
        }
        for i in 0..free {
            let s = seq + i as u64;
            let len = packet_len(s, cap);
            let payload = p.payload_mut(i);
            for (j, b) in payload[..len as usize].iter_mut().enumerate() {
                *b = byte(s, j);
            }
            p.set_header(i, &SlotHeader { len, stream_id: (s % 64) as u32, timestamp_ns: s, ..Default::default() });
        }
        seq += free as u64;
        let need_kick = p.publish(free);
        match sleeper {
            Sleeper::Consumer if need_kick => {
                kicks += 1;
                kick.ring();
            }
            Sleeper::Consumer => {}
            Sleeper::Producer => wait.notify_all(),
        }
    }
    let (received, consumer_kicks) = consumer_thread.join().unwrap();
    assert_eq!(received, total);
    let (prod, cons, _) = region.snapshot(ring);
    assert_eq!(prod, start_index.wrapping_add(total as u32));
    assert_eq!(cons, prod, "everything released");
    eprintln!("{ring:?}: {total} slots moved; kicks by producer {kicks}, by consumer {consumer_kicks}");
}

#[test]
fn ten_million_slots_to_device_every_byte_checked() {
    // Small slots keep the byte checks affordable while still going
    // through the full protocol 10 million times.
    run(RingId::ToDevice, Sleeper::Consumer, 10_000_000, 256, 256, u32::MAX - 5_000);
}

#[test]
fn from_device_kernel_producer_sleeps_for_space() {
    run(RingId::FromDevice, Sleeper::Producer, 2_000_000, 64, 512, u32::MAX - 7);
}

#[test]
fn large_slots_tiny_ring() {
    // Eight slots: the producer is blocked on a full ring most of the time.
    run(RingId::ToDevice, Sleeper::Consumer, 200_000, 8, 2048, u32::MAX - 3);
}
