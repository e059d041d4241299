// SPDX-License-Identifier: MIT
//! How the data threads sleep: one epoll set per thread, registered once
//! (again only when the stream table changes), with the events buffer
//! allocated up front, so a wake-up allocates nothing; an eventfd per
//! thread through which the controller wakes it (stream table changed,
//! stop); and the counters each thread keeps of its own work.

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The longest a data thread sleeps with nothing due: an idle daemon wakes
/// at most once a second per thread. Stops and stream-table changes wake
/// the threads through their [`Waker`] at once.
pub const IDLE_MS: u16 = 1000;

/// The token of a thread's own [`Waker`] in its epoll set.
pub const WAKER_TOKEN: u64 = u64::MAX;

/// Wakes one sleeping data thread from another thread.
pub struct Waker(EventFd);

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        Ok(Waker(EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?))
    }

    /// Make the owner's next (or current) epoll wait return.
    pub fn wake(&self) {
        // EAGAIN only when the counter is near overflow: already readable.
        let _ = self.0.write(1);
    }

    /// Reset after the owner woke on it.
    pub fn clear(&self) {
        let _ = self.0.read();
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// One thread's epoll set and its preallocated event buffer.
pub struct Poller {
    epoll: Epoll,
    events: Vec<EpollEvent>,
    ready: usize,
}

impl Poller {
    /// `capacity`: the most events one wait reports (more stay pending for
    /// the next wait; epoll is level-triggered here).
    pub fn new(capacity: usize) -> std::io::Result<Poller> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        Ok(Poller { epoll, events: vec![EpollEvent::empty(); capacity.max(1)], ready: 0 })
    }

    /// Watch `fd` for input (level-triggered), reported with `token`.
    pub fn add(&self, fd: impl AsFd, token: u64) -> std::io::Result<()> {
        Ok(self.epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?)
    }

    /// [`Poller::add`] for a descriptor known by number (a backend's).
    pub fn add_raw(&self, fd: RawFd, token: u64) -> std::io::Result<()> {
        // SAFETY: the caller's descriptor is open (a backend keeps its
        // poll descriptor open as long as itself, and the caller holds the
        // backend); epoll takes no ownership, the borrow ends here.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        self.add(fd, token)
    }

    /// Stop watching `fd`. A descriptor that was not watched is no error.
    pub fn delete(&self, fd: impl AsFd) {
        let _ = self.epoll.delete(fd);
    }

    /// Sleep until a watched descriptor is ready or `timeout_ms` passed;
    /// the ready tokens are then [`Poller::tokens`]. No allocation.
    pub fn wait(&mut self, timeout_ms: u16) -> Result<usize, Errno> {
        self.ready = 0;
        let n = match self.epoll.wait(&mut self.events, timeout_ms) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e),
        };
        self.ready = n;
        Ok(n)
    }

    /// The tokens of the descriptors the last wait found ready.
    pub fn tokens(&self) -> impl Iterator<Item = u64> + '_ {
        self.events[..self.ready].iter().map(EpollEvent::data)
    }
}

/// What one data thread did; written only by that thread (relaxed atomics
/// on their own cache line, read by the controller for `status`).
#[derive(Default)]
#[repr(align(64))]
pub struct ThreadStats {
    /// Epoll (or WAIT) sleeps that ended with something ready.
    pub wakeups: AtomicU64,
    /// Sleeps that ended by timeout.
    pub timeouts: AtomicU64,
    /// Batches moved (one `recvmmsg` or one pass over the ring).
    pub batches: AtomicU64,
    /// Packets moved.
    pub packets: AtomicU64,
    /// GSO sends (`UDP_SEGMENT`), each of several datagrams.
    pub gso_sends: AtomicU64,
    /// Data-path system calls: `recvmmsg`, `sendmmsg`/`sendmsg`, KICK,
    /// WAIT, `epoll_wait`.
    pub syscalls: AtomicU64,
}

impl ThreadStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        // Only the owning thread writes: a load and a store, no locked
        // read-modify-write on the data path.
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn waker_wakes_a_poller_and_clears() {
        let mut p = Poller::new(4).unwrap();
        let w = Waker::new().unwrap();
        p.add(&w, WAKER_TOKEN).unwrap();
        let t = Instant::now();
        assert_eq!(p.wait(30).unwrap(), 0);
        assert!(t.elapsed().as_millis() >= 25, "returned before its timeout");
        w.wake();
        w.wake();
        assert_eq!(p.wait(1000).unwrap(), 1);
        assert_eq!(p.tokens().collect::<Vec<_>>(), vec![WAKER_TOKEN]);
        w.clear();
        assert_eq!(p.wait(0).unwrap(), 0, "still readable after clear");
    }

    #[test]
    fn sockets_report_their_tokens_and_delete_silences_them() {
        let mut p = Poller::new(1).unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        p.add(&a, 7).unwrap();
        p.add(&b, 9).unwrap();
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        b.send_to(b"y", a.local_addr().unwrap()).unwrap();
        // Capacity 1: one per wait, the other stays pending (level-triggered).
        let mut seen = Vec::new();
        for _ in 0..2 {
            assert_eq!(p.wait(1000).unwrap(), 1);
            let t = p.tokens().next().unwrap();
            seen.push(t);
            let s = if t == 7 { &a } else { &b };
            s.recv(&mut [0u8; 4]).unwrap();
        }
        seen.sort();
        assert_eq!(seen, vec![7, 9]);
        p.delete(&a);
        p.delete(&a); // twice: no error
        b.send_to(b"z", a.local_addr().unwrap()).unwrap();
        assert_eq!(p.wait(50).unwrap(), 0, "a deleted socket still reported");
    }

    #[test]
    fn thread_stats_add_up() {
        let s = ThreadStats::default();
        ThreadStats::add(&s.packets, 5);
        ThreadStats::add(&s.packets, 7);
        assert_eq!(ThreadStats::get(&s.packets), 12);
        assert_eq!(std::mem::align_of::<ThreadStats>(), 64);
    }
}
