SUMMARY = "rtpmgr daemon: RTP/UDP streams relayed through the rtpmgr rings"
DESCRIPTION = "rtpmgrd receives RTP over UDP into the rtpmgr kernel \
               module's mmap rings and transmits from them, configured by \
               /etc/rtpmgr.toml; rtpmgrctl shows its status and asks it to \
               reload."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSES/MIT.txt;md5=9b4e80bfa188bbdac8ec62395ec53231"

inherit rtpmgr_source cargo_bin useradd systemd update-rc.d

# The Cargo workspace at the repository root (every member must be present
# for Cargo to load it), the shipped configuration and the service files.
SRC_URI = "file://Cargo.toml \
           file://Cargo.lock \
           file://crates \
           file://${RTPMGR_CONFIG} \
           file://LICENSES/MIT.txt \
           file://rtpmgrd.service \
           file://rtpmgrd.init \
           file://60-rtpmgr.rules \
           file://60-rtpmgr-sysctl.conf \
"
S = "${UNPACKDIR}"

# The /etc/rtpmgr.toml the image ships: the commented reference
# configuration, or on qemuarm64 the relay over qemu's user network that
# ci/demo boots too.
RTPMGR_CONFIG ?= "conf/rtpmgr.toml"
RTPMGR_CONFIG:qemuarm64 ?= "conf/rtpmgr-qemuarm64.toml"
PACKAGE_ARCH = "${MACHINE_ARCH}"

# Only the two programs of the image, at the versions Cargo.lock pins.
EXTRA_CARGO_FLAGS = "--locked -p rtpmgrd -p rtpmgrctl"
# cargo_bin passes no path remapping: without it the binaries (panic
# locations, debug info) name TMPDIR, which insane's buildpaths check
# refuses.
EXTRA_RUSTFLAGS += "--remap-path-prefix=${WORKDIR}=${TARGET_DBGSRC_DIR} --remap-path-prefix=${TMPDIR}=/usr/src/debug/tmp"
# cargo_bin fetches the crates while compiling (meta-rust-bin has no
# fetcher for them); Cargo.lock and --locked pin every one.
# nooelint: oelint.task.network
do_compile[network] = "1"

do_install:append() {
    install -Dm 0644 ${UNPACKDIR}/${RTPMGR_CONFIG} ${D}${sysconfdir}/rtpmgr.toml
    install -Dm 0644 ${UNPACKDIR}/60-rtpmgr.rules ${D}${nonarch_base_libdir}/udev/rules.d/60-rtpmgr.rules
    install -Dm 0644 ${UNPACKDIR}/60-rtpmgr-sysctl.conf ${D}${sysconfdir}/sysctl.d/60-rtpmgr.conf
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -Dm 0644 ${UNPACKDIR}/rtpmgrd.service ${D}${systemd_system_unitdir}/rtpmgrd.service
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -Dm 0755 ${UNPACKDIR}/rtpmgrd.init ${D}${INIT_D_DIR}/rtpmgrd
    fi
}

PACKAGES =+ "rtpmgrctl"
FILES:rtpmgrctl += "${bindir}/rtpmgrctl"
FILES:${PN} += "${nonarch_base_libdir}/udev/rules.d"
CONFFILES:${PN} = "${sysconfdir}/rtpmgr.toml"
RRECOMMENDS:${PN} = "rtpmgrctl kernel-module-rtpmgr"

# The daemon's user; group rtpmgr also owns /dev/rtpmgr.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system rtpmgr"
USERADD_PARAM:${PN} = "--system --no-create-home --home-dir /nonexistent \
                       --shell /sbin/nologin --gid rtpmgr rtpmgr"

SYSTEMD_SERVICE:${PN} = "rtpmgrd.service"
INITSCRIPT_NAME = "rtpmgrd"
INITSCRIPT_PARAMS = "defaults 30"
