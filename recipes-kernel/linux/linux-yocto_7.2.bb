SUMMARY = "Linux 7.2 (linux-yocto), the kernel series rtpmgr.ko is written for"
DESCRIPTION = "linux-yocto's v7.2/standard/base branch at a fixed revision, \
               as Yocto 6.1 (blacksail) ships it. The oe-core this layer \
               is pinned to predates that release: it has linux-yocto 6.18 \
               and a linux-yocto-dev that follows its branch head. Drop \
               this recipe when the pin moves to an oe-core with \
               linux-yocto_7.2.bb."

SECTION = "kernel"
LICENSE = "GPL-2.0-only"
LIC_FILES_CHKSUM = "file://COPYING;md5=6bc538ed5bd9a7fc9398086aedcd7e46"

# nooelint: oelint.file.requirenotfound - oe-core's, found through BBPATH
require recipes-kernel/linux/linux-yocto.inc

# Only when asked for: the rtpmgr distro sets PREFERRED_VERSION_linux-yocto
# to 7.2%, so adding the layer alone changes no one's kernel.
DEFAULT_PREFERENCE = "-1"

LINUX_VERSION ?= "7.2.8"
PV = "${LINUX_VERSION}+git"

KBRANCH ?= "v7.2/standard/base"
KMETA = "kernel-meta"
SRC_URI = "git://git.yoctoproject.org/linux-yocto.git;name=machine;branch=${KBRANCH};protocol=https \
           git://git.yoctoproject.org/yocto-kernel-cache;type=kmeta;name=meta;branch=yocto-7.2;destsuffix=${KMETA};protocol=https \
"
# The revisions oe-core's linux-yocto_7.2.bb pins for 7.2.8: the kernel
# every build of the product boots, never the branch head.
SRCREV_machine ?= "864d1a112ea46c71a55e62cd5e1eac9ef9a4ea6e"
SRCREV_meta ?= "f26871a964ee3984a78f5e8fa1001cf43e551a20"

KCONF_BSP_AUDIT_LEVEL = "1"

# The qemu machines linux-yocto describes; board layers add theirs
# (meta-rockchip's append, this layer's dynamic-layers/raspberrypi).
COMPATIBLE_MACHINE = "^(qemuarm64|qemux86-64)$"
KERNEL_FEATURES:append:qemuall = " cfg/virtio.scc"
