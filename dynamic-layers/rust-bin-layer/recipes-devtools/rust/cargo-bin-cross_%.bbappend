# Upstream sets S = "${WORKDIR}/cargo-<version>-<host>" in its anonymous
# python; the archive is unpacked into ${UNPACKDIR} (see the class).
inherit rust_bin_oe_compat
