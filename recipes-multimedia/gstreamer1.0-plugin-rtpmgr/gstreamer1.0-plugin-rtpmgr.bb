SUMMARY = "GStreamer elements on the rtpmgr rings: rtpmgrsrc and rtpmgrsink"
DESCRIPTION = "The GStreamer plugin rtpmgr: rtpmgrsrc reads the packets of \
               a stream from the rtpmgr kernel module's from-device ring, \
               rtpmgrsink writes RTP into a to-device ring (a media port \
               or a UDP destination)."
# The plugin is MIT; the crates linked into it are declared by the
# generated gstreamer1.0-plugin-rtpmgr-crates.inc.
LICENSE = "MIT AND ${RTPMGR_CRATE_LICENSES}"
LIC_FILES_CHKSUM = "file://LICENSES/MIT.txt;md5=9b4e80bfa188bbdac8ec62395ec53231"

inherit rtpmgr_cargo

# crates/gst-rtpmgr is a Cargo workspace of its own with its Cargo.lock
# (the GStreamer bindings stay out of rtpmgrd's), and its crate list.
require ${BPN}-crates.inc
CARGO_MANIFEST_PATH = "${S}/crates/gst-rtpmgr/Cargo.toml"

DEPENDS += "gstreamer1.0"

# A cdylib GStreamer loads from its plugin directory; cargo_bin's install
# would put it (and the unit tests' rlib) in libdir.
do_install() {
    install -Dm 0755 ${CARGO_BINDIR}/libgstrtpmgr.so ${D}${libdir}/gstreamer-1.0/libgstrtpmgr.so
}

FILES:${PN} += "${libdir}/gstreamer-1.0/libgstrtpmgr.so"
# The elements open /dev/rtpmgr; rtpmp2tpay/rtpmp2tdepay are the usual
# neighbours of an RTP/MP2T stream.
RRECOMMENDS:${PN} += "kernel-module-rtpmgr gstreamer1.0-plugins-good-rtp"
