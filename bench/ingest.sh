#!/usr/bin/env bash
# Ingest benchmark: N simulated agents push batches through real mutual TLS into `serve`
# (sled store, fsync per group commit) on loopback. Prints durable events/s, ack latency
# (p50/p99/max) and the collector's RSS.
# Usage: bench/ingest.sh [AGENTS=16] [EVENTS_PER_AGENT=100000] [BATCH_EVENTS=2000]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
agents="${1:-16}"; per_agent="${2:-100000}"; batch="${3:-2000}"
ensure_rust
ensure_system_packages
build_release >/dev/null 2>&1 || build_release
C="$PALISADE_BIN/palisade-collector"; A="$PALISADE_BIN/palisade-agent"
work="$(mktemp -d)"; trap 'kill $cpid 2>/dev/null; wait $cpid 2>/dev/null; rm -rf "$work"' EXIT
bench_pki "$work" "$agents"
bench_collector "$work" </dev/null
echo "collector $url (pid $cpid), $agents agents x $per_agent events, $batch events/batch, $(nproc) cores"
"$A" loadgen --collector "$url" --pki-dir "$work/pki" --agents "$agents" \
    --events-per-agent "$per_agent" --batch-events "$batch" --collector-pid "$cpid"
echo "store on disk: $(du -sh "$work/data" | cut -f1)"
