// SPDX-License-Identifier: MIT
//! The consuming end of a ring against a hostile producer.
//!
//! The region lives in heap memory the harness owns (a `Memory` of its own,
//! so AddressSanitizer sees any read past the mapping). The fuzz input picks
//! a geometry (optionally a corrupted shared header, which `Region::new`
//! must refuse or accept only if it fits the mapping), the initial producer,
//! consumer and flags words, then a sequence of operations: consumer calls
//! (including one pass of rtpmgrd's transmitter loop: available, headers,
//! payloads, release) interleaved with the producer side scribbling on
//! indices, flags, slot headers and any other byte.
//!
//! Asserted: nothing panics; `available` is the producer word minus the
//! consumer's own tail when that is at most a ring, else `BadIndex` (the
//! shared consumer word, which the other side may overwrite, is never
//! trusted); `header` and `payload` read exactly the slot at the ring
//! position, and a payload is never longer than the slot's payload capacity
//! nor outside the slot, whatever `len` the header claims; `copy_payload`
//! writes only the bytes it reports; the consumer writes nothing in the
//! region but its consumer and flags words, with the values the protocol
//! says (checked against a shadow copy after every call).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtpmgr_abi::{
    Geometry, SharedHeader, SlotHeader, FROM_DEV_CTRL_OFFSET, RING_CONSUMER_OFFSET, RING_FLAGS_OFFSET,
    RING_NEED_WAKEUP, RING_PRODUCER_OFFSET, SLOT_HEADER_SIZE, TO_DEV_CTRL_OFFSET,
};
use rtpmgr_ring::{BadIndex, Consumer, Memory, Region, RingId};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::Arc;

const PAGE: usize = 4096;
/// rtpmgrd's transmitter handles at most this many slots per pass.
const BATCH: u32 = 64;
/// Bound on operations per input, so one input stays fast.
const MAX_OPS: usize = 512;

/// Page-aligned heap memory standing in for the mmap of `/dev/rtpmgr`.
struct Heap {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: owned heap memory; the harness is single-threaded.
unsafe impl Send for Heap {}
// SAFETY: as above.
unsafe impl Sync for Heap {}

// SAFETY: `ptr` is a live allocation of `layout.size()` bytes aligned to
// 4096, readable and writable until `drop`, never moved.
unsafe impl Memory for Heap {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn size(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        // SAFETY: allocated in `main` with this very layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// Fuzz bytes read front to back; zeros once exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Harness {
    region: Arc<Region>,
    /// The memory `region` wraps: the harness writes it as the producer.
    base: *mut u8,
    /// What the memory must hold: every harness write goes to both, and
    /// the consumer's permitted writes are predicted here.
    shadow: Vec<u8>,
    ring: RingId,
    consumer: Consumer,
    /// The consumer's private index, as the protocol defines it.
    tail: u32,
}

impl Harness {
    fn geometry(&self) -> Geometry {
        self.region.geometry()
    }
    fn ctrl(&self, word: u32) -> usize {
        let ring = match self.ring {
            RingId::ToDevice => TO_DEV_CTRL_OFFSET,
            RingId::FromDevice => FROM_DEV_CTRL_OFFSET,
        };
        (ring + word) as usize
    }
    /// Offset of the slot at ring position `pos`.
    fn slot(&self, pos: u32) -> usize {
        let g = self.geometry();
        let slots = match self.ring {
            RingId::ToDevice => g.to_dev_slots_offset(),
            RingId::FromDevice => g.from_dev_slots_offset(),
        };
        slots as usize + (pos & (g.slot_count - 1)) as usize * g.slot_size as usize
    }
    fn cap(&self) -> usize {
        self.geometry().payload_capacity() as usize
    }

    /// The producer side writes `bytes` at `off` (memory and shadow).
    fn poke(&mut self, off: usize, bytes: &[u8]) {
        let end = (off + bytes.len()).min(self.shadow.len());
        for (i, &b) in bytes[..end.saturating_sub(off)].iter().enumerate() {
            // SAFETY: `off + i < shadow.len()`, the length of the allocation.
            unsafe { self.base.add(off + i).write_volatile(b) };
            self.shadow[off + i] = b;
        }
    }
    fn word(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.shadow[off..off + 4].try_into().unwrap())
    }
    fn set_word(&mut self, off: usize, v: u32) {
        self.poke(off, &v.to_ne_bytes());
    }
    /// A word the consumer is allowed to write: only the shadow changes.
    fn expect_word(&mut self, off: usize, v: u32) {
        self.shadow[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    /// The consumer wrote nothing in the first `len` bytes but what
    /// `expect_word` predicted.
    fn verify_memory(&self, len: usize) {
        let len = len.min(self.shadow.len());
        // SAFETY: the allocation is `shadow.len()` bytes; nothing writes it
        // while this shared view lives (single thread, no consumer call).
        let mem = unsafe { std::slice::from_raw_parts(self.base, len) };
        if mem != &self.shadow[..len] {
            let at = mem.iter().zip(&self.shadow).position(|(a, b)| a != b).unwrap();
            panic!("region byte {at:#x} is {:#04x}, expected {:#04x}", mem[at], self.shadow[at]);
        }
    }

    fn expected_available(&self) -> Result<u32, BadIndex> {
        let producer = self.word(self.ctrl(RING_PRODUCER_OFFSET));
        let fill = producer.wrapping_sub(self.tail);
        if fill <= self.geometry().slot_count {
            Ok(fill)
        } else {
            Err(BadIndex { producer, consumer: self.tail })
        }
    }

    fn available(&mut self) -> Result<u32, BadIndex> {
        let got = self.consumer.available();
        assert_eq!(got, self.expected_available());
        got
    }

    fn header(&self, i: u32) -> SlotHeader {
        let h = self.consumer.header(i);
        let off = self.slot(self.tail.wrapping_add(i));
        // SAFETY: the slot header lies inside the shadow (the region fits
        // the allocation, checked by `Region::new`); unaligned read of a
        // plain-old-data struct.
        let want =
            unsafe { self.shadow[off..off + SLOT_HEADER_SIZE as usize].as_ptr().cast::<SlotHeader>().read_unaligned() };
        assert_eq!(h, want, "header of entry {i} (slot at {off:#x})");
        h
    }

    fn payload(&self, i: u32, len: u32) {
        let p = self.consumer.payload(i, len);
        let off = self.slot(self.tail.wrapping_add(i)) + SLOT_HEADER_SIZE as usize;
        let want_len = (len as usize).min(self.cap());
        assert!(p.len() <= self.cap(), "payload of {} bytes, slot capacity {}", p.len(), self.cap());
        assert_eq!(p.len(), want_len, "payload length for len {len}");
        // SAFETY: `off` is inside the allocation (see `header`).
        assert_eq!(p.as_ptr(), unsafe { self.base.add(off) }, "payload of entry {i} not in its slot");
        assert_eq!(p, &self.shadow[off..off + want_len]);
    }

    fn copy_payload(&self, i: u32, dst_len: usize) {
        let mut buf = vec![0xa5u8; dst_len];
        let n = self.consumer.copy_payload(i, &mut buf);
        let want = dst_len.min(self.cap());
        assert_eq!(n, want, "copied {n} bytes into {dst_len}, capacity {}", self.cap());
        let off = self.slot(self.tail.wrapping_add(i)) + SLOT_HEADER_SIZE as usize;
        assert_eq!(&buf[..n], &self.shadow[off..off + n]);
        assert!(buf[n..].iter().all(|&b| b == 0xa5), "copy_payload wrote past the bytes it reported");
    }

    fn release(&mut self, n: u32) {
        let kick = self.consumer.release(n);
        if n == 0 {
            assert!(!kick);
            return;
        }
        self.tail = self.tail.wrapping_add(n);
        let consumer_word = self.ctrl(RING_CONSUMER_OFFSET);
        self.expect_word(consumer_word, self.tail);
        let flags = self.word(self.ctrl(RING_FLAGS_OFFSET));
        assert_eq!(kick, flags & RING_NEED_WAKEUP != 0, "kick with flags {flags:#x}");
    }

    /// One pass of rtpmgrd's transmitter (crates/rtpmgrd/src/transmitter.rs):
    /// up to a batch of entries, each header read once, the payload taken
    /// with the header's length, then the batch released.
    fn transmit_pass(&mut self) {
        let Ok(n) = self.available() else { return };
        let n = n.min(BATCH);
        let headers: Vec<SlotHeader> = (0..n).map(|i| self.header(i)).collect();
        for (i, h) in headers.iter().enumerate() {
            self.payload(i as u32, h.len);
        }
        self.release(n);
    }

    fn prepare_sleep(&mut self) {
        let expected = self.expected_available();
        let sleep = self.consumer.prepare_sleep();
        let flags = self.ctrl(RING_FLAGS_OFFSET);
        match expected {
            Ok(0) | Err(_) => {
                assert!(sleep, "must sleep on {expected:?}");
                self.expect_word(flags, RING_NEED_WAKEUP);
            }
            Ok(_) => {
                assert!(!sleep, "must stay awake on {expected:?}");
                self.expect_word(flags, 0);
            }
        }
    }
}

/// Initial contents: distinct-looking bytes at every offset, so a read from
/// the wrong place shows. Computed once for the largest region.
fn pattern() -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        let max = Geometry::new(64, 2048, u64::MAX).unwrap().mmap_size(PAGE as u64) as usize;
        (0..max).map(|off| ((off as u32).wrapping_mul(2_654_435_761) >> 24) as u8).collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let b = input.u8();
    let g = Geometry::new(8 << (b & 3), 256 << ((b >> 2) & 3), u64::MAX).unwrap();
    let ring = if b & 0x10 == 0 { RingId::FromDevice } else { RingId::ToDevice };
    let hostile_header = b & 0x20 != 0;
    let mut header = g.shared_header(PAGE as u64);
    let mut len = g.mmap_size(PAGE as u64) as usize;
    if hostile_header {
        for _ in 0..input.u8() % 8 {
            let v = input.u32();
            match input.u8() % 12 {
                0 => header.magic = v,
                1 => header.abi_version = v,
                2 => header.header_size = v,
                3 => header.slot_header_size = v,
                4 => header.slot_count = v,
                5 => header.slot_size = v,
                6 => header.to_dev_ctrl_offset = v,
                7 => header.from_dev_ctrl_offset = v,
                8 => header.to_dev_slots_offset = v.into(),
                9 => header.from_dev_slots_offset = v.into(),
                10 => header.mmap_size = v.into(),
                // A consistent header for another geometry.
                _ => {
                    if let Ok(other) = Geometry::new(1 << (v % 17), 1 << (v >> 8) % 18, u64::MAX) {
                        header = other.shared_header(PAGE as u64);
                    }
                }
            }
        }
        // A mapping shorter than the header promises.
        len = len.saturating_sub(PAGE * (input.u8() % 4) as usize).max(PAGE);
    }
    let layout = Layout::from_size_align(len, PAGE).unwrap();
    // SAFETY: non-zero size.
    let ptr = unsafe { alloc_zeroed(layout) };
    assert!(!ptr.is_null());
    let mut init = pattern()[..len].to_vec();
    // SAFETY: `len >= 4096` bytes, page aligned; `SharedHeader` is plain data.
    unsafe {
        std::ptr::copy_nonoverlapping(init.as_ptr(), ptr, len);
        ptr.cast::<SharedHeader>().write(header);
        std::ptr::copy_nonoverlapping(ptr, init.as_mut_ptr(), PAGE);
    }
    let region = match Region::new(Box::new(Heap { ptr, layout })) {
        Ok(r) => r,
        Err(e) => {
            assert!(hostile_header, "valid header refused: {e}");
            return;
        }
    };
    let rg = region.geometry();
    assert!(rg.region_bytes() <= len as u64, "{rg:?} accepted in a {len}-byte mapping");
    if !hostile_header {
        assert_eq!(rg, g);
    }
    let consumer = region.consumer(ring);
    let mut h = Harness { region, base: ptr, shadow: init, ring, consumer, tail: 0 };
    // Plausible slot headers to start from (lengths up to a little past the
    // capacity); the input overwrites them at will.
    for s in 0..rg.slot_count {
        let off = h.slot(s);
        let sh = SlotHeader { len: (s * 97) % (rg.payload_capacity() + 8), stream_id: s % 70, ..Default::default() };
        // SAFETY: `SlotHeader` is 32 bytes of plain data.
        let bytes: [u8; 32] = unsafe { std::mem::transmute(sh) };
        h.poke(off, &bytes);
    }
    let (consumer_word, delta, flags) = (input.u32(), input.u16() as i16, input.u32());
    h.set_word(h.ctrl(RING_CONSUMER_OFFSET), consumer_word);
    h.set_word(h.ctrl(RING_PRODUCER_OFFSET), consumer_word.wrapping_add(delta as i32 as u32));
    h.set_word(h.ctrl(RING_FLAGS_OFFSET), flags);
    // Attach as a (re)started daemon does: the tail is the shared consumer word.
    h.consumer = h.region.consumer(ring);
    h.tail = consumer_word;
    h.verify_memory(usize::MAX);

    let count = rg.slot_count;
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 16 {
            0 => drop(h.available()),
            1 => h.transmit_pass(),
            2 => drop(h.header(u32::from(input.u16()) % count)),
            3 => {
                let (i, len) = (u32::from(input.u16()) % count, input.u32());
                h.payload(i, len);
            }
            4 => {
                let (i, len) = (u32::from(input.u16()) % count, input.u16());
                h.copy_payload(i, len.into());
            }
            5 => {
                let want = u32::from(input.u8());
                if let Ok(n) = h.available() {
                    h.release(want.min(n));
                }
            }
            6 => h.prepare_sleep(),
            7 => {
                h.consumer.clear_need_wakeup();
                let flags = h.ctrl(RING_FLAGS_OFFSET);
                h.expect_word(flags, 0);
            }
            8 => {
                let p = h.tail.wrapping_add(input.u16() as i16 as i32 as u32);
                h.set_word(h.ctrl(RING_PRODUCER_OFFSET), p);
            }
            9 => {
                let v = input.u32();
                h.set_word(h.ctrl(RING_PRODUCER_OFFSET), v);
            }
            // The consumer must not trust its shared word.
            10 => {
                let v = input.u32();
                h.set_word(h.ctrl(RING_CONSUMER_OFFSET), v);
            }
            11 => {
                let v = input.u32();
                h.set_word(h.ctrl(RING_FLAGS_OFFSET), v);
            }
            12 => {
                let off = h.slot(h.tail.wrapping_add(u32::from(input.u8())));
                let (len, flags, stream_id) = (input.u32(), input.u32(), input.u32());
                h.set_word(off, len);
                h.set_word(off + 4, flags);
                h.set_word(off + 8, stream_id);
            }
            13 => {
                let (off, v) = (input.u32() as usize % len, input.u8());
                h.poke(off, &[v]);
            }
            14 => {
                let want = (
                    h.word(h.ctrl(RING_PRODUCER_OFFSET)),
                    h.word(h.ctrl(RING_CONSUMER_OFFSET)),
                    h.word(h.ctrl(RING_FLAGS_OFFSET)),
                );
                assert_eq!(h.region.snapshot(ring), want);
            }
            _ => {
                h.consumer = h.region.consumer(ring);
                h.tail = h.word(h.ctrl(RING_CONSUMER_OFFSET));
            }
        }
        // The control page after every call (cheap), everything at the end.
        h.verify_memory(PAGE);
    }
    h.verify_memory(usize::MAX);
});
