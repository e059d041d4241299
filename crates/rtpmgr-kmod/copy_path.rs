// SPDX-License-Identifier: GPL-2.0-only

//! The copying baseline beside the rings: one `write()` is one packet for
//! a running stream, one `read()` one packet a port returned.

use crate::abi::{self, SlotHeader};
use crate::ring::SharedBytes;
use crate::session::{enotconn, monotonic_ns, Session};
use crate::stream::Endpoint;
use kernel::{
    iov::{IovIterDest, IovIterSource},
    prelude::*,
    sync::ArcBorrow,
    transmute::{AsBytes, FromBytes},
};

/// Packets, and bytes, the copying path holds for read(): both bound it
/// (256 packets of up to 64 KiB would be 16 MiB).
pub(crate) const COPY_QUEUE_MAX: usize = 256;
const COPY_QUEUE_BYTES: usize = 1 << 20;

impl Session {
    /// The copying baseline: one write() is one packet, a `SlotHeader`
    /// followed by `len` bytes, for a running stream.
    pub(crate) fn write_iter(
        session: ArcBorrow<'_, Session>,
        iov: &mut IovIterSource<'_>,
    ) -> Result<usize> {
        let total = iov.len();
        let hdr_size = abi::SLOT_HEADER_SIZE as usize;
        if total < hdr_size || total > abi::MAX_SLOT_SIZE as usize {
            return Err(EINVAL);
        }
        let mut buf = KVec::with_capacity(total, GFP_KERNEL_ACCOUNT)?;
        iov.copy_from_iter_vec(&mut buf, GFP_KERNEL_ACCOUNT)?;
        if buf.len() != total {
            return Err(EFAULT);
        }
        let h = SlotHeader::from_bytes_copy(&buf[..hdr_size]).ok_or(EINVAL)?;
        if h.check(abi::MAX_SLOT_SIZE).is_err() || h.len as usize != total - hdr_size {
            return Err(EINVAL);
        }
        let mut inner = session.inner.lock();
        if inner.region.is_none() {
            return Err(enotconn());
        }
        let stream = inner.streams[h.stream_id as usize]
            .as_mut()
            .filter(|s| s.direction & abi::DIR_TO_DEVICE != 0)
            .ok_or(EINVAL)?;
        let payload = &mut buf[hdr_size..];
        let pkt = SharedBytes::from_slice(payload);
        if let Endpoint::Udp(net) = &mut stream.endpoint {
            // Never ahead of what waits in the backlog.
            if net.backlog.as_ref().is_some_and(|b| !b.is_empty()) || net.try_send(&pkt).is_some() {
                return Err(EAGAIN);
            }
            stream.counters.to_dev_packets += 1;
            stream.counters.to_dev_bytes += u64::from(h.len);
            inner.counters.to_dev_packets += 1;
            inner.counters.to_dev_bytes += u64::from(h.len);
            return Ok(total);
        }
        let wants_return = stream.wants_return();
        let Endpoint::Port(port) = &stream.endpoint else {
            return Err(EINVAL);
        };
        let mut back = KVec::new();
        let returned = if wants_return {
            back.extend_with(pkt.len(), 0u8, GFP_KERNEL_ACCOUNT)?;
            let mut out = SharedBytes::from_slice(&mut back);
            port.transmit(&pkt, Some(&mut out))
        } else {
            port.transmit(&pkt, None)
        };
        stream.counters.to_dev_packets += 1;
        stream.counters.to_dev_bytes += u64::from(h.len);
        let mut full = false;
        if let Some(len) = returned {
            back.truncate(len);
            let out_hdr = SlotHeader {
                len: len as u32,
                stream_id: h.stream_id,
                timestamp_ns: monotonic_ns(),
                ..Default::default()
            };
            stream.counters.from_dev_packets += 1;
            stream.counters.from_dev_bytes += len as u64;
            let size = hdr_size + len;
            if inner.copy_queue.len() >= COPY_QUEUE_MAX
                || inner.copy_bytes + size > COPY_QUEUE_BYTES
            {
                full = true;
            } else {
                let mut packet = KVec::with_capacity(size, GFP_KERNEL_ACCOUNT)?;
                packet.extend_from_slice(out_hdr.as_bytes(), GFP_KERNEL_ACCOUNT)?;
                packet.extend_from_slice(&back, GFP_KERNEL_ACCOUNT)?;
                inner.copy_queue.push(packet, GFP_KERNEL_ACCOUNT)?;
                inner.copy_bytes += size;
            }
        }
        inner.counters.to_dev_packets += 1;
        inner.counters.to_dev_bytes += u64::from(h.len);
        if full {
            inner.counters.ring_full_drops += 1;
            if let Some(s) = inner.streams[h.stream_id as usize].as_mut() {
                s.counters.ring_full_drops += 1;
            }
        } else if let Some(len) = returned {
            inner.counters.from_dev_packets += 1;
            inner.counters.from_dev_bytes += len as u64;
        }
        session.lockless.set_copy_queued(inner.copy_queue.len());
        drop(inner);
        session.wake_waiters();
        Ok(total)
    }

    /// One returned packet per read(), `SlotHeader` first; `EAGAIN` when
    /// none is queued (block in `WAIT` for `WAIT_FROM_DEV_READY`), `EMSGSIZE`
    /// if the buffer cannot hold the next one.
    pub(crate) fn read_iter(
        session: ArcBorrow<'_, Session>,
        iov: &mut IovIterDest<'_>,
    ) -> Result<usize> {
        let packet = {
            let mut inner = session.inner.lock();
            let next_len = inner.copy_queue.first().map(|p| p.len()).ok_or(EAGAIN)?;
            if next_len > iov.len() {
                return Err(EMSGSIZE);
            }
            let p = inner.copy_queue.remove(0).map_err(|_| EAGAIN)?;
            inner.copy_bytes -= p.len();
            session.lockless.set_copy_queued(inner.copy_queue.len());
            p
        };
        Ok(iov.copy_to_iter(&packet))
    }
}
