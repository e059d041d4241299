// SPDX-License-Identifier: GPL-2.0-only

//! rtpmgr: kernel-assisted RTP streaming.
//!
//! A misc device, `/dev/rtpmgr`, whose every open file is a session owning
//! two packet rings shared with user space by `mmap` (to-device and
//! from-device), driven by ioctls, and a kernel worker that moves packets
//! between the rings and media ports: `loopback`, `null`, and
//! device-tree-bound DMA-capable media peripherals.
//!
//! The user/kernel contract is `crates/rtpmgr-abi/src/abi.rs`, included
//! below as it is, the same file user space compiles.

use kernel::{driver, platform, prelude::*};

#[allow(dead_code, unreachable_pub, missing_docs, clippy::all)]
#[path = "../rtpmgr-abi/src/abi.rs"]
mod abi;

// The `rtp` crate's dependency-free statistics core (no alloc, f64 or
// u128), the same file user space uses: one set of RFC 3550 rules.
#[allow(dead_code, unreachable_pub, missing_docs, clippy::all)]
#[path = "../rtp/src/seqstats.rs"]
mod seqstats;

// The `mpegts` crate's dependency-free continuity-counter rules and the
// datagram rule judged from the packets' heads (`format = "udp-ts"`): the
// same files user space uses.
#[allow(dead_code, unreachable_pub, missing_docs, clippy::all)]
#[path = "../mpegts/src/cc.rs"]
mod ts_cc;
#[allow(dead_code, unreachable_pub, missing_docs, clippy::all)]
#[path = "../mpegts/src/head.rs"]
mod ts_head;

mod copy_path;
mod device;
mod dma_port;
mod fdinfo;
mod ioctl;
mod mapping;
mod net;
mod port;
mod ring;
mod session;
mod stream;
mod worker;

module! {
    type: RtpmgrModule,
    name: "rtpmgr",
    authors: ["The rtpmgr authors"],
    description: "Kernel-assisted RTP streaming: mmap packet rings and media ports",
    license: "GPL",
    params: {
        max_session_mb: u32 {
            default: 64,
            description: "Most memory (MiB) one session may pin for its rings",
        },
        fast_path: u32 {
            default: 1,
            description: "udp -> udp forwarding in softirq (0: in the session worker, as before)",
        },
    },
}

/// Whether streams started now forward udp -> udp on the fast path.
pub(crate) fn fast_path() -> bool {
    *module_parameters::fast_path.value() != 0
}

/// Bytes one session may pin, from the module parameter.
pub(crate) fn max_session_bytes() -> u64 {
    u64::from(*module_parameters::max_session_mb.value()) << 20
}

/// Fields drop in declaration order (after `init` built them in the
/// initialiser's order, the reverse): `/dev/rtpmgr` goes first, so no new
/// session can start; then the platform driver, which unbinds the
/// device-tree ports; the port registry last. No session is open by then:
/// each open file pins the module (`file_operations.owner`).
#[pin_data]
struct RtpmgrModule {
    #[pin]
    _misc: device::Registration,
    #[pin]
    _ports: driver::Registration<platform::Adapter<dma_port::MediaPortDriver>>,
    _registry: port::Registry,
}

impl kernel::InPlaceModule for RtpmgrModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        pr_info!(
            "ABI {}, {} MiB per session\n",
            abi::ABI_VERSION,
            *module_parameters::max_session_mb.value()
        );
        // Built in this order: the registry before the driver can bind a
        // port into it, the ports before /dev/rtpmgr can name them.
        try_pin_init!(Self {
            _registry: port::Registry::new(),
            _ports <- driver::Registration::new(c"rtpmgr-media-port", module),
            _misc <- device::Registration::register(c"rtpmgr"),
        })
    }
}
