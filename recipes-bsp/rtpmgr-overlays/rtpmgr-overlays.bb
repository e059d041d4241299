SUMMARY = "Device-tree overlays that describe the rtpmgr media port"
DESCRIPTION = "One overlay per supported board, adding a node bound by the \
               rtpmgr module's platform driver (compatible rtpmgr,media-port, \
               binding in dts/bindings/rtpmgr,media-port.yaml) and wiring it \
               to the board's DMA controller. Installed to /boot/devicetree \
               and deployed to DEPLOY_DIR_IMAGE/devicetree for boot loaders."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://rtpmgr-qemuarm64.dtso;beginline=1;endline=1;md5=6ec41034e04432ee375d0e14fba596f4"

inherit rtpmgr_source devicetree

# qemu generates the virt machine's device tree at start, so there is no
# base DTB to overlay at build time: dump the one qemu makes for runqemu's
# own machine options and apply the overlay to it (do_deploy below).
# meta-rtpmgr points QB_DTB at the result, so runqemu boots with the media
# port described, as ci/demo and ci/check-guest do.
DEPENDS:append:qemuarm64 = " qemu-system-native"

# Overlays are not a board's device tree: leave virtual/dtb to the BSP.
PROVIDES:remove = "virtual/dtb"
# The overlays include no kernel header (dt-bindings): they need not wait
# for the kernel to be configured, which a KERNEL_INCLUDE path would make
# devicetree.bbclass add to do_compile.
KERNEL_INCLUDE = ""

SRC_URI = "file://rtpmgr-qemuarm64.dtso \
           file://rtpmgr-rpi4.dtso \
           file://rtpmgr-rk3328.dtso \
"

# Each board builds its own overlay (meta-rtpmgr's rtpmgr-boards.inc tells
# its boot flow to apply it); other machines get all of them.
COMPATIBLE_MACHINE = ".*"
DT_FILES:qemuarm64 = "rtpmgr-qemuarm64.dtso"
DT_FILES:raspberrypi4 = "rtpmgr-rpi4.dtso"
DT_FILES:rk3328 = "rtpmgr-rk3328.dtso"

# The dump lives outside B, whose *.dtb the class installs; its random
# seeds are dropped so the deployed DTB is reproducible (qemu fills /chosen
# again at boot).
do_deploy:append:qemuarm64() {
    install -d ${WORKDIR}/qemu-dump
    ${QB_SYSTEM_NAME} ${QB_MACHINE},dumpdtb=${WORKDIR}/qemu-dump/virt.dtb ${QB_CPU} ${QB_SMP} -nographic -nodefaults
    fdtput -d ${WORKDIR}/qemu-dump/virt.dtb /chosen rng-seed || true
    fdtput -d ${WORKDIR}/qemu-dump/virt.dtb /chosen kaslr-seed || true
    fdtoverlay -i ${WORKDIR}/qemu-dump/virt.dtb -o ${DEPLOYDIR}/devicetree/rtpmgr-qemuarm64.dtb ${B}/rtpmgr-qemuarm64.dtbo
}
