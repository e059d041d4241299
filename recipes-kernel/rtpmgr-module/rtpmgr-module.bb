SUMMARY = "rtpmgr kernel module: /dev/rtpmgr packet rings shared by mmap"
DESCRIPTION = "Rust kernel module that owns RTP packet rings, shares them \
               with user space by mmap, and feeds them to media ports \
               (loopback, null and device-tree bound DMA-capable peripherals)."
# The module is GPL-2.0-only; the ABI and RTP statistics files it compiles
# in are MIT.
LICENSE = "GPL-2.0-only AND MIT"
LIC_FILES_CHKSUM = "file://rtpmgr_main.rs;beginline=1;endline=1;md5=fcab174c20ea2e2bc0be64b493708266 \
                    file://rtpmgr_net.c;beginline=1;endline=1;md5=fcab174c20ea2e2bc0be64b493708266 \
                    file://../rtpmgr-abi/src/abi.rs;beginline=1;endline=1;md5=6ec41034e04432ee375d0e14fba596f4 \
                    file://../rtp/src/seqstats.rs;beginline=1;endline=1;md5=6ec41034e04432ee375d0e14fba596f4"

inherit rtpmgr_source module-rust

# The module crate (Rust, plus the C helper rtpmgr_net.c/.h for kernel UDP
# sockets) and the two files it shares with user space, included by
# relative path: the ABI (crates/rtpmgr-abi/src/abi.rs) and the RTP
# statistics core (crates/rtp/src/seqstats.rs).
SRC_URI = "file://crates/rtpmgr-kmod \
           file://crates/rtpmgr-abi/src/abi.rs \
           file://crates/rtp/src/seqstats.rs \
"
S = "${UNPACKDIR}/crates/rtpmgr-kmod"

EXTRA_OEMAKE = "KDIR=${STAGING_KERNEL_DIR}"

# module.bbclass names the package kernel-module-rtpmgr after rtpmgr.ko.
RPROVIDES:${PN} += "kernel-module-rtpmgr"
KERNEL_MODULE_AUTOLOAD += "rtpmgr"
