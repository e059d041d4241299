// SPDX-License-Identifier: MIT
//! One test per defect of issue 16 (docs/kernel-module.md, "Defects
//! fixed"), named `dN_...` after it. Each was run against the module as it
//! was before the fix; the doc says which failed there.

use super::{expect_errno, fail, open, TestResult, DRIVER_DIR, RTPMGR_GID};
use crate::net::{addr, free_port, net_status_until, session, start_net};
use crate::shaper;
use nix::errno::Errno;
use rtpmgr_abi::{self as abi, SlotHeader};
use rtpmgr_device::{net_stream_spec, Device};
use rtpmgr_ring::{Producer, RingId};
use rtpmgr_test_kit::packet::numbered;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Publish `n` slots of `len` bytes for `stream` (fewer if the ring is
/// full), kicking only when the ring asks for it, as rtpmgrd does.
fn publish(dev: &Device, tx: &mut Producer, stream: u32, len: u32, n: u32) -> Result<u32, String> {
    let free = tx.free(n).min(n);
    for i in 0..free {
        tx.payload_mut(i)[..len as usize].fill(stream as u8);
        tx.set_header(i, &SlotHeader { len, stream_id: stream, ..Default::default() });
    }
    if tx.publish(free) {
        dev.kick().map_err(fail("KICK"))?;
    }
    Ok(free)
}

/// Publish all `n`, waiting for space as needed (at most `secs`).
fn publish_all(dev: &Device, tx: &mut Producer, stream: u32, len: u32, n: u32, secs: u64) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut done = 0;
    while done < n {
        ensure!(Instant::now() < deadline, "stream {stream}: only {done} of {n} slots published in {secs} s");
        let k = publish(dev, tx, stream, len, (n - done).min(64))?;
        done += k;
        if k == 0 {
            let _ = dev.wait(abi::WAIT_TO_DEV_SPACE, 100);
        }
    }
    Ok(())
}

/// A `udp` stream `id` sending through the shaped interface with the
/// smallest send buffer, so its sends soon answer EAGAIN.
fn shaped_sender(dev: &Device, id: u32) -> TestResult {
    shaper::ensure()?;
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(fail("bind"))?;
    // The smallest send buffer (SOCK_MIN_SNDBUF).
    nix::sys::socket::setsockopt(&sock.as_fd(), nix::sys::socket::sockopt::SndBufForce, &1)
        .map_err(fail("SO_SNDBUFFORCE"))?;
    sock.connect(shaper::sink()).map_err(fail("connect"))?;
    let spec = net_stream_spec(id, abi::DIR_TO_DEVICE, sock.as_fd());
    dev.start_net_stream(&spec).map_err(fail("START_NET_STREAM through rtv0"))
}

/// Until `done(stream counters)` holds, at most `secs`.
fn status_until(
    dev: &Device,
    id: u32,
    secs: u64,
    done: impl Fn(&abi::StreamCounters) -> bool,
) -> Result<abi::StreamCounters, String> {
    let t = Instant::now();
    loop {
        let s = dev.status(id).map_err(fail("GET_STATUS"))?.stream;
        if done(&s) || t.elapsed() > Duration::from_secs(secs) {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Defect 1, first half: a `udp` sender blocked on a full send buffer,
/// then stopped; the other stream's slots must still be consumed although
/// user space kicks only when need-wakeup asks for it.
pub(crate) fn d1_lost_wakeup_after_stop_stream() -> TestResult {
    const A: u32 = 1;
    const B: u32 = 2;
    let (dev, region) = session(256)?;
    shaped_sender(&dev, A)?;
    dev.start_stream(B, abi::PORT_NULL, abi::DIR_TO_DEVICE).map_err(fail("start B"))?;
    let mut tx = region.producer(RingId::ToDevice);
    publish_all(&dev, &mut tx, A, 1000, 20, 5)?;
    let a = net_status_until(&dev, A, |c| c.tx_blocked > 0)?;
    ensure!(a.tx_blocked > 0, "the shaped sender never blocked: {a:?}");
    // Let the worker go to sleep waiting for write space.
    std::thread::sleep(Duration::from_millis(200));
    dev.stop_stream(A).map_err(fail("stop A"))?;
    publish_all(&dev, &mut tx, B, 100, 100, 5)?;
    let b = status_until(&dev, B, 3, |s| s.to_dev_packets == 100)?;
    ensure!(b.to_dev_packets == 100, "lost wake-up: B's slots not consumed after A stopped: {b:?}");
    Ok(())
}

/// Defect 1, second half: a `udp` sender blocked on a full send buffer
/// does not hold the other streams of the to-device ring; its own
/// datagrams all leave, in order, at the shaped rate (the EAGAIN and
/// write-space path).
pub(crate) fn d1_head_of_line_blocking() -> TestResult {
    const A: u32 = 1;
    const B: u32 = 2;
    // What the socket's minimal send buffer and the stream's 64 KiB
    // backlog in the module hold together, so nothing is dropped.
    const NA: u32 = 50;
    const NB: u32 = 3000;
    let (dev, region) = session(256)?;
    shaped_sender(&dev, A)?;
    dev.start_stream(B, abi::PORT_NULL, abi::DIR_TO_DEVICE).map_err(fail("start B"))?;
    let mut tx = region.producer(RingId::ToDevice);
    let t = Instant::now();
    // A's datagrams take NA * ~1,050 bytes / RATE: over six seconds.
    publish_all(&dev, &mut tx, A, 1000, NA, 5)?;
    publish_all(&dev, &mut tx, B, 100, NB, 10)?;
    let b = status_until(&dev, B, 3, |s| s.to_dev_packets == u64::from(NB))?;
    let took = t.elapsed();
    ensure!(
        b.to_dev_packets == u64::from(NB) && took < Duration::from_millis(3500),
        "B waited behind the blocked stream A: {} of {NB} after {took:?}",
        b.to_dev_packets
    );
    let a = net_status_until(&dev, A, |c| c.tx_packets == u64::from(NA))?;
    ensure!(a.tx_packets == u64::from(NA) && a.tx_errors == 0 && a.tx_dropped == 0, "A did not send all {NA}: {a:?}");
    ensure!(a.tx_blocked > 0, "A never met a full send buffer: {a:?}");
    let st = dev.status(abi::STATUS_SESSION_ONLY).map_err(fail("GET_STATUS"))?;
    ensure!(st.session.invalid_slots == 0, "{:?}", st.session);
    Ok(())
}

/// Defect 2: `release` returned through module text after dropping the
/// module reference. Opens and closes race rmmod and insmod; a use of
/// freed module memory is a splat on the console, which fails the run.
pub(crate) fn d2_module_text_after_unload() -> TestResult {
    const KO: &str = "/lib/modules/rtpmgr.ko";
    let stop = AtomicBool::new(false);
    let opens = AtomicU64::new(0);
    let mut reloads = 0u32;
    let name = c"rtpmgr";
    let load = || -> Result<(), String> {
        let f = std::fs::File::open(KO).map_err(fail("open rtpmgr.ko"))?;
        // SAFETY: finit_module(fd, "", 0) with a valid fd and an empty
        // NUL-terminated parameter string.
        let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
        ensure!(rc == 0, "insmod: {}", std::io::Error::last_os_error());
        Ok(())
    };
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(super::DEV) {
                    opens.fetch_add(1, Ordering::Relaxed);
                    drop(f);
                }
            }
        });
        let t = Instant::now();
        let mut r = Ok(());
        while t.elapsed() < Duration::from_secs(5) {
            // SAFETY: delete_module(name, O_NONBLOCK) with a NUL-terminated name.
            let rc = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
            if rc == 0 {
                reloads += 1;
                if let Err(e) = load() {
                    r = Err(e);
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        r
    });
    // The device node devtmpfs made again: give it the udev rule's mode.
    let _ = std::os::unix::fs::chown(super::DEV, Some(0), Some(RTPMGR_GID));
    let _ = std::fs::set_permissions(super::DEV, std::os::unix::fs::PermissionsExt::from_mode(0o660));
    result?;
    let opens = opens.load(Ordering::Relaxed);
    println!("  {reloads} unloads and reloads against {opens} opens and closes");
    ensure!(reloads > 0 && opens > 0, "no race: {reloads} reloads, {opens} opens");
    open()?.info().map_err(fail("GET_INFO after the reloads"))?;
    Ok(())
}

/// Defect 3: CONFIGURE_BUFFER while the region is mapped is EBUSY, also
/// when the mapping was split or moved; once every part is unmapped it
/// works again.
pub(crate) fn d3_configure_while_mapped() -> TestResult {
    use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
    use std::num::NonZeroUsize;
    let d = open()?;
    let cfg = d.configure(64, 2048).map_err(fail("configure"))?;
    let region = d.map(&cfg).map_err(fail("map"))?;
    expect_errno("configure while mapped", d.configure(64, 2048), Errno::EBUSY)?;
    expect_errno("a larger geometry while mapped", d.configure(1024, 4096), Errno::EBUSY)?;
    drop(region);
    let cfg = d.configure(16, 4096).map_err(fail("configure after munmap"))?;
    let len = cfg.mmap_size as usize;
    let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    let nz = NonZeroUsize::new(len).ok_or("empty region")?;
    // Split: a hole in the middle leaves two mappings.
    // SAFETY: a fresh shared mapping of the device; unmapped below.
    let p = unsafe { mmap(None, nz, rw, MapFlags::MAP_SHARED, d.file(), 0) }.map_err(fail("mmap"))?;
    let base = p.as_ptr() as usize;
    // SAFETY: a page inside our own mapping.
    unsafe { munmap(std::ptr::NonNull::new((base + 4096) as *mut _).ok_or("null")?, 4096) }
        .map_err(fail("munmap a page"))?;
    expect_errno("configure with a split mapping", d.configure(16, 4096), Errno::EBUSY)?;
    // SAFETY: the rest of our own mapping (the hole is unmapped already).
    unsafe { munmap(p, len) }.map_err(fail("munmap"))?;
    d.configure(16, 4096).map_err(fail("configure after the split mapping went"))?;
    // Moved by mremap: still mapped.
    // SAFETY: as above.
    let p = unsafe { mmap(None, nz, rw, MapFlags::MAP_SHARED, d.file(), 0) }.map_err(fail("mmap"))?;
    // A place to move it to: an anonymous reservation of the same size.
    // SAFETY: a fresh private anonymous mapping, replaced by the move.
    let to = unsafe { nix::sys::mman::mmap_anonymous(None, nz, ProtFlags::PROT_NONE, MapFlags::MAP_PRIVATE) };
    let to = to.map_err(fail("mmap a destination"))?;
    // SAFETY: moves our own mapping (same size: VM_DONTEXPAND allows it)
    // over our own reservation.
    let q = unsafe { libc::mremap(p.as_ptr(), len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to.as_ptr()) };
    ensure!(q != libc::MAP_FAILED, "mremap: {}", std::io::Error::last_os_error());
    expect_errno("configure with a moved mapping", d.configure(16, 4096), Errno::EBUSY)?;
    // SAFETY: the moved mapping, ours.
    unsafe { munmap(std::ptr::NonNull::new(q).ok_or("null")?, len) }.map_err(fail("munmap moved"))?;
    d.configure(16, 4096).map_err(fail("configure after the moved mapping went"))?;
    Ok(())
}

/// Defect 4: the rings are charged to the caller's RLIMIT_MEMLOCK (as
/// AF_XDP's umem is) unless it has CAP_IPC_LOCK; the copy queue is bounded
/// in bytes; the mapping is left out of core dumps (VM_DONTDUMP).
pub(crate) fn d4_memory_accounting() -> TestResult {
    // (a) A user in group rtpmgr without CAP_IPC_LOCK and a 256 KiB
    // RLIMIT_MEMLOCK: a 1 MiB region is refused, a 24 KiB one is not.
    let nobody = 65534;
    let check = || {
        let lim = libc::rlimit { rlim_cur: 256 << 10, rlim_max: 256 << 10 };
        // SAFETY: a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
            return 253;
        }
        match open() {
            Err(_) => 254,
            Ok(d) => match d.configure(256, 2048) {
                Ok(_) => 0,
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {
                    if d.configure(8, 256).is_ok() {
                        1
                    } else {
                        2
                    }
                }
                Err(_) => 3,
            },
        }
    };
    // SAFETY: the child drops its credentials, makes a few ioctls and
    // leaves with _exit; this test binary is single-threaded here.
    let code = unsafe { rtpmgr_test_kit::user::as_user(nobody, nobody, &[RTPMGR_GID], check) }?;
    match code {
        1 => {}
        0 => return Err("a 1 MiB region was not charged to RLIMIT_MEMLOCK (256 KiB)".into()),
        2 => return Err("a 24 KiB region was refused under a 256 KiB RLIMIT_MEMLOCK".into()),
        c => return Err(format!("child failed: {c}")),
    }

    // (b) The copy queue: returned packets of 64 KiB, nobody reading.
    use std::io::{Read, Write};
    let d = open()?;
    d.configure(8, 256).map_err(fail("configure"))?;
    d.start_stream(3, abi::PORT_LOOPBACK, abi::DIR_BOTH).map_err(fail("start"))?;
    let hs = abi::SLOT_HEADER_SIZE as usize;
    let len = abi::MAX_SLOT_SIZE as usize - hs;
    let mut pkt = vec![0u8; hs + len];
    let mut f = d.file();
    const N: u64 = 64;
    for i in 0..N {
        let h = SlotHeader { len: len as u32, stream_id: 3, ..Default::default() };
        // SAFETY: SlotHeader is plain old data of SLOT_HEADER_SIZE bytes.
        let hb = unsafe { std::slice::from_raw_parts(&h as *const SlotHeader as *const u8, hs) };
        pkt[..hs].copy_from_slice(hb);
        pkt[hs..].fill(i as u8);
        f.write_all(&pkt).map_err(fail("write"))?;
    }
    let s = d.status(3).map_err(fail("status"))?.stream;
    let mut back = vec![0u8; hs + len];
    let mut queued = 0u64;
    while let Ok(n) = f.read(&mut back) {
        ensure!(n == hs + len && back[hs..].iter().all(|&b| b == queued as u8), "returned packet {queued} differs");
        queued += 1;
    }
    ensure!(
        s.ring_full_drops > 0 && queued * (hs + len) as u64 <= 1 << 20 && queued + s.ring_full_drops == N,
        "copy queue not bounded in bytes: {queued} packets of 64 KiB queued, {} dropped",
        s.ring_full_drops
    );

    // (c) VM_DONTDUMP: "dd" in the mapping's VmFlags.
    let d = open()?;
    let cfg = d.configure(8, 256).map_err(fail("configure"))?;
    let region = d.map(&cfg).map_err(fail("map"))?;
    let base = region.ctrl_word(RingId::ToDevice, rtpmgr_ring::CtrlWord::Producer) as *const _ as usize
        - abi::TO_DEV_CTRL_OFFSET as usize;
    let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(fail("smaps"))?;
    let block: Vec<&str> =
        smaps.lines().skip_while(|l| !l.starts_with(&format!("{base:x}-"))).take_while(|l| !l.is_empty()).collect();
    let flags = block.iter().find(|l| l.starts_with("VmFlags:")).ok_or("mapping not in smaps")?;
    ensure!(flags.split_whitespace().any(|f| f == "dd"), "not VM_DONTDUMP: {flags}");
    Ok(())
}

/// Unbound platform devices the test may hand to the media-port driver
/// (qemu's virt machine has 32 virtio-mmio transports, most without a
/// device behind them).
fn spare_platform_devices(n: usize) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/bus/platform/devices")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.retain(|name| {
        name.ends_with(".virtio_mmio")
            && std::fs::symlink_metadata(format!("/sys/bus/platform/devices/{name}/driver")).is_err()
    });
    v.sort();
    v.truncate(n);
    v
}

/// Defect 5: two probes at once took the same registry slot. Bind six
/// devices to the driver concurrently, many times: every bound port must
/// get an index and a name of its own.
pub(crate) fn d5_port_slot_race() -> TestResult {
    const K: usize = 6;
    let devs = spare_platform_devices(K);
    ensure!(devs.len() == K, "only {} spare platform devices: {devs:?}", devs.len());
    let over = |name: &str, v: &str| std::fs::write(format!("/sys/bus/platform/devices/{name}/driver_override"), v);
    for n in &devs {
        over(n, "rtpmgr-media-port").map_err(fail("driver_override"))?;
    }
    let d = open()?;
    let base = d.info().map_err(fail("info"))?.port_count;
    let r = (|| -> TestResult {
        for round in 0..40 {
            let results: Vec<std::io::Result<()>> = std::thread::scope(|s| {
                let hs: Vec<_> =
                    devs.iter().map(|n| s.spawn(move || std::fs::write(format!("{DRIVER_DIR}/bind"), n))).collect();
                hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("panic")))).collect()
            });
            for (n, r) in devs.iter().zip(&results) {
                r.as_ref().map_err(|e| format!("round {round}: bind {n}: {e}"))?;
            }
            let count = d.info().map_err(fail("info"))?.port_count;
            let mut names: Vec<String> =
                (3..count).filter_map(|i| d.port(i).ok()).map(|p| p.name_str().unwrap_or("?").to_owned()).collect();
            names.sort();
            names.dedup();
            ensure!(names.len() == K, "round {round}: {K} devices bound, ports {names:?} (count {count}, was {base})");
            for n in &devs {
                std::fs::write(format!("{DRIVER_DIR}/unbind"), n).map_err(fail("unbind"))?;
            }
        }
        Ok(())
    })();
    for n in &devs {
        let _ = std::fs::write(format!("{DRIVER_DIR}/unbind"), n);
        let _ = over(n, "\n");
    }
    r
}

/// Defect 6: a pending socket error (ICMP port unreachable on a connected
/// stream) made the worker take the socket for empty and sleep with a
/// datagram queued.
pub(crate) fn d6_rx_error_reads_as_empty() -> TestResult {
    const S: u32 = 4;
    let (dev, region) = session(64)?;
    let peer = UdpSocket::bind("127.0.0.1:0").map_err(fail("bind peer"))?;
    let peer_addr = peer.local_addr().map_err(fail("local_addr"))?;
    let port = free_port("127.0.0.1")?;
    let local = addr("127.0.0.1", port);
    start_net(&dev, S, abi::DIR_BOTH, Some(local), Some(peer_addr))?;
    // The peer goes away; the stream sends to it: ICMP port unreachable,
    // a pending ECONNREFUSED on the stream's connected socket.
    drop(peer);
    let mut tx = region.producer(RingId::ToDevice);
    publish_all(&dev, &mut tx, S, 20, 1, 2)?;
    let c = net_status_until(&dev, S, |c| c.tx_packets + c.tx_errors == 1)?;
    ensure!(c.tx_packets == 1, "{c:?}");
    std::thread::sleep(Duration::from_millis(200));
    // The peer comes back and sends one datagram.
    let peer = UdpSocket::bind(peer_addr).map_err(fail("bind peer again"))?;
    peer.send_to(&numbered(1), local).map_err(fail("send"))?;
    let mut rx = region.consumer(RingId::FromDevice);
    let t = Instant::now();
    while rx.available() == Ok(0) && t.elapsed() < Duration::from_secs(2) {
        let _ = dev.wait(abi::WAIT_FROM_DEV_READY, 100);
    }
    let n = rx.available().map_err(|e| format!("{e:?}"))?;
    ensure!(n == 1, "the datagram waits behind a socket error: {n} in the ring after {:?}", t.elapsed());
    let h = rx.header(0);
    ensure!(rx.payload(0, h.len) == &numbered(1)[..], "the datagram differs");
    let c = dev.net_status(S).map_err(fail("GET_NET_STATUS"))?;
    ensure!(c.rx_errors == 1 && c.rx_packets == 1, "the socket error not counted once: {c:?}");
    Ok(())
}

/// The `rtpmgr-stream:` lines of the session's fdinfo, read in one go.
fn fdinfo_streams(dev: &Device) -> usize {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", dev.file().as_raw_fd()))
        .map(|t| t.lines().filter(|l| l.starts_with("rtpmgr-stream:")).count())
        .unwrap_or(usize::MAX)
}

/// Defect 7, first half: RESET stops every stream in one step: a reader of
/// the session's state sees all of them or none, never some.
pub(crate) fn d7_reset_not_atomic() -> TestResult {
    const N: usize = 8;
    let (dev, _region) = session(64)?;
    for round in 0..5 {
        for id in 0..N as u32 {
            start_net(&dev, id, abi::DIR_FROM_DEVICE, Some(addr("127.0.0.1", free_port("127.0.0.1")?)), None)?;
        }
        ensure!(fdinfo_streams(&dev) == N, "{N} streams not in fdinfo");
        let stop = AtomicBool::new(false);
        let seen = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let k = fdinfo_streams(&dev);
                    if k != 0 && k != N {
                        seen.push(k);
                    }
                }
                seen
            });
            std::thread::sleep(Duration::from_millis(20));
            let r = dev.reset();
            std::thread::sleep(Duration::from_millis(20));
            stop.store(true, Ordering::Relaxed);
            r.map(|()| h.join().unwrap_or_default())
        });
        let seen = seen.map_err(fail("RESET"))?;
        ensure!(seen.is_empty(), "round {round}: RESET seen half done: {:?} of {N} streams running", seen);
        ensure!(fdinfo_streams(&dev) == 0, "streams survived RESET");
    }
    Ok(())
}

/// A session whose to-device ring is full: a loopback stream whose
/// returned packets fill the (unread) from-device ring, so the worker
/// cannot consume more.
fn full_ring() -> Result<(Device, std::sync::Arc<rtpmgr_ring::Region>), String> {
    let d = open()?;
    let cfg = d.configure(8, 256).map_err(fail("configure"))?;
    let region = d.map(&cfg).map_err(fail("map"))?;
    d.start_stream(0, abi::PORT_LOOPBACK, abi::DIR_BOTH).map_err(fail("start"))?;
    let mut tx = region.producer(RingId::ToDevice);
    let t = Instant::now();
    loop {
        publish(&d, &mut tx, 0, 10, 8)?;
        std::thread::sleep(Duration::from_millis(20));
        if tx.free(1) == 0 && region.snapshot(RingId::FromDevice).0 == 8 {
            return Ok((d, region));
        }
        ensure!(t.elapsed() < Duration::from_secs(5), "the rings did not fill");
    }
}

/// Block in WAIT for to-device space while `act` runs on another thread:
/// WAIT must return ready within a second, not at its timeout.
fn wait_woken_by(d: &Device, what: &str, act: impl FnOnce(&Device) -> std::io::Result<()> + Send) -> TestResult {
    let (r, took) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let t = Instant::now();
            (d.wait(abi::WAIT_TO_DEV_SPACE, 5000), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        let a = act(d);
        let (r, took) = h.join().unwrap_or((Err(std::io::Error::other("panic")), Duration::ZERO));
        (a.and(r), took)
    });
    let ready = r.map_err(|e| format!("WAIT across {what}: {e} after {took:?}"))?;
    ensure!(ready & abi::WAIT_TO_DEV_SPACE != 0 && took < Duration::from_secs(2), "{what}: {ready:#x} after {took:?}");
    Ok(())
}

/// Defect 7, second half: RESET and STOP_STREAM wake WAIT sleepers (here
/// one waiting for to-device space, which both make).
pub(crate) fn d7_reset_stop_wake_waiters() -> TestResult {
    let (d, _region) = full_ring()?;
    wait_woken_by(&d, "RESET", |d| d.reset())?;
    let (d, _region) = full_ring()?;
    wait_woken_by(&d, "STOP_STREAM", |d| d.stop_stream(0))?;
    Ok(())
}
