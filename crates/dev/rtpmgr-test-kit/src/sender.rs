// SPDX-License-Identifier: MIT
//! The tests' bounded sender: numbered datagrams over a connected UDP
//! socket, never more than a window ahead of what the receiver has taken
//! (so no socket buffer or ring overflows and every loss is a finding),
//! with junk, oversize or other extra datagrams injected between them.
//!
//! ```no_run
//! # fn received() -> u32 { 0 }
//! use rtpmgr_test_kit::{packet::numbered, sender::Window};
//! let tx = std::net::UdpSocket::bind("127.0.0.1:0")?;
//! tx.connect("127.0.0.1:5004")?;
//! let (mut window, mut junk) = (Window::new(3000, 64), 0u64);
//! while received() < 3000 {
//!     let extra = |i: u32| if i % 97 == 50 { junk += 1; vec![b"not RTP".to_vec()] } else { vec![] };
//!     window.fill(&tx, received(), extra, numbered).map_err(std::io::Error::other)?;
//!     // ... take what arrived ...
//! #   break;
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::net::UdpSocket;

/// Packets `0..total`, at most `limit` beyond what the receiver has.
#[derive(Debug)]
pub struct Window {
    total: u32,
    limit: u32,
    sent: u32,
    bytes: u64,
}

impl Window {
    /// `total` packets, at most `limit` in flight.
    pub fn new(total: u32, limit: u32) -> Window {
        Window { total, limit, sent: 0, bytes: 0 }
    }

    /// Packets sent so far.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Bytes of the packets sent so far (the extras not counted).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Send on `sock` (connected) until `limit` packets beyond `received`
    /// (what the receiver has taken, at most what was sent)
    /// are in flight or all are sent: before packet `i`, each datagram
    /// `extra(i)` returns, then `packet(i)`.
    pub fn fill(
        &mut self,
        sock: &UdpSocket,
        received: u32,
        mut extra: impl FnMut(u32) -> Vec<Vec<u8>>,
        mut packet: impl FnMut(u32) -> Vec<u8>,
    ) -> Result<(), String> {
        while self.sent < self.total && self.sent - received < self.limit {
            let i = self.sent;
            for d in extra(i) {
                sock.send(&d).map_err(|e| format!("send a {}-byte extra before packet {i}: {e}", d.len()))?;
            }
            let p = packet(i);
            sock.send(&p).map_err(|e| format!("send packet {i}: {e}"))?;
            self.bytes += p.len() as u64;
            self.sent += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_bounds_what_is_in_flight_and_extras_go_first() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut w = Window::new(10, 4);
        let extra = |i| if i == 2 { vec![b"junk".to_vec()] } else { vec![] };
        w.fill(&tx, 0, extra, |i| vec![i as u8; 3]).unwrap();
        assert_eq!((w.sent(), w.bytes()), (4, 12));
        w.fill(&tx, 3, |_| vec![], |i| vec![i as u8; 3]).unwrap();
        assert_eq!(w.sent(), 7);
        w.fill(&tx, 7, |_| vec![], |i| vec![i as u8; 3]).unwrap();
        assert_eq!(w.sent(), 10);
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        for _ in 0..11 {
            let n = rx.recv(&mut buf).unwrap();
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got[2], b"junk");
        assert_eq!(got[3], vec![2u8; 3]);
        assert_eq!(got[10], vec![9u8; 3]);
    }
}
