// SPDX-License-Identifier: GPL-2.0-only

//! The `vm_operations` of a session's mappings, which count them.

use kernel::{
    bindings,
    mm::virt::VmaNew,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, ArcBorrow,
    },
};

/// Makes a C operations table usable as a `static`.
#[repr(transparent)]
struct AssertSync<T>(T);
// SAFETY: used only for the table below, which holds function pointers and
// is never written after compile time.
unsafe impl<T> Sync for AssertSync<T> {}

/// How many VMAs map a session's region. `CONFIGURE_BUFFER` refuses while
/// any does (`EBUSY`), as `packet_set_ring` and AF_XDP refuse to replace a
/// mapped ring: a new region while an old one stays mapped would pin
/// memory beyond `max_session_mb` without bound.
///
/// Each VMA holds one reference on this (its `vm_private_data`): taken in
/// `mmap` and in `vm_open` (a VMA split in two by `munmap`/`mprotect`, or
/// copied by `mremap`), given back in `vm_close`.
pub(crate) struct MapCount {
    count: Atomic<usize>,
}

impl MapCount {
    pub(crate) fn new() -> Result<Arc<MapCount>> {
        Ok(Arc::new(
            MapCount {
                count: Atomic::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    /// Whether a VMA maps the region now.
    pub(crate) fn mapped(&self) -> bool {
        self.count.load(Relaxed) != 0
    }

    /// Give `vma` (fully set up by the caller's `mmap`) our operations and
    /// a reference on `this`.
    pub(crate) fn attach(this: &Arc<MapCount>, vma: &VmaNew) {
        this.count.add(1, Relaxed);
        let raw = Arc::into_raw(this.clone());
        // SAFETY: the VMA is being set up by our `mmap` handler, which may
        // set its operations and private data; `VM_OPS` is a static.
        unsafe {
            (*vma.as_ptr()).vm_ops = &VM_OPS.0;
            (*vma.as_ptr()).vm_private_data = raw.cast_mut().cast::<c_void>();
        }
    }
}

static VM_OPS: AssertSync<bindings::vm_operations_struct> =
    AssertSync(bindings::vm_operations_struct {
        open: Some(vm_open),
        close: Some(vm_close),
        // SAFETY: all zeroes is a valid `vm_operations_struct` (no operation).
        ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
    });

/// # Safety
///
/// Called by the mm for a new VMA copied from one of ours (split, mremap):
/// its `vm_private_data` is the copied `Arc<MapCount>` pointer, whose
/// reference the original VMA still holds.
unsafe extern "C" fn vm_open(vma: *mut bindings::vm_area_struct) {
    // SAFETY: `vm_private_data` came from `Arc::into_raw` in `attach` (or a
    // copy of it) and the original VMA still holds that reference.
    let m = unsafe { ArcBorrow::from_raw((*vma).vm_private_data.cast_const().cast::<MapCount>()) };
    m.count.add(1, Relaxed);
    // The new VMA's own reference, given back in its `vm_close`.
    let _ = Arc::into_raw(Arc::<MapCount>::from(m));
}

/// # Safety
///
/// Called by the mm once for each VMA `attach` or `vm_open` counted.
unsafe extern "C" fn vm_close(vma: *mut bindings::vm_area_struct) {
    // SAFETY: this VMA's reference (taken in `attach` or `vm_open`),
    // released exactly once, here.
    let m = unsafe { Arc::from_raw((*vma).vm_private_data.cast_const().cast::<MapCount>()) };
    m.count.fetch_sub(1, Relaxed);
}
