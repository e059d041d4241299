SUMMARY = "rtpmgr daemon: RTP/UDP streams relayed through the rtpmgr rings"
DESCRIPTION = "rtpmgrd receives RTP over UDP into the rtpmgr kernel \
               module's mmap rings and transmits from them, configured by \
               /etc/rtpmgr.toml; rtpmgrctl shows its status and asks it to \
               reload."
# rtpmgrd and rtpmgrctl are MIT; the crates linked into them are declared
# by the generated rtpmgrd-crates.inc.
LICENSE = "MIT AND ${RTPMGR_CRATE_LICENSES}"
LIC_FILES_CHKSUM = "file://LICENSES/MIT.txt;md5=9b4e80bfa188bbdac8ec62395ec53231"

inherit rtpmgr_source cargo_bin useradd systemd update-rc.d

# The Cargo workspace at the repository root (every member must be present
# for Cargo to load it) and the service files. /etc/rtpmgr.toml is in the
# machine-specific rtpmgr-config, so this package is the same for every
# board of an architecture.
SRC_URI = "file://Cargo.toml \
           file://Cargo.lock \
           file://crates \
           file://LICENSES/MIT.txt \
           file://rtpmgrd.service \
           file://rtpmgrd.init \
           file://60-rtpmgr.rules \
           file://60-rtpmgr-sysctl.conf \
"
S = "${UNPACKDIR}"

# Every crate Cargo.lock pins, fetched by bitbake (crate://, with sha256),
# and their licenses. Generated: ci/crates-inc; ci/check-layer checks it.
require rtpmgrd-crates.inc

# Only the two programs of the image, built from the crates bitbake
# fetched and unpacked, never from the network: the crate fetcher puts them,
# with the checksum file a Cargo directory source needs, in
# CARGO_VENDORING_DIRECTORY; Cargo's crates.io source is replaced by that
# directory, and --frozen is --locked (exactly what Cargo.lock pins) plus
# --offline. ci/check-yocto builds with these very flags from what
# do_unpack left.
CARGO_VENDORING_DIRECTORY = "${UNPACKDIR}/cargo_home/bitbake"
CARGO_VENDOR_FLAGS = "--config source.crates-io.replace-with='bitbake' \
                      --config source.bitbake.directory='${CARGO_VENDORING_DIRECTORY}'"
EXTRA_CARGO_FLAGS = "--frozen ${CARGO_VENDOR_FLAGS} -p rtpmgrd -p rtpmgrctl"
# cargo_bin passes no path remapping: without it the binaries (panic
# locations, debug info) name TMPDIR, which insane's buildpaths check
# refuses.
EXTRA_RUSTFLAGS += "--remap-path-prefix=${WORKDIR}=${TARGET_DBGSRC_DIR} --remap-path-prefix=${TMPDIR}=/usr/src/debug/tmp"

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
