#!/usr/bin/env bash
# Where the collector's memory goes under load: `serve` built with the system's malloc (feature
# `system-alloc`; the shipped binary uses mimalloc, which heaptrack cannot see) runs under
# heaptrack while the load generator sends RATE events/s (MIX) for MINUTES minutes with
# correlation on, as bench/soak.sh does (state byte cap SOAK_STATE_BYTES, default 128 MiB). Then
# the collector is SIGKILLed, so that everything it held is still allocated, and the live bytes
# are summed by the innermost frame in collector/src and by the innermost library crate.
# Usage: bench/heap-profile.sh [MINUTES=3] [RATE=10000] [MIX=soc]
# heaptrack slows every allocation: RATE well below the soak's. Output: $BENCH_DIR/heap.zst
# (BENCH_DIR=/tmp/palisade-bench-heap), readable with heaptrack_print or heaptrack_gui.
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
minutes="${1:-3}"; rate="${2:-10000}"; mix="${3:-soc}"
ensure_rust
ensure_system_packages heaptrack
build_release >/dev/null 2>&1 || build_release
BENCH_DIR="${BENCH_DIR:-/tmp/palisade-bench-heap}"
mkdir -p "$BENCH_DIR"
work="$(mktemp -d "$BENCH_DIR/run.XXXXXX")"; cpid=""; hpid=""
trap '[ -n "$cpid" ] && kill -9 $cpid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
# The profiling build, copied out; the shipped one stays the workspace's release binary.
(cd "$PALISADE_ROOT" && cargo build --release -p palisade-collector --bins --features system-alloc)
cp "$PALISADE_BIN/palisade-collector" "$work/palisade-collector-heap"
build_release >/dev/null 2>&1 || build_release
A="$PALISADE_BIN/palisade-agent"
bench_pki "$work" 16
mkdir -p "$work/rules"
cp "$PALISADE_ROOT"/signatures/sigma/*.yml "$work/rules/"
printf 'listen = "127.0.0.1:0"\ndata_dir = "data"\n[tls]\nca = "pki/ca.crt"\ncert = "pki/palisade-collector.crt"\nkey = "pki/palisade-collector.key"\n[correlation]\nenabled = true\nrules_dir = "rules"\nmax_state_bytes = %s\n' \
    "${SOAK_STATE_BYTES:-134217728}" > "$work/collector.toml"
(cd "$work" && heaptrack -o "$BENCH_DIR/heap" "$work/palisade-collector-heap" serve --config collector.toml \
    >"$work/out" 2>"$work/log" </dev/null) &
hpid=$!
for _ in $(seq 1 300); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.2; done
url="$(sed -n 's/^palisade-collector listening on //p' "$work/out")"
cpid="$(pgrep -f "^$work/palisade-collector-heap serve" | head -1)"
echo "== heap profile: $rate events/s ($mix mix) for $minutes min into the collector (pid $cpid) under heaptrack"
"$A" loadgen --collector "$url" --pki-dir "$work/pki" --agents 16 --mix "$mix" --groups 100000 \
    --batch-events 1000 --rate "$rate" --duration-secs $((minutes * 60)) --output-format json \
    > "$work/report.json" || true
# (No backslash inside the f-string's braces: Python before 3.12 refuses it.)
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); a, s = r["events_acked"], r["events_per_sec"]; print(f"{a} events acked, {s:.0f}/s")' "$work/report.json" || true
echo "collector RSS at the end: $(awk '/VmRSS/{print $2}' "/proc/$cpid/status") KiB"
kill -9 "$cpid"; cpid=""
wait "$hpid" || true
heaptrack_print -f "$BENCH_DIR/heap.zst" --print-peaks 0 --print-allocators 0 --print-temporary 0 \
    --print-leaks 1 --peak-limit 100 --sub-peak-limit 100 2>/dev/null > "$work/leaks.txt"
python3 - "$work/leaks.txt" <<'PY'
import collections, re, sys
by, crate = collections.Counter(), collections.Counter()
cur = first = lib = prev = None
def size(s):
    m = re.match(r"([\d.]+)([KMG]?)", s)
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]
def done():
    if cur is not None:
        by[first or "(no collector frame)"] += cur
        crate[lib or "(std or the collector)"] += cur
for line in open(sys.argv[1]):
    m = re.match(r"^\s*([\d.]+[KMG]?) leaked over \d+ calls from(:?)", line)
    if m:
        done()
        # Top-level entries (no colon) sum their sub-entries: only those are counted.
        cur, first, lib, prev = (size(m.group(1)), None, None, None) if m.group(2) else (None,) * 4
        continue
    if cur is None:
        continue
    s = line.strip()
    if s.startswith("at "):
        p = s[3:]
        if first is None and p.startswith("collector/src/"):
            first = f"{p} ({prev})"
        c = re.search(r"registry/src/[^/]+/([^/]+)/", p)
        if lib is None and c:
            lib = c.group(1)
    elif not s.startswith("in "):
        prev = s[:60]
done()
print(f"live at the kill: {sum(by.values()) / 1e6:.1f} MB")
print("by the innermost collector frame:")
for k, v in by.most_common(15):
    print(f"{v / 1e6:9.2f} MB  {k}")
print("by the innermost library crate:")
for k, v in crate.most_common(8):
    print(f"{v / 1e6:9.2f} MB  {k}")
PY
