// SPDX-License-Identifier: MIT
//! A mapped shared region and the ring ends over it.

use crate::proto::{BadIndex, ConsumerIndex, Indices, ProducerIndex, Word};
use crate::sync::AtomicU32;
use core::ptr::NonNull;
use rtpmgr_abi::{
    Geometry, GeometryError, SharedHeader, SlotHeader, StatsRecord, ABI_VERSION, FROM_DEV_CTRL_OFFSET,
    HEADER_REGION_SIZE, MAX_STREAMS, RING_CONSUMER_OFFSET, RING_FLAGS_OFFSET, RING_PRODUCER_OFFSET, SHARED_MAGIC,
    SLOT_HEADER_SIZE, STATS_RECORD_SIZE, TO_DEV_CTRL_OFFSET,
};
use std::fmt;
use std::sync::Arc;

/// Memory that backs a region: an mmap of `/dev/rtpmgr`, or an anonymous
/// mapping for the simulator.
///
/// # Safety
///
/// Implementors guarantee that `as_ptr()` points to `size()` bytes that are
/// aligned to at least 4096 bytes, readable and writable for as long as the
/// value lives, and never move. The bytes may be written concurrently by
/// another party (the kernel); the region code only touches them through
/// atomics or raw-pointer copies, following the ring protocol.
pub unsafe trait Memory: Send + Sync + 'static {
    fn as_ptr(&self) -> *mut u8;
    fn size(&self) -> usize;
}

// SAFETY: an `MmapRaw` stays mapped at one address until dropped, page
// aligned, and is created readable and writable by our callers (map_raw of a
// file opened read-write, or an anonymous mapping).
unsafe impl Memory for memmap2::MmapRaw {
    fn as_ptr(&self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn size(&self) -> usize {
        self.len()
    }
}

/// Which of the two rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingId {
    /// User space produces, the kernel consumes.
    ToDevice,
    /// The kernel produces, user space consumes.
    FromDevice,
}

impl RingId {
    fn ctrl_offset(self) -> usize {
        match self {
            RingId::ToDevice => TO_DEV_CTRL_OFFSET as usize,
            RingId::FromDevice => FROM_DEV_CTRL_OFFSET as usize,
        }
    }
}

/// Why a mapping was not accepted as a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    BadMagic(u32),
    AbiVersion {
        found: u32,
        expected: u32,
    },
    Geometry(GeometryError),
    /// The header describes a layout this library does not know, or one
    /// that does not fit the mapping.
    Layout,
    TooSmall {
        mapped: usize,
        needed: u64,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionError::BadMagic(m) => write!(f, "shared region has magic {m:#010x}, not an rtpmgr region"),
            RegionError::AbiVersion { found, expected } => {
                write!(f, "shared region has ABI version {found}, this program speaks {expected}")
            }
            RegionError::Geometry(e) => write!(f, "shared region has an invalid geometry: {e:?}"),
            RegionError::Layout => write!(f, "shared region layout is not the one this program knows"),
            RegionError::TooSmall { mapped, needed } => {
                write!(f, "shared region mapping is {mapped} bytes, its header needs {needed}")
            }
        }
    }
}

impl std::error::Error for RegionError {}

/// A validated shared region.
///
/// Invariant: `base` points to `mem.size()` bytes owned by `mem`, which are
/// at least `geometry.region_bytes()` long and laid out as the ABI says.
pub struct Region {
    mem: Box<dyn Memory>,
    base: NonNull<u8>,
    geometry: Geometry,
}

// SAFETY: all access to the memory goes through atomics (control words) or
// through ring ends whose protocol gives each slot a single owner at a time;
// `Memory` is itself `Send + Sync`.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only hands out atomics and raw snapshots.
unsafe impl Sync for Region {}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region").field("geometry", &self.geometry).field("len", &self.len()).finish()
    }
}

impl Region {
    /// Validate the header the kernel (or the simulator) wrote and wrap the
    /// mapping.
    pub fn new(mem: Box<dyn Memory>) -> Result<Arc<Region>, RegionError> {
        let len = mem.size();
        let base = NonNull::new(mem.as_ptr()).ok_or(RegionError::Layout)?;
        if len < HEADER_REGION_SIZE as usize || base.as_ptr() as usize % 4096 != 0 {
            return Err(RegionError::TooSmall { mapped: len, needed: HEADER_REGION_SIZE as u64 });
        }
        // SAFETY: `mem` guarantees `len >= 4096` readable, page-aligned bytes,
        // so a `SharedHeader` (72 bytes, align 8) at offset 0 is in bounds and
        // aligned. A volatile copy reads it once; we only use the copy.
        let h: SharedHeader = unsafe { core::ptr::read_volatile(base.as_ptr().cast::<SharedHeader>()) };
        if h.magic != SHARED_MAGIC {
            return Err(RegionError::BadMagic(h.magic));
        }
        if h.abi_version != ABI_VERSION {
            return Err(RegionError::AbiVersion { found: h.abi_version, expected: ABI_VERSION });
        }
        let geometry = Geometry::new(h.slot_count, h.slot_size, u64::MAX).map_err(RegionError::Geometry)?;
        if h.header_size != HEADER_REGION_SIZE
            || h.slot_header_size != SLOT_HEADER_SIZE
            || h.to_dev_ctrl_offset != TO_DEV_CTRL_OFFSET
            || h.from_dev_ctrl_offset != FROM_DEV_CTRL_OFFSET
            || h.to_dev_slots_offset != geometry.to_dev_slots_offset()
            || h.from_dev_slots_offset != geometry.from_dev_slots_offset()
        {
            return Err(RegionError::Layout);
        }
        if (len as u64) < geometry.region_bytes() {
            return Err(RegionError::TooSmall { mapped: len, needed: geometry.region_bytes() });
        }
        Ok(Arc::new(Region { mem, base, geometry }))
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn len(&self) -> usize {
        self.mem.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A control word of a ring. Exposed for diagnostics and for tests that
    /// play a hostile peer; writing it outside the protocol corrupts the ring.
    pub fn ctrl_word(&self, ring: RingId, word: CtrlWord) -> &AtomicU32 {
        let off = ring.ctrl_offset()
            + match word {
                CtrlWord::Producer => RING_PRODUCER_OFFSET as usize,
                CtrlWord::Consumer => RING_CONSUMER_OFFSET as usize,
                CtrlWord::Flags => RING_FLAGS_OFFSET as usize,
            };
        // SAFETY: `off` is below HEADER_REGION_SIZE, inside the mapping (type
        // invariant) and 4-byte aligned (offsets are multiples of 128 on a
        // page-aligned base). The word is only ever accessed atomically by
        // this process; `AtomicU32` has the layout of `u32`.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off).cast::<u32>()) }
    }

    /// A consistent copy of stream `id`'s statistics record (the kernel's
    /// counters of a `udp` stream; `abi::StatsRecord`), without a system
    /// call; a record never written is all zero (no `STATS_RUNNING`).
    /// `None` for an id out of range, or when the record kept changing
    /// under the reader (the kernel writes it when its counters change, at
    /// most once per worker pass; a few tries always suffice unless
    /// something scribbles on it).
    pub fn stream_stats(&self, id: u32) -> Option<StatsRecord> {
        use crate::sync::{fence, Ordering};
        if id >= MAX_STREAMS {
            return None;
        }
        let off = self.geometry.stats_offset() as usize + id as usize * STATS_RECORD_SIZE as usize;
        // SAFETY: id < MAX_STREAMS, so the record lies inside the statistics
        // area, inside the mapping (checked against `region_bytes()` in
        // `new`); page-aligned area, 512-byte records: aligned for
        // `StatsRecord` and its leading `u32`.
        let rec = unsafe { self.base.as_ptr().add(off) };
        // SAFETY: as above; the word is accessed atomically by this process.
        let seq = unsafe { AtomicU32::from_ptr(rec.cast::<u32>()) };
        for _ in 0..64 {
            let before = seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            // SAFETY: in bounds and aligned (above); a volatile copy, as the
            // kernel may be writing it: the seqcount tells whether it did.
            let copy = unsafe { core::ptr::read_volatile(rec.cast::<StatsRecord>()) };
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return Some(copy);
            }
        }
        None
    }

    /// `(producer, consumer, flags)` of a ring, read relaxed: for status
    /// displays and drain checks, not for the data path.
    pub fn snapshot(&self, ring: RingId) -> (u32, u32, u32) {
        use crate::sync::Ordering::Relaxed;
        (
            self.ctrl_word(ring, CtrlWord::Producer).load(Relaxed),
            self.ctrl_word(ring, CtrlWord::Consumer).load(Relaxed),
            self.ctrl_word(ring, CtrlWord::Flags).load(Relaxed),
        )
    }

    fn slots_base(&self, ring: RingId) -> *mut u8 {
        let off = match ring {
            RingId::ToDevice => self.geometry.to_dev_slots_offset(),
            RingId::FromDevice => self.geometry.from_dev_slots_offset(),
        };
        // SAFETY: the slots of either ring lie inside the mapping (checked
        // against `region_bytes()` in `new`), so the offset stays in bounds.
        unsafe { self.base.as_ptr().add(off as usize) }
    }

    /// Pointer to the slot at ring position `pos`.
    fn slot_ptr(&self, ring: RingId, pos: u32) -> *mut u8 {
        let g = self.geometry;
        let index = (pos & (g.slot_count - 1)) as usize;
        // SAFETY: index < slot_count, so the slot lies inside the ring.
        unsafe { self.slots_base(ring).add(index * g.slot_size as usize) }
    }

    /// The producing end of `ring`. The protocol allows one producer per
    /// ring; creating two is a logic error the caller must avoid.
    pub fn producer(self: &Arc<Self>, ring: RingId) -> Producer {
        let idx = MappedIndices { region: Arc::clone(self), ring };
        Producer { index: ProducerIndex::new(idx, self.geometry.slot_count), ring }
    }

    /// The consuming end of `ring` (one per ring, as for producers).
    pub fn consumer(self: &Arc<Self>, ring: RingId) -> Consumer {
        let idx = MappedIndices { region: Arc::clone(self), ring };
        Consumer { index: ConsumerIndex::new(idx, self.geometry.slot_count), ring }
    }
}

/// The three words of a [`RingCtrl`](rtpmgr_abi::RingCtrl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtrlWord {
    Producer,
    Consumer,
    Flags,
}

/// A ring's control words inside a mapped region.
pub struct MappedIndices {
    region: Arc<Region>,
    ring: RingId,
}

impl Indices for MappedIndices {
    type Word = Word;
    fn producer(&self) -> &Word {
        Word::from_atomic(self.region.ctrl_word(self.ring, CtrlWord::Producer))
    }
    fn consumer(&self) -> &Word {
        Word::from_atomic(self.region.ctrl_word(self.ring, CtrlWord::Consumer))
    }
    fn flags(&self) -> &Word {
        Word::from_atomic(self.region.ctrl_word(self.ring, CtrlWord::Flags))
    }
}

/// Producing end of a ring: fills free slots and publishes them.
pub struct Producer {
    index: ProducerIndex<MappedIndices>,
    ring: RingId,
}

impl Producer {
    fn region(&self) -> &Region {
        &self.index.indices().region
    }

    pub fn geometry(&self) -> Geometry {
        self.region().geometry
    }

    pub fn ring(&self) -> RingId {
        self.ring
    }

    /// Free slots (at least `want` if that many are free; see
    /// [`ProducerIndex::free`]).
    pub fn free(&mut self, want: u32) -> u32 {
        self.index.free(want)
    }

    /// Published entries the consumer has not released yet.
    pub fn in_flight(&mut self) -> u32 {
        self.index.in_flight()
    }

    fn check_reserved(&self, i: u32) {
        // Only slots known to be free may be touched: this turns a caller
        // bug into a panic instead of overwriting an entry the consumer owns.
        let free = self.index.cached_free();
        assert!(i < free, "slot {i} is not free ({free} free slots)");
    }

    /// Payload area of the `i`-th free slot.
    pub fn payload_mut(&mut self, i: u32) -> &mut [u8] {
        self.check_reserved(i);
        let cap = self.geometry().payload_capacity() as usize;
        let ptr = self.region().slot_ptr(self.ring, self.index.position(i));
        // SAFETY: the slot at this position is free (owned by the producer
        // until published) and `&mut self` prevents a second borrow of it; the
        // payload starts after the slot header and is `cap` bytes long.
        unsafe { core::slice::from_raw_parts_mut(ptr.add(SLOT_HEADER_SIZE as usize), cap) }
    }

    /// Payload areas of the first `n` free slots at once (for `recvmmsg`).
    /// Every slot appears once, so the slices are disjoint.
    pub fn payloads_mut(&mut self, n: u32) -> impl Iterator<Item = &mut [u8]> + '_ {
        let free = self.index.cached_free();
        assert!(n <= free, "{n} slots requested, {free} free");
        let cap = self.geometry().payload_capacity() as usize;
        let region: &Region = &self.index.indices().region;
        let index = &self.index;
        let ring = self.ring;
        (0..n).map(move |i| {
            let ptr = region.slot_ptr(ring, index.position(i));
            // SAFETY: positions head..head+n are distinct slots (n <=
            // slot_count), free and owned by this producer, which is borrowed
            // mutably for as long as the slices live.
            unsafe { core::slice::from_raw_parts_mut(ptr.add(SLOT_HEADER_SIZE as usize), cap) }
        })
    }

    /// Write the header of the `i`-th free slot.
    pub fn set_header(&mut self, i: u32, header: &SlotHeader) {
        self.check_reserved(i);
        let ptr = self.region().slot_ptr(self.ring, self.index.position(i));
        // SAFETY: the slot is owned by the producer (see `payload_mut`); slot
        // starts are aligned to the slot size (>= 256), so the header write
        // is aligned.
        unsafe { core::ptr::write_volatile(ptr.cast::<SlotHeader>(), *header) }
    }

    /// Copy the `src`-th free slot's header and `len` payload bytes to the
    /// `dst`-th free slot (compaction after a dropped packet).
    pub fn move_slot(&mut self, src: u32, dst: u32, len: usize) {
        self.check_reserved(src);
        self.check_reserved(dst);
        if src == dst {
            return;
        }
        let len = len.min(self.geometry().payload_capacity() as usize) + SLOT_HEADER_SIZE as usize;
        let s = self.region().slot_ptr(self.ring, self.index.position(src));
        let d = self.region().slot_ptr(self.ring, self.index.position(dst));
        // SAFETY: both slots are free and owned by the producer, distinct
        // (src != dst and both < slot_count), and `len` is within a slot.
        unsafe { core::ptr::copy_nonoverlapping(s, d, len) }
    }

    /// Publish `n` filled slots; returns whether the consumer must be kicked.
    pub fn publish(&mut self, n: u32) -> bool {
        self.index.publish(n)
    }

    /// The sleeper's handshake (kernel side / simulator).
    pub fn prepare_sleep(&mut self) -> bool {
        self.index.prepare_sleep()
    }

    pub fn clear_need_wakeup(&self) {
        self.index.clear_need_wakeup()
    }
}

/// Consuming end of a ring.
pub struct Consumer {
    index: ConsumerIndex<MappedIndices>,
    ring: RingId,
}

impl Consumer {
    fn region(&self) -> &Region {
        &self.index.indices().region
    }

    pub fn geometry(&self) -> Geometry {
        self.region().geometry
    }

    pub fn ring(&self) -> RingId {
        self.ring
    }

    /// Entries ready, or the impossible index pair the producer published.
    pub fn available(&mut self) -> Result<u32, BadIndex> {
        self.index.available()
    }

    /// A copy of the `i`-th available slot's header, read once. The caller
    /// validates the copy (the producer may be hostile) and never re-reads.
    pub fn header(&self, i: u32) -> SlotHeader {
        assert!(i < self.geometry().slot_count);
        let ptr = self.region().slot_ptr(self.ring, self.index.position(i));
        // SAFETY: the slot lies in the mapping and is aligned (see
        // `Producer::set_header`); a volatile read copies it once even if the
        // other side writes concurrently.
        unsafe { core::ptr::read_volatile(ptr.cast::<SlotHeader>()) }
    }

    /// Payload of the `i`-th available slot, `len` bytes (clamped to the
    /// slot capacity). For a trusted producer (the kernel); code that
    /// consumes from a hostile producer copies with [`Consumer::copy_payload`].
    pub fn payload(&self, i: u32, len: u32) -> &[u8] {
        assert!(i < self.geometry().slot_count);
        let len = len.min(self.geometry().payload_capacity()) as usize;
        let ptr = self.region().slot_ptr(self.ring, self.index.position(i));
        // SAFETY: the entry is published and not yet released, so the
        // producer does not write it; `len` is within the slot.
        unsafe { core::slice::from_raw_parts(ptr.add(SLOT_HEADER_SIZE as usize), len) }
    }

    /// Copy `dst.len()` payload bytes (at most the slot capacity) of the
    /// `i`-th available slot into `dst`, without creating a reference to
    /// shared memory. Returns the number of bytes copied.
    pub fn copy_payload(&self, i: u32, dst: &mut [u8]) -> usize {
        assert!(i < self.geometry().slot_count);
        let len = dst.len().min(self.geometry().payload_capacity() as usize);
        let ptr = self.region().slot_ptr(self.ring, self.index.position(i));
        // SAFETY: source is inside the slot (len <= capacity); `dst` is a
        // distinct, exclusively borrowed buffer outside the mapping or in a
        // different slot.
        unsafe { core::ptr::copy_nonoverlapping(ptr.add(SLOT_HEADER_SIZE as usize), dst.as_mut_ptr(), len) };
        len
    }

    /// Release `n` entries; returns whether the producer must be kicked.
    pub fn release(&mut self, n: u32) -> bool {
        self.index.release(n)
    }

    /// The sleeper's handshake (kernel side / simulator).
    pub fn prepare_sleep(&mut self) -> bool {
        self.index.prepare_sleep()
    }

    pub fn clear_need_wakeup(&self) {
        self.index.clear_need_wakeup()
    }
}

/// Anonymous page-aligned memory holding a freshly initialised region, as
/// the kernel would hand out after `CONFIGURE_BUFFER`: header written, both
/// rings empty. Used by the simulator and by tests.
pub fn anonymous_region(geometry: Geometry) -> std::io::Result<Arc<Region>> {
    let page = 4096u64;
    let len = geometry.mmap_size(page) as usize;
    let map = memmap2::MmapOptions::new().len(len).map_anon()?;
    let raw = memmap2::MmapRaw::from(map);
    let header = geometry.shared_header(page);
    // SAFETY: the fresh anonymous mapping is at least one page long and page
    // aligned; nobody else sees it yet.
    unsafe { core::ptr::write(raw.as_mut_ptr().cast::<SharedHeader>(), header) };
    Region::new(Box::new(raw)).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn region(count: u32, size: u32) -> Arc<Region> {
        anonymous_region(Geometry::new(count, size, u64::MAX).unwrap()).unwrap()
    }

    #[test]
    fn fresh_region_is_empty_and_sized() {
        let r = region(8, 256);
        // Header page, two rings of 2 KiB, 32 KiB of statistics records.
        assert_eq!(r.len(), 8192 + 32_768);
        let mut p = r.producer(RingId::ToDevice);
        assert_eq!(p.free(1), 8);
        let mut c = r.consumer(RingId::FromDevice);
        assert_eq!(c.available(), Ok(0));
    }

    #[test]
    fn rejects_foreign_or_mismatched_headers() {
        let g = Geometry::new(8, 256, u64::MAX).unwrap();
        let make = |h: SharedHeader| {
            let map = memmap2::MmapOptions::new().len(40_960).map_anon().unwrap();
            let raw = memmap2::MmapRaw::from(map);
            // SAFETY: fresh private mapping of 40,960 bytes, page aligned.
            unsafe { core::ptr::write(raw.as_mut_ptr().cast::<SharedHeader>(), h) };
            Region::new(Box::new(raw)).err()
        };
        let good = g.shared_header(4096);
        assert_eq!(make(good), None);
        assert_eq!(make(SharedHeader { magic: 0x1234_5678, ..good }), Some(RegionError::BadMagic(0x1234_5678)));
        assert_eq!(
            make(SharedHeader { abi_version: 99, ..good }),
            Some(RegionError::AbiVersion { found: 99, expected: ABI_VERSION })
        );
        assert_eq!(make(SharedHeader { slot_size: 300, ..good }), Some(RegionError::Geometry(GeometryError::SlotSize)));
        assert_eq!(make(SharedHeader { from_dev_slots_offset: 4096, ..good }), Some(RegionError::Layout));
        // A header promising more slots than the mapping holds.
        assert_eq!(
            make(SharedHeader { slot_count: 16, from_dev_slots_offset: 4096 + 4096, ..good }),
            Some(RegionError::TooSmall { mapped: 40_960, needed: 4096 + 8192 + 32_768 })
        );
    }

    /// Write record `id` as the kernel does (`ring.rs` `publish_stats`),
    /// optionally stopping half way (odd seqcount).
    fn write_record(r: &Region, id: u32, seq: u32, rec: &StatsRecord) {
        let off = r.geometry().stats_offset() as usize + id as usize * STATS_RECORD_SIZE as usize;
        // SAFETY: inside this test's own mapping, aligned (see `stream_stats`).
        unsafe {
            core::ptr::write_volatile(r.base.as_ptr().add(off).cast::<StatsRecord>(), StatsRecord { seq, ..*rec })
        };
    }

    #[test]
    fn stream_stats_reads_a_consistent_record_or_none() {
        let r = region(8, 256);
        // Never written: all zero, not running.
        assert_eq!(r.stream_stats(5), Some(StatsRecord::default()));
        assert_eq!(r.stream_stats(MAX_STREAMS), None);
        let mut rec =
            StatsRecord { stream_id: 5, flags: rtpmgr_abi::STATS_RUNNING, updated_ns: 42, ..Default::default() };
        rec.counters.fwd_packets = 1000;
        rec.counters.rtp_lost = -2;
        write_record(&r, 5, 8, &rec);
        assert_eq!(r.stream_stats(5), Some(StatsRecord { seq: 8, ..rec }));
        // Its neighbours are untouched.
        assert_eq!(r.stream_stats(4), Some(StatsRecord::default()));
        assert_eq!(r.stream_stats(6), Some(StatsRecord::default()));
        // The writer is in the middle of an update: no copy.
        write_record(&r, 5, 9, &rec);
        assert_eq!(r.stream_stats(5), None);
        // The last record of the area is inside the mapping.
        write_record(&r, MAX_STREAMS - 1, 2, &StatsRecord { stream_id: MAX_STREAMS - 1, ..rec });
        assert_eq!(r.stream_stats(MAX_STREAMS - 1).map(|c| c.stream_id), Some(MAX_STREAMS - 1));
    }

    #[test]
    fn consumer_reports_impossible_producer_index() {
        let r = region(8, 256);
        let mut c = r.consumer(RingId::ToDevice);
        r.ctrl_word(RingId::ToDevice, CtrlWord::Producer).store(9, Relaxed);
        assert_eq!(c.available(), Err(BadIndex { producer: 9, consumer: 0 }));
        r.ctrl_word(RingId::ToDevice, CtrlWord::Producer).store(u32::MAX, Relaxed);
        assert_eq!(c.available(), Err(BadIndex { producer: u32::MAX, consumer: 0 }));
        // A bad index makes the sleeper sleep rather than spin.
        assert!(c.prepare_sleep());
        r.ctrl_word(RingId::ToDevice, CtrlWord::Producer).store(3, Relaxed);
        assert_eq!(c.available(), Ok(3));
        assert!(!c.prepare_sleep());
        assert_eq!(r.snapshot(RingId::ToDevice).2, 0, "flag cleared when staying awake");
    }

    #[test]
    fn producer_never_overwrites_on_a_bogus_consumer_index() {
        let r = region(8, 256);
        let mut p = r.producer(RingId::FromDevice);
        assert_eq!(p.free(8), 8);
        for i in 0..8 {
            p.set_header(i, &SlotHeader { len: i, ..Default::default() });
        }
        assert!(!p.publish(8));
        // A consumer word claiming the consumer is ahead of the producer.
        r.ctrl_word(RingId::FromDevice, CtrlWord::Consumer).store(100, Relaxed);
        assert_eq!(p.free(1), 0);
        r.ctrl_word(RingId::FromDevice, CtrlWord::Consumer).store(5, Relaxed);
        assert_eq!(p.free(1), 5);
    }

    #[test]
    #[should_panic(expected = "is not free")]
    fn writing_a_published_slot_panics() {
        let r = region(8, 256);
        let mut p = r.producer(RingId::ToDevice);
        assert_eq!(p.free(8), 8);
        p.publish(8);
        p.payload_mut(0);
    }

    #[test]
    fn need_wakeup_flag_reaches_the_other_side() {
        let r = region(8, 256);
        let mut kernel = r.consumer(RingId::ToDevice);
        let mut user = r.producer(RingId::ToDevice);
        assert!(kernel.prepare_sleep(), "empty ring: sleep");
        assert_eq!(user.free(1), 8);
        user.set_header(0, &SlotHeader::default());
        assert!(user.publish(1), "kernel asleep: the producer must kick");
        kernel.clear_need_wakeup();
        assert_eq!(kernel.available(), Ok(1));
        assert!(!user.publish(0));
        user.free(1);
        user.set_header(0, &SlotHeader::default());
        assert!(!user.publish(1), "kernel awake: no kick");
    }

    #[test]
    fn move_slot_compacts_header_and_payload() {
        let r = region(8, 256);
        let mut p = r.producer(RingId::ToDevice);
        p.free(8);
        p.payload_mut(2)[..3].copy_from_slice(b"abc");
        p.set_header(2, &SlotHeader { len: 3, stream_id: 7, ..Default::default() });
        p.move_slot(2, 0, 3);
        p.publish(1);
        let mut c = r.consumer(RingId::ToDevice);
        assert_eq!(c.available(), Ok(1));
        assert_eq!(c.header(0).stream_id, 7);
        assert_eq!(c.payload(0, 3), b"abc");
        let mut buf = [0u8; 3];
        assert_eq!(c.copy_payload(0, &mut buf), 3);
        assert_eq!(&buf, b"abc");
    }
}
