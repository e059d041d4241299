// SPDX-License-Identifier: GPL-2.0-only

//! The device-tree-bound media peripheral: a platform driver for
//! `compatible = "rtpmgr,media-port"` that, when bound, allocates its packet
//! buffer with the coherent DMA API against its device and registers a media
//! port named after the node's `label` (default `media<N>`).
//!
//! The data path models a DMA-capable peripheral in loopback mode: each
//! packet is placed in the coherent buffer as the device would fetch it, and
//! the device's returned packet is taken from that buffer. A board port for
//! real silicon replaces `transmit` with its descriptor handling; the rings,
//! sessions and ABI stay as they are.

use crate::port::{self, MediaPort};
use crate::ring::SharedBytes;
use kernel::{
    device::Core,
    dma::{Coherent, Device as DmaDevice, DmaMask},
    of, platform,
    prelude::*,
    str::CString,
    sync::{atomic::Atomic, Arc, Mutex},
};

/// Bytes of coherent memory per port: one full slot.
const DMA_BUFFER: usize = crate::abi::MAX_SLOT_SIZE as usize;

/// A bound media peripheral.
#[pin_data]
pub(crate) struct DmaPort {
    name: KVec<u8>,
    users: Atomic<u32>,
    /// The coherent buffer while the device is bound; `None` after unbind,
    /// when streams that still name the port get nothing through it.
    #[pin]
    buffer: Mutex<Option<Coherent<[u8]>>>,
}

impl MediaPort for DmaPort {
    fn kind(&self) -> u32 {
        crate::abi::PORT_KIND_DMA
    }
    fn name(&self) -> &str {
        core::str::from_utf8(&self.name).unwrap_or("media")
    }
    fn returns_packets(&self) -> bool {
        true
    }
    fn transmit(&self, pkt: &SharedBytes<'_>, ret: Option<&mut SharedBytes<'_>>) -> Option<usize> {
        let guard = self.buffer.lock();
        let buf = guard.as_ref()?;
        // SAFETY: the coherent buffer is `DMA_BUFFER` bytes, valid while the
        // guard holds it; the lock serialises every CPU access to it and this
        // model's "device" only touches it inside `transmit`.
        let mut dma = unsafe { SharedBytes::from_raw(buf.as_mut_ptr().cast::<u8>(), DMA_BUFFER) };
        let n = dma.copy_from(pkt);
        ret.map(|out| {
            // SAFETY: as above; the returned packet is the `n` bytes placed.
            let placed = unsafe { SharedBytes::from_raw(buf.as_mut_ptr().cast::<u8>(), n) };
            out.copy_from(&placed)
        })
    }
    fn users(&self) -> &Atomic<u32> {
        &self.users
    }
}

kernel::of_device_table!(
    OF_TABLE,
    MODULE_OF_TABLE,
    <MediaPortDriver as platform::Driver>::IdInfo,
    [(of::DeviceId::new(c"rtpmgr,media-port"), ())]
);

/// Driver data of a bound `rtpmgr,media-port` node.
pub(crate) struct MediaPortDriver {
    port: Arc<DmaPort>,
    index: u32,
}

impl platform::Driver for MediaPortDriver {
    type IdInfo = ();
    type Data<'bound> = Self;
    const OF_ID_TABLE: Option<of::IdTable<Self::IdInfo>> = Some(&OF_TABLE);

    fn probe<'bound>(
        pdev: &'bound platform::Device<Core<'_>>,
        _info: Option<&'bound Self::IdInfo>,
    ) -> impl PinInit<Self, Error> + 'bound {
        let dev = pdev.as_ref();
        // SAFETY: probe runs before any DMA allocation of this device, so no
        // allocation or mapping races with the mask change.
        unsafe { pdev.dma_set_mask_and_coherent(DmaMask::new::<32>())? };
        let buffer = Coherent::<u8>::zeroed_slice(dev, DMA_BUFFER, GFP_KERNEL)?;
        let label = dev
            .fwnode()
            .and_then(|node| node.property_read::<CString>(c"label").optional());
        // Held until the port is published (or the probe fails, which
        // frees it again).
        let reservation = port::reserve_dma_slot()?;
        let slot = reservation.slot();
        let mut name = KVec::new();
        match label.as_ref().map(|l| l.to_bytes()) {
            Some(l) if !l.is_empty() && l.len() < crate::abi::PORT_NAME_LEN => {
                name.extend_from_slice(l, GFP_KERNEL)?
            }
            _ => {
                let mut s = KVec::new();
                s.extend_from_slice(b"media", GFP_KERNEL)?;
                let mut digits = [0u8; 10];
                let mut n = slot;
                let mut k = digits.len();
                loop {
                    k -= 1;
                    digits[k] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                s.extend_from_slice(&digits[k..], GFP_KERNEL)?;
                name = s;
            }
        }
        let port = Arc::pin_init(
            try_pin_init!(DmaPort {
                name,
                users: Atomic::new(0),
                buffer <- kernel::new_mutex!(Some(buffer)),
            }),
            GFP_KERNEL,
        )?;
        let index = reservation.commit(port.clone());
        dev_info!(
            dev,
            "media port {} (index {}), {} bytes of coherent DMA memory\n",
            port.name(),
            index,
            DMA_BUFFER
        );
        Ok(MediaPortDriver { port, index })
    }

    fn unbind<'bound>(dev: &'bound platform::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        // Streams naming the port keep their reference but get nothing
        // through it; the DMA memory goes back while the device is bound.
        *this.port.buffer.lock() = None;
        port::unregister_dma(this.index);
        dev_info!(dev.as_ref(), "media port {} unbound\n", this.port.name());
    }
}
