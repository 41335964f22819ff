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
"$C" pki init --dir "$work/pki" >/dev/null
for i in $(seq 0 $((agents - 1))); do
    "$C" pki issue --dir "$work/pki" --role agent --name "$(printf 'loadgen-%02d' "$i")" >/dev/null
done
cat > "$work/collector.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "data"
[tls]
ca = "pki/ca.crt"
cert = "pki/palisade-collector.crt"
key = "pki/palisade-collector.key"
TOML
"$C" serve --config "$work/collector.toml" >"$work/out" 2>"$work/log" &
cpid=$!
for _ in $(seq 1 100); do grep -q listening "$work/out" && break; sleep 0.1; done
url="$(sed -n 's/^palisade-collector listening on //p' "$work/out")"
echo "collector $url (pid $cpid), $agents agents x $per_agent events, $batch events/batch, $(nproc) cores"
"$A" loadgen --collector "$url" --pki-dir "$work/pki" --agents "$agents" \
    --events-per-agent "$per_agent" --batch-events "$batch" --collector-pid "$cpid"
echo "store on disk: $(du -sh "$work/data" | cut -f1)"
