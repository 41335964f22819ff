#!/usr/bin/env bash
# Replicator benchmark: palisade-replicator against restic, borg and rsync on the same generated
# data set (bench/gen_dataset.py: text, logs, 8 KiB-page db files, random and gzip files) in one
# run. Every tool backs up the same tree, then the tree is mutated once (~1 % scattered change:
# log appends, 64-256 KiB page runs in db files, replaced/new/deleted small files), then every
# tool runs its incremental, restore and full verify.
# Columns (one row per tool):
#   first s / MiB/s  wall time of the first (full) backup; MiB/s = data set bytes / wall time
#   repo MiB         `du -sb` of the repository (rsync: of the copy) right after the first backup
#   incr s           wall time of the incremental backup after the mutate step
#   incr sent        bytes shipped for the incremental. palisade: `bytes_sent` from its JSON;
#                    restic and borg (local repos): repository growth (`du -sb` after - before:
#                    packs, index, snapshot/manifest); rsync: "Total bytes sent" of
#                    `rsync -a --no-whole-file --delete` (delta algorithm forced on a local copy)
#   sent/changed     incr sent / changed_bytes (bytes the mutate step wrote, from gen_dataset.py)
#   restore s        restore of the latest snapshot into an empty directory (rsync: copy back),
#                    checked afterwards (untimed) with `diff -rq` against the source tree
#   verify s         full read-back check: restic `check --read-data`, borg `check --verify-data`,
#                    palisade `verify --read-data`, rsync `rsync -a -c -n` dry run (checksums of
#                    source AND copy, so it reads twice the bytes the others read)
#   palisade-p2p     (if it works) `backup --to https://127.0.0.1:PORT` into `serve` over mutual
#                    TLS on loopback; its repo/verify figures are those of the served repository
# Caveats: restic always encrypts (AES-256 + Poly1305) and is run with repository format 2
# (zstd, compression auto); borg runs with --encryption=none and its default lz4 compression
# (override: BORG_ENCRYPTION=repokey-blake2 BORG_PASSPHRASE=x, BORG_COMPRESSION=zstd,3); restic
# chunks average 1 MiB, borg's 2 MiB, so a 64 KiB page run costs them a whole chunk. restic's
# own "data_added" counts bytes BEFORE compression; borg's "deduplicated_size" after. When run
# as root the page cache is dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every
# timed phase, so every phase reads from disk; otherwise caches are warm and the output says so.
# restic uses all cores, borg 1.x one, rsync two processes.
# palisade-replicator (from $CARGO_TARGET_DIR/release; missing or without `init`: "not built",
# the peers still run): `init REPO`; `backup SRC --to REPO|https://127.0.0.1:PORT
# [--pki-dir PKI --identity site-a] --output-format json` printing one JSON object with
# snapshot, files, bytes_read, bytes_new, bytes_sent, duration_ms; `--repo REPO restore latest
# --to DIR`; `--repo REPO verify --read-data`; `serve --repo REPO --listen 127.0.0.1:PORT
# --pki-dir PKI` (+ $PALISADE_SERVE_ARGS) with the PKI of bench_pki plus replicator certificates
# "palisade-replicator" (SAN 127.0.0.1, localhost) and "site-a".
# Results: a table on stdout and $BENCH_DIR/results.json (BENCH_DIR=/tmp/palisade-bench-replicate).
# Usage: bench/replicate.sh [--size-mb N=1024] [--seed S=1] [--mutate-seed S=2] [--percent P=1]
#                           [--no-build] [--keep] [--no-drop-caches]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
size_mb=1024; seed=1; mseed=2; percent=1; build=1; keep=0; drop=1
while [ $# -gt 0 ]; do
    case "$1" in
        --size-mb) size_mb="$2"; shift ;;
        --size-mb=*) size_mb="${1#*=}" ;;
        --seed) seed="$2"; shift ;;
        --seed=*) seed="${1#*=}" ;;
        --mutate-seed) mseed="$2"; shift ;;
        --mutate-seed=*) mseed="${1#*=}" ;;
        --percent) percent="$2"; shift ;;
        --percent=*) percent="${1#*=}" ;;
        --no-build) build=0 ;;          # use whatever is in $CARGO_TARGET_DIR/release
        --keep) keep=1 ;;               # keep the run directory (data set, repositories, logs)
        --no-drop-caches) drop=0 ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ensure_system_packages restic borgbackup rsync time python3
# PALISADE_BENCH_ENCRYPT=1: palisade's repositories are encrypted too (XChaCha20-Poly1305), like
# restic's always are; the key file goes through PALISADE_KEY_FILE to every palisade command.
enc=()
if [ "$build" = 1 ] && command -v cargo >/dev/null; then
    build_release >/dev/null 2>&1 || build_release || echo "warning: the release build failed" >&2
fi
R="$PALISADE_BIN/palisade-replicator"; C="$PALISADE_BIN/palisade-collector"
gen="$PALISADE_ROOT/bench/gen_dataset.py"

BENCH_DIR="${BENCH_DIR:-/tmp/palisade-bench-replicate}"
mkdir -p "$BENCH_DIR"
run="$(mktemp -d "$BENCH_DIR/run.XXXXXX")"
if [ "${PALISADE_BENCH_ENCRYPT:-0}" = 1 ]; then
    enc=(--encrypt)
    export PALISADE_KEY_FILE="$run/palisade.key"
fi
src="$run/src"; metrics="$run/metrics.tsv"; : > "$metrics"
spid=""
cleanup() {
    if [ -n "$spid" ]; then kill -TERM "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; fi
    if [ "$keep" = 1 ]; then echo "kept $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT

export RESTIC_PASSWORD="${RESTIC_PASSWORD:-palisade-bench}" RESTIC_CACHE_DIR="$run/restic-cache"
export BORG_BASE_DIR="$run/borg-home" BORG_RELOCATED_REPO_ACCESS_IS_OK=yes \
    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
borg_enc="${BORG_ENCRYPTION:-none}"; borg_comp="${BORG_COMPRESSION:-lz4}"

rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$metrics"; }     # tool key value
get() { awk -F'\t' -v t="$1" -v k="$2" '$1 == t && $2 == k { v = $3 } END { print v }' "$metrics"; }
dusb() { du -sb "$1" | cut -f1; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }                     # format, expression
note() { echo "  $*"; }

# --- page cache -------------------------------------------------------------------------------
if [ "$drop" = 1 ] && [ "$(id -u)" -eq 0 ] && (sync; echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null; then
    cache_mode="dropped before every timed phase (sync; echo 3 > /proc/sys/vm/drop_caches)"
    dropped=true
else
    cache_mode="NOT dropped ($([ "$drop" = 0 ] && echo "--no-drop-caches" || echo "not root")): warm caches"
    dropped=false; drop=0
fi
drop_caches() { [ "$drop" = 1 ] && { sync; echo 3 > /proc/sys/vm/drop_caches; } || true; }

# measure TOOL PHASE CMD...: drops the page cache, runs CMD (stdout/stderr to run/TOOL.PHASE.*),
# records PHASE_s (wall), PHASE_cpu_s, PHASE_rss_mib, PHASE_rc; returns CMD's exit status.
measure() {
    local tool="$1" phase="$2" rc=0; shift 2
    drop_caches
    /usr/bin/time -f "%e %U %S %M" -o "$run/time" "$@" >"$run/$tool.$phase.out" 2>"$run/$tool.$phase.err" || rc=$?
    local wall user sys kb
    read -r wall user sys kb < <(tail -1 "$run/time")
    rec "$tool" "${phase}_rc" "$rc"
    if [ "$rc" != 0 ]; then
        note "$tool $phase FAILED (exit $rc): $(tail -3 "$run/$tool.$phase.err" | tr '\n' ' ' | cut -c1-300)"
        return "$rc"
    fi
    rec "$tool" "${phase}_s" "$wall"
    rec "$tool" "${phase}_cpu_s" "$(calc %.2f "$user + $sys")"
    rec "$tool" "${phase}_rss_mib" "$((kb / 1024))"
}

# json_fields TOOL PHASE FILE KEY...: records PHASE_KEY for each KEY of the JSON object in FILE
# (the whole output, or else its last line that parses as an object; restic: the summary line).
json_fields() {
    local tool="$1" phase="$2" file="$3"; shift 3
    python3 - "$file" "$@" <<'PY' | while IFS=$'\t' read -r k v; do rec "$tool" "${phase}_$k" "$v"; done
import json, sys
text = open(sys.argv[1]).read()
obj = None
try:
    obj = json.loads(text)
except ValueError:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if isinstance(o, dict) and o.get("message_type", "summary") == "summary":
                obj = o
if isinstance(obj, dict):
    if "archive" in obj:          # borg create --json
        obj = dict(obj["archive"].get("stats", {}), duration=obj["archive"].get("duration"))
    for k in sys.argv[2:]:
        if obj.get(k) is not None:
            print(f"{k}\t{obj[k]}")
PY
}

alive() { [ "$(get "$1" dead)" != 1 ]; }
kill_tool() { rec "$1" dead 1; }

# --- the tools --------------------------------------------------------------------------------
echo "== versions"
restic_v="$(restic version | sed -n 1p)"; borg_v="$(borg --version)"; rsync_v="$(rsync --version | sed -n 1p)"
echo "  $restic_v"; echo "  $borg_v"; echo "  $rsync_v"
tools=()
palisade_state="not built"
if [ -x "$R" ]; then
    if "$R" init "$run/repo-palisade" "${enc[@]}" >"$run/palisade.init.out" 2>"$run/palisade.init.err"; then
        palisade_state="built"; tools+=(palisade)
        echo "  palisade-replicator: $("$R" --version 2>/dev/null || echo "$R")"
    else
        echo "palisade-replicator not built: $R has no working \`init\` ($(head -1 "$run/palisade.init.err" | cut -c1-160))"
    fi
else
    echo "palisade-replicator not built: no $R"
fi

# Peer to peer: a replicator PKI (bench_pki's CA + two replicator certificates), `serve` on a
# free loopback port. Any failure here only drops the palisade-p2p row.
p2p_url=""
start_p2p() {
    [ "$palisade_state" = built ] || return 1
    [ -x "$C" ] || { note "palisade-p2p: no $C to make the PKI"; return 1; }
    bench_pki "$run" 0 2>"$run/pki.err" || { note "palisade-p2p: pki init failed: $(head -2 "$run/pki.err")"; return 1; }
    "$C" pki issue --dir "$run/pki" --role replicator --name palisade-replicator \
        --san 127.0.0.1 --san localhost >/dev/null 2>>"$run/pki.err" \
        && "$C" pki issue --dir "$run/pki" --role replicator --name site-a >/dev/null 2>>"$run/pki.err" \
        || { note "palisade-p2p: pki issue --role replicator failed: $(tail -2 "$run/pki.err")"; return 1; }
    "$R" init "$run/repo-p2p" "${enc[@]}" >/dev/null 2>"$run/p2p.init.err" || { note "palisade-p2p: init failed"; return 1; }
    local port
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    # shellcheck disable=SC2086
    "$R" serve --repo "$run/repo-p2p" --listen "127.0.0.1:$port" --pki-dir "$run/pki" ${PALISADE_SERVE_ARGS:-} \
        >"$run/serve.out" 2>"$run/serve.log" </dev/null &
    spid=$!
    for _ in $(seq 1 100); do
        kill -0 "$spid" 2>/dev/null || { note "palisade-p2p: serve exited: $(tail -2 "$run/serve.log" | tr '\n' ' ')"; spid=""; return 1; }
        python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()' "$port" 2>/dev/null && break
        sleep 0.1
    done
    p2p_url="https://127.0.0.1:$port"
}
stop_p2p() { [ -n "$spid" ] && { kill -TERM "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; spid=""; }; return 0; }
if start_p2p; then tools+=(palisade-p2p); note "palisade-p2p: serve on $p2p_url (pid $spid)"; fi
tools+=(restic borg rsync)

# Per tool: first / incr backup, restore into DIR, verify. They print nothing; measure records.
backup() { # TOOL PHASE
    local t="$1" ph="$2"
    case "$t" in
        palisade)
            measure "$t" "$ph" "$R" backup "$src" --to "$run/repo-palisade" --output-format json || return 1
            json_fields "$t" "$ph" "$run/$t.$ph.out" bytes_sent bytes_new bytes_read files duration_ms snapshot ;;
        palisade-p2p)
            measure "$t" "$ph" "$R" backup "$src" --to "$p2p_url" --pki-dir "$run/pki" --identity site-a \
                --output-format json || return 1
            json_fields "$t" "$ph" "$run/$t.$ph.out" bytes_sent bytes_new bytes_read files duration_ms snapshot ;;
        restic)
            if [ "$ph" = first ]; then
                restic init --repo "$run/repo-restic" --repository-version 2 >/dev/null 2>"$run/restic.init.err" \
                    || { note "restic init failed: $(tail -1 "$run/restic.init.err")"; return 1; }
            fi
            measure "$t" "$ph" env -C "$src" restic -r "$run/repo-restic" backup --json . || return 1
            json_fields "$t" "$ph" "$run/$t.$ph.out" data_added files_new files_changed total_bytes_processed snapshot_id ;;
        borg)
            if [ "$ph" = first ]; then
                borg init --encryption="$borg_enc" "$run/repo-borg" >/dev/null 2>"$run/borg.init.err" \
                    || { note "borg init failed: $(tail -1 "$run/borg.init.err")"; return 1; }
            fi
            measure "$t" "$ph" env -C "$src" borg create --stats --json --compression "$borg_comp" \
                "$run/repo-borg::$ph" . || return 1
            json_fields "$t" "$ph" "$run/$t.$ph.out" original_size compressed_size deduplicated_size nfiles ;;
        rsync)
            local opts=(-a --stats)
            [ "$ph" = incr ] && opts+=(--no-whole-file --delete)
            measure "$t" "$ph" rsync "${opts[@]}" "$src/" "$run/repo-rsync/" || return 1
            rec "$t" "${ph}_bytes_sent" "$(sed -n 's/^Total bytes sent: //p' "$run/$t.$ph.out" | tr -d ,)"
            rec "$t" "${ph}_literal_data" "$(sed -n 's/^Literal data: \([0-9,]*\).*/\1/p' "$run/$t.$ph.out" | tr -d ,)"
            rec "$t" "${ph}_matched_data" "$(sed -n 's/^Matched data: \([0-9,]*\).*/\1/p' "$run/$t.$ph.out" | tr -d ,)" ;;
    esac
}
restore() { # TOOL DIR
    case "$1" in
        palisade) measure "$1" restore "$R" --repo "$run/repo-palisade" restore latest --to "$2" ;;
        restic) measure "$1" restore restic -r "$run/repo-restic" restore latest --target "$2" ;;
        borg) mkdir -p "$2"; measure "$1" restore env -C "$2" borg extract "$run/repo-borg::incr" ;;
        rsync) measure "$1" restore rsync -a "$run/repo-rsync/" "$2/" ;;
        *) return 2 ;;
    esac
}
verify() { # TOOL
    case "$1" in
        palisade) measure "$1" verify "$R" --repo "$run/repo-palisade" verify --read-data ;;
        palisade-p2p) measure "$1" verify "$R" --repo "$run/repo-p2p" verify --read-data ;;
        restic) measure "$1" verify restic -r "$run/repo-restic" check --read-data ;;
        borg) measure "$1" verify borg check --verify-data "$run/repo-borg" ;;
        rsync)
            measure "$1" verify rsync -a -c -n --delete --stats "$src/" "$run/repo-rsync/" || return 1
            # The copy matches when the dry run would transfer and delete nothing.
            grep -q '^Number of regular files transferred: 0$' "$run/rsync.verify.out" \
                && grep -q '^Number of deleted files: 0$' "$run/rsync.verify.out" ;;
    esac
}
repo_of() { case "$1" in palisade-p2p) echo "$run/repo-p2p" ;; *) echo "$run/repo-$1" ;; esac; }

# --- 1. the data set --------------------------------------------------------------------------
free_mb=$(df -BM --output=avail "$BENCH_DIR" | tail -1 | tr -dc 0-9)
[ "$free_mb" -ge $((size_mb * 7)) ] || echo "warning: ${free_mb} MB free under $BENCH_DIR, this run wants about $((size_mb * 7)) MB" >&2
echo "== data set: gen_dataset.py --size-mb $size_mb --seed $seed into $src"
python3 "$gen" "$src" --size-mb "$size_mb" --seed "$seed" > "$run/gen.out"
gen_json="$(tail -1 "$run/gen.out")"
data_bytes="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["bytes"])' "$gen_json")"
data_files="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["files"])' "$gen_json")"
note "$data_files files, $data_bytes bytes ($(calc %.1f "$data_bytes / 1048576") MiB), generated in $(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["seconds"])' "$gen_json") s"
echo "== page cache: $cache_mode; $(nproc) cores"

# --- 2. first backup ---------------------------------------------------------------------------
echo "== first backup"
for t in "${tools[@]}"; do
    if backup "$t" first; then
        r="$(repo_of "$t")"; rec "$t" repo_bytes "$(dusb "$r")"
        s="$(get "$t" first_s)"
        note "$(printf '%-13s %8.2f s  %8.1f MiB/s  repo %8.1f MiB' "$t" "$s" "$(calc %.1f "$data_bytes / 1048576 / ($s > 0 ? $s : 0.01)")" "$(calc %.1f "$(get "$t" repo_bytes) / 1048576")")"
    else
        kill_tool "$t"
    fi
done

# --- 3. mutate, incremental --------------------------------------------------------------------
echo "== mutate: gen_dataset.py --mutate --percent $percent --seed $mseed"
python3 "$gen" "$src" --mutate --percent "$percent" --seed "$mseed" > "$run/mutate.out"
mutate_json="$(tail -1 "$run/mutate.out")"
changed="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["changed_bytes"])' "$mutate_json")"
note "$mutate_json"
echo "== incremental backup (changed bytes: $changed)"
for t in "${tools[@]}"; do
    alive "$t" || continue
    r="$(repo_of "$t")"; before="$(dusb "$r")"
    if backup "$t" incr; then
        rec "$t" incr_repo_growth "$(( $(dusb "$r") - before ))"
        case "$t" in
            restic|borg) rec "$t" incr_sent "$(get "$t" incr_repo_growth)" ;;
            *) rec "$t" incr_sent "$(get "$t" incr_bytes_sent)" ;;
        esac
        sent="$(get "$t" incr_sent)"
        note "$(printf '%-13s %8.2f s  sent %10s bytes = %6.2f x changed' "$t" "$(get "$t" incr_s)" "${sent:-?}" "$(calc %.2f "${sent:-0} / $changed")")"
    else
        kill_tool "$t"
    fi
done
stop_p2p

# --- 4. restore, verify ------------------------------------------------------------------------
echo "== restore (then diff -rq against the source, untimed)"
for t in "${tools[@]}"; do
    alive "$t" || continue
    [ "$t" = palisade-p2p ] && continue
    dest="$run/restore-$t"; rm -rf "$dest"
    if restore "$t" "$dest"; then
        if diff -rq "$src" "$dest" > "$run/$t.diff" 2>&1; then rec "$t" restore_ok true; ok="identical"
        else rec "$t" restore_ok false; ok="DIFFERS: $(head -2 "$run/$t.diff" | tr '\n' ' ')"; fi
        note "$(printf '%-13s %8.2f s  %s' "$t" "$(get "$t" restore_s)" "$ok")"
    fi
    rm -rf "$dest"
done
echo "== verify (full read-back)"
for t in "${tools[@]}"; do
    alive "$t" || continue
    if verify "$t"; then rec "$t" verify_ok true; else rec "$t" verify_ok false; fi
    [ -n "$(get "$t" verify_s)" ] && note "$(printf '%-13s %8.2f s  ok=%s' "$t" "$(get "$t" verify_s)" "$(get "$t" verify_ok)")"
done

# --- 5. table, ratios, results.json --------------------------------------------------------------
python3 - "$metrics" "$BENCH_DIR/results.json" "$gen_json" "$mutate_json" "$dropped" "$palisade_state" \
    "$restic_v" "$borg_v" "$rsync_v" "$borg_enc" "$borg_comp" "$(nproc)" "$run" "${tools[*]}" <<'PY'
import json, sys, time
(metrics, out, gen, mut, dropped, pstate, restic_v, borg_v, rsync_v, borg_enc, borg_comp,
 cores, run, tools) = sys.argv[1:]
gen, mut = json.loads(gen), json.loads(mut)
data, changed = gen["bytes"], mut["changed_bytes"]
m = {}
for line in open(metrics):
    t, k, v = line.rstrip("\n").split("\t")
    try:
        v = int(v)
    except ValueError:
        try:
            v = float(v)
        except ValueError:
            v = {"true": True, "false": False}.get(v, v)
    m.setdefault(t, {})[k] = v
for t in ("palisade", "palisade-p2p", "restic", "borg", "rsync"):
    d = m.get(t)
    if not d:
        continue
    if d.get("first_s"):
        d["first_mib_s"] = round(data / 1048576 / max(d["first_s"], 0.01), 1)
    if d.get("incr_sent") not in (None, ""):
        d["incr_sent_per_changed"] = round(d["incr_sent"] / changed, 3)

def f(v, fmt):
    return fmt % v if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"

label = {"borg": f"borg ({borg_enc},{borg_comp})", "restic": "restic (encr.)"}
print()
print(f"== figures: {data / 1048576:.1f} MiB in {gen['files']} files (seed {gen['seed']}); mutate "
      f"{mut['changed_percent']} % = {changed} bytes written (seed {mut['seed']}); {cores} cores; "
      f"page cache {'dropped before every timed phase' if dropped == 'true' else 'NOT dropped (warm)'}")
hdr = ("tool", "first s", "MiB/s", "repo MiB", "incr s", "incr sent B", "sent/chg", "restore s", "verify s", "ok")
fmt = "%-20s %8s %8s %9s %8s %12s %8s %9s %8s %s"
print(fmt % hdr)
for t in ("palisade", "palisade-p2p", "restic", "borg", "rsync"):
    d = m.get(t)
    if t == "palisade" and pstate != "built":
        print(fmt % (t, "-", "-", "-", "-", "-", "-", "-", "-", "palisade-replicator not built"))
        continue
    if not d:
        continue
    oks = [f"{ph} FAILED (exit {d[ph + '_rc']})" for ph in ("first", "incr", "restore", "verify")
           if d.get(ph + "_rc") not in (None, 0)]
    if "restore_ok" in d:
        oks.append("restore " + ("identical" if d["restore_ok"] else "DIFFERS"))
    if "verify_ok" in d and not d.get("verify_rc"):
        oks.append("verify " + ("ok" if d["verify_ok"] else "FAILED"))
    print(fmt % (label.get(t, t), f(d.get("first_s"), "%.2f"), f(d.get("first_mib_s"), "%.1f"),
                 f(d.get("repo_bytes", 0) / 1048576 if "repo_bytes" in d else None, "%.1f"),
                 f(d.get("incr_s"), "%.2f"), f(d.get("incr_sent"), "%d"),
                 f(d.get("incr_sent_per_changed"), "%.2f"), f(d.get("restore_s"), "%.2f"),
                 f(d.get("verify_s"), "%.2f"), ", ".join(oks)))
extra = []
if "restic" in m and "incr_data_added" in m["restic"]:
    extra.append(f"restic's own data_added for the incremental: {m['restic']['incr_data_added']} "
                 "bytes (before compression)")
if "borg" in m and "incr_deduplicated_size" in m["borg"]:
    extra.append(f"borg's own deduplicated_size for the incremental: {m['borg']['incr_deduplicated_size']} "
                 "bytes (after compression)")
if "rsync" in m and "incr_literal_data" in m["rsync"]:
    extra.append(f"rsync literal data {m['rsync']['incr_literal_data']} bytes, matched "
                 f"{m['rsync'].get('incr_matched_data', '?')} bytes")
for e in extra:
    print("  " + e)

p, r = m.get("palisade", {}), m.get("restic", {})
def ratio(a, b):
    return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
bars = [
    ("palisade / restic first-backup throughput", ratio(p.get("first_mib_s"), r.get("first_mib_s")), ">=", 2),
    ("palisade / restic repository size", ratio(p.get("repo_bytes"), r.get("repo_bytes")), "<=", 1),
    ("palisade incremental bytes sent / changed bytes", ratio(p.get("incr_sent"), changed), "<=", 1.5),
    ("palisade restore time / first-backup time", ratio(p.get("restore_s"), p.get("first_s")), "<=", 1),
]
print()
print("%-52s %8s %-6s %s" % ("bar", "figure", "bar", ""))
ratios = {}
for name, v, op, b in bars:
    if v is None:
        why = "palisade-replicator not built" if pstate != "built" else "n/a (a phase failed)"
        print("%-52s %8s %-6s %s" % (name, "n/a", f"{op} {b}", why))
    else:
        ok = v >= b if op == ">=" else v <= b
        print("%-52s %8.2f %-6s %s" % (name, v, f"{op} {b}", "met" if ok else "NOT met"))
    ratios[name] = {"value": v, "bar": f"{op} {b}",
                    "met": None if v is None else (v >= b if op == ">=" else v <= b)}
for t in ("restic", "borg", "rsync", "palisade-p2p"):
    if m.get(t, {}).get("incr_sent_per_changed") is not None:
        ratios[f"{t} incremental bytes sent / changed bytes"] = {"value": m[t]["incr_sent_per_changed"]}
res = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": int(cores),
       "page_cache_dropped": dropped == "true", "dataset": gen, "mutate": mut,
       "palisade_replicator": pstate,
       "versions": {"restic": restic_v, "borg": borg_v, "rsync": rsync_v},
       "settings": {"restic": "repository version 2, compression auto, encrypted (always)",
                    "borg": f"--encryption={borg_enc} --compression {borg_comp}",
                    "rsync": "first: -a; incremental: -a --no-whole-file --delete; verify: -a -c -n"},
       "incr_sent_means": {"palisade": "bytes_sent from backup --output-format json",
                           "palisade-p2p": "bytes_sent from backup --output-format json",
                           "restic": "repository growth (du -sb)", "borg": "repository growth (du -sb)",
                           "rsync": "Total bytes sent"},
       "tools": m, "ratios": ratios}
json.dump(res, open(out, "w"), indent=2)
print(f"\nresults: {out}")
PY
