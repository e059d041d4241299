# Only where the distro asks for rtpmgr (DISTRO_FEATURES "rtpmgr"), so that
# adding the layer alone changes no kernel (Yocto Project compatibility).
require ${@bb.utils.contains('DISTRO_FEATURES', 'rtpmgr', 'linux-rtpmgr.inc', '', d)}
