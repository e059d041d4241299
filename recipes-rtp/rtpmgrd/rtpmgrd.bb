SUMMARY = "rtpmgr daemon: RTP/UDP streams relayed through the rtpmgr rings"
DESCRIPTION = "rtpmgrd receives RTP over UDP into the rtpmgr kernel \
               module's mmap rings and transmits from them, configured by \
               /etc/rtpmgr.toml; rtpmgrctl shows its status and asks it to \
               reload."
# rtpmgrd and rtpmgrctl are MIT; the crates linked into them are declared
# by the generated rtpmgrd-crates.inc.
LICENSE = "MIT AND ${RTPMGR_CRATE_LICENSES}"
LIC_FILES_CHKSUM = "file://LICENSES/MIT.txt;md5=9b4e80bfa188bbdac8ec62395ec53231"

inherit rtpmgr_cargo useradd systemd update-rc.d

# The Cargo workspace at the repository root (rtpmgr_cargo) and the
# service files. /etc/rtpmgr.toml is in the machine-specific rtpmgr-config,
# so this package is the same for every board of an architecture.
SRC_URI += "file://rtpmgrd.service \
            file://rtpmgrd.init \
            file://60-rtpmgr.rules \
            file://60-rtpmgr-sysctl.conf \
"

# Every crate Cargo.lock pins, fetched by bitbake (crate://, with sha256),
# and their licenses. Generated: ci/crates-inc; ci/check-layer checks it.
require rtpmgrd-crates.inc

# Only the two programs of the image.
RTPMGR_CARGO_PACKAGES = "-p rtpmgrd -p rtpmgrctl"

do_install:append() {
    install -Dm 0644 ${UNPACKDIR}/60-rtpmgr.rules ${D}${nonarch_base_libdir}/udev/rules.d/60-rtpmgr.rules
    install -Dm 0644 ${UNPACKDIR}/60-rtpmgr-sysctl.conf ${D}${nonarch_libdir}/sysctl.d/60-rtpmgr.conf
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -Dm 0644 ${UNPACKDIR}/rtpmgrd.service ${D}${systemd_system_unitdir}/rtpmgrd.service
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -Dm 0755 ${UNPACKDIR}/rtpmgrd.init ${D}${INIT_D_DIR}/rtpmgrd
    fi
}

PACKAGES =+ "rtpmgrctl"
FILES:rtpmgrctl += "${bindir}/rtpmgrctl"
# A package's sysctl defaults belong in /usr/lib/sysctl.d (systemd-sysctl
# and busybox read it); /etc/sysctl.d is the administrator's.
FILES:${PN} += "${nonarch_base_libdir}/udev/rules.d ${nonarch_libdir}/sysctl.d"
# The daemon does not start without its configuration.
RDEPENDS:${PN} += "rtpmgr-config"
RRECOMMENDS:${PN} += "rtpmgrctl kernel-module-rtpmgr"

# The daemon's user; group rtpmgr also owns /dev/rtpmgr.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system rtpmgr"
USERADD_PARAM:${PN} = "--system --no-create-home --home-dir /nonexistent \
                       --shell /sbin/nologin --gid rtpmgr rtpmgr"

SYSTEMD_SERVICE:${PN} = "rtpmgrd.service"
INITSCRIPT_NAME = "rtpmgrd"
INITSCRIPT_PARAMS = "defaults 30"
