SUMMARY = "rtpmgr kernel module: /dev/rtpmgr packet rings shared by mmap"
DESCRIPTION = "Rust kernel module that owns RTP packet rings, shares them \
               with user space by mmap, and feeds them to media ports \
               (loopback, null and device-tree bound DMA-capable peripherals)."
# The module is GPL-2.0-only; the ABI, RTP statistics and MPEG-TS files it
# compiles in are MIT.
LICENSE = "GPL-2.0-only AND MIT"
LIC_FILES_CHKSUM = "file://rtpmgr_main.rs;beginline=1;endline=1;md5=fcab174c20ea2e2bc0be64b493708266 \
                    file://rtpmgr_net.c;beginline=1;endline=1;md5=fcab174c20ea2e2bc0be64b493708266 \
                    file://../rtpmgr-abi/src/abi.rs;beginline=1;endline=1;md5=6ec41034e04432ee375d0e14fba596f4 \
                    file://../rtp/src/seqstats.rs;beginline=1;endline=1;md5=6ec41034e04432ee375d0e14fba596f4 \
                    file://../rtp/src/rules.rs;beginline=1;endline=1;md5=6ec41034e04432ee375d0e14fba596f4 \
                    file://../mpegts/src/cc.rs;beginline=1;endline=1;md5=6ec41034e04432ee375d0e14fba596f4 \
                    file://../mpegts/src/head.rs;beginline=1;endline=1;md5=6ec41034e04432ee375d0e14fba596f4"

inherit rtpmgr_source module-rust

# The module crate (Rust, plus the C helper rtpmgr_net.c/.h for kernel UDP
# sockets) and the files it shares with user space, included by relative
# path: the ABI (crates/rtpmgr-abi/src/abi.rs) with the RTP header rules it
# includes (crates/rtp/src/rules.rs), the RTP statistics core
# (crates/rtp/src/seqstats.rs) and the MPEG-TS continuity and datagram
# rules (crates/mpegts/src/{cc,head}.rs).
SRC_URI = "file://crates/rtpmgr-kmod \
           file://crates/rtpmgr-abi/src/abi.rs \
           file://crates/rtp/src/seqstats.rs \
           file://crates/rtp/src/rules.rs \
           file://crates/mpegts/src/cc.rs \
           file://crates/mpegts/src/head.rs \
"
S = "${UNPACKDIR}/crates/rtpmgr-kmod"

EXTRA_OEMAKE = "KDIR=${STAGING_KERNEL_DIR}"

# Say plainly what is wrong before kbuild fails in Rust bindings it cannot
# find: the module needs Linux 7.2 or later, built with CONFIG_RUST=y (a
# kernel of the rtpmgr distro, or KERNEL_FEATURES "rust" and the 7.2
# linux-yocto of this layer). ci/check-yocto runs this against kernels
# that pass and fail.
python rtpmgr_check_kernel() {
    import re
    builddir = d.getVar("STAGING_KERNEL_BUILDDIR")
    kernel = d.getVar("PREFERRED_PROVIDER_virtual/kernel")
    with open(os.path.join(builddir, "kernel-abiversion")) as f:
        version = f.read().strip()
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m or (int(m[1]), int(m[2])) < (7, 2):
        bb.fatal("rtpmgr.ko needs Linux 7.2 or later; the kernel (%s) is %s. "
                 "Use the rtpmgr distro, or PREFERRED_VERSION_linux-yocto = \"7.2%%\"."
                 % (kernel, version))
    with open(os.path.join(builddir, ".config")) as f:
        if not re.search(r"^CONFIG_RUST=y$", f.read(), re.M):
            bb.fatal("rtpmgr.ko is written in Rust, but the kernel (%s %s) is built "
                     "without CONFIG_RUST: add \"rust\" to KERNEL_FEATURES "
                     "(the rtpmgr distro does), and check do_kernel_configcheck's "
                     "report for the dependency that dropped it." % (kernel, version))
}
rtpmgr_check_kernel[doc] = "Fails early, naming the cause, when the kernel is older than 7.2 or built without Rust"
do_configure[prefuncs] += "rtpmgr_check_kernel"

# module.bbclass names the package kernel-module-rtpmgr after rtpmgr.ko.
RPROVIDES:${PN} += "kernel-module-rtpmgr"
KERNEL_MODULE_AUTOLOAD += "rtpmgr"
