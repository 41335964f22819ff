#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 30). Needs cargo-fuzz (installed here when
# missing). Uses a nightly toolchain with AddressSanitizer when one is installed; otherwise the
# stable toolchain without a sanitizer (RUSTC_BOOTSTRAP lets cargo-fuzz pass its -Z flags).
# Crashes land in fuzz/artifacts/<target>/ (fuzz/yara/artifacts/ for the YARA rule target); turn
# each into a regression test.
set -euo pipefail
source "$(dirname "$0")/common.sh"
secs="${1:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$PALISADE_ROOT/fuzz"
# The seeds' PKI comes from the collector in the main target dir, when it is built.
export PALISADE_MAIN_TARGET_DIR="$CARGO_TARGET_DIR"
# The fuzz workspace keeps its own target dir: sanitizer flags would invalidate the main one.
export CARGO_TARGET_DIR="${PALISADE_FUZZ_TARGET_DIR:-$HOME/.cache/palisade-fuzz-target}"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
    san=()
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
    san=(--sanitizer none)
fi
# Both fuzz workspaces (`fuzz/`, and `fuzz/yara/` for the YARA rule loader, which alone links
# YARA-X) start from the main workspace's lock file: the programs' own dependency versions, and
# yara-x with the `rsa` release it builds with (a fresh resolution picks a newer release
# candidate that it does not). Cargo adds the fuzz-only crates (libfuzzer-sys) and drops the rest.
cp "$PALISADE_ROOT/Cargo.lock" Cargo.lock
cp "$PALISADE_ROOT/Cargo.lock" yara/Cargo.lock
"${fuzz[@]}" build "${san[@]}"
"${fuzz[@]}" build "${san[@]}" --fuzz-dir yara
mkdir -p corpus
python3 "$PALISADE_ROOT/scripts/fuzz-seeds.py" corpus
run() { # FUZZ_DIR TARGET: one corpus dir for both crates; crashes in FUZZ_DIR/artifacts/TARGET/
    local artifacts="$1/artifacts/$2"
    mkdir -p "corpus/$2"
    echo "==> fuzzing $2 for ${secs}s" >&2
    "${fuzz[@]}" run "${san[@]}" --fuzz-dir "$1" "$2" "corpus/$2" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1 \
        | grep -E '^(#[0-9]+ +DONE|Done|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)' || true
    if [ -n "$(ls -A "$artifacts" 2>/dev/null)" ]; then
        echo "fuzz target $2 found a crash: see fuzz/${artifacts#./}" >&2
        exit 1
    fi
}
for target in $("${fuzz[@]}" list); do
    run . "$target"
done
for target in $("${fuzz[@]}" list --fuzz-dir yara); do
    run yara "$target"
done
echo "fuzzing: no crashes" >&2
