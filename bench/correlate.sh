#!/usr/bin/env bash
# Correlation benchmark: simulated agents push a security event mix (flows, logins, detector
# alerts from GROUPS distinct addresses) through real mutual TLS into `serve` with the shipped
# Sigma rules plus generated detection rules (RULES in all) loaded, then the same load with
# correlation off, in one run. Prints durable events/s both ways (the ratio is the cost of
# correlation), alert latency from commit (p50/p99), correlation groups held and evicted, the bytes
# the correlation store accounts for (per group), and RSS (with its transparent-huge-page share).
# Usage: bench/correlate.sh [AGENTS=16] [EVENTS_PER_AGENT=125000] [GROUPS=1000000] [RULES=100]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
agents="${1:-16}"; per_agent="${2:-125000}"; groups="${3:-1000000}"; nrules="${4:-100}"
ensure_rust
ensure_system_packages
build_release >/dev/null 2>&1 || build_release
C="$PALISADE_BIN/palisade-collector"; A="$PALISADE_BIN/palisade-agent"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"; cpid=""
trap '[ -n "$cpid" ] && kill $cpid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
bench_pki "$work" "$agents"

# The shipped rules, plus generated detection rules in the shapes real rule sets use (exact
# values, lists, prefixes, substrings, CIDR, numeric ranges) until there are $nrules.
mkdir -p "$work/rules"
cp "$repo"/signatures/sigma/*.yml "$work/rules/"
shipped="$("$C" rules check --dir "$work/rules" | sed -n 's/.*: \([0-9]*\) rules .*/\1/p')"
python3 - "$work/rules/generated.yml" "$((nrules - shipped))" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
docs = []
for i in range(max(n, 0)):
    k = i % 6
    if k == 0:
        det = f"    event.dataset: palisade.alert\n    rule.id: 'pal.gen.{i}'"
    elif k == 1:
        det = f"    event.dataset: palisade.flow\n    destination.port:\n      - {1000 + i}\n      - {2000 + i}\n      - {3000 + i}"
    elif k == 2:
        det = f"    message|contains: 'marker-{i}-'"
    elif k == 3:
        det = f"    destination.ip|cidr: '198.18.{i % 256}.0/24'"
    elif k == 4:
        det = f"    event.dataset: palisade.auth\n    user.name|startswith: 'svc-gen{i}-'"
    else:
        det = f"    network.protocol: 'proto{i}'\n    destination.port|gte: {60000 + i}"
    docs.append(f"title: Generated rule {i}\nid: bench-gen-{i}\nlogsource:\n  product: palisade\ndetection:\n  sel:\n{det}\n  condition: sel\nlevel: low\n")
open(path, "w").write("---\n".join(docs))
PY
total="$("$C" rules check --dir "$work/rules" | sed -n 's/.*: \([0-9]*\) rules .*/\1/p')"

run() { # $1 = true|false (correlation)
    rm -rf "$work/data"
    bench_collector "$work" <<TOML
[correlation]
enabled = $1
rules_dir = "rules"
max_state_entries = 4000000
event_refs = ${EVENT_REFS:-5}
TOML
    t_start="$(date +%s.%N)"
    "$A" loadgen --collector "$url" --pki-dir "$work/pki" --agents "$agents" --mix security \
        --groups "$groups" --events-per-agent "$per_agent" --batch-events 2000 \
        --collector-pid "$cpid" --output-format json > "$work/report.json"
    acked="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events_acked"])' "$work/report.json")"
    # Correlation is fed after the commit; wait (bounded) until it has seen every event.
    for _ in $(seq 1 600); do
        "$C" status --collector "$url" --pki-dir "$work/pki" --as analyst --output-format json > "$work/status.json"
        done_="$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); c=s.get("correlation"); print(1 if c is None or c["events"]>=int(sys.argv[2]) else 0)' "$work/status.json" "$acked")"
        [ "$done_" = 1 ] && break
        sleep 0.2
    done
    t_done="$(date +%s.%N)"
    # The correlator measures its store every 5 s; let it see the final state before reading.
    if [ "$1" = true ]; then
        sleep 6
        "$C" status --collector "$url" --pki-dir "$work/pki" --as analyst --output-format json > "$work/status.json"
    fi
    rss="$(awk '/VmRSS/{print $2/1024}' /proc/$cpid/status)"
    thp="$(awk '/AnonHugePages/{print $2/1024}' /proc/$cpid/smaps_rollup 2>/dev/null || echo 0)"
    hwm="$(awk '/VmHWM/{print $2/1024}' /proc/$cpid/status)"
    python3 - "$work/report.json" "$work/status.json" "$1" "$rss" "$hwm" "$t_start" "$t_done" "$thp" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2])); c = s.get("correlation")
span = float(sys.argv[7]) - float(sys.argv[6])
print(f"correlation={sys.argv[3]:5}  {r['events_acked']} events durable in {r['elapsed_secs']:.1f} s = {r['events_per_sec']:.0f} events/s"
      f"  (ack p99 {r['p99_ms']:.0f} ms, {r['busy']} busy answers)  RSS {float(sys.argv[4]):.0f} MiB"
      f" (of it in transparent huge pages {float(sys.argv[8]):.0f} MiB), peak {float(sys.argv[5]):.0f} MiB")
if c:
    print(f"    evaluated {c['events']}, alerts {c['detection_alerts']} detection + {c['correlation_alerts']} correlation,"
          f" groups in state {c['state_entries']} (evicted {c['state_evicted']}, store {c.get('state_bytes', 0) / 2**20:.0f} MiB"
          f" = {c.get('state_bytes', 0) / max(c['state_entries'], 1):.0f} bytes/group), alert latency from commit p50 {c['alert_latency_ms_p50']:.0f} ms p99 {c['alert_latency_ms_p99']:.0f} ms")
    print(f"    every event durable AND evaluated: {c['events']} in {span:.1f} s = {c['events']/span:.0f} events/s end to end"
          f" (building blocks {c.get('building_blocks', 0)})")
PY
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events_per_sec"])' "$work/report.json" > "$work/eps.$1"
    if [ "$1" = true ]; then
        # What the analyst waits for on a store holding this run's alerts and incidents.
        for cmd in "incidents --limit 20" "alerts --since 1h --limit 20" "situation" "incidents --status all --severity high --limit 20"; do
            t0="$(date +%s.%N)"
            # shellcheck disable=SC2086
            "$C" $cmd --collector "$url" --pki-dir "$work/pki" --as analyst >/dev/null 2>&1 || true
            t1="$(date +%s.%N)"
            python3 -c "print(f'    {\"$cmd\":<52} {($t1 - $t0) * 1000:6.0f} ms')"
        done
    fi
    kill "$cpid"; wait "$cpid" 2>/dev/null || true; cpid=""
}
echo "$agents agents x $per_agent events, $groups source addresses, $total rules ($shipped shipped), $(nproc) cores"
run true
run false
python3 -c 'import sys; on=float(open(sys.argv[1]).read()); off=float(open(sys.argv[2]).read()); print(f"correlation on / off throughput: {on/off:.2f}")' "$work/eps.true" "$work/eps.false"
