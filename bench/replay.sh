#!/usr/bin/env bash
# Replay benchmark: a generated mixed capture through `palisade-agent replay` with every default
# detector on, against tcpdump and tshark reading the same file in the same run.
# Usage: bench/replay.sh [BYTES=1000000000] [FLOWS=100000]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
bytes="${1:-1000000000}"; flows="${2:-100000}"
ensure_rust
ensure_system_packages tcpdump tshark time
build_release >/dev/null 2>&1 || build_release
A="$PALISADE_BIN/palisade-agent"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
pcap="$work/mixed.pcap"
"$A" gen-capture --out "$pcap" --bytes "$bytes" --flows "$flows"
cd "$PALISADE_ROOT"   # the default IOC lists: ./signatures/net
measure() {  # label, command...
    local label="$1"; shift
    # palisade-agent replay exits 1 when it printed nothing (no alerts): not a failure here.
    local rc=0
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || rc=$?
    if [ "$rc" -gt 1 ]; then cat "$work/err"; exit 1; fi
    read -r secs kb < <(tail -1 "$work/time")
    printf '%-40s %8.2f s  peak RSS %6.0f MiB\n' "$label" "$secs" "$((kb / 1024))"
    echo "$secs" > "$work/$label.secs"
}
echo "capture: $(du -h "$pcap" | cut -f1), $(nproc) cores; one process each, single-threaded pipelines"
measure palisade "$A" replay "$pcap" --output-format ndjson --kind alert
grep '^replay:' "$work/err" || true
measure tcpdump tcpdump -r "$pcap" -w /dev/null
measure tshark tshark -r "$pcap" -T fields -e frame.number
p=$(cat "$work/palisade.secs"); td=$(cat "$work/tcpdump.secs"); ts=$(cat "$work/tshark.secs")
awk -v p="$p" -v td="$td" -v ts="$ts" 'BEGIN { printf "palisade takes %.1fx tcpdump'"'"'s time (tcpdump only copies packets); tshark takes %.1fx palisade'"'"'s\n", p/td, ts/p }'
