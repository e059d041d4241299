SUMMARY = "rtpmgr media box: the RTP streaming stack on a minimal system"
DESCRIPTION = "Minimal bootable image with the rtpmgr kernel module, \
               rtpmgrd configured by /etc/rtpmgr.toml, rtpmgrctl, the \
               board's media-port overlay and basic network tools."
SECTION = "images"
LICENSE = "MIT"

inherit core-image

IMAGE_INSTALL = "packagegroup-core-boot \
                 kernel-module-rtpmgr \
                 rtpmgrd \
                 rtpmgrctl \
                 rtpmgr-overlays \
                 iproute2 \
                 iputils-ping \
                 ethtool \
                 ${CORE_IMAGE_EXTRA_INSTALL} \
"
IMAGE_FEATURES += "ssh-server-dropbear"
IMAGE_LINGUAS = ""

# Boot partitions (wic) take the overlays from the deploy directory.
do_image_wic[depends] += "rtpmgr-overlays:do_deploy"
