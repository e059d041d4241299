// SPDX-License-Identifier: MIT
//! A shaped interface for the tests that need a socket whose send buffer
//! fills: a veth pair `rtv0`/`rtv1` (both up), `10.99.0.1/24` on `rtv0`
//! without ARP (a datagram to `10.99.0.2` leaves through `rtv0` at once,
//! to `rtv0`'s own MAC address, and `rtv1` drops it), and a token bucket
//! (`tbf`) as `rtv0`'s root queue: [`RATE`] bytes a second, a queue far
//! larger than any socket's send buffer. An skb waiting in the queue is
//! charged to its socket, so a small `SO_SNDBUF` fills after a datagram or
//! two and a send answers `EAGAIN` until the queue drains.
//!
//! Set up with rtnetlink messages written here (busybox's `ip` and `tc`
//! cannot make a tbf queue), once per boot: [`ensure`] is idempotent.
//! Needs `CONFIG_VETH`, `CONFIG_NET_SCHED` and `CONFIG_NET_SCH_TBF`
//! (ci/kernel/qemu-guest.cfg).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Bytes a second `rtv0` passes.
pub(crate) const RATE: u32 = 8_000;
/// Where shaped datagrams go: through `rtv0`, never answered.
pub(crate) fn sink() -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(10, 99, 0, 2).into(), 9)
}

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWQDISC: u16 = 36;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_BURST: u16 = 6;
const TC_H_ROOT: u32 = 0xFFFF_FFFF;
const TC_LINKLAYER_ETHERNET: u8 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// One netlink request under construction.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf[8..12].copy_from_slice(&1u32.to_ne_bytes());
        Msg { buf }
    }
    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }
    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }
    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.raw(data)
    }
    /// Start a nested attribute; `end` closes it.
    fn begin(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        at
    }
    fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
    fn finish(&mut self) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        &self.buf
    }
}

/// `struct ifinfomsg`.
fn ifinfo(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn netlink() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send `msg` and wait for its acknowledgement: the kernel's errno.
fn request(fd: &OwnedFd, msg: &mut Msg) -> io::Result<()> {
    let bytes = msg.finish();
    // SAFETY: `bytes` is a valid buffer of its length; the kernel is the
    // destination (netlink address 0, the default of an unbound socket).
    let n = unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; 4096];
    loop {
        // SAFETY: `reply` is writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n >= 20 && u16::from_ne_bytes([reply[4], reply[5]]) == NLMSG_ERROR {
            let err = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
            return if err == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-err)) };
        }
    }
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("no NUL in an interface name");
    // SAFETY: a NUL-terminated name.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Create the shaped interface unless this boot has it already.
pub(crate) fn ensure() -> Result<(), String> {
    if ifindex("rtv0") != 0 {
        return Ok(());
    }
    let fd = netlink().map_err(|e| format!("netlink socket: {e}"))?;
    // The pair.
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    m.raw(&ifinfo(0, 0, 0)).attr(IFLA_IFNAME, &cstr("rtv0"));
    let li = m.begin(IFLA_LINKINFO);
    m.attr(IFLA_INFO_KIND, b"veth");
    let data = m.begin(IFLA_INFO_DATA);
    let peer = m.begin(VETH_INFO_PEER);
    m.raw(&ifinfo(0, 0, 0)).attr(IFLA_IFNAME, &cstr("rtv1"));
    m.end(peer);
    m.end(data);
    m.end(li);
    request(&fd, &mut m).map_err(|e| format!("create veth rtv0/rtv1 (CONFIG_VETH?): {e}"))?;
    let (v0, v1) = (ifindex("rtv0") as i32, ifindex("rtv1") as i32);
    if v0 == 0 || v1 == 0 {
        return Err("veth pair created but not found".into());
    }
    // Both ends up (a carrier needs both), rtv0 without ARP.
    let up = libc::IFF_UP as u32;
    let noarp = libc::IFF_NOARP as u32;
    for (idx, flags) in [(v1, up), (v0, up | noarp)] {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.raw(&ifinfo(idx, flags, flags));
        request(&fd, &mut m).map_err(|e| format!("link {idx} up: {e}"))?;
    }
    // 10.99.0.1/24 on rtv0.
    let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
    let mut ifa = [0u8; 8];
    ifa[0] = libc::AF_INET as u8;
    ifa[1] = 24;
    ifa[4..8].copy_from_slice(&(v0 as u32).to_ne_bytes());
    let a = [10, 99, 0, 1];
    m.raw(&ifa).attr(IFA_LOCAL, &a).attr(IFA_ADDRESS, &a);
    request(&fd, &mut m).map_err(|e| format!("address on rtv0: {e}"))?;
    // tbf as the root queue: RATE bytes/s, a 3,000-byte bucket (above one
    // datagram: tbf drops packets larger than its bucket), a 1 MB queue.
    let mut m = Msg::new(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL);
    let mut tc = [0u8; 20];
    tc[4..8].copy_from_slice(&v0.to_ne_bytes());
    tc[8..12].copy_from_slice(&0x0001_0000u32.to_ne_bytes());
    tc[12..16].copy_from_slice(&TC_H_ROOT.to_ne_bytes());
    m.raw(&tc).attr(TCA_KIND, &cstr("tbf"));
    let opts = m.begin(TCA_OPTIONS);
    // struct tc_tbf_qopt: rate and peakrate (tc_ratespec, 12 bytes each),
    // limit, buffer, mtu.
    let mut q = [0u8; 36];
    q[1] = TC_LINKLAYER_ETHERNET;
    q[8..12].copy_from_slice(&RATE.to_ne_bytes());
    q[13] = TC_LINKLAYER_ETHERNET;
    q[24..28].copy_from_slice(&1_000_000u32.to_ne_bytes());
    m.attr(TCA_TBF_PARMS, &q).attr(TCA_TBF_BURST, &3000u32.to_ne_bytes());
    m.end(opts);
    request(&fd, &mut m).map_err(|e| format!("tbf on rtv0 (CONFIG_NET_SCH_TBF?): {e}"))?;
    Ok(())
}
