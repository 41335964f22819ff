#!/usr/bin/env bash
# Active-active replication lag (RPO) under a steady write load: two `palisade-replicator sync`
# sites on loopback over mutual TLS; a writer creates and overwrites files at BOTH sites at a
# fixed rate for a fixed time; then the sites must converge (same files, same bytes) and each
# site's status.json gives the lag of every version it applied (change at the origin → durable
# here), p50/p99. Bar (issue 6): p99 < 2 s.
# Usage: bench/sync-lag.sh [--secs 60] [--rate 20] [--size-kb 64] [--files 300] [--no-build]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
secs=60 rate=20 size_kb=64 files=300 build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --secs) secs="$2"; shift 2 ;;
        --rate) rate="$2"; shift 2 ;;
        --size-kb) size_kb="$2"; shift 2 ;;
        --files) files="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
ensure_rust
ensure_system_packages
[ "$build" -eq 1 ] && build_release
R="$PALISADE_BIN/palisade-replicator"
C="$PALISADE_BIN/palisade-collector"
work="$(mktemp -d "${BENCH_DIR:-/tmp}/palisade-sync-lag.XXXXXX")"
bench_pki "$work" 0
for s in site-a site-b; do
    "$C" pki issue --dir "$work/pki" --role replicator --name "$s" --san 127.0.0.1 >/dev/null
done
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pa="$(port)" pb="$(port)"
mkdir -p "$work/a" "$work/b"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start() { # SITE DIR MYPORT PEERPORT
    "$R" sync --dir "$work/$2" --site "$1" --listen "127.0.0.1:$3" --peer "https://127.0.0.1:$4" \
        --state-dir "$work/state-$1" --pki-dir "$work/pki" --identity "$1" \
        >"$work/$1.out" 2>"$work/$1.log" &
    pids+=($!)
}
start site-a a "$pa" "$pb"
start site-b b "$pb" "$pa"
for _ in $(seq 1 100); do
    grep -q listening "$work/site-a.out" && grep -q listening "$work/site-b.out" && break
    sleep 0.1
done
echo "== two sites up (a :$pa, b :$pb); writing $rate files/s at EACH site for $secs s, ~$size_kb KiB each, over $files names per site"
python3 - "$work" "$secs" "$rate" "$size_kb" "$files" <<'PY'
import os, random, sys, time
work, secs, rate, size_kb, nfiles = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(1)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(2000)]
start = time.monotonic(); n = 0
while True:
    now = time.monotonic() - start
    if now >= secs: break
    for site in ("a", "b"):
        # Each site writes its own names (no conflicts: this measures lag, not conflict handling).
        name = os.path.join(work, site, f"d{rng.randrange(10)}", f"{site}-{rng.randrange(nfiles)}.dat")
        os.makedirs(os.path.dirname(name), exist_ok=True)
        size = max(1, int(rng.expovariate(1 / (size_kb * 1024))))
        if rng.random() < 0.5:
            data = b" ".join(rng.choice(words) for _ in range(size // 6 + 1))[:size]
        else:
            data = os.urandom(size)
        tmp = name + ".tmp-writer"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, name)
        n += 1
    time.sleep(max(0.0, (n / 2) / rate - (time.monotonic() - start)))
print(f"   wrote {n} versions in {time.monotonic() - start:.1f} s")
PY
echo "== waiting for convergence"
converged=0
for _ in $(seq 1 120); do
    if diff -r -q -x '*.tmp-writer' "$work/a" "$work/b" >/dev/null 2>&1; then converged=1; break; fi
    sleep 0.5
done
sleep 1.5
python3 - "$work" "$converged" <<'PY'
import json, sys
work, converged = sys.argv[1], sys.argv[2] == "1"
rows = []
for s in ("site-a", "site-b"):
    st = json.load(open(f"{work}/state-{s}/status.json"))
    rows.append((s, st))
    print(f"   {s}: applied {st['applied']}, conflicts {st['conflicts']}, lag p50 {st['lag_p50_ms']:.0f} ms, "
          f"p99 {st['lag_p99_ms']:.0f} ms over {st['lag_samples']} samples; shipped {st['bytes_sent']} B "
          f"for {st['bytes_content']} B of content")
p99 = max(st["lag_p99_ms"] for _, st in rows)
print(f"== converged: {'yes' if converged else 'NO'}")
print(f"== bar: active-active lag p99 {p99:.0f} ms < 2000 ms: {'met' if p99 < 2000 and converged else 'NOT met'}")
PY
