// SPDX-License-Identifier: GPL-2.0-only

//! The kernel side of a session's shared region.
//!
//! The region is `vmalloc` memory that user space maps read-write, so every
//! byte of it may change at any moment. The rules, which every method here
//! follows:
//!
//! * the index and need-wakeup protocol is `abi::proto`, the very code user
//!   space runs and the loom model check explores
//!   (`crates/rtpmgr-ring/tests/loom.rs`), over the kernel's atomics and
//!   `smp_mb()` ([`Words`]); the kernel keeps its own copy of its indices
//!   (the protocol's consumer tail and producer head) and never reads them
//!   back from shared memory;
//! * each word user space writes (the to-device producer, the from-device
//!   consumer) is read once per use and validated with `abi::ring_fill`
//!   against the kernel's own index before it decides anything;
//! * slot headers are copied out once (`read_volatile`) and only the copy is
//!   validated and used;
//! * packet bytes are copied with plain memory copies bounded by validated
//!   lengths; their content is never interpreted.

use crate::abi::proto::{ConsumerIndex, Indices, Order, ProducerIndex, SharedWord};
use crate::abi::{self, Geometry, SharedHeader, SlotHeader};
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::{
    alloc::{allocator::Vmalloc, VVec},
    ffi::c_int,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        barrier::{smp_mb, smp_wmb},
        Arc,
    },
};

/// Which ring.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingId {
    ToDevice,
    FromDevice,
}

/// Which word of a ring's control block.
#[derive(Clone, Copy)]
enum Word {
    Producer,
    Consumer,
    Flags,
}

/// The protocol's shared word in the kernel: `kernel::sync::atomic` and
/// `smp_mb()`. (The protocol asks for no other combination than acquire
/// loads and release stores besides relaxed ones; anything else would get
/// the stronger ordering.)
impl SharedWord for Atomic<u32> {
    fn load(&self, order: Order) -> u32 {
        match order {
            Order::Relaxed => Atomic::load(self, Relaxed),
            Order::Acquire | Order::Release => Atomic::load(self, Acquire),
        }
    }
    fn store(&self, value: u32, order: Order) {
        match order {
            Order::Relaxed => Atomic::store(self, value, Relaxed),
            Order::Acquire | Order::Release => Atomic::store(self, value, Release),
        }
    }
    fn full_fence() {
        smp_mb();
    }
}

/// The three control words of one ring of a region, for the protocol.
///
/// Invariant: `base` is the start of a live region's memory (at least its
/// 4 KiB header page) for as long as this value exists: it lives inside
/// the `Region` that owns that memory, or in a call on its `RegionMem`.
struct Words {
    base: NonNull<u8>,
    ring: RingId,
}

impl Words {
    fn word(&self, word: Word) -> &Atomic<u32> {
        let ctrl = match self.ring {
            RingId::ToDevice => abi::TO_DEV_CTRL_OFFSET,
            RingId::FromDevice => abi::FROM_DEV_CTRL_OFFSET,
        };
        let off = ctrl
            + match word {
                Word::Producer => abi::RING_PRODUCER_OFFSET,
                Word::Consumer => abi::RING_CONSUMER_OFFSET,
                Word::Flags => abi::RING_FLAGS_OFFSET,
            };
        // SAFETY: `off` < 4096 <= region size, 4-byte aligned on a
        // page-aligned base that is live while `self` is (type invariant).
        // The word is only accessed atomically by the kernel; user space
        // may write it at any time, which atomics tolerate.
        unsafe { Atomic::from_ptr(self.base.as_ptr().add(off as usize).cast::<u32>()) }
    }
}

impl Indices for Words {
    type Word = Atomic<u32>;
    fn producer(&self) -> &Atomic<u32> {
        self.word(Word::Producer)
    }
    fn consumer(&self) -> &Atomic<u32> {
        self.word(Word::Consumer)
    }
    fn flags(&self) -> &Atomic<u32> {
        self.word(Word::Flags)
    }
}

/// A byte range in the shared region (or in DMA memory) that another party
/// may write concurrently. Only raw copies touch it.
///
/// Invariant: `ptr` is valid for reads and writes of `len` bytes for `'a`.
pub(crate) struct SharedBytes<'a> {
    ptr: *mut u8,
    len: usize,
    _life: PhantomData<&'a mut [u8]>,
}

impl<'a> SharedBytes<'a> {
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes for `'a`, and
    /// nothing may hold a Rust reference to those bytes during `'a`.
    pub(crate) unsafe fn from_raw(ptr: *mut u8, len: usize) -> Self {
        SharedBytes {
            ptr,
            len,
            _life: PhantomData,
        }
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Start of the range, for raw copies by the network helper only.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Start of the range, for raw copies by the network helper only.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// A kernel-private buffer as a `SharedBytes`, for the paths that
    /// handle kernel copies and slots alike (the exclusive borrow is what
    /// makes it safe).
    pub(crate) fn from_slice(buf: &'a mut [u8]) -> Self {
        // SAFETY: an exclusive borrow is valid for reads and writes of its
        // length for `'a`, and no other reference to it can exist meanwhile.
        unsafe { Self::from_raw(buf.as_mut_ptr(), buf.len()) }
    }

    /// Copy as much of `src` as fits; returns the bytes copied.
    pub(crate) fn copy_from(&mut self, src: &SharedBytes<'_>) -> usize {
        let n = self.len.min(src.len);
        // SAFETY: both ranges are valid for `n` bytes (type invariant).
        // `copy` (memmove) is correct even if two views of one buffer
        // overlap, so callers need not prove they do not.
        unsafe { core::ptr::copy(src.ptr, self.ptr, n) };
        n
    }

    /// Copy as much of the range as fits into a kernel-private buffer;
    /// returns the bytes copied.
    pub(crate) fn copy_to_slice(&self, dst: &mut [u8]) -> usize {
        let n = self.len.min(dst.len());
        // SAFETY: `self` is valid for reads of `n` bytes (type invariant),
        // `dst` for writes of `n` bytes; `copy` allows any overlap.
        unsafe { core::ptr::copy(self.ptr, dst.as_mut_ptr(), n) };
        n
    }
}

/// A `struct mm_struct`, only ever behind a pointer the C helper gives:
/// never read from Rust (its generated layout is not the compiler's, see
/// rtpmgr_mm.c).
#[repr(C)]
struct MmStruct {
    _opaque: [u8; 0],
}

// The C helper that charges locked memory (rtpmgr_mm.c says why it is C).
extern "C" {
    fn rtpmgr_pin_charge(pages: usize, out: *mut *mut MmStruct) -> c_int;
    fn rtpmgr_pin_uncharge(mm: *mut MmStruct, pages: usize);
}

/// The region's pages charged to the configuring process's locked memory
/// (`mm->locked_vm`, limited by `RLIMIT_MEMLOCK` unless it has
/// `CAP_IPC_LOCK`), as AF_XDP charges its umem and VFIO its pinned pages:
/// the pages are the kernel's, never swapped, and user space holds them by
/// an open file and a mapping. Uncharged when the region goes.
///
/// Invariant: `mm` is the mm `rtpmgr_pin_charge` charged `pages` to and
/// holds (`mmgrab`); it is uncharged and dropped once, in `drop`.
struct PinCharge {
    mm: NonNull<MmStruct>,
    pages: usize,
}

// SAFETY: the mm pointer is only handed back to the helper, which may run
// on any thread (it takes the mm's own lock).
unsafe impl Send for PinCharge {}

impl PinCharge {
    /// Charge `pages` to the current task (none for a kernel thread).
    fn new(pages: usize) -> Result<Option<PinCharge>> {
        let mut mm = core::ptr::null_mut();
        // SAFETY: `mm` is a valid out pointer. The helper takes the current
        // mm's mmap lock, which no caller of `Region::new` holds (it runs
        // in CONFIGURE_BUFFER).
        let rc = unsafe { rtpmgr_pin_charge(pages, &mut mm) };
        if rc < 0 {
            return Err(Error::from_errno(rc));
        }
        Ok(NonNull::new(mm).map(|mm| PinCharge { mm, pages }))
    }
}

impl Drop for PinCharge {
    fn drop(&mut self) {
        // SAFETY: undoes the charge of `new` on the mm it charged and holds
        // (type invariant), once. Takes that mm's mmap lock: a region is
        // never dropped with an mmap lock held (it goes in CONFIGURE_BUFFER,
        // which refuses while mapped, or with the last reference to its
        // session, which no VMA holds).
        unsafe { rtpmgr_pin_uncharge(self.mm.as_ptr(), self.pages) };
    }
}

/// The region's memory and its charge, shared (`Arc`) by the [`Region`],
/// which reads and writes the rings under the session mutex, and the
/// session's map slot, from which `mmap` inserts the pages under a lock of
/// its own (`Session::mappable`): `mmap` runs with `mmap_lock` held, so it
/// must not take the session mutex, under which the worker sends on
/// sockets (socket lock, then `mmap_lock` in setsockopt). Freed, and
/// uncharged, with the last reference, which is never dropped under an
/// mmap lock (`mmap` borrows the slot's, it never takes one).
///
/// Invariants: `mem` is page aligned (vmalloc) and never borrowed after
/// construction; `base` is its buffer.
pub(crate) struct RegionMem {
    mem: VVec<u8>,
    base: NonNull<u8>,
    /// Slots per ring (the region's geometry).
    slot_count: u32,
    /// The pages charged to the configuring process (bookkeeping only:
    /// uncharged when the memory is freed).
    _charge: Option<PinCharge>,
}

// SAFETY: `base` points into `mem`, which this owns and frees once (with the
// last `Arc`), on whichever thread drops it. The bytes are shared with user
// space in any case and only ever accessed atomically or by raw copies:
// through `Region` under the session mutex, and through `readiness`.
unsafe impl Send for RegionMem {}
// SAFETY: through `&RegionMem` only fixed facts are read (`len`, page
// addresses) and the ring index words, atomically (`readiness`), which
// any number of threads and user space may do at once; the memory lives
// as long as the reference.
unsafe impl Sync for RegionMem {}

impl RegionMem {
    /// Bytes user space must map.
    pub(crate) fn len(&self) -> usize {
        self.mem.len()
    }

    /// `WAIT`'s and `poll()`'s conditions, `(from-device entries ready,
    /// to-device slot free)`, from the shared index words alone: no session
    /// mutex (see `Session::lockless`). The kernel's words (from-device
    /// producer, to-device consumer) hold what the worker last published,
    /// its private indices' values; a word user space scribbled on misleads
    /// only its own `WAIT`, and an impossible pair reads as not ready.
    pub(crate) fn readiness(&self) -> (bool, bool) {
        let words = |ring| Words {
            base: self.base,
            ring,
        };
        let (from, to) = (words(RingId::FromDevice), words(RingId::ToDevice));
        let count = self.slot_count;
        let fill = |w: &Words| {
            abi::ring_fill(
                w.word(Word::Producer).load(Acquire),
                w.word(Word::Consumer).load(Acquire),
                count,
            )
        };
        (
            fill(&from).is_some_and(|f| f > 0),
            fill(&to).is_some_and(|f| f < count),
        )
    }

    /// The `index`-th page of the region, for `vm_insert_page`.
    pub(crate) fn page(&self, index: usize) -> Option<kernel::page::BorrowedPage<'_>> {
        let offset = index.checked_mul(PAGE_SIZE)?;
        if offset >= self.mem.len() {
            return None;
        }
        // SAFETY: `offset` is inside the allocation, so the pointer is valid.
        let ptr = unsafe { self.base.add(offset) };
        // SAFETY: `ptr` points into a live `Vmalloc` allocation that outlives
        // the returned borrow (it is tied to `&self`).
        Some(unsafe { Vmalloc::to_page(ptr) })
    }
}

/// A configured region: the shared memory and the kernel's private ring
/// state.
///
/// Invariants: `mem` is `geometry.mmap_size(PAGE_SIZE)` bytes, laid out as
/// `abi` says, and `base` is its buffer; `to_dev_tail` and `from_dev_head`
/// are the only authoritative kernel indices.
pub(crate) struct Region {
    /// Owns the memory (with the session's map slot).
    mem: Arc<RegionMem>,
    /// `mem.base`, kept here for the ring accessors.
    base: core::ptr::NonNull<u8>,
    geometry: Geometry,
    /// The kernel's end of each ring: the to-device consumer, the
    /// from-device producer (their indices are the authoritative ones).
    todev: ConsumerIndex<Words>,
    fromdev: ProducerIndex<Words>,
    /// The statistics records' seqcounts, as the kernel last wrote them:
    /// kept here, never read back from the shared memory.
    stats_seq: [u32; abi::MAX_STREAMS as usize],
}

// SAFETY: `base` points into `mem`, which the region co-owns; moving the
// region to another thread moves that with it. Access to the bytes is
// serialised by the session lock that holds the region.
unsafe impl Send for Region {}

impl Region {
    /// Allocate and initialise a region for `geometry`.
    /// The memory is charged to the caller's memory cgroup
    /// (`GFP_KERNEL_ACCOUNT`) and its pages to its `RLIMIT_MEMLOCK`
    /// (`ENOMEM` beyond it).
    pub(crate) fn new(geometry: Geometry) -> Result<Region> {
        let size = usize::try_from(geometry.mmap_size(PAGE_SIZE as u64)).map_err(|_| ENOMEM)?;
        let charge = PinCharge::new(size / PAGE_SIZE)?;
        let mut mem =
            VVec::from_elem(0u8, size, GFP_KERNEL_ACCOUNT | __GFP_NOWARN).map_err(|_| ENOMEM)?;
        let header: SharedHeader = geometry.shared_header(PAGE_SIZE as u64);
        // SAFETY: `mem` is at least `HEADER_REGION_SIZE` (4096) bytes and
        // page aligned, so a `SharedHeader` (72 bytes, align 8) fits at 0;
        // nobody else can see the memory yet.
        unsafe { core::ptr::write(mem.as_mut_ptr().cast::<SharedHeader>(), header) };
        let base = NonNull::new(mem.as_mut_ptr()).ok_or(ENOMEM)?;
        let mem = Arc::new(
            RegionMem {
                mem,
                base,
                slot_count: geometry.slot_count,
                _charge: charge,
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        // The words are zero (the memory is): both rings empty.
        let (todev, fromdev) = Self::ends(base, geometry);
        let region = Region {
            mem,
            base,
            geometry,
            todev,
            fromdev,
            stats_seq: [0; abi::MAX_STREAMS as usize],
        };
        region.start_asleep();
        Ok(region)
    }

    /// The memory, for the session's map slot.
    pub(crate) fn mem(&self) -> Arc<RegionMem> {
        self.mem.clone()
    }

    /// The kernel's ends of both rings, attached to words that hold a
    /// consistent (empty) state.
    fn ends(base: NonNull<u8>, g: Geometry) -> (ConsumerIndex<Words>, ProducerIndex<Words>) {
        (
            ConsumerIndex::new(
                Words {
                    base,
                    ring: RingId::ToDevice,
                },
                g.slot_count,
            ),
            ProducerIndex::new(
                Words {
                    base,
                    ring: RingId::FromDevice,
                },
                g.slot_count,
            ),
        )
    }

    /// The worker is not queued until the first kick, so both rings start
    /// with need-wakeup raised: the first publish then asks for that kick.
    fn start_asleep(&self) {
        self.word(RingId::ToDevice, Word::Flags)
            .store(abi::RING_NEED_WAKEUP, Release);
        self.word(RingId::FromDevice, Word::Flags)
            .store(abi::RING_NEED_WAKEUP, Release);
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Bytes user space must map.
    pub(crate) fn mmap_size(&self) -> usize {
        self.mem.len()
    }

    fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    fn word(&self, ring: RingId, word: Word) -> &Atomic<u32> {
        match ring {
            RingId::ToDevice => self.todev.indices().word(word),
            RingId::FromDevice => self.fromdev.indices().word(word),
        }
    }

    fn slot_ptr(&self, ring: RingId, pos: u32) -> *mut u8 {
        let g = self.geometry;
        let first = match ring {
            RingId::ToDevice => g.to_dev_slots_offset(),
            RingId::FromDevice => g.from_dev_slots_offset(),
        } as usize;
        let index = (pos & (g.slot_count - 1)) as usize;
        // SAFETY: index < slot_count, so the slot lies inside the ring, which
        // lies inside `mem` (Geometry's layout, checked at allocation).
        unsafe { self.base().add(first + index * g.slot_size as usize) }
    }

    // --- to-device: user space produces, the kernel consumes -------------

    /// Entries user space has published (its producer index read once and
    /// checked against the kernel's own tail), or `Err` if that index is
    /// impossible (counted by the caller); with the producer index read,
    /// for [`Region::todev_prepare_sleep`].
    pub(crate) fn todev_available(&mut self) -> (u32, core::result::Result<u32, ()>) {
        match self.todev.available() {
            Ok(n) => (self.todev.tail().wrapping_add(n), Ok(n)),
            Err(bad) => (bad.producer, Err(())),
        }
    }

    /// A copy of the header of the `i`-th available to-device entry.
    pub(crate) fn todev_header(&self, i: u32) -> SlotHeader {
        let p = self.slot_ptr(RingId::ToDevice, self.todev.position(i));
        // SAFETY: `p` is a slot start inside the region, aligned to the slot
        // size (>= 256); the volatile read copies the header exactly once.
        unsafe { core::ptr::read_volatile(p.cast::<SlotHeader>()) }
    }

    /// The payload of the `i`-th available to-device entry, `len` bytes,
    /// which the caller validated against the slot capacity.
    pub(crate) fn todev_payload(&self, i: u32, len: u32) -> SharedBytes<'_> {
        let len = len.min(self.geometry.payload_capacity()) as usize;
        let p = self.slot_ptr(RingId::ToDevice, self.todev.position(i));
        // SAFETY: the payload starts after the slot header and `len` is within
        // the slot; the borrow of `self` keeps the memory alive, and the
        // kernel never creates references into the region.
        unsafe { SharedBytes::from_raw(p.add(abi::SLOT_HEADER_SIZE as usize), len) }
    }

    /// Hand `n` consumed entries back to user space (which never sleeps on
    /// this ring's flag: it waits for space in `WAIT` or `poll()`).
    pub(crate) fn todev_release(&mut self, n: u32) {
        self.todev.commit(n);
    }

    // --- from-device: the kernel produces, user space consumes -----------

    /// Free from-device slots, at least `want` if that many are free.
    /// `Err` if the consumer index user space wrote is impossible.
    pub(crate) fn fromdev_free(&mut self, want: u32) -> core::result::Result<u32, ()> {
        self.fromdev.free_checked(want).map_err(|_| ())
    }

    /// Payload area of the `k`-th free from-device slot.
    pub(crate) fn fromdev_payload(&self, k: u32) -> SharedBytes<'_> {
        let p = self.slot_ptr(RingId::FromDevice, self.fromdev.position(k));
        let cap = self.geometry.payload_capacity() as usize;
        // SAFETY: as for `todev_payload`; the whole payload area of the slot.
        unsafe { SharedBytes::from_raw(p.add(abi::SLOT_HEADER_SIZE as usize), cap) }
    }

    pub(crate) fn fromdev_set_header(&self, k: u32, header: &SlotHeader) {
        let p = self.slot_ptr(RingId::FromDevice, self.fromdev.position(k));
        // SAFETY: aligned slot start inside the region (see `todev_header`).
        unsafe { core::ptr::write_volatile(p.cast::<SlotHeader>(), *header) };
    }

    /// Publish `n` filled from-device slots (user space never sleeps on
    /// this ring's flag: it waits for entries in `WAIT` or `poll()`).
    pub(crate) fn fromdev_publish(&mut self, n: u32) {
        self.fromdev.commit(n);
    }

    // --- need-wakeup and readiness ---------------------------------------

    /// The worker is about to sleep: raise to-device need-wakeup and check
    /// again (`abi::proto`'s handshake). `seen` is the producer index its
    /// last pass read. `true`: nothing was published since, sleep;
    /// `false`: entries came, the flag is down again, stay awake.
    pub(crate) fn todev_prepare_sleep(&mut self, seen: u32) -> bool {
        self.todev.prepare_sleep_since(seen)
    }

    /// As [`Region::todev_prepare_sleep`] for a worker that waits for
    /// from-device room: `true` while there is none.
    pub(crate) fn fromdev_prepare_sleep(&mut self) -> bool {
        self.fromdev.prepare_sleep()
    }

    /// The worker runs: nobody needs to kick it.
    pub(crate) fn clear_need_wakeup(&self) {
        self.todev.clear_need_wakeup();
        self.fromdev.clear_need_wakeup();
    }

    /// `(to-device fill, from-device fill)` as far as the kernel knows.
    pub(crate) fn fill(&self) -> (u32, u32) {
        let count = self.geometry.slot_count;
        let producer = self.word(RingId::ToDevice, Word::Producer).load(Relaxed);
        let to = abi::ring_fill(producer, self.todev.tail(), count).unwrap_or(u32::MAX);
        let consumer = self.word(RingId::FromDevice, Word::Consumer).load(Relaxed);
        let from = abi::ring_fill(self.fromdev.head(), consumer, count).unwrap_or(u32::MAX);
        (to, from)
    }

    /// Write stream `id`'s statistics record (see `abi::StatsRecord`): an
    /// odd seqcount, the record, an even seqcount. User space may scribble
    /// over the area; the kernel only writes it.
    pub(crate) fn publish_stats(
        &mut self,
        id: u32,
        running: bool,
        counters: &abi::NetCounters,
        now_ns: u64,
    ) {
        let Some(seq) = self.stats_seq.get_mut(id as usize) else {
            return;
        };
        let odd = seq.wrapping_add(1) | 1;
        let off =
            self.geometry.stats_offset() as usize + id as usize * abi::STATS_RECORD_SIZE as usize;
        // SAFETY: id < MAX_STREAMS, so the record lies inside the statistics
        // area, which lies inside `mem` (`Geometry::region_bytes`); the area
        // is page aligned and records are 512 bytes, so the pointer is
        // aligned for `StatsRecord` (align 8) and its first `u32`.
        let rec = unsafe { self.base.as_ptr().add(off) };
        // SAFETY: as above; the word is only written by the kernel
        // (atomically here), and atomics tolerate user space writing it.
        let seq_word = unsafe { Atomic::from_ptr(rec.cast::<u32>()) };
        seq_word.store(odd, Relaxed);
        smp_wmb();
        // Every field but `seq`, which only the atomic stores above and
        // below write.
        let words = [id, if running { abi::STATS_RUNNING } else { 0 }, 0u32];
        for (k, w) in words.into_iter().enumerate() {
            // SAFETY: `stream_id`, `flags` and `_pad` are the three u32
            // fields after `seq` (offsets 4, 8, 12: pinned by the ABI's
            // layout test), inside the record; volatile, as user space maps
            // this memory.
            unsafe { core::ptr::write_volatile(rec.add(4 * (k + 1)).cast::<u32>(), w) };
        }
        let off_ns = core::mem::offset_of!(abi::StatsRecord, updated_ns);
        let off_c = core::mem::offset_of!(abi::StatsRecord, counters);
        // SAFETY: in bounds and aligned for u64 (the record is 8-aligned
        // and the offsets are its fields'); volatile as above.
        unsafe { core::ptr::write_volatile(rec.add(off_ns).cast::<u64>(), now_ns) };
        // SAFETY: as above, for the `NetCounters` field (align 8).
        unsafe { core::ptr::write_volatile(rec.add(off_c).cast::<abi::NetCounters>(), *counters) };
        smp_wmb();
        *seq = odd.wrapping_add(1);
        seq_word.store(*seq, Release);
    }

    /// `RESET`: both rings empty, all indices 0.
    pub(crate) fn reset(&mut self) {
        for ring in [RingId::ToDevice, RingId::FromDevice] {
            for w in [Word::Producer, Word::Consumer, Word::Flags] {
                self.word(ring, w).store(0, Release);
            }
        }
        (self.todev, self.fromdev) = Self::ends(self.base, self.geometry);
        self.start_asleep();
    }
}
