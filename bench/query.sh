#!/usr/bin/env bash
# Query benchmark: fills one day of the store with EVENTS events (the security mix: flows,
# logins, detector alerts) through real mutual TLS, then times the analyst's listings against
# it, each through the CLI as an analyst would type them (TLS handshake and process start
# included): newest 100, a kind, a severity, a filter expression over a CIDR, an agent.
# Bar (issue 5): `events --since 24h --limit 100` under 1 s on a 1M-event day.
# Usage: bench/query.sh [EVENTS=1000000] [RUNS=5]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
events="${1:-1000000}"; runs="${2:-5}"
ensure_rust
ensure_system_packages
build_release >/dev/null 2>&1 || build_release
C="$PALISADE_BIN/palisade-collector"; A="$PALISADE_BIN/palisade-agent"
work="$(mktemp -d)"; cpid=""
trap '[ -n "$cpid" ] && kill $cpid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
agents=8
bench_pki "$work" "$agents"
bench_collector "$work" <<TOML
[correlation]
enabled = false
TOML
"$A" loadgen --collector "$url" --pki-dir "$work/pki" --agents "$agents" --mix security \
    --groups 100000 --events-per-agent "$((events / agents))" --batch-events 2000 \
    --output-format json > "$work/fill.json"
stored="$("$C" status --collector "$url" --pki-dir "$work/pki" --as analyst --output-format json \
    | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["store"]["events"], s["store"]["size_bytes"])')"
echo "store: $stored (events, bytes) in one day; $(nproc) cores"

q() { # label, args...
    local label="$1"; shift
    local times=() n=0
    for _ in $(seq 1 "$runs"); do
        local t0 t1
        t0="$(date +%s.%N)"
        n="$("$C" events --collector "$url" --pki-dir "$work/pki" --as analyst --output-format ndjson "$@" | wc -l)" || true
        t1="$(date +%s.%N)"
        times+=("$(python3 -c "print($t1 - $t0)")")
    done
    python3 - "$label" "$n" "${times[@]}" <<'PY'
import sys, statistics
label, n, ts = sys.argv[1], sys.argv[2], sorted(float(t) for t in sys.argv[3:])
print(f"{label:<58} {n:>6} events  median {statistics.median(ts)*1000:7.0f} ms  max {ts[-1]*1000:7.0f} ms")
PY
}
q "events --since 24h --limit 100" --since 24h --limit 100
q "events --since 24h --limit 100 --oldest-first" --since 24h --limit 100 --oldest-first
q "events --since 24h --kind alert --limit 100" --since 24h --kind alert --limit 100
q "events --since 24h --severity high --limit 100" --since 24h --severity high --limit 100
q "events --since 24h --agent loadgen-03 --limit 100" --since 24h --agent loadgen-03 --limit 100
q "events --since 24h --filter 'auth failures' --limit 100" \
    --since 24h --filter 'event.dataset = palisade.auth and event.outcome = failure' --limit 100
q "events --since 24h --limit 10000" --since 24h --limit 10000
