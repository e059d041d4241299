# SPDX-License-Identifier: MIT
# The qemuarm64 test guest: arm64 user space, the module, an initramfs, and
# a qemu boot whose console is checked. Sourced after ci/lib.sh and
# ci/kernel/lib.sh.

AARCH64=aarch64-unknown-linux-gnu
GUEST_BINS=(rtpmgrd rtpmgrctl rtpgen rtpmgr-guest-tests rtpmgr-guest-bench rtpmgr-guest-fuzz rtpmgr-guest-soak bare-relay)

# rust_target TARGET LINKER PACKAGE...: static release binaries for TARGET.
# rustup's std for the target when it can be had, else std built from
# Debian's rust-src of the same version (-Zbuild-std).
rust_target() {
    local target=$1 linker=$2; shift 2
    local pkgs=() p env
    for p in "$@"; do pkgs+=(-p "$p"); done
    env=$(echo "$target" | tr 'a-z-' 'A-Z_')
    export "CARGO_TARGET_${env}_LINKER=$linker"
    export "CARGO_TARGET_${env}_RUSTFLAGS=-C target-feature=+crt-static"
    if [ -d "$(rustc --print sysroot)/lib/rustlib/$target/lib" ] || timeout 300 rustup target add "$target"; then
        cargo build --release --target "$target" "${pkgs[@]}"
    else
        local src
        src="$(rustc --print sysroot)/lib/rustlib/src/rust"
        mkdir -p "$(dirname "$src")"
        [ -e "$src" ] || ln -s "/usr/src/rustc-$(rustc --version | awk '{print $2}')" "$src"
        RUSTC_BOOTSTRAP=1 cargo build --release --target "$target" -Zbuild-std=std,panic_abort "${pkgs[@]}"
    fi
}

ARMV7=armv7-unknown-linux-gnueabihf

# arm64 user space (rtpmgr-bench for bare-relay, the guest benchmark's
# yardstick), and the guest tests once more as 32-bit ARM (compat).
build_guest_binaries() {
    rust_target "$AARCH64" aarch64-linux-gnu-gcc rtpmgrd rtpmgrctl rtpmgr-tools rtpmgr-guest-tests rtpmgr-bench
    rust_target "$ARMV7" arm-linux-gnueabihf-gcc rtpmgr-guest-tests
}

# Where build_module puts rtpmgr.ko and its intermediates: out of the
# source tree (Kbuild's MO=), so crates/rtpmgr-kmod holds only sources, the
# very files the Yocto recipe takes. build_kernel sets it per kernel
# variant (target/kmod, target/kmod-debug).
KMOD_OUT=${KMOD_OUT:-$ROOT/target/kmod}

# The module, against the kernel build_kernel chose and with its make
# arguments (the debug kernel is built with clang), the kernel's clippy
# lints, every warning an error.
build_module() {
    check_module_format
    rm -rf "$KMOD_OUT"
    mkdir -p "$KMOD_OUT"
    make -s -C "$KBUILD" M="$ROOT/crates/rtpmgr-kmod" MO="$KMOD_OUT" "${KMAKE_ARGS[@]}" CLIPPY=1 KRUSTFLAGS=-Dwarnings
}

# The module's Rust is formatted with the kernel's settings
# (crates/rtpmgr-kmod/.rustfmt.toml, the kernel tree's: 100 columns), not
# the workspace's. rtpmgr_main.rs goes through stdin, so rustfmt does not
# follow its #[path] modules into the shared ABI and statistics files,
# which the workspace's settings format.
check_module_format() {
    local dir=$ROOT/crates/rtpmgr-kmod f bad=0
    for f in "$dir"/*.rs; do
        if [ "$(basename "$f")" = rtpmgr_main.rs ]; then
            # shellcheck disable=SC2094 # both only read it
            rustfmt --edition 2021 --config-path "$dir/.rustfmt.toml" --emit stdout <"$f" | cmp -s - "$f" || bad=1
        else
            rustfmt --edition 2021 --check "$f" >/dev/null || bad=1
        fi
        [ $bad = 0 ] || die "$f is not formatted with the kernel's rustfmt settings (rustfmt --edition 2021 it)"
    done
}

# build_initramfs OUT [INIT]: busybox, the module, the binaries, the test
# config and /init (default ci/guest/init, the tests) with its prelude.
build_initramfs() {
    local out root init=${2:-$ROOT/ci/guest/init}
    out=$(realpath -m "$1")
    root=$(mktemp -d)
    chmod 0755 "$root"
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,etc,lib/modules}
    cp "$BUSYBOX" "$root/bin/busybox"
    cp "$KMOD_OUT/rtpmgr.ko" "$root/lib/modules/"
    local b
    for b in "${GUEST_BINS[@]}"; do
        cp "$ROOT/target/$AARCH64/release/$b" "$root/bin/"
    done
    cp "$ROOT/target/$ARMV7/release/rtpmgr-guest-tests" "$root/bin/rtpmgr-guest-tests32"
    install_device_rule "$root"
    install_init "$root" "$init"
    cp "$ROOT/ci/guest/rtpmgr-test.toml" "$ROOT/ci/guest/rtpmgr-kernel.toml" "$root/etc/"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 >"$out")
    rm -rf "$root"
}

# The machine every guest boot uses (the DTB dump must match it).
QEMU_MACHINE=(qemu-system-aarch64 -M virt -cpu cortex-a57 -smp 2 -m 1024 -nographic -no-reboot -nic none)
OVERLAY=$ROOT/recipes-bsp/rtpmgr-overlays/files/rtpmgr-qemuarm64.dtso

# guest_dtb OUT: the DTB qemu generates for virt, with the media-port
# overlay applied, so the platform driver binds from the device tree.
guest_dtb() {
    local out=$1 tmp
    tmp=$(mktemp -d)
    "${QEMU_MACHINE[@]}" -machine dumpdtb="$tmp/virt.dtb" >/dev/null
    dtc -q -@ -I dts -O dtb -o "$tmp/overlay.dtbo" "$OVERLAY"
    fdtoverlay -i "$tmp/virt.dtb" -o "$out" "$tmp/overlay.dtbo"
    rm -rf "$tmp"
}

# Console lines that mean the kernel found a bug.
# The debug kernel's reports are among them: KASAN ("BUG: KASAN: ..."),
# UBSAN ("UBSAN: ..."), kmemleak ("unreferenced object ..." as ci/guest/
# fuzz-init prints the kmemleak file), DEBUG_OBJECTS/DEBUG_LIST (WARNING).
KERNEL_PROBLEMS='Oops|BUG:|WARNING:|KASAN:|Kernel panic|rcu_.*stall|detected stall|Call trace:|UBSAN:|unreferenced object'

# guest_kernel [VARIANT]: the steps every guest starts with: the kernel
# toolchain, the kernel (main or debug, cached by inputs) and rtpmgr.ko
# built against it.
guest_kernel() {
    local variant=${1:-main}
    step "kernel toolchain (apt, bindgen, busybox)" ensure_kernel_toolchain
    step "kernel $KERNEL_SERIES for arm64, $variant (cached by inputs)" build_kernel "$variant"
    step "rtpmgr.ko (for the $variant kernel)" build_module
}

# guest_image NAME INIT [VARIANT]: all a test guest needs: guest_kernel,
# the static arm64 (and 32-bit) user space, out/NAME-initrd.gz with INIT
# as /init, and out/NAME.dtb (virt with the media-port overlay).
guest_image() {
    local name=$1 init=$2 variant=${3:-main}
    guest_kernel "$variant"
    step "arm64 user space" build_guest_binaries
    step "initramfs ($name)" build_initramfs "out/$name-initrd.gz" "$init"
    step "device tree: virt + media-port overlay" guest_dtb "out/$name.dtb"
}

# guest_boot NAME SECONDS LOG SHOW [PARAM...]: boot out/NAME-initrd.gz on
# out/NAME.dtb with the kernel parameters PARAM added, the console (without
# carriage returns) in LOG and its lines matching the regex SHOW (none if
# empty) on stdout as they come. Returns non-zero if qemu failed or did
# not end within SECONDS; the caller judges the console.
guest_boot() {
    local name=$1 secs=$2 log=$3 show=$4; shift 4
    local rc=0
    mkdir -p "$(dirname "$log")"
    timeout "$secs" "${QEMU_MACHINE[@]}" -dtb "out/$name.dtb" -kernel "$KIMAGE" -initrd "out/$name-initrd.gz" \
        -append "console=ttyAMA0 panic=-1 oops=panic${*:+ $*}" </dev/null 2>&1 |
        tr -d '\r' | tee "$log" | { if [ -n "$show" ]; then grep -a --line-buffered -E "$show" || true; else cat >/dev/null; fi; } ||
        rc=$?    # the scripts run with pipefail: qemu's or timeout's status
    return "$rc"
}

# console_problems LOG [CONTEXT]: fail if the console shows a kernel
# problem, printing each hit with CONTEXT lines after it (the stack of a
# splat, a kmemleak backtrace).
console_problems() {
    if grep -naE -A "${2:-0}" "$KERNEL_PROBLEMS" "$1"; then
        die "kernel problem on the console (full log: $1)"
    fi
}

# console_json LOG TAG OUT: the JSON the guest printed between TAG-JSON-BEGIN
# and TAG-JSON-END into OUT; fail if there is none that parses (ci_report:
# build_ci_report first).
console_json() {
    sed -n "/^$2-JSON-BEGIN/,/^$2-JSON-END/p" "$1" | sed '1d;$d' >"$3"
    ci_report get "$3" >/dev/null || die "no $2 results on the console ($1)"
}

# boot_guest NAME: the guest tests' boot (ci/guest/init): print their
# progress, fail on a kernel problem or a failed test. GUEST_APPEND: more
# kernel parameters.
boot_guest() {
    local log=out/$1-console.log
    guest_boot "$1" 1500 "$log" \
        'GUEST-|^ok |^FAILED |guest-tests:|^  [0-9]|rtpgen|rtpmgrd|^tv1|^tv-k|^in-k|^ts-k|^STREAM' \
        ${GUEST_APPEND:+"$GUEST_APPEND"} || true
    console_problems "$log"
    grep -q '^GUEST-RESULT: PASS' "$log" || die "guest tests failed (full log: $log)"
}

# install_init ROOT INIT: INIT as the image's /init, and the prelude every
# /init sources (ci/guest/prelude as /lib/rtpmgr/prelude).
install_init() {
    install -m 0755 "$2" "$1/init"
    install -D -m 0644 "$ROOT/ci/guest/prelude" "$1/lib/rtpmgr/prelude"
}

# install_device_rule ROOT: the image's udev rule for /dev/rtpmgr as an
# mdev rule, and the user and group useradd makes (uid/gid 999).
install_device_rule() {
    local root=$1
    mkdir -p "$root/etc"
    # KERNEL=="rtpmgr", ..., OWNER="root", GROUP="rtpmgr", MODE="0660"
    # becomes mdev's "rtpmgr root:rtpmgr 0660".
    sed -n 's/^KERNEL=="\([^"]*\)".*OWNER="\([^"]*\)".*GROUP="\([^"]*\)".*MODE="\([0-7]*\)".*/\1 \2:\3 \4/p' \
        "$ROOT/recipes-rtp/rtpmgrd/files/60-rtpmgr.rules" >"$root/etc/mdev.conf"
    [ -s "$root/etc/mdev.conf" ] || die "no device rule in 60-rtpmgr.rules"
    printf 'root:x:0:0:root:/root:/bin/sh\nrtpmgr:x:999:999::/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nrtpmgr:x:999:\n' >"$root/etc/group"
}

# build_demo_rootfs OUT: the ci/demo guest, assembled from the files the
# Yocto recipes install: /etc/rtpmgr.toml (qemuarm64's), the sysvinit
# script, the sysctl.d file, and the udev rule as mdev.conf; the user and
# group useradd makes.
build_demo_rootfs() {
    local out root files=$ROOT/recipes-rtp/rtpmgrd/files
    out=$(realpath -m "$1")
    root=$(mktemp -d)
    chmod 0755 "$root"
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,etc/init.d,lib/modules,usr/bin,var/log}
    cp "$BUSYBOX" "$root/bin/busybox"
    cp "$KMOD_OUT/rtpmgr.ko" "$root/lib/modules/"
    cp "$ROOT/target/$AARCH64/release/rtpmgrd" "$ROOT/target/$AARCH64/release/rtpmgrctl" "$root/usr/bin/"
    cp "$ROOT/conf/rtpmgr-qemuarm64.toml" "$root/etc/rtpmgr.toml"
    install -m 0755 "$files/rtpmgrd.init" "$root/etc/init.d/rtpmgrd"
    install -D -m 0644 "$files/60-rtpmgr-sysctl.conf" "$root/usr/lib/sysctl.d/60-rtpmgr.conf"
    install_device_rule "$root"
    install_init "$root" "$ROOT/ci/guest/demo-init"
    (cd "$root" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1 >"$out")
    rm -rf "$root"
}
