# The Raspberry Pi 4 on linux-yocto 7.2 (meta-raspberrypi's own kernel is
# 6.18 at the pinned commit, older than the module's 7.2): the upstream
# kernel with the arm64 defconfig, which supports the BCM2711, as
# meta-rockchip configures its boards. The device tree it builds and the
# firmware boots is upstream's broadcom/bcm2711-rpi-4-b.dtb, the one
# ci/check-overlays applies the board's overlay to. Only for the rtpmgr
# distro: adding the layer alone changes no kernel.
require ${@bb.utils.contains('DISTRO_FEATURES', 'rtpmgr', 'linux-yocto-rpi4.inc', '', d)}
