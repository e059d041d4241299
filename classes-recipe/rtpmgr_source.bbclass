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

# The crate registry Cargo.lock resolves against, in the form bitbake's
# crate fetcher takes as the host of crate:// URLs: Cargo records its
# default registry by the URL of its git index, whose last component less
# "-index" is that name. Read from Cargo.lock so that the recipe never names
# a registry of its own.
def rtpmgr_crate_registry(d):
    import re
    path = os.path.join(d.getVar("RTPMGR_SRCDIR"), "Cargo.lock")
    bb.parse.mark_dependency(d, path)
    with open(path) as f:
        sources = set(re.findall(r'^source = "registry\+([^"]+)"', f.read(), re.M))
    if len(sources) != 1:
        bb.fatal("Cargo.lock must name exactly one crate registry, found: %s" % (sorted(sources) or "none"))
    url = sources.pop()
    if not url.endswith("-index"):
        bb.fatal("Cargo.lock's registry %s is not a git index; set RTPMGR_CRATE_REGISTRY" % url)
    return url.rstrip("/").rsplit("/", 1)[1][:-len("-index")]

RTPMGR_CRATE_REGISTRY ?= "${@rtpmgr_crate_registry(d)}"
