# Shared by the quickstart, test, bench and CI scripts: one target directory outside the clone,
# one build profile (release), and system packages installed when missing.

PALISADE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}"
PALISADE_BIN="$CARGO_TARGET_DIR/release"

# Debian packages the build and the tests need: libpcap headers (network capture), pkg-config,
# and python3-dpkt for the public sample captures the decoder tests read.
PALISADE_APT_PACKAGES=(libpcap-dev pkg-config python3-dpkt)

ensure_system_packages() {
    local missing=()
    for p in "${PALISADE_APT_PACKAGES[@]}" "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing missing system packages: ${missing[*]}" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "need root or sudo to install ${missing[*]}" >&2; return 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_rust() {
    command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; return 1; }
}

build_release() {
    echo "==> building (release profile, target dir $CARGO_TARGET_DIR)" >&2
    (cd "$PALISADE_ROOT" && cargo build --release --workspace --bins)
}
