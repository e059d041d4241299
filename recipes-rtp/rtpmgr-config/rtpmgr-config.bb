SUMMARY = "rtpmgr configuration: the board's /etc/rtpmgr.toml"
DESCRIPTION = "The streams rtpmgrd runs on this machine. Kept apart from \
               rtpmgrd so that the daemon's package is the same for every \
               board of an architecture and only this file is per machine."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSES/MIT.txt;md5=9b4e80bfa188bbdac8ec62395ec53231"

inherit rtpmgr_source

# The commented reference configuration, or on qemuarm64 the relay over
# qemu's user network that ci/demo boots too. Ship your own with a
# rtpmgr-config.bbappend that adds it to SRC_URI and sets RTPMGR_CONFIG
# (RTPMGR_CONFIG:<machine> wins over the plain variable).
RTPMGR_CONFIG ?= "conf/rtpmgr.toml"
RTPMGR_CONFIG:qemuarm64 ?= "conf/rtpmgr-qemuarm64.toml"

SRC_URI = "file://${RTPMGR_CONFIG} \
           file://LICENSES/MIT.txt \
"
S = "${UNPACKDIR}"

# The file differs per machine; nothing is compiled.
PACKAGE_ARCH = "${MACHINE_ARCH}"
INHIBIT_DEFAULT_DEPS = "1"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -Dm 0644 ${UNPACKDIR}/${RTPMGR_CONFIG} ${D}${sysconfdir}/rtpmgr.toml
}

CONFFILES:${PN} = "${sysconfdir}/rtpmgr.toml"
