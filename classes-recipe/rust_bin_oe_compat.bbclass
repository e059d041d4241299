# SPDX-License-Identifier: MIT
# meta-rust-bin's prebuilt toolchain recipes (cargo-bin-cross, rust-bin-cross)
# adapted to the oe-core this layer is pinned to. Inherited by the appends in
# dynamic-layers/rust-bin-layer (active only with meta-rust-bin), after the
# recipe's own anonymous python has run.
#
# 1. LICENSE: oe-core now takes SPDX expressions and warns, for every
#    version of both recipes, about the old "Apache-2.0 | MIT".
# nooelint: oelint.append.protvars.LICENSE,oelint.vars.noncoreoverride - the license is upstream's, only its syntax changes
LICENSE = "Apache-2.0 OR MIT"

# 2. S: the recipes predate UNPACKDIR. Their S is computed under ${WORKDIR},
#    where oe-core unpacked sources until 2024; the pinned oe-core unpacks
#    into ${UNPACKDIR} (${WORKDIR}/sources), and insane.bbclass's
#    do_qa_unpack is fatal for an S written with ${WORKDIR}. Move S to the
#    same place under ${UNPACKDIR}, which is where the archive really is.
# nooelint: oelint.task.noanonpython,oelint.vars.noncoreoverride - S is computed by upstream's anonymous python, which this must follow
python () {
    workdir = d.getVar("WORKDIR")
    unpackdir = d.getVar("UNPACKDIR")
    s = d.getVar("S")
    if s.startswith(workdir + "/") and not s.startswith(unpackdir + "/"):
        d.setVar("S", "${UNPACKDIR}" + s[len(workdir):])
        # As upstream does for WORKDIR: the location of the work directory
        # must not change the task hashes.
        d.appendVarFlag("S", "vardepsexclude", " UNPACKDIR WORKDIR")
}
