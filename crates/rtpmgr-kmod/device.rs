// SPDX-License-Identifier: GPL-2.0-only

//! `/dev/rtpmgr`: the misc device and its `file_operations`.
//!
//! Built here, as drivers/android/binder builds `rust_binder_fops`, rather
//! than with 7.2's `kernel::miscdevice::MiscDevice`, for two reasons:
//!
//! * that abstraction leaves `file_operations.owner` unset, so an open file
//!   does not pin the module. The VFS pins `owner` for each open file
//!   (`misc_open`'s `fops_get`) and unpins it in `__fput` after `release`
//!   has returned; a driver that pins itself in `open` can only unpin in
//!   `release` and then returns through module text that `rmmod` may have
//!   freed, and `__fput` still reads `f_op->owner` from module data
//!   afterwards;
//! * it has no `poll` (7.2's `MiscDevice` trait has open, release, mmap,
//!   read_iter, write_iter, ioctl, compat_ioctl and show_fdinfo, and its
//!   vtable builder is private), which `/dev/rtpmgr` implements with
//!   7.2's `PollTable`/`PollCondVar` as binder does.
//!
//! Every entry point below only recovers the session from
//! `file->private_data` and calls the session's safe method.

use crate::session::Session;
use kernel::{
    bindings,
    error::to_result,
    fs::{File, Kiocb},
    iov::{IovIterDest, IovIterSource},
    mm::virt::VmaNew,
    prelude::*,
    seq_file::SeqFile,
    sync::{poll::PollTable, Arc, ArcBorrow},
    types::{ForeignOwnable, Opaque},
};

/// Makes a C operations table usable as a `static`.
#[repr(transparent)]
struct AssertSync<T>(T);
// SAFETY: used only for the operation table below, which holds function
// pointers and a module pointer and is never written after compile time.
unsafe impl<T> Sync for AssertSync<T> {}

static FOPS: AssertSync<bindings::file_operations> = AssertSync(bindings::file_operations {
    owner: crate::THIS_MODULE.as_ptr(),
    open: Some(open),
    release: Some(release),
    mmap: Some(mmap),
    read_iter: Some(read_iter),
    write_iter: Some(write_iter),
    unlocked_ioctl: Some(ioctl),
    // Every argument has one layout for 32- and 64-bit callers.
    #[cfg(CONFIG_COMPAT)]
    compat_ioctl: bindings::compat_ptr_ioctl,
    poll: Some(poll),
    show_fdinfo: Some(show_fdinfo),
    // SAFETY: all zeroes is a valid `file_operations` (no operation).
    ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
});

/// The registered misc device.
///
/// Invariant: `inner` holds a `miscdevice` registered with `misc_register`
/// from pinned memory, deregistered exactly once, in `drop`.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration {
    #[pin]
    inner: Opaque<bindings::miscdevice>,
}

// SAFETY: `misc_deregister` may run on another thread than `misc_register`.
unsafe impl Send for Registration {}
// SAFETY: no `&self` method touches the device.
unsafe impl Sync for Registration {}

impl Registration {
    /// Register `/dev/<name>` with [`FOPS`].
    pub(crate) fn register(name: &'static CStr) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                // SAFETY: all zeroes is a valid `miscdevice`.
                let mut m: bindings::miscdevice =
                    unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
                m.minor = bindings::MISC_DYNAMIC_MINOR as c_int;
                m.name = kernel::str::as_char_ptr_in_const_context(name);
                m.fops = &FOPS.0;
                // SAFETY: the initialiser may write `slot`.
                unsafe { slot.write(m) };
                // SAFETY: `slot` holds a valid `miscdevice` in pinned memory
                // that is deregistered (`drop`) before it is freed.
                to_result(unsafe { bindings::misc_register(slot) })
            }),
        })
    }
}

#[pinned_drop]
impl PinnedDrop for Registration {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: registered (type invariant), deregistered only here.
        unsafe { bindings::misc_deregister(self.inner.get()) };
    }
}

/// # Safety
///
/// Called by the VFS (`misc_open`) for a file being opened on our device.
unsafe extern "C" fn open(inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: the pointers are the VFS's, valid for a file being opened.
    let ret = unsafe { bindings::generic_file_open(inode, file) };
    if ret != 0 {
        return ret;
    }
    // SAFETY: the file is valid for the call; no fdget_pos is active on a
    // file still being opened.
    let f = unsafe { File::from_raw_file(file) };
    match Session::open(f) {
        Ok(session) => {
            // SAFETY: `open` may set the private data (misc_open stored
            // the miscdevice there, which we do not need).
            unsafe { (*file).private_data = session.into_foreign() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the VFS once, for a file `open` succeeded on.
unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: `open` stored an `Arc<Session>` with `into_foreign`; release
    // is its last use, so ownership comes back here.
    let session = unsafe { Arc::<Session>::from_foreign((*file).private_data) };
    session.release();
    0
}

/// The session of an open file.
///
/// # Safety
///
/// `file` must be a file of this device between `open` and `release`.
unsafe fn session<'a>(file: *mut bindings::file) -> ArcBorrow<'a, Session> {
    // SAFETY: by the contract, `private_data` holds the `Arc<Session>`
    // `open` stored, which `release` takes back only after every other file
    // operation has returned.
    unsafe { Arc::<Session>::borrow((*file).private_data) }
}

/// # Safety
///
/// Called by the VFS for an open file of this device.
unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: an open file of ours (the VFS's contract).
    let s = unsafe { session(file) };
    match Session::ioctl(s, cmd, arg) {
        Ok(v) => v as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// Called by the VFS for an open file of this device and a VMA being set
/// up for it.
unsafe extern "C" fn mmap(file: *mut bindings::file, vma: *mut bindings::vm_area_struct) -> c_int {
    // SAFETY: an open file of ours (the VFS's contract).
    let s = unsafe { session(file) };
    // SAFETY: the VMA is undergoing its initial set-up (the VFS's contract).
    let vma = unsafe { VmaNew::from_raw(vma) };
    match s.mmap(vma) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the VFS with a valid kiocb of an open file of this device and
/// an iov_iter to write to.
unsafe extern "C" fn read_iter(
    kiocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: the kiocb is valid and its file is ours (the VFS's contract).
    let kiocb = unsafe { Kiocb::<Arc<Session>>::from_raw(kiocb) };
    // SAFETY: a valid iov_iter for writing (the VFS's contract).
    let iov = unsafe { IovIterDest::from_raw(iter) };
    match Session::read_iter(kiocb.file(), iov) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// Called by the VFS with a valid kiocb of an open file of this device and
/// an iov_iter to read from.
unsafe extern "C" fn write_iter(
    kiocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: the kiocb is valid and its file is ours (the VFS's contract).
    let kiocb = unsafe { Kiocb::<Arc<Session>>::from_raw(kiocb) };
    // SAFETY: a valid iov_iter for reading (the VFS's contract).
    let iov = unsafe { IovIterSource::from_raw(iter) };
    match Session::write_iter(kiocb.file(), iov) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// Called by the VFS for an open file of this device and a poll table that
/// is valid (or null) for the call.
unsafe extern "C" fn poll(
    file: *mut bindings::file,
    wait: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: an open file of ours (the VFS's contract).
    let s = unsafe { session(file) };
    // SAFETY: the file is valid for the call; poll does not use its
    // position, so no fdget_pos region matters.
    let f = unsafe { File::from_raw_file(file) };
    // SAFETY: `wait` is null or a valid poll table for the call.
    let table = unsafe { PollTable::from_raw(wait) };
    s.poll(f, table)
}

/// # Safety
///
/// Called by the VFS for an open file of this device and a seq_file it
/// owns for the call.
unsafe extern "C" fn show_fdinfo(m: *mut bindings::seq_file, file: *mut bindings::file) {
    // SAFETY: an open file of ours (the VFS's contract).
    let s = unsafe { session(file) };
    // SAFETY: the seq_file is valid and exclusive for the call.
    let m = unsafe { SeqFile::from_raw(m) };
    s.show_fdinfo(m);
}
