SUMMARY = "rtpmgr media box: the RTP streaming stack on a minimal system"
DESCRIPTION = "Minimal bootable image with the rtpmgr kernel module, \
               rtpmgrd configured by /etc/rtpmgr.toml, rtpmgrctl, the \
               board's media-port overlay and basic network tools."
SECTION = "images"
LICENSE = "MIT"

inherit core-image testimage

IMAGE_INSTALL = "packagegroup-core-boot \
                 kernel-module-rtpmgr \
                 rtpmgrd \
                 rtpmgr-config \
                 rtpmgrctl \
                 rtpmgr-overlays \
                 iproute2 \
                 iputils-ping \
                 ethtool \
                 ${CORE_IMAGE_EXTRA_INSTALL} \
"
IMAGE_FEATURES += "ssh-server-dropbear"
# IMAGE_FEATURES += "gstreamer": the GStreamer elements on the rtpmgr rings
# and what the README's pipelines use beside them (RTP/MP2T payloading,
# udpsrc, tsparse, gst-launch-1.0 in gstreamer1.0 itself).
FEATURE_PACKAGES_gstreamer = "gstreamer1.0-plugin-rtpmgr \
                              gstreamer1.0-plugins-good-rtp \
                              gstreamer1.0-plugins-good-udp \
                              gstreamer1.0-plugins-bad-mpegtsdemux \
"
IMAGE_LINGUAS = ""

# Boot partitions (wic) take the overlays from the deploy directory.
do_image_wic[depends] += "rtpmgr-overlays:do_deploy"

# runqemu (qemuboot.conf, written from this recipe): qemu makes the virt
# device tree itself, so boot the one rtpmgr-overlays deploys, qemu's own
# with the media-port overlay applied.
QB_DTB:qemuarm64 = "devicetree/rtpmgr-qemuarm64.dtb"
# The slirp network: ssh as usual, plus host UDP 5004 to the guest's 5004,
# where the qemuarm64 configuration (conf/rtpmgr-qemuarm64.toml) receives
# the stream it relays back to the host's 127.0.0.1:5006.
QB_SLIRP_OPT:qemuarm64 = "-netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:127.0.0.1:5004-:5004"

# On-target tests (bitbake -c testimage rtpmgr-image, on the development
# variant, whose root may log in over ssh: docs/yocto.md): oe-core's basics
# and meta-rtpmgr/lib/oeqa/runtime/cases/rtpmgr.py, whose stream test sends
# RTP through the slirp forwarding above.
TEST_SUITES = "ping ssh systemd rtpmgr"
TEST_RUNQEMUPARAMS = "slirp nographic"
