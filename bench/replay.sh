#!/usr/bin/env bash
# Replay benchmark: a generated mixed capture through `palisade-agent replay`, against tcpdump and
# tshark reading the same file in the same run.
#   1. detectors 1-7 (YARA-X off), alerts only: packets/s and Gbit/s per core
#   2. detectors 1-7, every flow record printed (to /dev/null): the same, and peak RSS while
#      streaming 100 k records at the end
#   3. all 8 detectors (YARA-X on): Gbit/s per core from total CPU time (YARA-X scans on its own
#      thread, so per core = bits / (user + sys seconds)) and YARA-X's share of that time
# Per-core figures use CPU time (user + sys), so a busy machine skews them less than wall time.
# Usage: bench/replay.sh [BYTES=1000000000] [FLOWS=100000]
# PALISADE_AGENT=path runs another palisade-agent binary (e.g. a copy from before a change) on
# the same kind of capture, for before/after figures in one session.
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
bytes="${1:-1000000000}"; flows="${2:-100000}"
ensure_rust
ensure_system_packages tcpdump tshark time
build_release >/dev/null 2>&1 || build_release
A="${PALISADE_AGENT:-$PALISADE_BIN/palisade-agent}"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
pcap="$work/mixed.pcap"
"$A" gen-capture --out "$pcap" --bytes "$bytes" --flows "$flows"
cd "$PALISADE_ROOT"   # the default IOC lists and YARA rules: ./signatures/{net,yara}
measure() {  # label, command...: prints wall, CPU and peak RSS; leaves "wall cpu" in $work/label
    local label="$1"; shift
    # palisade-agent replay exits 1 when it printed nothing (no alerts): not a failure here.
    local rc=0
    /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >/dev/null 2>"$work/$label.err" || rc=$?
    if [ "$rc" -gt 1 ]; then cat "$work/$label.err"; exit 1; fi
    read -r secs user sys kb < <(tail -1 "$work/time")
    local cpu; cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    printf '%-22s %7.2f s wall %7.2f s CPU  peak RSS %5d MiB\n' "$label" "$secs" "$cpu" "$((kb / 1024))"
    echo "$secs $cpu" > "$work/$label"
}
per_core() {  # label: packets/s and Gbit/s per CPU second, from the replay summary
    local packets mb cpu
    packets=$(sed -nE 's/^replay: ([0-9]+) packets.*/\1/p' "$work/$1.err")
    mb=$(sed -nE 's/^replay: [0-9]+ packets [^,]*, ([0-9.]+) MB.*/\1/p' "$work/$1.err")
    cpu=$(cut -d' ' -f2 "$work/$1")
    awk -v p="$packets" -v mb="$mb" -v c="$cpu" -v l="$1" \
        'BEGIN { printf "  %s per core: %.0f packets/s, %.2f Gbit/s\n", l, p / c, mb * 8e6 / c / 1e9 }'
}
echo "capture: $(du -h "$pcap" | cut -f1), $(nproc) cores"
measure palisade-1-7 "$A" replay "$pcap" --output-format ndjson --kind alert --disable yara
grep '^replay:' "$work/palisade-1-7.err" || true
per_core palisade-1-7
measure palisade-1-7-records "$A" replay "$pcap" --output-format ndjson --disable yara
grep '^replay:' "$work/palisade-1-7-records.err" || true
measure palisade-all-8 "$A" replay "$pcap" --output-format ndjson --kind alert
grep '^replay:' "$work/palisade-all-8.err" || true
per_core palisade-all-8
scan=$(sed -nE 's/^replay: yara: .*"scan_secs":([0-9.e+-]+).*/\1/p' "$work/palisade-all-8.err")
awk -v s="${scan:-0}" -v c="$(cut -d' ' -f2 "$work/palisade-all-8")" \
    'BEGIN { printf "  YARA-X scanning: %.2f s of %.2f s CPU (%.0f %%)\n", s, c, 100 * s / c }'
measure tcpdump tcpdump -r "$pcap" -w /dev/null
measure tshark tshark -r "$pcap" -T fields -e frame.number
p=$(cut -d' ' -f1 "$work/palisade-1-7"); td=$(cut -d' ' -f1 "$work/tcpdump"); ts=$(cut -d' ' -f1 "$work/tshark")
awk -v p="$p" -v td="$td" -v ts="$ts" 'BEGIN { printf "palisade (1-7) takes %.1fx tcpdump'"'"'s wall time (tcpdump only copies packets); tshark takes %.1fx palisade'"'"'s\n", p/td, ts/p }'
