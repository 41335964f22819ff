#!/usr/bin/env bash
# Soak: a steady stream of RATE events/s (security mix, GROUPS source addresses) from AGENTS
# simulated agents over real mutual TLS into `serve` with the shipped Sigma rules and correlation
# on, for MINUTES minutes, while an analyst queries every 10 s. Samples the collector's RSS every
# 10 s (with its CPU time per thread name, printed per minute: which part is busy when throughput
# dips) and times every query; at the end checks that every acknowledged event is in the store
# and that the correlator evaluated every one. Prints per-minute figures and a verdict on RSS
# and latency drift (first third against last third of the run). Bounded: the load stops after
# MINUTES, the wait for the correlator after 10 minutes more.
# Usage: bench/soak.sh [MINUTES=30] [RATE=50000] [AGENTS=16] [GROUPS=100000] [MIX=security]
# (environment: SOAK_STATE_BYTES, the correlation state's byte cap; SOAK_INCIDENT_BACKEND and
# SOAK_INDEX_BACKEND, the engines of the incident database and the event index;
# SOAK_QUEUE_EVENTS and SOAK_QUEUE_ALERTS, the correlator's two queues; see below)
# MIX is the load generator's: `security` has 15% detector alerts (an alert storm, ~8,000
# alerts/s at 50,000 events/s), `soc` 1% (a SOC's everyday share).
# Results: a table on stdout and $BENCH_DIR/soak.json (BENCH_DIR=/tmp/palisade-bench-soak); the raw
# samples stay in $BENCH_DIR/samples. The store grows ~2.3 GB a minute at 50,000 events/s: check
# the free disk first (the collector refuses batches at its reserve, and the run stops there).
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
minutes="${1:-30}"; rate="${2:-50000}"; agents="${3:-16}"; groups="${4:-100000}"; mix="${5:-security}"
ensure_rust
ensure_system_packages curl
build_release >/dev/null 2>&1 || build_release
C="$PALISADE_BIN/palisade-collector"; A="$PALISADE_BIN/palisade-agent"
repo="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-/tmp/palisade-bench-soak}"
mkdir -p "$BENCH_DIR"
work="$(mktemp -d "$BENCH_DIR/run.XXXXXX")"; cpid=""; spid=""
# The samples and the collector's log outlive the run (a run that stops early, e.g. on a full
# disk, still has them; a disturbance in the figures can be looked up in the log).
stop_collector() { # SIGTERM, then SIGKILL after 120 s (a collector stuck at shutdown must not hold
    # the store); prints how long the stop took (it saves the correlation windows first)
    local t0; t0=$(date +%s.%N)
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 240); do
        if ! kill -0 "$1" 2>/dev/null; then
            echo "collector stopped $(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$t0" "$(date +%s.%N)") s after SIGTERM" >&2
            return 0
        fi
        sleep 0.5
    done
    echo "collector $1 still running 120 s after SIGTERM: SIGKILL" >&2; kill -9 "$1" 2>/dev/null || true
}
# Under `set -e` a failing command ends the trap too: every step that may fail has `|| true` (a run
# without failed queries has no query-errors file; once that skipped the clean-up and left 36 GB).
trap '[ -n "$spid" ] && kill $spid 2>/dev/null; [ -n "$cpid" ] && stop_collector $cpid; wait 2>/dev/null; cp "$work/samples" "$BENCH_DIR/samples" 2>/dev/null || true; cp "$work/query-errors" "$BENCH_DIR/query-errors" 2>/dev/null || true; cp "$work/log" "$BENCH_DIR/collector.log" 2>/dev/null || true; rm -rf "$work"' EXIT
bench_pki "$work" "$agents"
mkdir -p "$work/rules"
cp "$repo"/signatures/sigma/*.yml "$work/rules/"
# The correlation state at its default group cap (2,000,000) and a byte cap of SOAK_STATE_BYTES
# (default 128 MiB, half the shipped 256 MiB, so that at a SOC's alert share the cap is reached
# within the first half of a 30-minute run: at 1% alerts the state grows ~6 MB a minute). RSS is
# bounded by the caps and sled's caches (64 + 32 MiB), so it must level off once they are
# reached: the shipped rules' windows run to 24 h, so in a soak the caps, not expiry, are what
# bound them; evictions are counted and printed.
state_bytes="${SOAK_STATE_BYTES:-134217728}"
# The incident database's engine (SOAK_INCIDENT_BACKEND: redb, the default, or sled).
incident_backend="${SOAK_INCIDENT_BACKEND:-redb}"
# The event store index's engine (SOAK_INDEX_BACKEND: redb, the default, or sled) and page cache
# (SOAK_INDEX_CACHE_BYTES: the collector's default when unset).
index_backend="${SOAK_INDEX_BACKEND:-redb}"
index_cache="${SOAK_INDEX_CACHE_BYTES:+index_cache_bytes = $SOAK_INDEX_CACHE_BYTES}"
# The correlator's two queues (SOAK_QUEUE_EVENTS, SOAK_QUEUE_ALERTS: the collector's defaults,
# 20,000 events and 10,000 alerts, when unset).
queue_events="${SOAK_QUEUE_EVENTS:+queue_events = $SOAK_QUEUE_EVENTS}"
queue_alerts="${SOAK_QUEUE_ALERTS:+queue_alerts = $SOAK_QUEUE_ALERTS}"
bench_collector "$work" <<TOML
[ingest]
index_backend = "$index_backend"
$index_cache
[correlation]
enabled = true
rules_dir = "rules"
max_state_bytes = $state_bytes
incident_backend = "$incident_backend"
$queue_events
$queue_alerts
[metrics]
listen = "127.0.0.1:0"
TOML
# The collector's own answer times (palisade_api_request_duration_seconds), to tell a query that
# got slower from a client or machine that did.
murl="$(sed -n 's/^palisade-collector metrics on //p' "$work/out")"
q() { "$C" "$@" --collector "$url" --pki-dir "$work/pki" --as analyst; }

# The block device under the data dir, for its write and flush counters (/proc/diskstats).
dev="$(basename "$(df --output=source "$work" | tail -1)")"
# Sampler: RSS and store size every 10 s, and an analyst's queries, each timed.
(
    end=$(( $(date +%s) + minutes * 60 ))
    while [ "$(date +%s)" -lt "$end" ]; do
        t="$(date +%s)"
        rss="$(awk '/VmRSS/{print $2}' /proc/$cpid/status 2>/dev/null || echo 0)"
        # du exits 1 when a file it listed is gone before it stats it (sled removes log
        # segments as it goes): under `set -e` that once ended this sampler at minute 13 of a
        # 30-minute run. The sum of what it could read is still the size.
        disk="$( (du -sk "$work/data" 2>/dev/null || true) | cut -f1)"
        # Where the disk and the memory go: events vs alerts/incidents, correlation state.
        store_kb="$( (du -sk "$work/data/store" 2>/dev/null || true) | cut -f1)"
        incidents_kb="$( (du -sk "$work/data/incidents" 2>/dev/null || true) | cut -f1)"
        state="$(q status --output-format json 2>/dev/null | python3 -c 'import json,sys; c=json.load(sys.stdin).get("correlation") or {}; print(c.get("state_entries",0), c.get("state_bytes",0), c.get("detection_alerts",0)+c.get("correlation_alerts",0))' 2>/dev/null || echo "0 0 0")"
        for cmd in "events --since 5m --limit 100" "incidents --limit 20" "situation --output-format json"; do
            t0="$(date +%s%N)"
            # shellcheck disable=SC2086
            # Exit 1 is "nothing found" (an empty store at the very start), not a failure.
            rc=0; err="$(q $cmd 2>&1 >"$work/last-answer")" || rc=$?
            if [ "$rc" -le 1 ]; then ok=1; else ok=0; echo "$t $cmd (exit $rc): $err" >> "$work/query-errors"; fi
            t1="$(date +%s%N)"
            echo "query $t \"$cmd\" $(( (t1 - t0) / 1000000 )) $ok"
        done
        # Incidents open (none is resolved in a soak: all of them), from the situation above.
        open_incidents="$(python3 -c 'import json,sys; print(sum(json.load(open(sys.argv[1]))["open_incidents"].values()))' "$work/last-answer" 2>/dev/null || echo 0)"
        echo "rss $t $rss $disk ${store_kb:-0} ${incidents_kb:-0} $state $open_incidents"
        # CPU time (clock ticks) per thread name, summed over threads of one name (tokio's
        # workers, sled's io threads): which part of the collector is busy when throughput dips.
        # Tab-separated, as names hold spaces.
        for f in /proc/$cpid/task/*/stat; do
            # comm is in parentheses and may hold spaces; utime and stime follow it as fields 12, 13
            sed -E 's/^[0-9]+ \((.*)\) /\1\t/' "$f" 2>/dev/null || true
        done | awk -F'\t' -v t="$t" '{ split($2, x, " "); s[$1] += x[12] + x[13] }
            END { printf "threads\t%s", t; for (k in s) printf "\t%s\t%d", k, s[k]; print "" }'
        # Cumulative answer count and seconds per route: the difference between two samples is
        # the server's time for the one query of each kind in between.
        # With the CPU time the answers' own work used (`cpu`): wall time growing with CPU time
        # flat is waiting (a busy machine, a lock), not more work.
        (curl -s --max-time 5 "$murl" 2>/dev/null || true) | sed -n \
            -e 's/^palisade_api_request_duration_seconds_\(sum\|count\){method="GET",route="\([^"]*\)"} \(.*\)$/server '"$t"' \2 \1 \3/p' \
            -e 's/^palisade_api_request_cpu_seconds_total{method="GET",route="\([^"]*\)"} \(.*\)$/server '"$t"' \1 cpu \2/p' \
            -e 's/^\(palisade_ingest_commit_seconds\|palisade_ingest_queue_wait_seconds\|palisade_store_write_seconds\|palisade_correlation_incident_write_seconds\)_\(bucket\|sum\|count\)\({[^}]*}\)\{0,1\} \(.*\)$/hist '"$t"' \1 \2 \3 \4/p' \
            -e 's/^palisade_api_request_duration_seconds_\(bucket\|sum\|count\){method="POST",route="\/v1\/ingest"\(,le="[^"]*"\)\{0,1\}} \(.*\)$/hist '"$t"' ingest_request \1 {x\2} \3/p' \
            -e 's/^\(palisade_correlation_backlog_events\|palisade_correlation_alert_queue\) \(.*\)$/gauge '"$t"' \1 \2/p'
        # Where the ack waits when it waits: the disk's own counters (writes, flushes, the
        # time spent on each), the page cache's dirty and writeback bytes, and the bytes each
        # collector thread sent to the disk.
        echo "disk $t $(awk -v d="$dev" '$3 == d { $1 = $2 = $3 = ""; print }' /proc/diskstats)"
        echo "mem $t $(awk '/^Dirty:/ { d = $2 } /^Writeback:/ { w = $2 } END { print d, w }' /proc/meminfo)"
        for f in /proc/$cpid/task/*; do
            printf '%s\t%s\n' "$(cat "$f/comm" 2>/dev/null)" "$(awk '/^write_bytes/ { print $2 }' "$f/io" 2>/dev/null)"
        done | awk -F'\t' -v t="$t" '$2 != "" { s[$1] += $2 } END { printf "tio\t%s", t; for (k in s) printf "\t%s\t%.0f", k, s[k]; print "" }'
        sleep $(( 10 - ($(date +%s) - t) > 0 ? 10 - ($(date +%s) - t) : 0 ))
    done
) > "$work/samples" &
spid=$!

echo "== soak: $rate events/s ($mix mix) from $agents agents for $minutes min, correlation on ($(ls "$work/rules" | wc -l) rule files, state capped at $((state_bytes >> 20)) MiB), event index on $index_backend, incidents on $incident_backend, correlation queues ${SOAK_QUEUE_EVENTS:-20000} events and ${SOAK_QUEUE_ALERTS:-10000} alerts, queries every 10 s, $(nproc) cores"
"$A" loadgen --collector "$url" --pki-dir "$work/pki" --agents "$agents" --mix "$mix" \
    --groups "$groups" --batch-events 1000 --rate "$rate" --duration-secs $((minutes * 60)) \
    --collector-pid "$cpid" --output-format json > "$work/report.json" \
    || echo "load generator: some simulated agents stopped early (listed below)"
wait "$spid" || true; spid=""
acked="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events_acked"])' "$work/report.json")"
# The correlator is fed after the commit: wait (bounded) until it has evaluated every event.
evaluated=0
for _ in $(seq 1 600); do
    q status --output-format json > "$work/status.json" 2>/dev/null || true
    evaluated="$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print((s.get("correlation") or {}).get("events", 0))' "$work/status.json" 2>/dev/null || echo 0)"
    [ "$evaluated" -ge "$acked" ] && break
    sleep 1
done
q status --output-format json > "$work/status.json"
python3 - "$work/report.json" "$work/status.json" "$work/samples" "$BENCH_DIR/soak.json" "$rate" "$minutes" <<'PY'
import json, os, sys, statistics
r = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))
rate, minutes = int(sys.argv[5]), int(sys.argv[6])
stored = s["store"]["events"]; c = s.get("correlation") or {}
rss, queries, server, threads = [], {}, {}, []
hists, disk, mem, tio, gauges = {}, [], [], [], {}
for line in open(sys.argv[3]):
    if line.startswith("tio\t"):
        f = line.rstrip("\n").split("\t")
        tio.append((int(f[1]), {k: int(v) for k, v in zip(f[2::2], f[3::2])}))
        continue
    if line.startswith("gauge "):
        f = line.split()
        if len(f) == 4:
            gauges.setdefault(f[2], []).append((int(f[1]), float(f[3])))
        continue
    if line.startswith(("hist ", "disk ", "mem ")):
        f = line.split()
        try:
            if f[0] == "hist":
                # hist T NAME bucket|sum|count [{labels}] VALUE
                labels = f[4] if len(f) == 6 else ""
                le = None
                parts = [p for p in labels.strip("{}").split(",") if p and p != "x"]
                for p in parts:
                    if p.startswith("le="):
                        le = p[4:-1]
                series = f[2] + "{" + ",".join(p for p in parts if not p.startswith("le=")) + "}"
                at = hists.setdefault(series, {}).setdefault(int(f[1]), {})
                at[("le", float(le)) if le is not None else f[3]] = float(f[-1])
            elif f[0] == "disk" and len(f) >= 13:
                disk.append((int(f[1]), [int(x) for x in f[2:]]))
            elif f[0] == "mem" and len(f) == 4:
                mem.append((int(f[1]), int(f[2]), int(f[3])))
        except ValueError:
            pass
        continue
    if line.startswith("threads\t"):
        f = line.rstrip("\n").split("\t")
        threads.append((int(f[1]), {k: int(v) for k, v in zip(f[2::2], f[3::2])}))
        continue
    f = line.split('"') if line.startswith("query") else line.split()
    if line.startswith("rss"):
        f += ["0"] * (10 - len(f))
        rss.append((int(f[1]), int(f[2]) / 1024, int(f[3] or 0) / 1024, int(f[4] or 0) / 1024,
                    int(f[5] or 0) / 1024, int(f[6] or 0), int(f[7] or 0) / 1048576, int(f[8] or 0),
                    int(f[9] or 0)))
    elif line.startswith("query"):
        t = int(f[0].split()[1]); cmd = f[1]; ms, ok = f[2].split()
        queries.setdefault(cmd, []).append((t, int(ms), int(ok)))
    elif line.startswith("server"):
        _, t, route, what, v = f
        server.setdefault(route, {}).setdefault(int(t), {})[what] = float(v)
# Server time per query: the change of the route's sum over the change of its count between
# consecutive samples.
server_ms, server_cpu_ms = {}, {}
for route, by_t in server.items():
    pts = [(t, x.get("count", 0), x.get("sum", 0)) for t, x in sorted(by_t.items())]
    server_ms[route] = [(t1, (s1 - s0) * 1000 / (c1 - c0)) for (t0, c0, s0), (t1, c1, s1) in zip(pts, pts[1:]) if c1 > c0]
    pts = [(t, x.get("count", 0), x.get("cpu", 0)) for t, x in sorted(by_t.items())]
    server_cpu_ms[route] = [(t1, (s1 - s0) * 1000 / (c1 - c0)) for (t0, c0, s0), (t1, c1, s1) in zip(pts, pts[1:]) if c1 > c0]
print(f"sent at {rate} events/s for {minutes} min: {r['events_acked']} events acked in {r['elapsed_secs']:.0f} s "
      f"= {r['events_per_sec']:.0f} events/s, {r['duplicates']} duplicates reported, {r['busy']} busy answers, "
      f"{r['behind_secs']:.1f} s behind schedule at the end; {r.get('refused', 0)} other 5xx and {r.get('failed', 0)} failed requests retried")
for s_ in r.get("stopped", []):
    print(f"stopped early: {s_}")
print(f"store holds {stored} events ({'every acked event' if stored == r['events_acked'] else 'MISMATCH'}); "
      f"correlation evaluated {c.get('events', 0)}; alerts {c.get('detection_alerts', 0)} detection + "
      f"{c.get('correlation_alerts', 0)} correlation; groups {c.get('state_entries', 0)} "
      f"({c.get('state_evicted', 0)} evicted at the cap)")
print("minute  acked/s  ack p50 ms  ack p99 ms")
for m in r.get("minutes", []):
    print(f"{m['minute']:>6}  {m['acked'] / 60:>7.0f}  {m['p50_ms']:>10.1f}  {m['p99_ms']:>10.1f}")
def thirds(xs):
    n = len(xs) // 3
    return (xs[:n], xs[-n:]) if n else (xs, xs)
a, b = thirds([x[1] for x in rss])
print(f"RSS MiB: first third median {statistics.median(a):.0f}, last third median {statistics.median(b):.0f}, max {max(x[1] for x in rss):.0f}; store on disk at the end {rss[-1][2]:.0f} MiB")
# Once warm (the correlation state at its cap): the middle third against the last.
if len(rss) >= 3:
    n = len(rss) // 3
    mid, last = [x[1] for x in rss[n:2 * n]], [x[1] for x in rss[2 * n:]]
    print(f"RSS MiB once warm: middle third median {statistics.median(mid):.0f}, last third median {statistics.median(last):.0f} "
          f"({(statistics.median(last) / statistics.median(mid) - 1) * 100:+.1f}%)")
print("minute  RSS MiB  disk MiB (events  alerts+incidents)  correlation groups  state MiB  alerts raised  open incidents")
for x in rss[5::6]:
    print(f"{(x[0] - rss[0][0]) // 60 + 1:>6}  {x[1]:>7.0f}  {x[2]:>8.0f} ({x[3]:>6.0f}  {x[4]:>16.0f})  {x[5]:>18}  {x[6]:>9.0f}  {x[7]:>13}  {x[8]:>14}")
# CPU seconds a minute per thread name (the four busiest over the run, the rest summed).
if len(threads) > 6:
    ticks = os.sysconf("SC_CLK_TCK")
    total = threads[-1][1]
    busiest = sorted(total, key=lambda k: -total[k])[:4]
    print("minute  CPU s of the minute by thread: " + ", ".join(busiest) + ", the rest")
    for (t0, a), (t1, b) in zip(threads[0::6], threads[6::6]):
        d = {k: (b.get(k, 0) - a.get(k, 0)) / ticks for k in b}
        rest = sum(v for k, v in d.items() if k not in busiest)
        print(f"{(t1 - threads[0][0]) // 60:>6}  " + "  ".join(f"{d.get(k, 0):>6.1f}" for k in busiest) + f"  {rest:>6.1f}")
# Where the ack waited, a minute at a time: the agents' ack p99 (from the load generator)
# beside the collector's own durations (the ingest request, the batch's wait in the queue, the
# group commit and its phases, the incident database's flush), as the upper bound of the
# bucket holding the minute's 99th percentile and the largest bucket reached; with the disk's
# writes and flushes (MB/s written, its mean time per write and per flush) and the page
# cache's dirty bytes at their highest.
def minute_quantile(series):
    by_t = sorted(hists.get(series, {}).items())
    out = {}
    for (t0, a), (t1, b) in zip(by_t[0::6], by_t[6::6]):
        m = (t1 - by_t[0][0]) // 60
        n = b.get("count", 0) - a.get("count", 0)
        if n <= 0:
            out[m] = None
            continue
        les = sorted(k[1] for k in b if isinstance(k, tuple))
        p99 = top = None
        prev = 0.0
        for le in les:
            d = b[("le", le)] - a.get(("le", le), 0)
            if p99 is None and d >= 0.99 * n:
                p99 = le
            if d > prev:
                top = le
            prev = d
        out[m] = (p99, top, (b.get("sum", 0) - a.get("sum", 0)) / n)
    return out
cols = [("ingest request", "ingest_request{}"), ("queue wait", "palisade_ingest_queue_wait_seconds{}"),
        ("commit", "palisade_ingest_commit_seconds{}"), ("prepare", 'palisade_store_write_seconds{phase="prepare"}'),
        ("sync", 'palisade_store_write_seconds{phase="sync"}'), ("index", 'palisade_store_write_seconds{phase="index"}'),
        ("incident flush", 'palisade_correlation_incident_write_seconds{call="flush"}'),
        ("incident record", 'palisade_correlation_incident_write_seconds{call="record"}')]
qs = {name: minute_quantile(series) for name, series in cols}
if any(qs.values()):
    fmt = lambda x: "-" if x is None else ("inf" if x[0] is None or x[0] == float("inf") else f"{x[0] * 1000:g}") + "/" + ("inf" if x[1] is None or x[1] == float("inf") else f"{x[1] * 1000:g}")
    ack = {m["minute"]: m for m in r.get("minutes", [])}
    print("where the ack waits, a minute at a time: p99 bucket bound / largest bucket reached, ms (agents' ack p99 as measured by them)")
    print("minute  ack p99  " + "  ".join(f"{n:>15}" for n, _ in cols) + "  disk MB/s  ms/write  flushes/s  ms/flush  dirty MB max  incident-writer MB  backlog max  alert queue max")
    dsk = {(t - disk[0][0]) // 60: v for t, v in disk[0::6]} if disk else {}
    tw = {(t - tio[0][0]) // 60: v.get("alert-writer", 0) for t, v in tio[0::6]} if tio else {}
    minutes_seen = sorted(set().union(*[set(q) for q in qs.values()]))
    for m in minutes_seen:
        row = f"{m:>6}  {ack.get(m, {}).get('p99_ms', float('nan')):>7.1f}  " + "  ".join(f"{fmt(qs[n].get(m)):>15}" for n, _ in cols)
        a, b = dsk.get(m - 1), dsk.get(m)
        if a and b:
            writes, wms = b[4] - a[4], b[7] - a[7]
            fl, flms = (b[15] - a[15], b[16] - a[16]) if len(b) > 16 else (0, 0)
            row += f"  {(b[6] - a[6]) * 512 / 60 / 1e6:>9.1f}  {wms / writes if writes else 0:>8.2f}  {fl / 60:>9.1f}  {flms / fl if fl else 0:>8.2f}"
        else:
            row += f"  {'':>9}  {'':>8}  {'':>9}  {'':>8}"
        dirty = [d for t, d, w in mem if (t - mem[0][0]) // 60 == m - 1] if mem else []
        row += f"  {max(dirty) / 1024 if dirty else 0:>12.0f}"
        row += f"  {(tw[m] - tw[m - 1]) / 1e6:>18.0f}" if m - 1 in tw and m in tw else f"  {'':>18}"
        # The correlation queues at their highest sample of the minute (sampled every 10 s).
        for g in ("palisade_correlation_backlog_events", "palisade_correlation_alert_queue"):
            xs = [v for t, v in gauges.get(g, []) if gauges[g] and (t - gauges[g][0][0]) // 60 == m - 1]
            row += f"  {max(xs) if xs else 0:>11.0f}"
        print(row)
routes = {"events": "/v1/events", "incidents": "/v1/incidents", "situation": "/v1/situation"}
for cmd, xs in queries.items():
    a, b = thirds([x[1] for x in xs])
    fails = sum(1 for x in xs if not x[2])
    print(f"query {cmd:<34} median {statistics.median([x[1] for x in xs]):>5.0f} ms, first third {statistics.median(a):>5.0f}, last third {statistics.median(b):>5.0f}, max {max(x[1] for x in xs):>5} ms, {fails} failed of {len(xs)}")
    ys = [y for _, y in server_ms.get(routes.get(cmd.split()[0], ""), [])]
    if ys:
        a, b = thirds(ys)
        print(f"  in the collector {'':<24} median {statistics.median(ys):>7.1f} ms, first third {statistics.median(a):>7.1f}, last third {statistics.median(b):>7.1f}, max {max(ys):>7.1f} ms")
    ys = [y for _, y in server_cpu_ms.get(routes.get(cmd.split()[0], ""), [])]
    if ys:
        a, b = thirds(ys)
        print(f"  its CPU time {'':<28} median {statistics.median(ys):>7.1f} ms, first third {statistics.median(a):>7.1f}, last third {statistics.median(b):>7.1f}, max {max(ys):>7.1f} ms")
json.dump({"report": r, "stored": stored, "correlation": c, "rss": rss, "queries": queries, "server_ms": server_ms, "server_cpu_ms": server_cpu_ms, "threads": threads, "gauges": gauges, "disk": disk, "mem": mem, "tio": tio,
           "hists": {k: {str(t): {str(kk): vv for kk, vv in v.items()} for t, v in by_t.items()} for k, by_t in hists.items()}}, open(sys.argv[4], "w"))
PY
if [ -s "$work/query-errors" ]; then echo "failed queries (first 5):"; head -5 "$work/query-errors"; fi
stop_collector "$cpid"; wait "$cpid" 2>/dev/null || true; cpid=""
