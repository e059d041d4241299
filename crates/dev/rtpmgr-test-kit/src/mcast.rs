// SPDX-License-Identifier: MIT
//! Multicast joins as rtpmgrd's `net.rs` makes them (RFC 3678 options):
//! any-source (`MCAST_JOIN_GROUP`) or source-specific
//! (`MCAST_JOIN_SOURCE_GROUP`), on one interface, IPv4 or IPv6.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

fn storage(ip: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let sa = nix::sys::socket::SockaddrStorage::from(SocketAddr::new(ip, 0));
    // SAFETY: `sa` holds a sockaddr of `len()` bytes, at most the size of
    // a sockaddr_storage.
    unsafe {
        std::ptr::copy_nonoverlapping(
            nix::sys::socket::SockaddrLike::as_ptr(&sa).cast::<u8>(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            nix::sys::socket::SockaddrLike::len(&sa) as usize,
        )
    };
    ss
}

fn setsockopt<T>(sock: &UdpSocket, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of the size passed, the option's type.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Join `group` on interface `ifindex` (0: the kernel's choice),
/// any-source or, with `source`, from that source only (SSM).
pub fn join(sock: &UdpSocket, group: IpAddr, source: Option<IpAddr>, ifindex: u32) -> io::Result<()> {
    let level = if group.is_ipv4() { libc::IPPROTO_IP } else { libc::IPPROTO_IPV6 };
    match source {
        None => {
            let req = libc::group_req { gr_interface: ifindex, gr_group: storage(group) };
            setsockopt(sock, level, libc::MCAST_JOIN_GROUP, &req)
        }
        Some(src) => {
            let req =
                libc::group_source_req { gsr_interface: ifindex, gsr_group: storage(group), gsr_source: storage(src) };
            setsockopt(sock, level, libc::MCAST_JOIN_SOURCE_GROUP, &req)
        }
    }
}
