#!/usr/bin/env bash
# The fuzzing campaign: every target (or the ones named) for SECONDS each (default 600), LANES at
# a time (default 1; one per core at most), each at `nice -n 10`. Builds and seeds as
# `scripts/fuzz.sh` does, then runs the built binaries directly (what `cargo fuzz run` runs), so
# the lanes do not queue on cargo's build lock. Prints one line per target for the table in
# docs/RELIABILITY.md: executions, edges covered, corpus units kept, crash artifacts.
# Logs: $FUZZ_LOGS (default /tmp/palisade-fuzz-campaign)/<target>.log.
# Usage: scripts/fuzz-campaign.sh [SECONDS=600] [LANES=1] [TARGET...]
set -euo pipefail
source "$(dirname "$0")/common.sh"
secs="${1:-600}"; lanes="${2:-1}"; shift $(( $# < 2 ? $# : 2 ))
logs="${FUZZ_LOGS:-/tmp/palisade-fuzz-campaign}"
mkdir -p "$logs"
# Build and seed (a 1-second run of every target).
"$PALISADE_ROOT/scripts/fuzz.sh" 1 >/dev/null
cd "$PALISADE_ROOT/fuzz"
bin="${PALISADE_FUZZ_TARGET_DIR:-$HOME/.cache/palisade-fuzz-target}/x86_64-unknown-linux-gnu/release"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list; cargo fuzz list --fuzz-dir yara)
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
one() { # TARGET: runs it, prints its line
    local t="$1" art
    if [ "$t" = yara_rules ]; then art="yara/artifacts/$t"; else art="artifacts/$t"; fi
    mkdir -p "$art" "corpus/$t"
    local load0; load0=$(cut -d' ' -f1 /proc/loadavg)
    nice -n 10 "$bin/$t" -artifact_prefix="$PWD/$art/" -max_total_time="$secs" -rss_limit_mb=2048 \
        "corpus/$t" > "$logs/$t.log" 2>&1 || true
    python3 - "$t" "$logs/$t.log" "$(ls -A "$art" | wc -l)" "$load0" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import re, sys
t, log, crashes, l0, l1 = sys.argv[1:]
txt = open(log, errors="replace").read()
done = re.findall(r"^Done (\d+) runs in (\d+) second", txt, re.M)
stats = re.findall(r"^#\d+\s+\S+\s+cov: (\d+) ft: \d+ corp: (\d+)/", txt, re.M)
runs, took = done[-1] if done else ("?", "?")
cov, corp = stats[-1] if stats else ("?", "?")
print(f"{t}\texecutions {runs} in {took} s\tedges {cov}\tcorpus {corp}\tcrashes {crashes}\tload {l0} -> {l1}", flush=True)
PY
}
running=0
for t in "${targets[@]}"; do
    one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$lanes" ]; then wait -n || true; running=$((running - 1)); fi
done
wait
# Files, not `ls` of the directories: that lists each directory's name, so an empty run looked
# like crashes (found by the first end-to-end run of this script).
if find artifacts yara/artifacts -type f 2>/dev/null | grep -q .; then
    echo "crashes found: see fuzz/artifacts/ and fuzz/yara/artifacts/" >&2
    exit 1
fi
