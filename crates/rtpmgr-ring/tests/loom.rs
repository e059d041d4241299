// SPDX-License-Identifier: MIT
//! Model check of the index + need-wakeup handshake with loom, which runs
//! each scenario under every thread interleaving and every memory-ordering
//! outcome the C11 model allows (within a preemption bound).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p rtpmgr-ring --test loom --release`
//!
//! The protocol is `rtpmgr_abi::proto`, the code the kernel module
//! compiles too; the kernel's side is modelled with the calls the module
//! makes (`commit` to hand entries on, `prepare_sleep_since` before its
//! worker sleeps), user space's with rtpmgrd's (`publish`/`release`, which
//! look at the flag and kick).
//!
//! What it proves about `rtpmgr_ring::proto`:
//! * no lost wake-up: the sleeper waits on a condition variable only after
//!   the handshake; if a publish could slip past it unnoticed, loom finds
//!   the schedule where the sleeper never wakes and reports a deadlock;
//! * no slot reuse before release: slots are loom `UnsafeCell`s, so a
//!   producer writing a slot the consumer still reads (or the reverse) is a
//!   data race loom reports;
//! * in-order, exactly-once delivery across index wrap (asserted).
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use rtpmgr_ring::proto::{ConsumerIndex, Indices, ProducerIndex};
use rtpmgr_ring::{Ordering, Word};

struct Ring {
    producer: Word,
    consumer: Word,
    flags: Word,
    slots: Vec<UnsafeCell<u32>>,
    /// The doorbell the sleeper waits on (KICK in the product).
    kicked: Mutex<bool>,
    cv: Condvar,
}

impl Indices for Ring {
    type Word = Word;
    fn producer(&self) -> &Word {
        &self.producer
    }
    fn consumer(&self) -> &Word {
        &self.consumer
    }
    fn flags(&self) -> &Word {
        &self.flags
    }
}

impl Ring {
    fn new(slot_count: u32, start: u32) -> Arc<Ring> {
        Arc::new(Ring {
            producer: Word::new(start),
            consumer: Word::new(start),
            flags: Word::new(0),
            slots: (0..slot_count).map(|_| UnsafeCell::new(u32::MAX)).collect(),
            kicked: Mutex::new(false),
            cv: Condvar::new(),
        })
    }
    fn slot(&self, pos: u32) -> &UnsafeCell<u32> {
        &self.slots[(pos as usize) & (self.slots.len() - 1)]
    }
    fn kick(&self) {
        *self.kicked.lock().unwrap() = true;
        self.cv.notify_one();
    }
    fn sleep(&self) {
        let mut k = self.kicked.lock().unwrap();
        while !*k {
            k = self.cv.wait(k).unwrap();
        }
        *k = false;
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// To-device: user space produces and kicks when asked; the kernel consumes
/// (handing slots back with `commit`: nobody sleeps on its flag for them)
/// and sleeps with need-wakeup after `prepare_sleep_since` the producer
/// index it saw, as its worker does. Producer space-waits by yielding
/// (WAIT or poll() in the product, whose wait queue is not part of this
/// protocol).
#[test]
fn consumer_sleeps_no_lost_wakeup_no_reuse() {
    const ITEMS: u32 = 3;
    model(|| {
        let ring = Ring::new(2, u32::MAX - 1); // wraps during the run
        let r = Arc::clone(&ring);
        let consumer = thread::spawn(move || {
            let mut c = ConsumerIndex::new(&*r, 2);
            let mut next = 0;
            while next < ITEMS {
                let n = c.available().unwrap();
                if n == 0 {
                    let seen = c.tail();
                    if c.prepare_sleep_since(seen) {
                        r.sleep();
                        c.clear_need_wakeup();
                    }
                    continue;
                }
                for i in 0..n {
                    // SAFETY (loom model): the entry is published and
                    // unreleased; loom checks that nobody writes it now.
                    let v = r.slot(c.position(i)).with(|p| unsafe { *p });
                    assert_eq!(v, next, "in order, exactly once");
                    next += 1;
                }
                c.commit(n);
            }
        });
        let mut p = ProducerIndex::new(&*ring, 2);
        let mut sent = 0;
        while sent < ITEMS {
            if p.free(1) == 0 {
                thread::yield_now();
                continue;
            }
            // SAFETY (loom model): the slot is free; loom checks that the
            // consumer does not read it concurrently.
            ring.slot(p.position(0)).with_mut(|s| unsafe { *s = sent });
            sent += 1;
            if p.publish(1) {
                ring.kick();
            }
        }
        consumer.join().unwrap();
    });
}

/// From-device: the kernel produces (`commit`) and sleeps for space with
/// need-wakeup; user space consumes and kicks after releasing when asked.
#[test]
fn producer_sleeps_for_space_no_lost_wakeup() {
    const ITEMS: u32 = 3;
    model(|| {
        let ring = Ring::new(2, 0);
        let r = Arc::clone(&ring);
        let consumer = thread::spawn(move || {
            let mut c = ConsumerIndex::new(&*r, 2);
            let mut next = 0;
            while next < ITEMS {
                let n = c.available().unwrap();
                if n == 0 {
                    thread::yield_now();
                    continue;
                }
                // SAFETY (loom model): published, unreleased entry.
                let v = r.slot(c.position(0)).with(|p| unsafe { *p });
                assert_eq!(v, next);
                next += 1;
                if c.release(1) {
                    r.kick();
                }
            }
        });
        let mut p = ProducerIndex::new(&*ring, 2);
        let mut sent = 0;
        while sent < ITEMS {
            if p.free(1) == 0 {
                if p.prepare_sleep() {
                    ring.sleep();
                    p.clear_need_wakeup();
                }
                continue;
            }
            // SAFETY (loom model): free slot, loom checks exclusivity.
            ring.slot(p.position(0)).with_mut(|s| unsafe { *s = sent });
            sent += 1;
            p.commit(1);
        }
        consumer.join().unwrap();
    });
}

/// To-device, the kernel's other way to sleep: entries are there but it
/// cannot take them now (their port's returns have no room), so it sleeps
/// after `prepare_sleep_since` the producer index its pass saw, and must be
/// kicked (or stay awake) for anything published after that pass.
#[test]
fn kernel_sleeps_with_entries_left_no_lost_wakeup() {
    const ITEMS: u32 = 2;
    model(|| {
        let ring = Ring::new(2, 7);
        let r = Arc::clone(&ring);
        let kernel = thread::spawn(move || {
            let mut c = ConsumerIndex::new(&*r, 2);
            loop {
                // A pass: it reads the producer index and takes nothing.
                let n = c.available().unwrap();
                if n == ITEMS {
                    return;
                }
                let seen = c.tail().wrapping_add(n);
                if c.prepare_sleep_since(seen) {
                    r.sleep();
                    c.clear_need_wakeup();
                }
            }
        });
        let mut p = ProducerIndex::new(&*ring, 2);
        for v in 0..ITEMS {
            assert!(p.free(1) > 0);
            // SAFETY (loom model): free slot, loom checks exclusivity.
            ring.slot(p.position(0)).with_mut(|s| unsafe { *s = v });
            if p.publish(1) {
                ring.kick();
            }
        }
        kernel.join().unwrap();
    });
}

/// The checker must be able to fail: a producer that reads the flag before
/// publishing (a plausible bug) loses a wake-up in some interleaving, and
/// loom must find it. Loom aborts the process on a deadlock, so the broken
/// model runs in a child process of this test binary.
#[test]
fn broken_handshake_is_caught() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["broken_handshake_model", "--exact", "--test-threads=1", "--nocapture"])
        .env("RTPMGR_LOOM_RUN_BROKEN", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "loom accepted a handshake that loses wake-ups");
    assert!(stderr.contains("deadlock"), "loom failed for another reason:\n{stderr}");
}

#[test]
fn broken_handshake_model() {
    if std::env::var_os("RTPMGR_LOOM_RUN_BROKEN").is_none() {
        return; // only meaningful inside broken_handshake_is_caught
    }
    model(|| {
        let ring = Ring::new(2, 0);
        let r = Arc::clone(&ring);
        let consumer = thread::spawn(move || {
            let mut c = ConsumerIndex::new(&*r, 2);
            loop {
                if c.available().unwrap() > 0 {
                    c.release(1);
                    return;
                }
                if c.prepare_sleep() {
                    r.sleep();
                    c.clear_need_wakeup();
                }
            }
        });
        // Bug: check the flag before publishing, then publish.
        let asked = ring.flags.0.load(Ordering::Relaxed) != 0;
        ring.producer.0.store(1, Ordering::Release);
        if asked {
            ring.kick();
        }
        consumer.join().unwrap();
    });
}
