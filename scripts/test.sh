#!/usr/bin/env bash
# The test command: installs what is missing, builds the binaries, runs every test (unit and
# end-to-end) in the one release profile. Extra arguments go to `cargo test`.
set -euo pipefail
source "$(dirname "$0")/common.sh"
ensure_rust
ensure_system_packages
build_release
cd "$PALISADE_ROOT"
echo "==> cargo test --release --workspace $*" >&2
cargo test --release --workspace "$@"
