# SPDX-License-Identifier: MIT
# Shared helpers for the ci/ scripts: step timing and set-up of what the
# scripts need on a fresh Debian machine. Sourced, not run.

CI_START=$(date +%s)

# step NAME CMD...: run CMD with a header and its elapsed time.
step() {
    local name=$1; shift
    local t0; t0=$(date +%s)
    printf '\n==> %s\n' "$name"
    "$@"
    printf '<== %s (%ss, total %ss)\n' "$name" $(( $(date +%s) - t0 )) $(( $(date +%s) - CI_START ))
}

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The repository root, whatever the caller's directory.
# shellcheck disable=SC2034 # for the scripts that source this
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

ensure_rust() {
    command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
    cargo --version
    # rustfmt and clippy ship with rustup's default profile; add them if a
    # minimal profile left them out.
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        rustup component add rustfmt clippy
    fi
}

# as_root CMD...: CMD as root (sudo unless this already is root).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_install PACKAGE...: install Debian packages, quietly, without the
# recommended ones; if that fails (lists missing or stale), once more after
# apt-get update.
apt_install() {
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 && return 0
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# need CMD PACKAGE: install Debian PACKAGE if CMD is missing.
need() {
    command -v "$1" >/dev/null && return 0
    printf 'installing %s (for %s)\n' "$2" "$1"
    apt_install "$2"
}

# Tools the host tests and the demo use besides Rust. The IPTV interop
# tests (crates/rtpmgrd/tests/interop_*.rs) drive real peers: ffmpeg
# (encoder, raw UDP TS sender, ffprobe) and GStreamer (udpsrc; rtpbin,
# rtprtxsend from -good; the RIST elements from -bad), and drop packets
# on the way with iptables-legacy's statistic match.
ensure_host_tools() {
    need python3 python3
    need ip iproute2
    need tc iproute2
    need iptables-legacy iptables
    need setpriv util-linux
    need ffmpeg ffmpeg
    need gst-launch-1.0 gstreamer1.0-tools
    need_pkg gstreamer1.0-plugins-good
    need_pkg gstreamer1.0-plugins-bad
}

# ci-report (crates/dev/rtpmgr-tools/src/bin/ci-report.rs): the tables and
# summaries the scripts print from the JSON their runs write, and the JSON
# look-ups they make. build_ci_report once, then ci_report ARGS.
build_ci_report() { cargo build --release -q -p rtpmgr-tools --bin ci-report; }
ci_report() { "${CARGO_TARGET_DIR:-$ROOT/target}/release/ci-report" "$@"; }

# Host builds go to target/ in the clone; CI starts clean every time.
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# ensure_venv DIR PIN...: a Python venv in DIR holding exactly the pinned
# packages, reused while the pins and the interpreter stay the same.
# PYTHON picks the interpreter (default: python3 on PATH).
ensure_venv() {
    local dir=$1; shift
    local py=${PYTHON:-python3}
    local stamp; stamp=$(printf '%s\n' "$("$py" --version)" "$py" "$@")
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.pins" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    "$py" -c 'import ensurepip' 2>/dev/null || need_pkg python3-venv
    mkdir -p "$(dirname "$dir")" 2>/dev/null || { as_root mkdir -p "$(dirname "$dir")" && as_root chown "$(id -u):$(id -g)" "$(dirname "$dir")"; }
    rm -rf "$dir"
    "$py" -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
    echo "$stamp" >"$dir/.pins"
}

# need_pkg PACKAGE: install a Debian package that provides no command.
need_pkg() {
    dpkg -s "$1" >/dev/null 2>&1 || apt_install "$1"
}
