# SPDX-License-Identifier: MIT
# Rust-enabled arm64 kernel for the qemuarm64 test guest: toolchain set-up
# and a cached build. Sourced by ci/ scripts after ci/lib.sh.
#
# The kernel is Debian's linux-source-7.2 (the series Yocto blacksail ships),
# configured as tinyconfig + recipes-kernel/linux/files/rtpmgr.cfg (the
# fragment the Yocto append uses too) + ci/kernel/qemu-guest.cfg, a debug
# variant of it for the fuzzer (+ ci/kernel/debug.cfg) and a bench variant
# without the run-time debug options (+ ci/kernel/bench.cfg). Each build
# lives outside the clone in $RTPMGR_CACHE, keyed by a hash of everything
# that goes into it, so a warm machine skips it.

RTPMGR_CACHE=${RTPMGR_CACHE:-/var/cache/rtpmgr}
KERNEL_SERIES=7.2
# Bump when the build steps in build_kernel change what they produce.
KERNEL_RECIPE=1
export ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-
export LIBCLANG_PATH=/usr/lib/llvm-19/lib

# The Debian mirror this machine already uses (never a host name of ours).
debian_mirror() {
    local uri=""
    if [ -r /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "no Debian mirror found in the apt sources"
    echo "$uri"
}

# trixie, trixie-backports and sid at low priority: nothing is taken from
# them unless asked for by version or suite.
add_debian_suites() {
    local f=/etc/apt/sources.list.d/rtpmgr-extra.sources changed=0
    if [ ! -e "$f" ]; then
        as_root tee "$f" >/dev/null <<SRC
Types: deb
URIs: $(debian_mirror)
Suites: trixie trixie-backports sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        as_root tee /etc/apt/preferences.d/rtpmgr-extra >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=trixie-backports
Pin-Priority: 100

Package: *
Pin: release n=sid
Pin-Priority: 50
PIN
        changed=1
    fi
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        as_root dpkg --add-architecture arm64
        changed=1
    fi
    if [ $changed = 1 ] || [ ! -e /var/lib/apt/lists/partial ]; then
        as_root apt-get update -qq
    fi
}

ensure_kernel_toolchain() {
    local rustc_ver pkgs=()
    rustc_ver=$(rustc --version | awk '{print $2}')
    dpkg -s "linux-source-$KERNEL_SERIES" >/dev/null 2>&1 || pkgs+=("linux-source-$KERNEL_SERIES/trixie-backports")
    # The rust-src matching the installed rustc exactly (the kernel needs
    # the core library's source of the compiler it builds with).
    if [ ! -d "/usr/src/rustc-$rustc_ver/library" ]; then
        add_debian_suites
        local v
        v=$(apt-cache madison rust-src | awk -v r="$rustc_ver+" 'index($3, r) == 1 {print $3; exit}')
        [ -n "$v" ] || die "no Debian rust-src for rustc $rustc_ver"
        pkgs+=("rust-src=$v")
    fi
    local p
    for p in libclang-19-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-system-arm bc bison flex \
             libelf-dev libssl-dev cpio device-tree-compiler xz-utils make python3 iproute2; do
        dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
    done
    if [ ${#pkgs[@]} -gt 0 ]; then
        add_debian_suites
        echo "installing: ${pkgs[*]}"
        apt_install "${pkgs[@]}"
    fi
    export RUST_LIB_SRC=/usr/src/rustc-$rustc_ver/library
    if ! command -v bindgen >/dev/null; then
        cargo install --locked bindgen-cli
    fi
    ensure_busybox
}

# Static arm64 busybox for the guest, unpacked from Debian's package.
ensure_busybox() {
    BUSYBOX=$RTPMGR_CACHE/busybox-arm64/bin/busybox
    [ -x "$BUSYBOX" ] && return 0
    add_debian_suites
    local d; d=$(mktemp -d)
    (cd "$d" && apt-get download -q busybox-static:arm64 >/dev/null)
    as_root mkdir -p "$RTPMGR_CACHE/busybox-arm64"
    as_root dpkg -x "$d"/busybox-static_*_arm64.deb "$RTPMGR_CACHE/busybox-arm64"
    rm -rf "$d"
}

kernel_src_tarball() { echo "/usr/src/linux-source-$KERNEL_SERIES.tar.xz"; }

# Unpack (or reuse) Debian's kernel source tarball; sets KSRC.
ensure_kernel_source() {
    KSRC=$RTPMGR_CACHE/src/linux-source-$KERNEL_SERIES
    [ -e "$KSRC/.unpacked" ] && return 0
    as_root mkdir -p "$RTPMGR_CACHE/src"
    as_root chown "$(id -u):$(id -g)" "$RTPMGR_CACHE" "$RTPMGR_CACHE/src"
    rm -rf "$KSRC"
    tar -C "$RTPMGR_CACHE/src" -xf "$(kernel_src_tarball)"
    touch "$KSRC/.unpacked"
}

# The variants of the test kernel (build_kernel's argument):
#   main   tinyconfig + rtpmgr.cfg + qemu-guest.cfg, gcc: every guest test
#   debug  main + ci/kernel/debug.cfg (KASAN, kmemleak, UBSAN), clang:
#          ci/fuzz-kernel. Clang because 7.2's RUST depends on
#          !KASAN || CC_IS_CLANG.
#   bench  main + ci/kernel/bench.cfg (no lockdep), gcc: the full ci/bench.
# Each has its own cache directory, $RTPMGR_CACHE/kernel-<key>,
# kernel-debug-<key> and kernel-bench-<key>, so no build evicts another.
# A later fragment's word on an option wins over an earlier one's.
kernel_fragments() {
    local f=("$ROOT/recipes-kernel/linux/files/rtpmgr.cfg" "$ROOT/ci/kernel/qemu-guest.cfg")
    [ "$1" = main ] || f+=("$ROOT/ci/kernel/$1.cfg")
    echo "${f[*]}"
}
# Extra make arguments of a variant (the module must be built with the same).
kernel_make_args() {
    case $1 in
        main|bench) ;;
        debug) echo LLVM=-19 ;;
    esac
}
kernel_cache_prefix() { if [ "$1" = main ]; then echo kernel-; else echo "kernel-$1-"; fi; }

# Clang, lld and LLVM's binutils of the libclang bindgen already uses.
ensure_kernel_toolchain_llvm() {
    local p pkgs=()
    for p in clang-19 lld-19 llvm-19; do
        dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
    done
    if [ ${#pkgs[@]} -gt 0 ]; then
        echo "installing: ${pkgs[*]}"
        apt_install "${pkgs[@]}"
    fi
}

# kernel_key VARIANT: the cache key, a hash of everything that changes the
# build. The main variant's inputs are exactly what they were before
# variants existed, so its cache survives.
kernel_key() {
    local variant=${1:-main}
    {
        dpkg-query -W -f='${Version}\n' "linux-source-$KERNEL_SERIES"
        rustc --version; bindgen --version; aarch64-linux-gnu-gcc --version | head -1
        echo "recipe $KERNEL_RECIPE"
        cat "$ROOT/recipes-kernel/linux/files/rtpmgr.cfg" "$ROOT/ci/kernel/qemu-guest.cfg"
        if [ "$variant" != main ]; then
            echo "variant $variant $(kernel_make_args "$variant")"
            if [ "$variant" = debug ]; then clang-19 --version | head -1; fi
            cat "$ROOT/ci/kernel/$variant.cfg"
        fi
    } | sha256sum | cut -c1-16
}

# build_kernel [main|debug|bench]: build (or reuse) that variant of the kernel;
# sets KVARIANT, KSRC, KBUILD, KIMAGE, KMAKE_ARGS (extra make arguments,
# for the module too) and KMOD_OUT (where build_module puts rtpmgr.ko: one
# directory per variant, so the two modules never overwrite each other).
build_kernel() {
    local key dir prefix frags
    KVARIANT=${1:-main}
    case $KVARIANT in main|debug|bench) ;; *) die "unknown kernel variant $KVARIANT (main, debug or bench)" ;; esac
    read -r -a KMAKE_ARGS <<<"$(kernel_make_args "$KVARIANT")"
    # shellcheck disable=SC2034 # KMOD_OUT and KIMAGE: for the scripts
    [ "$KVARIANT" = main ] && KMOD_OUT=$ROOT/target/kmod || KMOD_OUT=$ROOT/target/kmod-$KVARIANT
    if [ "$KVARIANT" = debug ]; then ensure_kernel_toolchain_llvm; fi
    read -r -a frags <<<"$(kernel_fragments "$KVARIANT")"
    key=$(kernel_key "$KVARIANT")
    prefix=$(kernel_cache_prefix "$KVARIANT")
    dir=$RTPMGR_CACHE/$prefix$key
    KSRC=$RTPMGR_CACHE/src/linux-source-$KERNEL_SERIES
    KBUILD=$dir/build
    # shellcheck disable=SC2034
    KIMAGE=$KBUILD/arch/arm64/boot/Image
    if [ -e "$dir/done" ] && [ -d "$KSRC" ]; then
        echo "kernel $KVARIANT $key: cached in $dir"
        return 0
    fi
    as_root mkdir -p "$RTPMGR_CACHE/src" "$KBUILD"
    as_root chown -R "$(id -u):$(id -g)" "$RTPMGR_CACHE"
    ensure_kernel_source
    local mk=(make -C "$KSRC" O="$KBUILD" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- RUST_LIB_SRC="$RUST_LIB_SRC" "${KMAKE_ARGS[@]}")
    "${mk[@]}" -s tinyconfig
    (cd "$KBUILD" && ARCH=arm64 "$KSRC/scripts/kconfig/merge_config.sh" -m -O "$KBUILD" "$KBUILD/.config" \
        "${frags[@]}" >/dev/null)
    "${mk[@]}" -s olddefconfig
    # Every option we asked for must have survived olddefconfig (RUST, for
    # one, silently drops out when a dependency is missing); what counts is
    # the last fragment's word on each option.
    local line opt missing=0
    while read -r line; do
        case $line in
            CONFIG_*=y) grep -qx "$line" "$KBUILD/.config" || { echo "not set: $line"; missing=1; } ;;
            "# CONFIG_"*" is not set")
                opt=${line#\# }; opt=${opt%% *}
                ! grep -q "^$opt=" "$KBUILD/.config" || { echo "still set: $opt"; missing=1; } ;;
        esac
    done < <(awk '/^CONFIG_[A-Za-z0-9_]+=y$/ { split($0, kv, "="); last[kv[1]] = $0 }
                  /^# CONFIG_[A-Za-z0-9_]+ is not set$/ { last[$2] = $0 }
                  END { for (o in last) print last[o] }' "${frags[@]}")
    [ $missing = 0 ] || die "kernel configuration lost options (dependencies missing?)"
    "${mk[@]}" -s rustavailable
    "${mk[@]}" -s -j"$(nproc)" Image modules
    touch "$dir/done"
    # Older builds of the same variant are dead weight; the other
    # variants' builds (other prefixes) stay. Keys are 16 hex digits, so
    # kernel-<key> never matches kernel-debug-<key>.
    find "$RTPMGR_CACHE" -maxdepth 1 -regextype posix-extended -regex ".*/${prefix}[0-9a-f]{16}" \
        ! -name "$prefix$key" -exec rm -rf {} +
}
