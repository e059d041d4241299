// SPDX-License-Identifier: MIT
//! `rtpmgr-guest-tests [FILTER...]`: the kernel module's tests, run inside
//! the booted qemuarm64 guest against the real `/dev/rtpmgr`. Built for
//! arm64 and, to check that 32-bit user space gets the same ABI through
//! `compat_ioctl`, for 32-bit ARM.
//!
//! Each test prints `ok NAME` or `FAILED NAME: why`; the last line is
//! `guest-tests: N passed, N failed`, and the exit status is 0 only if
//! nothing failed.

use nix::errno::Errno;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use rtpmgr_abi::{self as abi, IoctlArg, SlotHeader};
use rtpmgr_device::Device;
use rtpmgr_ring::{CtrlWord, Region, RingId};
use std::io;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEV: &str = "/dev/rtpmgr";

type TestResult = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

mod defects;
mod fast;
mod net;
mod shaper;
mod ts;

fn errno_of<T>(r: io::Result<T>) -> Option<Errno> {
    r.err().and_then(|e| e.raw_os_error()).map(Errno::from_raw)
}

/// `r` must fail with `want`.
fn expect_errno<T>(what: &str, r: io::Result<T>, want: Errno) -> TestResult {
    match errno_of(r) {
        Some(e) if e == want => Ok(()),
        got => Err(format!("{what}: expected {want}, got {got:?}")),
    }
}

fn open() -> Result<Device, String> {
    Device::open(Path::new(DEV)).map_err(|e| e.to_string())
}

fn fail<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// An ioctl with a pointer to a live argument of the encoded size.
fn raw_arg<T>(d: &Device, cmd: u32, arg: &mut T) -> Result<i32, Errno> {
    // SAFETY: `arg` is a live, writable `T`; the commands used with it
    // encode at most `size_of::<T>()` bytes (the kernel refuses others).
    unsafe { d.raw_ioctl(cmd, arg as *mut T as usize) }
}

/// An ioctl whose argument is a plain number or an address in the first
/// page, which is never mapped (mmap_min_addr): the kernel must refuse it.
fn raw_addr(d: &Device, cmd: u32, addr: usize) -> Result<i32, Errno> {
    assert!(addr < 4096);
    // SAFETY: nothing lives at `addr`, so the kernel cannot corrupt our
    // memory through it; at worst it reports EFAULT.
    unsafe { d.raw_ioctl(cmd, addr) }
}

// ---------------------------------------------------------------------------

fn info_and_ports() -> TestResult {
    let d = open()?;
    let info = d.info().map_err(fail("GET_INFO"))?;
    ensure!(info.size == abi::Info::SIZE && info.abi_version == abi::ABI_VERSION, "info {info:?}");
    let want = abi::FEATURE_MMAP_RINGS
        | abi::FEATURE_RW_COPY
        | abi::FEATURE_NEED_WAKEUP
        | abi::FEATURE_NET_STREAMS
        | abi::FEATURE_STATS_AREA;
    ensure!(info.features & want == want, "features {:#x}", info.features);
    ensure!(info.max_streams == abi::MAX_STREAMS && info.slot_header_size == abi::SLOT_HEADER_SIZE, "{info:?}");
    ensure!(info.max_session_bytes == 64 << 20, "default pin limit {}", info.max_session_bytes);
    ensure!(info.port_count >= 2, "ports {}", info.port_count);
    let names: Vec<String> = (0..info.port_count)
        .map(|i| d.port(i).map(|p| p.name_str().unwrap_or("?").to_owned()))
        .collect::<Result<_, _>>()
        .map_err(fail("GET_PORT"))?;
    ensure!(names[0] == "loopback" && names[1] == "null", "ports {names:?}");
    ensure!(d.port(0).map_err(fail("GET_PORT"))?.kind == abi::PORT_KIND_LOOPBACK, "loopback kind");
    expect_errno("GET_PORT past the end", d.port(info.port_count), Errno::ENODEV)?;
    Ok(())
}

fn ioctl_errors() -> TestResult {
    let d = open()?;
    // Wrong order: nothing works before CONFIGURE_BUFFER.
    expect_errno("START before CONFIGURE", d.start_stream(0, abi::PORT_LOOPBACK, abi::DIR_BOTH), Errno::ENOTCONN)?;
    expect_errno("KICK before CONFIGURE", d.kick(), Errno::ENOTCONN)?;
    expect_errno("WAIT before CONFIGURE", d.wait(abi::WAIT_FROM_DEV_READY, 0), Errno::ENOTCONN)?;
    let st = d.status(abi::STATUS_SESSION_ONLY).map_err(fail("GET_STATUS"))?;
    ensure!(st.state == abi::STATE_UNCONFIGURED, "state {}", st.state);

    // Unknown commands.
    let unknown = abi::ioc(abi::IOC_NONE, abi::RTPMGR_IOC_MAGIC, 0x7f, 0);
    ensure!(raw_addr(&d, unknown, 0) == Err(Errno::ENOTTY), "unknown nr");
    let other_type = abi::ioc(abi::IOC_NONE, 0x42, 0x06, 0);
    ensure!(raw_addr(&d, other_type, 0) == Err(Errno::ENOTTY), "unknown type");
    // A known nr with another size is another command.
    let resized = abi::ioc(abi::IOC_READ | abi::IOC_WRITE, abi::RTPMGR_IOC_MAGIC, 0x01, 36);
    let mut cfg = abi::BufferConfig { size: 36, slot_count: 64, slot_size: 2048, ..Default::default() };
    ensure!(raw_arg(&d, resized, &mut cfg) == Err(Errno::ENOTTY), "resized cmd");

    // Bad user pointers.
    ensure!(raw_addr(&d, abi::RTPMGR_IOC_CONFIGURE_BUFFER, 16) == Err(Errno::EFAULT), "EFAULT in");
    ensure!(raw_addr(&d, abi::RTPMGR_IOC_GET_INFO, 8) == Err(Errno::EFAULT), "EFAULT out");

    // Bad size field, flags, geometry.
    let mut bad = abi::BufferConfig { size: 39, slot_count: 64, slot_size: 2048, ..Default::default() };
    ensure!(raw_arg(&d, abi::RTPMGR_IOC_CONFIGURE_BUFFER, &mut bad) == Err(Errno::EINVAL), "size field");
    bad.size = abi::BufferConfig::SIZE;
    bad.flags = 1;
    ensure!(raw_arg(&d, abi::RTPMGR_IOC_CONFIGURE_BUFFER, &mut bad) == Err(Errno::EINVAL), "flags");
    expect_errno("slot_count 1000", d.configure(1000, 2048), Errno::EINVAL)?;
    expect_errno("slot_size 100", d.configure(1024, 100), Errno::EINVAL)?;
    expect_errno("over the pin limit", d.configure(abi::MAX_SLOT_COUNT, abi::MAX_SLOT_SIZE), Errno::ENOMEM)?;

    let cfg = d.configure(64, 2048).map_err(fail("CONFIGURE_BUFFER"))?;
    ensure!(cfg.mmap_size == 4096 + 2 * 64 * 2048 + 32_768, "mmap_size {}", cfg.mmap_size);
    ensure!(cfg.to_dev_slots_offset == 4096 && cfg.from_dev_slots_offset == 4096 + 64 * 2048, "{cfg:?}");
    ensure!(d.status(abi::STATUS_SESSION_ONLY).map_err(fail("status"))?.state == abi::STATE_CONFIGURED, "configured");

    // START_STREAM argument checks.
    expect_errno("stream id 64", d.start_stream(64, abi::PORT_LOOPBACK, abi::DIR_BOTH), Errno::EINVAL)?;
    expect_errno("direction 0", d.start_stream(0, abi::PORT_LOOPBACK, 0), Errno::EINVAL)?;
    expect_errno("direction 4", d.start_stream(0, abi::PORT_LOOPBACK, 4), Errno::EINVAL)?;
    expect_errno("port 99", d.start_stream(0, 99, abi::DIR_BOTH), Errno::ENODEV)?;
    let mut spec =
        abi::StreamSpec { size: abi::StreamSpec::SIZE, stream_id: 0, port: 0, direction: 3, flags: 8, reserved: 0 };
    ensure!(raw_arg(&d, abi::RTPMGR_IOC_START_STREAM, &mut spec) == Err(Errno::EINVAL), "stream flags");
    d.start_stream(0, abi::PORT_LOOPBACK, abi::DIR_BOTH).map_err(fail("START"))?;
    expect_errno("START twice", d.start_stream(0, abi::PORT_NULL, abi::DIR_TO_DEVICE), Errno::EEXIST)?;
    let st = d.status(0).map_err(fail("status"))?;
    ensure!(
        st.state == abi::STATE_STREAMING && st.stream.running == 1 && st.stream.direction == abi::DIR_BOTH,
        "{st:?}"
    );
    ensure!(d.port(0).map_err(fail("port"))?.users >= 1, "port users");
    expect_errno("CONFIGURE while streaming", d.configure(64, 2048), Errno::EBUSY)?;
    expect_errno("status id 64", d.status(64), Errno::EINVAL)?;
    expect_errno("STOP not running", d.stop_stream(5), Errno::ENOENT)?;
    expect_errno("STOP id 64", d.stop_stream(64), Errno::EINVAL)?;
    d.stop_stream(0).map_err(fail("STOP"))?;

    // WAIT argument checks and outcomes.
    expect_errno("WAIT no flags", d.wait(0, 10), Errno::EINVAL)?;
    expect_errno("WAIT unknown flag", d.wait(8, 10), Errno::EINVAL)?;
    expect_errno("WAIT too long", d.wait(abi::WAIT_FROM_DEV_READY, abi::MAX_WAIT_MS + 1), Errno::EINVAL)?;
    let t = Instant::now();
    expect_errno("WAIT times out", d.wait(abi::WAIT_FROM_DEV_READY, 50), Errno::ETIMEDOUT)?;
    ensure!(t.elapsed() >= Duration::from_millis(40), "returned after {:?}", t.elapsed());
    let ready = d.wait(abi::WAIT_TO_DEV_SPACE | abi::WAIT_FROM_DEV_READY, 0).map_err(fail("WAIT"))?;
    ensure!(ready == abi::WAIT_TO_DEV_SPACE, "ready {ready:#x}");
    let st = d.status(abi::STATUS_SESSION_ONLY).map_err(fail("status"))?;
    ensure!(st.session.wait_timeouts == 1 && st.session.waits == 1, "{:?}", st.session);

    d.reset().map_err(fail("RESET"))?;
    let st = d.status(abi::STATUS_SESSION_ONLY).map_err(fail("status"))?;
    ensure!(st.state == abi::STATE_CONFIGURED && st.session == abi::SessionCounters::default(), "{st:?}");
    Ok(())
}

fn raw_map(d: &Device, len: usize, prot: ProtFlags, flags: MapFlags, offset: libc::off_t) -> io::Result<()> {
    let len = NonZeroUsize::new(len).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a fresh mapping chosen by the kernel; unmapped right away.
    let p = unsafe { mmap(None, len, prot, flags, d.file(), offset) }
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    // SAFETY: `p` is the mapping just created, of `len` bytes.
    unsafe { munmap(p, len.get()) }.map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    Ok(())
}

fn mmap_checks() -> TestResult {
    let d = open()?;
    let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    expect_errno("mmap before CONFIGURE", raw_map(&d, 8192, rw, MapFlags::MAP_SHARED, 0), Errno::EINVAL)?;
    let cfg = d.configure(64, 2048).map_err(fail("configure"))?;
    let len = cfg.mmap_size as usize;
    expect_errno("short", raw_map(&d, len - 4096, rw, MapFlags::MAP_SHARED, 0), Errno::EINVAL)?;
    expect_errno("long", raw_map(&d, len + 4096, rw, MapFlags::MAP_SHARED, 0), Errno::EINVAL)?;
    expect_errno("offset", raw_map(&d, len, rw, MapFlags::MAP_SHARED, 4096), Errno::EINVAL)?;
    expect_errno("private", raw_map(&d, len, rw, MapFlags::MAP_PRIVATE, 0), Errno::EINVAL)?;
    expect_errno("exec", raw_map(&d, len, rw | ProtFlags::PROT_EXEC, MapFlags::MAP_SHARED, 0), Errno::EINVAL)?;
    raw_map(&d, len, rw, MapFlags::MAP_SHARED, 0).map_err(fail("exact mapping"))?;

    // The real mapping: header as the ABI says.
    let region = d.map(&cfg).map_err(fail("map"))?;
    ensure!(region.geometry().slot_count == 64 && region.len() == len, "region {region:?}");
    let base =
        region.ctrl_word(RingId::ToDevice, CtrlWord::Producer) as *const _ as usize - abi::TO_DEV_CTRL_OFFSET as usize;

    // fork: the child does not inherit the mapping (VM_DONTCOPY).
    // SAFETY: the child only reads /proc/self/maps and exits.
    match unsafe { nix::unistd::fork() }.map_err(fail("fork"))? {
        nix::unistd::ForkResult::Child => {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
            let inherited = maps.lines().any(|l| l.starts_with(&format!("{base:x}-")));
            std::process::exit(if inherited { 1 } else { 0 });
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).map_err(fail("waitpid"))?;
            ensure!(st == nix::sys::wait::WaitStatus::Exited(child, 0), "child saw the mapping: {st:?}");
        }
    }
    // mremap cannot grow it (VM_DONTEXPAND).
    // SAFETY: asks the kernel to grow our own mapping; it must refuse, and
    // on refusal nothing changes.
    let grown = unsafe { libc::mremap(base as *mut libc::c_void, len, len + 4096, libc::MREMAP_MAYMOVE) };
    ensure!(grown == libc::MAP_FAILED, "mremap grew the region");
    Ok(())
}

/// Packet `seq`: mixed sizes 0..=cap, content derived from seq.
fn packet(seq: u64, cap: u32, out: &mut [u8]) -> usize {
    let len = match seq % 5 {
        0 => cap as u64,
        1 => 0,
        _ => seq.wrapping_mul(2_654_435_761) % (cap as u64 + 1),
    } as usize;
    for (j, b) in out[..len].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(13).wrapping_add(j as u8);
    }
    len
}

fn check_packet(seq: u64, cap: u32, got: &[u8], scratch: &mut [u8]) -> TestResult {
    let len = packet(seq, cap, scratch);
    ensure!(got.len() == len, "packet {seq}: length {} != {len}", got.len());
    ensure!(got == &scratch[..len], "packet {seq}: content differs");
    Ok(())
}

/// A session with a loopback stream over mapped rings.
struct RingSession {
    dev: Device,
    region: Arc<Region>,
    tx: rtpmgr_ring::Producer,
    rx: rtpmgr_ring::Consumer,
    syscalls: u64,
}

impl RingSession {
    fn new(slot_count: u32, slot_size: u32, stream: u32) -> Result<RingSession, String> {
        Self::on_port(slot_count, slot_size, stream, abi::PORT_LOOPBACK)
    }

    fn on_port(slot_count: u32, slot_size: u32, stream: u32, port: u32) -> Result<RingSession, String> {
        let dev = open()?;
        let cfg = dev.configure(slot_count, slot_size).map_err(fail("configure"))?;
        let region = dev.map(&cfg).map_err(fail("map"))?;
        dev.start_stream(stream, port, abi::DIR_BOTH).map_err(fail("start"))?;
        let tx = region.producer(RingId::ToDevice);
        let rx = region.consumer(RingId::FromDevice);
        Ok(RingSession { dev, region, tx, rx, syscalls: 0 })
    }

    /// Send `total` packets on `stream` and check each one coming back.
    fn round_trip(&mut self, stream: u32, total: u64, first_seq: u64) -> TestResult {
        let cap = self.region.geometry().payload_capacity();
        let mut scratch = vec![0u8; cap as usize];
        let (mut sent, mut got) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(300);
        while got < total {
            ensure!(Instant::now() < deadline, "stalled: sent {sent}, received {got}");
            let want = (total - sent).min(64) as u32;
            let free = self.tx.free(want).min(want);
            for i in 0..free {
                let seq = first_seq + sent + u64::from(i);
                let len = packet(seq, cap, self.tx.payload_mut(i));
                self.tx.set_header(i, &SlotHeader { len: len as u32, stream_id: stream, ..Default::default() });
            }
            sent += u64::from(free);
            if self.tx.publish(free) {
                self.dev.kick().map_err(fail("KICK"))?;
                self.syscalls += 1;
            }
            let n = self.rx.available().map_err(|e| format!("bad from-device indices {e:?}"))?;
            for i in 0..n {
                let h = self.rx.header(i);
                ensure!(h.stream_id == stream, "stream id {} != {stream}", h.stream_id);
                check_packet(first_seq + got, cap, self.rx.payload(i, h.len), &mut scratch)?;
                got += 1;
            }
            if self.rx.release(n) {
                self.dev.kick().map_err(fail("KICK"))?;
                self.syscalls += 1;
            }
            if n == 0 && free == 0 {
                // Nothing to do until the kernel moves something.
                match self.dev.wait(abi::WAIT_FROM_DEV_READY, 1000) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {}
                    Err(e) => return Err(format!("WAIT: {e}")),
                }
                self.syscalls += 1;
            }
        }
        Ok(())
    }
}

fn loopback_million_ring() -> TestResult {
    const N: u64 = 1_000_000;
    let mut s = RingSession::new(1024, 2048, 7)?;
    let t = Instant::now();
    s.round_trip(7, N, 0)?;
    let secs = t.elapsed().as_secs_f64();
    let st = s.dev.status(7).map_err(fail("status"))?;
    ensure!(st.stream.to_dev_packets == N && st.stream.from_dev_packets == N, "{:?}", st.stream);
    ensure!(st.session.invalid_slots == 0 && st.session.invalid_indices == 0, "{:?}", st.session);
    // Need-wakeup and batching: far fewer syscalls than packets.
    ensure!(s.syscalls * 8 < N, "{} syscalls for {N} packets", s.syscalls);
    println!(
        "  {N} packets via mmap rings in {secs:.2} s ({:.0} pkt/s), {} syscalls ({:.4} per packet), {} worker sleeps",
        N as f64 / secs,
        s.syscalls,
        s.syscalls as f64 / N as f64,
        st.session.worker_sleeps
    );
    Ok(())
}

/// The copy path (write/read) with every packet checked. 100,000 packets,
/// not a million as through the rings: two syscalls a packet under TCG
/// take minutes per million, and the benchmark measures its rate.
fn loopback_copy_path() -> TestResult {
    use std::io::{Read, Write};
    const N: u64 = 100_000;
    let d = open()?;
    d.configure(8, 2048).map_err(fail("configure"))?;
    d.start_stream(3, abi::PORT_LOOPBACK, abi::DIR_BOTH).map_err(fail("start"))?;
    let cap = 2048 - abi::SLOT_HEADER_SIZE;
    let hs = abi::SLOT_HEADER_SIZE as usize;
    let mut out = vec![0u8; 2048];
    let mut back = vec![0u8; 2048];
    let mut scratch = vec![0u8; 2048];
    let mut f = d.file();
    let t = Instant::now();
    for seq in 0..N {
        let len = packet(seq, cap, &mut out[hs..]);
        let h = SlotHeader { len: len as u32, stream_id: 3, ..Default::default() };
        // SAFETY: SlotHeader is plain old data of SLOT_HEADER_SIZE bytes.
        let hb = unsafe { std::slice::from_raw_parts(&h as *const SlotHeader as *const u8, hs) };
        out[..hs].copy_from_slice(hb);
        let w = f.write(&out[..hs + len]).map_err(fail("write"))?;
        ensure!(w == hs + len, "short write {w}");
        let r = f.read(&mut back).map_err(fail("read"))?;
        ensure!(r >= hs, "short read {r}");
        let stream = u32::from_ne_bytes([back[8], back[9], back[10], back[11]]);
        let rlen = u32::from_ne_bytes([back[0], back[1], back[2], back[3]]) as usize;
        ensure!(stream == 3 && rlen == r - hs, "header of packet {seq}: stream {stream}, len {rlen}, read {r}");
        check_packet(seq, cap, &back[hs..r], &mut scratch)?;
    }
    let secs = t.elapsed().as_secs_f64();
    // Empty now: read() says EAGAIN.
    ensure!(f.read(&mut back).err().and_then(|e| e.raw_os_error()) == Some(libc::EAGAIN), "read on empty");
    // Malformed writes are refused.
    let h = SlotHeader { len: 99, stream_id: 3, ..Default::default() };
    // SAFETY: as above.
    let hb = unsafe { std::slice::from_raw_parts(&h as *const SlotHeader as *const u8, hs) };
    out[..hs].copy_from_slice(hb);
    ensure!(f.write(&out[..hs + 10]).err().and_then(|e| e.raw_os_error()) == Some(libc::EINVAL), "length mismatch");
    ensure!(f.write(&out[..10]).err().and_then(|e| e.raw_os_error()) == Some(libc::EINVAL), "short write");
    println!("  {N} packets via write()/read() in {secs:.2} s ({:.0} pkt/s)", N as f64 / secs);
    Ok(())
}

fn hostile_ring_writes() -> TestResult {
    let mut s = RingSession::new(64, 256, 0)?;
    let g = s.region.geometry();
    let word = |ring, w| s.region.ctrl_word(ring, w);
    // 1. Bad slot headers between good ones: counted invalid and skipped.
    let bad = [
        SlotHeader { len: g.payload_capacity() + 1, stream_id: 0, ..Default::default() },
        SlotHeader { len: u32::MAX, stream_id: 0, ..Default::default() },
        SlotHeader { len: 4, flags: 1, stream_id: 0, ..Default::default() },
        SlotHeader { len: 4, stream_id: 64, ..Default::default() },
        SlotHeader { len: 4, stream_id: u32::MAX, ..Default::default() },
        SlotHeader { len: 4, stream_id: 9, ..Default::default() }, // not running
    ];
    let free = s.tx.free(12);
    ensure!(free >= 12, "free {free}");
    for (k, h) in bad.iter().enumerate() {
        let i = 2 * k as u32;
        s.tx.payload_mut(i)[..4].copy_from_slice(&[k as u8; 4]);
        s.tx.set_header(i, &SlotHeader { len: 4, stream_id: 0, ..Default::default() });
        s.tx.set_header(i + 1, h);
    }
    if s.tx.publish(12) {
        s.dev.kick().map_err(fail("kick"))?;
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 6 {
        ensure!(Instant::now() < deadline, "only {} good packets came back", seen.len());
        let n = s.rx.available().map_err(|e| format!("{e:?}"))?;
        for i in 0..n {
            let h = s.rx.header(i);
            seen.push(s.rx.payload(i, h.len).to_vec());
        }
        s.rx.release(n);
        if n == 0 {
            let _ = s.dev.wait(abi::WAIT_FROM_DEV_READY, 100);
        }
    }
    ensure!(seen == (0..6u8).map(|k| vec![k; 4]).collect::<Vec<_>>(), "good packets {seen:?}");
    let st = s.dev.status(abi::STATUS_SESSION_ONLY).map_err(fail("status"))?;
    ensure!(st.session.invalid_slots == 6, "invalid_slots {}", st.session.invalid_slots);

    // 2. The producer jumps past the consumer: counted, nothing consumed.
    let (p0, c0, _) = s.region.snapshot(RingId::ToDevice);
    word(RingId::ToDevice, CtrlWord::Producer).store(c0.wrapping_add(g.slot_count + 5), Relaxed);
    s.dev.kick().map_err(fail("kick"))?;
    std::thread::sleep(Duration::from_millis(100));
    let st = s.dev.status(abi::STATUS_SESSION_ONLY).map_err(fail("status"))?;
    ensure!(st.session.invalid_indices >= 1, "bad producer not counted");
    ensure!(s.region.snapshot(RingId::ToDevice).1 == c0, "kernel consumed from an impossible range");
    // 3. Random words everywhere, kicked each time: the kernel survives.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = [CtrlWord::Producer, CtrlWord::Consumer, CtrlWord::Flags][(x % 3) as usize];
        let ring = if x & 8 == 0 { RingId::ToDevice } else { RingId::FromDevice };
        word(ring, w).store((x >> 16) as u32, Relaxed);
        if x & 0x30 == 0 {
            // Random slot headers too.
            let slot = (x >> 40) as usize % g.slot_count as usize;
            let base =
                word(RingId::ToDevice, CtrlWord::Producer) as *const _ as usize - abi::TO_DEV_CTRL_OFFSET as usize;
            let hdr = (base + g.to_dev_slots_offset() as usize + slot * g.slot_size as usize) as *mut u64;
            // SAFETY: inside our own mapping (slot < slot_count); the kernel
            // treats the contents as hostile, which is what is tested.
            unsafe { core::ptr::write_volatile(hdr, x) };
        }
        let _ = s.dev.kick();
    }
    let _ = p0;
    // 4. A slot rewritten after publishing: whatever the kernel read, it
    // validated; the session recovers with RESET.
    s.dev.reset().map_err(fail("RESET"))?;
    s.tx = s.region.producer(RingId::ToDevice);
    s.rx = s.region.consumer(RingId::FromDevice);
    s.dev.start_stream(0, abi::PORT_LOOPBACK, abi::DIR_BOTH).map_err(fail("start"))?;
    s.tx.free(1);
    s.tx.set_header(0, &SlotHeader { len: 8, stream_id: 0, ..Default::default() });
    s.tx.publish(1);
    let first = word(RingId::ToDevice, CtrlWord::Producer) as *const _ as usize - abi::TO_DEV_CTRL_OFFSET as usize
        + g.to_dev_slots_offset() as usize;
    // SAFETY: slot 0 of our own mapping; racing the kernel on purpose.
    unsafe { core::ptr::write_volatile(first as *mut u32, 100_000) };
    s.dev.kick().map_err(fail("kick"))?;
    std::thread::sleep(Duration::from_millis(50));
    // Drain whatever came back (0 or 1 packet) and reset again.
    s.dev.reset().map_err(fail("RESET"))?;
    s.tx = s.region.producer(RingId::ToDevice);
    s.rx = s.region.consumer(RingId::FromDevice);
    s.dev.start_stream(0, abi::PORT_LOOPBACK, abi::DIR_BOTH).map_err(fail("start"))?;
    // 5. The session still serves correct traffic.
    s.round_trip(0, 20_000, 1_000)?;
    Ok(())
}

fn two_sessions_isolated() -> TestResult {
    let mut a = RingSession::new(128, 512, 1)?;
    let mut b = RingSession::new(128, 512, 1)?;
    a.round_trip(1, 5_000, 0)?;
    b.round_trip(1, 7_000, 500_000)?;
    a.round_trip(1, 3_000, 5_000)?;
    let sa = a.dev.status(1).map_err(fail("status"))?;
    let sb = b.dev.status(1).map_err(fail("status"))?;
    ensure!(
        sa.stream.to_dev_packets == 8_000 && sb.stream.to_dev_packets == 7_000,
        "a {:?} b {:?}",
        sa.stream,
        sb.stream
    );
    ensure!(a.rx.available() == Ok(0) && b.rx.available() == Ok(0), "stray packets");
    Ok(())
}

extern "C" fn on_alarm(_: libc::c_int) {}

fn wait_eintr() -> TestResult {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let d = open()?;
    d.configure(8, 256).map_err(fail("configure"))?;
    // A handler without SA_RESTART, so the interrupted WAIT returns EINTR.
    let act = SigAction::new(SigHandler::Handler(on_alarm), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler does nothing, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGALRM, &act) }.map_err(fail("sigaction"))?;
    let it = libc::itimerval {
        it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
        it_value: libc::timeval { tv_sec: 0, tv_usec: 100_000 },
    };
    // SAFETY: valid itimerval, no old value requested.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
    let t = Instant::now();
    expect_errno("WAIT interrupted", d.wait(abi::WAIT_FROM_DEV_READY, 5_000), Errno::EINTR)?;
    ensure!(t.elapsed() < Duration::from_secs(2), "EINTR after {:?}", t.elapsed());
    Ok(())
}

fn close_with_stream_running() -> TestResult {
    let region;
    {
        let mut s = RingSession::new(64, 2048, 2)?;
        // Leave packets in flight in both rings, then close.
        s.tx.free(64);
        for i in 0..32 {
            s.tx.set_header(i, &SlotHeader { len: 100, stream_id: 2, ..Default::default() });
        }
        s.tx.publish(32);
        s.dev.kick().map_err(fail("kick"))?;
        region = Arc::clone(&s.region);
    }
    // The file is closed; our mapping keeps its pages: reading is safe.
    let (p, _, _) = region.snapshot(RingId::ToDevice);
    ensure!(p == 32, "producer word {p}");
    drop(region);
    // The device still works for a new session.
    let mut s = RingSession::new(64, 2048, 2)?;
    s.round_trip(2, 1000, 0)
}

fn null_port_counts() -> TestResult {
    let d = open()?;
    let cfg = d.configure(64, 512).map_err(fail("configure"))?;
    let region = d.map(&cfg).map_err(fail("map"))?;
    d.start_stream(4, abi::PORT_NULL, abi::DIR_TO_DEVICE).map_err(fail("start"))?;
    let mut tx = region.producer(RingId::ToDevice);
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent < 10_000 {
        ensure!(Instant::now() < deadline, "sending stalled at {sent}");
        let want = (10_000 - sent).min(32) as u32;
        let free = tx.free(want).min(want);
        for i in 0..free {
            tx.set_header(i, &SlotHeader { len: 100, stream_id: 4, ..Default::default() });
        }
        sent += u64::from(free);
        if tx.publish(free) {
            d.kick().map_err(fail("kick"))?;
        }
        if free == 0 {
            let _ = d.wait(abi::WAIT_TO_DEV_SPACE, 100);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = d.status(4).map_err(fail("status"))?;
        if st.stream.to_dev_packets == 10_000 {
            ensure!(st.stream.from_dev_packets == 0 && st.stream.to_dev_bytes == 1_000_000, "{:?}", st.stream);
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "null port took {} of 10000", st.stream.to_dev_packets);
        let _ = d.wait(abi::WAIT_TO_DEV_SPACE, 50);
    }
}

fn fdinfo_shows_state() -> TestResult {
    let d = open()?;
    d.configure(16, 256).map_err(fail("configure"))?;
    d.start_stream(1, abi::PORT_NULL, abi::DIR_TO_DEVICE).map_err(fail("start"))?;
    use std::os::fd::AsRawFd;
    let text =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", d.file().as_raw_fd())).map_err(fail("fdinfo"))?;
    ensure!(text.contains("rtpmgr-state:\tstreaming"), "{text}");
    ensure!(text.contains("rtpmgr-rings:\t16 x 256 B"), "{text}");
    ensure!(text.contains("rtpmgr-stream:\t1 port null"), "{text}");
    Ok(())
}

const DRIVER_DIR: &str = "/sys/bus/platform/drivers/rtpmgr-media-port";

/// The platform device bound to our driver, by its sysfs name.
fn bound_media_port() -> Option<String> {
    std::fs::read_dir(DRIVER_DIR)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.contains("rtpmgr-media-port"))
}

/// The device-tree node `rtpmgr,media-port` (from the qemuarm64 overlay)
/// is bound, its port carries traffic through coherent DMA memory, and it
/// survives unbind/rebind with a stream still naming it.
fn dt_media_port() -> TestResult {
    let dev_name = bound_media_port().ok_or("no device bound to rtpmgr-media-port (overlay applied?)")?;
    let d = open()?;
    let info = d.info().map_err(fail("info"))?;
    ensure!(info.port_count == 3, "port count {}", info.port_count);
    let p = d.port(2).map_err(fail("GET_PORT 2"))?;
    ensure!(p.kind == abi::PORT_KIND_DMA && p.name_str() == Some("media0"), "port 2: {p:?}");
    let mut s = RingSession::on_port(256, 2048, 5, 2)?;
    s.round_trip(5, 20_000, 0)?;
    ensure!(d.port(2).map_err(fail("port"))?.users == 1, "users");
    // Unbind with the stream running: no traffic, no crash.
    std::fs::write(format!("{DRIVER_DIR}/unbind"), &dev_name).map_err(fail("unbind"))?;
    expect_errno("GET_PORT after unbind", d.port(2), Errno::ENODEV)?;
    s.tx.free(1);
    s.tx.set_header(0, &SlotHeader { len: 10, stream_id: 5, ..Default::default() });
    if s.tx.publish(1) {
        s.dev.kick().map_err(fail("kick"))?;
    }
    std::thread::sleep(Duration::from_millis(50));
    ensure!(s.rx.available() == Ok(0), "a packet came back through an unbound port");
    // Rebind: the port is back at the same index.
    std::fs::write(format!("{DRIVER_DIR}/bind"), &dev_name).map_err(fail("bind"))?;
    let p = d.port(2).map_err(fail("GET_PORT after rebind"))?;
    ensure!(p.name_str() == Some("media0"), "{p:?}");
    let mut s2 = RingSession::on_port(64, 2048, 1, 2)?;
    s2.round_trip(1, 2_000, 0)
}

/// The group the image's useradd creates and the udev rule (here applied
/// by mdev, from the same rule) gives `/dev/rtpmgr`: 0660 root:rtpmgr.
const RTPMGR_GID: u32 = 999;

/// In a child with the given credentials, try to open the device; report
/// the errno (0 on success) through the exit status.
fn open_as(uid: u32, gid: u32, groups: &[u32]) -> Result<i32, String> {
    let check = || match std::fs::OpenOptions::new().read(true).write(true).open(DEV) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(254).min(253),
    };
    // SAFETY: the child only calls async-signal-safe functions (setgroups,
    // setgid, setuid, open, _exit) before it exits; nothing it touches is
    // shared with other threads of this single-threaded test binary.
    unsafe { rtpmgr_test_kit::user::as_user(uid, gid, groups, check) }
}

/// `/dev/rtpmgr` is 0660 root:rtpmgr (the udev rule); a user outside the
/// group gets EACCES, a member of the group opens it.
fn device_permissions() -> TestResult {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(DEV).map_err(fail("stat"))?;
    ensure!(m.permissions().mode() & 0o777 == 0o660, "mode {:o}", m.permissions().mode() & 0o777);
    ensure!(m.uid() == 0 && m.gid() == RTPMGR_GID, "owner {}:{}", m.uid(), m.gid());
    let nobody = 65534;
    let e = open_as(nobody, nobody, &[])?;
    ensure!(e == libc::EACCES, "a user outside the group: errno {e}, expected EACCES");
    let e = open_as(nobody, nobody, &[RTPMGR_GID])?;
    ensure!(e == 0, "a member of group rtpmgr: errno {e}");
    Ok(())
}

/// One session can never see another's memory: a second session's region,
/// mapped through its own file, holds none of the first one's bytes, and
/// no length or offset maps the first one's pages through the second file.
fn sessions_cannot_map_each_other() -> TestResult {
    const MARK: u8 = 0xA7;
    let mut a = RingSession::new(64, 2048, 1)?;
    // Fill every to-device payload of session A with a mark (never published).
    let free = a.tx.free(64);
    for i in 0..free {
        a.tx.payload_mut(i).fill(MARK);
    }
    let a_len = a.region.len();
    let b = open()?;
    let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    // Unconfigured, B has nothing to map, whatever A has.
    expect_errno("B maps before configuring", raw_map(&b, a_len, rw, MapFlags::MAP_SHARED, 0), Errno::EINVAL)?;
    // A smaller B: A's length, or any offset into a larger range, is refused.
    let cfg = b.configure(8, 256).map_err(fail("configure B"))?;
    let b_len = cfg.mmap_size as usize;
    ensure!(b_len < a_len, "B {b_len} not smaller than A {a_len}");
    expect_errno("B maps A's length", raw_map(&b, a_len, rw, MapFlags::MAP_SHARED, 0), Errno::EINVAL)?;
    for off in [4096, b_len as libc::off_t, a_len as libc::off_t - 4096] {
        expect_errno("B maps at an offset", raw_map(&b, b_len, rw, MapFlags::MAP_SHARED, off), Errno::EINVAL)?;
    }
    // B's own region is B's: fresh memory, none of A's marks.
    let region = b.map(&cfg).map_err(fail("map B"))?;
    let base = region.ctrl_word(RingId::ToDevice, CtrlWord::Producer) as *const _ as *const u8;
    // SAFETY: `base` points TO_DEV_CTRL_OFFSET bytes into B's mapping of
    // `b_len` bytes, alive as long as `region`; only read here.
    let bytes = unsafe { std::slice::from_raw_parts(base.sub(abi::TO_DEV_CTRL_OFFSET as usize), b_len) };
    let marks = bytes.windows(16).filter(|w| w.iter().all(|&x| x == MARK)).count();
    ensure!(marks == 0, "session B's region holds {marks} runs of session A's bytes");
    // And A still holds its own.
    ensure!(a.tx.payload_mut(0).iter().all(|&x| x == MARK), "A's payload changed");
    Ok(())
}

/// `poll()` on the device: nothing before CONFIGURE_BUFFER; writable while
/// the to-device ring has room, readable while from-device entries wait;
/// the worker's progress wakes a poller; epoll waits for the device and a
/// UDP socket together.
fn poll_device() -> TestResult {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let d = open()?;
    let ready = |d: &Device, want: PollFlags, ms: u16| -> Result<PollFlags, String> {
        let mut fds = [PollFd::new(d.file().as_fd(), want)];
        poll(&mut fds, PollTimeout::from(ms)).map_err(fail("poll"))?;
        Ok(fds[0].revents().unwrap_or(PollFlags::empty()))
    };
    let both = PollFlags::POLLIN | PollFlags::POLLOUT;
    ensure!(ready(&d, both, 50)?.is_empty(), "ready before CONFIGURE_BUFFER");
    let info = d.info().map_err(fail("GET_INFO"))?;
    ensure!(info.features & abi::FEATURE_POLL != 0, "no FEATURE_POLL: {:#x}", info.features);
    drop(d);
    let mut s = RingSession::new(8, 256, 1)?;
    ensure!(ready(&s.dev, both, 0)? == PollFlags::POLLOUT, "an idle session is not just writable");
    // A poller blocked for POLLIN is woken by the worker's packet.
    let got = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let t = Instant::now();
            (ready(&s.dev, PollFlags::POLLIN, 5000), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        s.tx.free(1);
        s.tx.set_header(0, &SlotHeader { len: 10, stream_id: 1, ..Default::default() });
        if s.tx.publish(1) {
            let _ = s.dev.kick();
        }
        h.join().unwrap_or((Err("panic".into()), Duration::ZERO))
    });
    let (r, took) = got;
    ensure!(r? == PollFlags::POLLIN && took < Duration::from_secs(2), "POLLIN after {took:?}");
    ensure!(ready(&s.dev, both, 0)? == both, "readable and writable");
    let n = s.rx.available().map_err(|e| format!("{e:?}"))?;
    if s.rx.release(n) {
        s.dev.kick().map_err(fail("kick"))?;
    }
    ensure!(ready(&s.dev, PollFlags::POLLIN, 50)?.is_empty(), "readable after the ring was drained");
    // Both rings full (the loopback's returns unread): not writable until
    // from-device entries are released.
    let t = Instant::now();
    while s.tx.free(1) > 0 || s.rx.available() != Ok(8) {
        ensure!(t.elapsed() < Duration::from_secs(5), "rings did not fill");
        let k = s.tx.free(8);
        for i in 0..k {
            s.tx.set_header(i, &SlotHeader { len: 10, stream_id: 1, ..Default::default() });
        }
        if s.tx.publish(k) {
            s.dev.kick().map_err(fail("kick"))?;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ensure!(ready(&s.dev, PollFlags::POLLOUT, 100)?.is_empty(), "writable with a full to-device ring");
    if s.rx.release(8) {
        s.dev.kick().map_err(fail("kick"))?;
    }
    ensure!(ready(&s.dev, PollFlags::POLLOUT, 2000)?.contains(PollFlags::POLLOUT), "not writable after the drain");
    // epoll: the device and a socket in one set.
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(fail("epoll"))?;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(fail("bind"))?;
    ep.add(s.dev.file(), EpollEvent::new(EpollFlags::EPOLLIN, 1)).map_err(fail("epoll add device"))?;
    ep.add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, 2)).map_err(fail("epoll add socket"))?;
    sock.send_to(b"x", sock.local_addr().map_err(fail("addr"))?).map_err(fail("send"))?;
    let mut ev = [EpollEvent::empty(); 4];
    let n = ep.wait(&mut ev, EpollTimeout::from(2000u16)).map_err(fail("epoll_wait"))?;
    let mut tags: Vec<u64> = ev[..n].iter().map(|e| e.data()).collect();
    tags.sort();
    ensure!(tags == [1, 2], "epoll: {tags:?} (the device holds the returned packets, the socket a datagram)");
    Ok(())
}

type Test = (&'static str, fn() -> TestResult);

const TESTS: &[Test] = &[
    ("info_and_ports", info_and_ports),
    ("device_permissions", device_permissions),
    ("ioctl_errors", ioctl_errors),
    ("mmap_checks", mmap_checks),
    ("fdinfo_shows_state", fdinfo_shows_state),
    ("dt_media_port", dt_media_port),
    ("null_port_counts", null_port_counts),
    ("hostile_ring_writes", hostile_ring_writes),
    ("two_sessions_isolated", two_sessions_isolated),
    ("sessions_cannot_map_each_other", sessions_cannot_map_each_other),
    ("wait_eintr", wait_eintr),
    ("close_with_stream_running", close_with_stream_running),
    ("poll_device", poll_device),
    ("loopback_million_ring", loopback_million_ring),
    ("loopback_copy_path", loopback_copy_path),
    ("udp_hostile_args", net::udp_hostile_args),
    ("udp_rx_intact_v4", net::udp_rx_intact_v4),
    ("udp_rx_intact_v6", net::udp_rx_intact_v6),
    ("udp_tx_intact_v4", net::udp_tx_intact_v4),
    ("udp_tx_intact_v6", net::udp_tx_intact_v6),
    ("udp_relay_v4", net::udp_relay_v4),
    ("udp_relay_tap_v4", net::udp_relay_tap_v4),
    ("udp_relay_tap_v6", net::udp_relay_tap_v6),
    ("udp_forward_to_loopback", net::udp_forward_to_loopback),
    ("udp_forward_to_media0", net::udp_forward_to_media0),
    ("udp_mcast_v4", net::udp_mcast_v4),
    ("udp_mcast_ssm_v4", net::udp_mcast_ssm_v4),
    ("udp_mcast_v6", net::udp_mcast_v6),
    ("udp_mcast_ssm_v6", net::udp_mcast_ssm_v6),
    ("udp_mcast_tx_v4", net::udp_mcast_tx_v4),
    ("udp_mcast_tx_v6", net::udp_mcast_tx_v6),
    ("udp_rtp_stats_v4", net::udp_rtp_stats_v4),
    ("udp_stats_idle_record_v4", net::udp_stats_idle_record_v4),
    ("udp_ts_v4", ts::udp_ts_v4),
    ("udp_fast_v4", fast::udp_fast_v4),
    ("udp_fast_v6", fast::udp_fast_v6),
    ("udp_fast_guarded_v4", fast::udp_fast_guarded_v4),
    ("udp_fast_guarded_v6", fast::udp_fast_guarded_v6),
    ("udp_stop_close_under_traffic", net::udp_stop_close_under_traffic),
    ("d1_lost_wakeup_after_stop_stream", defects::d1_lost_wakeup_after_stop_stream),
    ("d1_head_of_line_blocking", defects::d1_head_of_line_blocking),
    ("d3_configure_while_mapped", defects::d3_configure_while_mapped),
    ("d4_memory_accounting", defects::d4_memory_accounting),
    ("d5_port_slot_race", defects::d5_port_slot_race),
    ("d6_rx_error_reads_as_empty", defects::d6_rx_error_reads_as_empty),
    ("d7_reset_not_atomic", defects::d7_reset_not_atomic),
    ("d7_reset_stop_wake_waiters", defects::d7_reset_stop_wake_waiters),
    // Last: it unloads and reloads the module.
    ("d2_module_text_after_unload", defects::d2_module_text_after_unload),
];

fn main() {
    // Arguments select the tests whose names contain any of them.
    let filters: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, port, secs] = &filters[..] {
        if flag == "--hold-udp" || flag == "--hold-relay" {
            let r = match (port.parse(), secs.parse()) {
                (Ok(port), Ok(secs)) => net::hold(port, secs, flag == "--hold-relay"),
                _ => Err(format!("usage: {flag} PORT SECS")),
            };
            if let Err(e) = &r {
                println!("{}: {e}", &flag[2..]);
            }
            std::process::exit(i32::from(r.is_err()));
        }
    }
    let (mut passed, mut failed) = (0, 0);
    println!("guest-tests: {}-bit user space", usize::BITS);
    for (name, test) in TESTS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t = Instant::now();
        match std::panic::catch_unwind(test) {
            Ok(Ok(())) => {
                passed += 1;
                println!("ok {name} ({} ms)", t.elapsed().as_millis());
            }
            Ok(Err(why)) => {
                failed += 1;
                println!("FAILED {name}: {why}");
            }
            Err(_) => {
                failed += 1;
                println!("FAILED {name}: panicked");
            }
        }
    }
    println!("guest-tests: {passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
