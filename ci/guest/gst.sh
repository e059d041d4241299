# SPDX-License-Identifier: MIT
# GStreamer in the qemuarm64 guest: Debian's arm64 packages of the suite
# the cross toolchain comes from (bookworm: glibc 2.36, GStreamer 1.22),
# unpacked into a sysroot, the plugin cross-built against it, and the
# library closure of what the guest runs copied into its initramfs.
# Sourced after ci/lib.sh, ci/kernel/lib.sh and ci/guest/lib.sh, which set
# ROOT and the other variables used here.
# shellcheck disable=SC2153

# What the guest pipelines use: gst-launch-1.0, coreelements (filesrc,
# filesink, fakesink), rtp (rtpmp2tpay, rtpmp2tdepay) and udp (udpsink)
# from -good, mpegtsdemux (tsparse) from -bad, and their libraries. The
# closure check in gst_guest_tree fails if a library is missing here.
GST_ARM64_PKGS=(libc6 libgcc-s1 libglib2.0-0 libffi8 libpcre2-8-0 zlib1g libmount1 libselinux1 libblkid1
    libgstreamer1.0-0 gstreamer1.0-tools libgstreamer-plugins-base1.0-0 gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad libgstreamer-plugins-bad1.0-0 liborc-0.4-0 libunwind8 libdw1 libelf1
    liblzma5 libzstd1 libbz2-1.0)
GST_GUEST_PLUGINS=(coreelements rtp udp mpegtsdemux)
MA=aarch64-linux-gnu

# gst_arm64_sysroot: GST_SYSROOT, the packages unpacked, cached under
# $RTPMGR_CACHE keyed by the packages' versions (the candidates of the
# machine's own apt sources, bookworm's by pin priority).
gst_arm64_sysroot() {
    add_debian_suites
    local spec=()
    # One apt-cache call (each reads every list): "NAME:arm64=VERSION".
    mapfile -t spec < <(apt-cache policy "${GST_ARM64_PKGS[@]/%/:arm64}" |
        awk '/^[^ ]/ {p = $1; sub(/:$/, "", p)} /^  Candidate:/ && $2 != "(none)" {print p "=" $2}')
    [ ${#spec[@]} = ${#GST_ARM64_PKGS[@]} ] ||
        die "arm64 candidates for only ${spec[*]} of ${GST_ARM64_PKGS[*]} in the apt sources"
    local key
    key=$(printf '%s\n' "${spec[@]}" | sha256sum | cut -c1-16)
    GST_SYSROOT=$RTPMGR_CACHE/gst-arm64-$key
    [ -e "$GST_SYSROOT/.complete" ] && return 0
    as_root mkdir -p "$GST_SYSROOT"
    as_root chown "$(id -u):$(id -g)" "$GST_SYSROOT"
    rm -rf "${GST_SYSROOT:?}"/* "$GST_SYSROOT/.debs"
    mkdir -p "$GST_SYSROOT/.debs"
    (cd "$GST_SYSROOT/.debs" && apt-get download -q "${spec[@]}" >/dev/null)
    local d
    for d in "$GST_SYSROOT"/.debs/*.deb; do dpkg-deb -x "$d" "$GST_SYSROOT"; done
    rm -rf "$GST_SYSROOT/.debs"
    printf '%s\n' "${spec[@]}" >"$GST_SYSROOT/.complete"
}

# gst_sysroot_pc DIR: pkg-config files for the libraries the bindings
# link (the runtime packages carry no .pc files and no unversioned .so
# links; the -dev packages would pull in their whole -dev closure), at
# the packages' versions, with the link names in DIR/lib.
gst_sysroot_pc() {
    local dir=$1 lib=$GST_SYSROOT/usr/lib/$MA gstv glibv
    gstv=$(sed -n 's/^libgstreamer1.0-0:arm64=\([0-9.]*\).*/\1/p' "$GST_SYSROOT/.complete")
    glibv=$(sed -n 's/^libglib2.0-0:arm64=\([0-9.]*\).*/\1/p' "$GST_SYSROOT/.complete")
    rm -rf "$dir"
    mkdir -p "$dir/lib"
    local spec name soname ver
    for spec in glib-2.0:libglib-2.0:$glibv gobject-2.0:libgobject-2.0:$glibv gmodule-2.0:libgmodule-2.0:$glibv \
                gio-2.0:libgio-2.0:$glibv gstreamer-1.0:libgstreamer-1.0:$gstv gstreamer-base-1.0:libgstbase-1.0:$gstv; do
        IFS=: read -r name soname ver <<<"$spec"
        [ -e "$lib/$soname.so.0" ] || die "no $soname.so.0 in $GST_SYSROOT"
        ln -s "$lib/$soname.so.0" "$dir/lib/$soname.so"
        printf 'Name: %s\nDescription: %s (arm64 sysroot)\nVersion: %s\nLibs: -L%s -l%s\nCflags:\n' \
            "$name" "$name" "$ver" "$dir/lib" "${soname#lib}" >"$dir/$name.pc"
    done
}

# build_gst_plugin: libgstrtpmgr.so for aarch64, linked against the sysroot.
GST_PLUGIN_ARM64=$ROOT/target/gst/$AARCH64/release/libgstrtpmgr.so
build_gst_plugin() {
    gst_arm64_sysroot
    local pc=$ROOT/target/gst/arm64-pkgconfig
    gst_sysroot_pc "$pc"
    (
        cd "$ROOT/crates/gst-rtpmgr" || exit
        # Out of the source tree: the Yocto recipes copy crates/ as it is.
        export CARGO_TARGET_DIR=$ROOT/target/gst
        export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_LIBDIR=$pc PKG_CONFIG_PATH=
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
        # Dynamic (a cdylib GStreamer loads); the sysroot's libraries'
        # own dependencies resolve there at link time.
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,-rpath-link,$GST_SYSROOT/usr/lib/$MA:$GST_SYSROOT/lib/$MA"
        cargo build --locked --release --target "$AARCH64"
    )
}

# gst_guest_tree ROOT: gst-launch-1.0, the plugins of GST_GUEST_PLUGINS and
# the cross-built libgstrtpmgr.so in ROOT, with the dynamic loader and the
# closure of their libraries (DT_NEEDED, resolved in the sysroot's lib
# directories); a library missing from the sysroot fails here, not in the
# guest.
gst_guest_tree() {
    local root=$1 plugdir=usr/lib/$MA/gstreamer-1.0 p
    mkdir -p "$root/$plugdir" "$root/usr/bin" "$root/lib/$MA" "$root/usr/lib/$MA"
    cp -a "$GST_SYSROOT/lib/ld-linux-aarch64.so.1" "$root/lib/"
    cp -a "$GST_SYSROOT/lib/$MA"/ld-linux-aarch64.so.1 "$root/lib/$MA/"
    cp "$GST_SYSROOT/usr/bin/gst-launch-1.0" "$root/usr/bin/"
    for p in "${GST_GUEST_PLUGINS[@]}"; do
        cp "$GST_SYSROOT/$plugdir/libgst$p.so" "$root/$plugdir/"
    done
    cp "$GST_PLUGIN_ARM64" "$root/$plugdir/"
    local todo=("$root/usr/bin/gst-launch-1.0" "$root/$plugdir"/*.so) seen=" " f n d found
    while [ ${#todo[@]} -gt 0 ]; do
        f=${todo[0]}; todo=("${todo[@]:1}")
        for n in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            case $seen in *" $n "*) continue ;; esac
            seen+="$n "
            found=
            for d in lib/$MA usr/lib/$MA; do
                if [ -e "$GST_SYSROOT/$d/$n" ]; then
                    cp -L "$GST_SYSROOT/$d/$n" "$root/$d/$n"
                    found=$root/$d/$n
                    break
                fi
            done
            [ -n "$found" ] || die "$n (needed by ${f#"$root"/}) is not in the arm64 packages: add its package to GST_ARM64_PKGS"
            todo+=("$found")
        done
    done
    echo "GStreamer in the guest: $(echo "$seen" | wc -w) libraries, $(du -sh "$root/usr/lib/$MA" | cut -f1) under /usr/lib/$MA"
}

# gst_test_stream OUT: the MPEG-TS the guest pipelines send, 4 s of an
# MPEG-2 test picture with its PAT, PMT and PCR (ffmpeg, bit-exact).
gst_test_stream() {
    need ffmpeg ffmpeg
    ffmpeg -loglevel error -y -f lavfi -i testsrc=size=320x240:rate=25 -t 4 -fflags +bitexact \
        -c:v mpeg2video -b:v 1M -f mpegts "$1"
    [ $(( $(stat -c %s "$1") % 188 )) = 0 ] || die "$1 is not whole 188-byte TS packets"
}

# build_gst_initramfs OUT: busybox, the module, rtpmgrd, rtpmgrctl and
# rtpgen (static), the GStreamer tree, the device rule, the test configuration,
# the test stream, and ci/guest/gst-init as /init.
build_gst_initramfs() {
    local out root
    out=$(realpath -m "$1")
    root=$(mktemp -d)
    chmod 0755 "$root"
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,etc,lib/modules}
    cp "$BUSYBOX" "$root/bin/busybox"
    cp "$KMOD_OUT/rtpmgr.ko" "$root/lib/modules/"
    cp "$ROOT/target/$AARCH64/release/"{rtpmgrd,rtpmgrctl,rtpgen} "$root/bin/"
    gst_guest_tree "$root"
    install_device_rule "$root"
    cp "$ROOT/ci/guest/rtpmgr-test.toml" "$root/etc/"
    gst_test_stream "$root/etc/gst-test.ts"
    install_init "$root" "$ROOT/ci/guest/gst-init"
    (cd "$root" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1 >"$out")
    rm -rf "$root"
}
