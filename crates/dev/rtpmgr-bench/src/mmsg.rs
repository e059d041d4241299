// SPDX-License-Identifier: MIT
//! `recvmmsg`/`sendmmsg` over a fixed set of buffers, with nothing
//! allocated per call: what a bare relay loop and a load generator need.
//! IPv4 only (the benchmark runs on 127.0.0.1).

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `count` message headers, each with one buffer of `slot` bytes.
pub struct Mmsg {
    // The headers point into `iovs` and `names`, the iovecs into `buf`.
    // None of the three vectors is ever resized after `new`, so their heap
    // blocks (and with them the pointers) stay put even when the struct
    // moves.
    buf: Vec<u8>,
    slot: usize,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside the headers and iovecs refer only to heap
// memory owned by this same value, so moving it to another thread moves
// everything they point to along with it; nothing is shared.
unsafe impl Send for Mmsg {}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
        sin_zero: [0; 8],
    }
}

impl Mmsg {
    pub fn new(count: usize, slot: usize) -> Mmsg {
        assert!(count > 0 && slot > 0);
        let mut buf = vec![0u8; count * slot];
        let base = buf.as_mut_ptr();
        let iovs: Vec<libc::iovec> = (0..count)
            // SAFETY: i * slot < count * slot = buf.len(): in bounds.
            .map(|i| libc::iovec { iov_base: unsafe { base.add(i * slot) }.cast(), iov_len: slot })
            .collect();
        // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
        let names: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; count];
        let mut m = Mmsg { buf, slot, iovs, names, hdrs: Vec::with_capacity(count) };
        for i in 0..count {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value
            // (null pointers, zero lengths).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = &mut m.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            m.hdrs.push(h);
        }
        m
    }

    pub fn count(&self) -> usize {
        self.hdrs.len()
    }

    /// The whole buffer of message `i`.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * self.slot..(i + 1) * self.slot]
    }

    /// What the last [`Mmsg::recv`] put in message `i` (at most a slot: a
    /// longer datagram was cut).
    pub fn received(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(self.slot);
        &self.buf[i * self.slot..i * self.slot + len]
    }

    /// Length of datagram `i` as the kernel reported it.
    pub fn received_len(&self, i: usize) -> usize {
        self.hdrs[i].msg_len as usize
    }

    /// Receive up to `count()` datagrams into the slots.
    pub fn recv(&mut self, fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<usize> {
        for (h, iov) in self.hdrs.iter_mut().zip(self.iovs.iter_mut()) {
            iov.iov_len = self.slot;
            h.msg_hdr.msg_name = std::ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header names one iovec of `self.iovs` covering a
        // slot of `self.buf` (both alive and unaliased for the call through
        // &mut self), no name or control buffer; the count matches `hdrs`.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as _,
                flags as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Make message `i` `len` bytes of its slot, sent to `dest` (`None`:
    /// the socket's connected peer).
    pub fn prepare_send(&mut self, i: usize, len: usize, dest: Option<SocketAddrV4>) {
        self.iovs[i].iov_len = len.min(self.slot);
        let h = &mut self.hdrs[i].msg_hdr;
        match dest {
            Some(d) => {
                self.names[i] = sockaddr(d);
                h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            None => {
                h.msg_name = std::ptr::null_mut();
                h.msg_namelen = 0;
            }
        }
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
    }

    /// Send messages `from..to` (prepared by [`Mmsg::prepare_send`]); returns
    /// how many the kernel took, which may be fewer.
    pub fn send(&mut self, fd: BorrowedFd<'_>, from: usize, to: usize) -> io::Result<usize> {
        assert!(from < to && to <= self.hdrs.len());
        // SAFETY: headers from..to each name one iovec of `self.iovs` within
        // a slot of `self.buf` and either no address or one of `self.names`
        // with its exact length; all alive for the call through &mut self.
        let n = unsafe {
            libc::sendmmsg(fd.as_raw_fd(), self.hdrs[from..].as_mut_ptr(), (to - from) as _, libc::MSG_NOSIGNAL as _)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Send messages `0..n` completely, retrying partial sends. Datagrams
    /// the kernel refuses (for example ENOBUFS, or ECONNREFUSED after an
    /// ICMP error) are skipped and counted; returns (sent, failed).
    pub fn send_all(&mut self, fd: BorrowedFd<'_>, n: usize) -> (usize, usize) {
        let (mut k, mut failed) = (0, 0);
        while k < n {
            match self.send(fd, k, n) {
                Ok(0) => {
                    failed += 1;
                    k += 1;
                }
                Ok(m) => k += m,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed += 1;
                    k += 1;
                }
            }
        }
        (n - failed, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    #[test]
    fn batch_round_trip_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let std::net::SocketAddr::V4(to) = rx.local_addr().unwrap() else { panic!() };
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut out = Mmsg::new(8, 64);
        for i in 0..5 {
            out.slot_mut(i)[..3].copy_from_slice(&[i as u8, 0xaa, i as u8 * 2]);
            out.prepare_send(i, 3 + i, Some(to));
        }
        assert_eq!(out.send_all(tx.as_fd(), 5), (5, 0));
        let mut inp = Mmsg::new(8, 64);
        let mut got = Vec::new();
        while got.len() < 5 {
            let n = inp.recv(rx.as_fd(), libc::MSG_WAITFORONE).unwrap();
            got.extend((0..n).map(|i| inp.received(i).to_vec()));
        }
        assert_eq!(got.len(), 5);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.len(), 3 + i);
            assert_eq!(&d[..3], &[i as u8, 0xaa, i as u8 * 2]);
        }
    }

    #[test]
    fn long_datagram_is_cut_to_the_slot() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[7u8; 100], rx.local_addr().unwrap()).unwrap();
        let mut inp = Mmsg::new(2, 16);
        assert_eq!(inp.recv(rx.as_fd(), libc::MSG_WAITFORONE).unwrap(), 1);
        assert_eq!(inp.received(0), &[7u8; 16]);
    }
}
