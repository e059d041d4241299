# Upstream sets S = "${WORKDIR}/rustc-<version>-<build>" (see the class),
# and its do_install runs `cd ${WORKDIR}/rust-std`, while the rust-std
# archives (SRC_URI subdir=rust-std) are unpacked into
# ${UNPACKDIR}/rust-std. Point the old path at the new one rather than
# carry a copy of upstream's do_install.
inherit rust_bin_oe_compat

# nooelint: oelint.vars.noncoreoverride - fixes upstream's recipe for this oe-core in every configuration
do_install:prepend() {
    ln -sfn ${UNPACKDIR}/rust-std ${WORKDIR}/rust-std
}
