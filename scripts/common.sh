# Shared by the quickstart, test, bench and CI scripts: one target directory outside the clone,
# one build profile (release), and system packages installed when missing.

PALISADE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}"
PALISADE_BIN="$CARGO_TARGET_DIR/release"

# Debian packages the build and the tests need: libpcap headers (network capture), pkg-config,
# and python3-dpkt for the public sample captures the decoder tests read.
# iproute2: `ip` and `tc` for the partition tests (network namespaces, veth, tbf; run as root).
# python3: tests/scripts/lossy_link.py, the userspace netem of the loss-and-delay tests.
# faketime: libfaketime, for the agent's clock-jump test.
PALISADE_APT_PACKAGES=(libpcap-dev pkg-config python3 python3-dpkt iproute2 faketime)

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

# Benchmarks: a dev PKI in DIR/pki with an analyst and N load-generator agents (loadgen-00 …).
bench_pki() { # DIR N
    local c="$PALISADE_BIN/palisade-collector"
    "$c" pki init --dir "$1/pki" >/dev/null
    "$c" pki issue --dir "$1/pki" --role analyst --name analyst >/dev/null
    for i in $(seq 0 $(($2 - 1))); do
        "$c" pki issue --dir "$1/pki" --role agent --name "$(printf 'loadgen-%02d' "$i")" >/dev/null
    done
}

# Benchmarks: writes DIR/collector.toml (a free loopback port, data in DIR/data, TLS from
# DIR/pki, then the extra TOML read from stdin), starts `serve` in the background and waits for
# it; sets `cpid` and `url`.
bench_collector() { # DIR < extra.toml
    { printf 'listen = "127.0.0.1:0"\ndata_dir = "data"\n[tls]\nca = "pki/ca.crt"\ncert = "pki/palisade-collector.crt"\nkey = "pki/palisade-collector.key"\n'; cat; } \
        > "$1/collector.toml"
    "$PALISADE_BIN/palisade-collector" serve --config "$1/collector.toml" >"$1/out" 2>"$1/log" </dev/null &
    cpid=$!
    for _ in $(seq 1 100); do grep -q listening "$1/out" && break; sleep 0.1; done
    url="$(sed -n 's/^palisade-collector listening on //p' "$1/out")"
}
