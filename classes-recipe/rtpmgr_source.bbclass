# Recipes of the rtpmgr layer build the sources of the repository the layer
# lives in. They name them by file:// relative to the repository root, so the
# same recipe builds a developer's checkout (uncommitted changes included) and
# a clone kas made from a git URL at a pinned commit: in both cases the layer
# directory holds exactly the sources `ci/test` tested. A git:// SRC_URI with
# its own SRCREV would instead build whatever commit the recipe names, never
# the working tree, and could drift from the layer it ships in.
FILESEXTRAPATHS:prepend := "${RTPMGR_SRCDIR}:"

# One version for everything: the Cargo workspace's (Cargo.toml,
# [workspace.package]), so recipe file names carry none.
def rtpmgr_version(d):
    import re
    path = os.path.join(d.getVar("RTPMGR_SRCDIR"), "Cargo.toml")
    # Re-parse the recipes when the version changes.
    bb.parse.mark_dependency(d, path)
    with open(path) as f:
        m = re.search(r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', f.read(), re.M | re.S)
    if not m:
        bb.fatal("no [workspace.package] version in Cargo.toml")
    return m.group(1)

SECTION ?= "multimedia"
PV = "${@rtpmgr_version(d)}"
CVE_PRODUCT ?= "rtpmgr"
