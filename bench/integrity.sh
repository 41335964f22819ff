#!/usr/bin/env bash
# Integrity benchmark: `palisade-agent baseline` / `verify` against b3sum (same files, hashing
# only) and AIDE (`aide --init`, same tree, comparable attributes) on a generated web root and
# on /usr, in one run, warm cache; then realtime change-to-event latency and anti-tamper
# time-to-restore with a collector and `palisade-agent run` on loopback; then YARA-X file
# scanning of a 1 MB page with and without a webshell, against classic YARA on the same file.
#   1. baseline: wall time and peak RSS of palisade, b3sum, aide; ratios palisade/b3sum and
#      aide/palisade; verify of the unchanged tree
#   2. with --million: peak RSS of `baseline` over 1,000,000 tiny files
#   3. realtime: 200 changes (modify, add, delete, chmod) in a protect = "restore" tree and 200
#      in an alert-only tree, one change every 50 ms alternating; latency = the event's
#      @timestamp - the time the script made the change; restore = until the script reads the
#      file back as it was
#   4. YARA-X: `scan`'s "slowest file" on the clean and the infected file
# Each tool runs once untimed on a tree before it is timed (page, dentry and inode caches warm),
# then --rounds timed rounds with the tools alternating; the median wall time is reported.
# Generated trees are kept in WORK and reused while N is unchanged; everything else is removed.
# Usage: bench/integrity.sh [--million] [--no-build] [--skip-usr] [--rounds=3]
#                           [N=200000] [WORK=/tmp/palisade-bench-integrity]
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
million=0; build=1; usr=1; rounds=3; args=()
for a in "$@"; do
    case "$a" in
        --million) million=1 ;;
        --no-build) build=0 ;;   # use the binaries already in $CARGO_TARGET_DIR/release
        --skip-usr) usr=0 ;;     # quick check: the generated tree only
        --rounds=*) rounds="${a#--rounds=}" ;;   # timed rounds per tool (median reported)
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) args+=("$a") ;;
    esac
done
n="${args[0]:-200000}"; work="${args[1]:-/tmp/palisade-bench-integrity}"
rt_files=20000; rt_other_files=5000; changes=200
ensure_system_packages b3sum aide time python3
yara_ok=1; ensure_system_packages yara || yara_ok=0
if [ "$build" = 1 ]; then ensure_rust; build_release >/dev/null 2>&1 || build_release; fi
A="$PALISADE_BIN/palisade-agent"; C="$PALISADE_BIN/palisade-collector"
for _ in $(seq 1 60); do [ -x "$A" ] && [ -x "$C" ] && break; echo "waiting for $A and $C" >&2; sleep 5; done
[ -x "$A" ] && [ -x "$C" ] || { echo "missing $A or $C" >&2; exit 2; }
cd "$PALISADE_ROOT"   # the YARA rules: ./signatures/yara

mkdir -p "$work"
tmp="$(mktemp -d "$work/run.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
table="$tmp/table"; : > "$table"
row() { printf '%-58s %16s %-10s %s\n' "$1" "$2" "$3" "$4" >> "$table"; }   # what, figure, bar, met
met() { awk -v v="$1" -v op="$2" -v b="$3" 'BEGIN { ok = (op == "<=") ? v <= b : (op == ">=") ? v >= b : v < b; print ok ? "met" : "NOT met" }'; }

# --- helpers in Python: tree generators, the change driver, the latency analysis -------------
py="$tmp/helper.py"
cat > "$py" <<'PY'
import calendar, json, os, random, stat, sys, threading, time

WORDS = ("the page user session order cart item price login form table list view edit save "
         "delete search result header footer menu news contact about product account "
         "admin index query value string array config cache title body content").split()

def text_block(rng, size):
    """HTML / PHP / CSS / JS-like lines, about `size` bytes, never a webshell."""
    out, n = [], 0
    while n < size:
        w = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))
        kind = rng.randrange(6)
        if kind == 0:
            line = '<div class="%s"><p>%s</p></div>' % (rng.choice(WORDS), w(12))
        elif kind == 1:
            line = "<?php echo htmlspecialchars($%s['%s'] ?? '', ENT_QUOTES); ?>" % (
                rng.choice(WORDS), rng.choice(WORDS))
        elif kind == 2:
            line = ".%s-%s { margin: %dpx %dpx; color: #%06x; }" % (
                rng.choice(WORDS), rng.choice(WORDS), rng.randrange(40), rng.randrange(40),
                rng.randrange(1 << 24))
        elif kind == 3:
            line = "function %s_%s(a, b) { return a.%s + b.%s; } // %s" % (
                rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS), w(6))
        elif kind == 4:
            line = "<?php $%s = $db->query('SELECT %s FROM %s WHERE id = ?', [$id]); ?>" % (
                rng.choice(WORDS), rng.choice(WORDS), rng.choice(WORDS))
        else:
            line = '<a href="/%s/%s.php?id=%d">%s</a>' % (
                rng.choice(WORDS), rng.choice(WORDS), rng.randrange(10000), w(4))
        out.append(line)
        n += len(line) + 1
    return ("\n".join(out) + "\n").encode()[:size]

EXT = (".php", ".html", ".css", ".js", ".php", ".inc", ".txt", ".json")

def leaf(j):
    return "s%02d/p%02d/l%02d" % (j // 400, (j // 20) % 20, j % 20)

def gen_web(root, n):
    """n files of 200 B - 16 KiB, 100 per directory, three levels."""
    rng = random.Random(20261122)
    base = text_block(rng, 1 << 20)
    made = set()
    for i in range(n):
        d = os.path.join(root, leaf(i // 100))
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        size = rng.randrange(200, 16 * 1024 + 1)
        head = b"<!-- %s %d -->\n" % (d.encode(), i)
        off = rng.randrange(len(base) - size)
        with open(os.path.join(d, "f%05d%s" % (i % 100000, EXT[i % len(EXT)])), "wb") as f:
            f.write((head + base[off:off + size])[:size])

def gen_tiny(root, n):
    """n files of 16-64 bytes, 100 per directory, two levels."""
    for j in range((n + 99) // 100):
        d = os.path.join(root, "a%03d" % (j // 100), "b%03d" % (j % 100))
        os.makedirs(d, exist_ok=True)
        for i in range(j * 100, min(n, j * 100 + 100)):
            with open(os.path.join(d, "t%07d" % i), "wb") as f:
                f.write((b"tiny file %d " % i).ljust(16 + i % 49, b"."))

def gen_scan(clean, shell, size):
    body = text_block(random.Random(7), size)
    with open(clean, "wb") as f:
        f.write(body)
    with open(shell, "wb") as f:
        f.write(body + b"\n<?php eval($_POST['cmd']); ?>\n")

def files_of(root):
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        out.extend(os.path.join(d, f) for f in sorted(files))
    return out

def read(p):
    with open(p, "rb") as f:
        return f.read()

def drive(protected, other, count, spacing, out):
    """`count` changes in each tree, alternating, one every `spacing` s; polls the protected
    tree until each change is undone. Times are CLOCK_REALTIME ns taken just before the change."""
    ops = ("modify", "add", "delete", "chmod")
    trees = []
    for root in (protected, other):
        files = files_of(root)
        random.Random(42).shuffle(files)
        trees.append(files[:count])
    pending, done, lock = [], [], threading.Lock()
    stop = threading.Event()

    def back(c):
        p = c["path"]
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return c["op"] == "add"
        if c["op"] == "add":
            return False
        if stat.S_IMODE(st.st_mode) != c["mode"]:
            return False
        return c["op"] == "chmod" or read(p) == c["orig"]

    def poll():
        while not stop.is_set() or pending:
            with lock:
                now_pending = list(pending)
            for c in now_pending:
                try:
                    ok = back(c)
                except OSError:
                    ok = False
                if ok:
                    c["restored_ns"] = time.time_ns()
                    with lock:
                        pending.remove(c)
            if stop.is_set() and time.time() > deadline[0]:
                break
            time.sleep(0.005)

    deadline = [float("inf")]
    poller = threading.Thread(target=poll)
    poller.start()
    start = time.time()
    for i in range(2 * count):
        t = i % 2
        k = i // 2
        op = ops[k % 4]
        path = trees[t][k]
        c = {"tree": "protected" if t == 0 else "alert", "op": op, "path": path}
        st = os.lstat(path)
        c["mode"] = stat.S_IMODE(st.st_mode)
        if t == 0 and op in ("modify", "delete"):
            c["orig"] = read(path)
        target = start + i * spacing
        time.sleep(max(0.0, target - time.time()))
        if op == "add":
            path = os.path.join(os.path.dirname(path), "bench-added-%d.php" % i)
            c["path"] = path
            c["t_ns"] = time.time_ns()
            with open(path, "wb") as f:
                f.write(b"<?php echo 'added %d'; ?>\n" % i)
        elif op == "modify":
            c["t_ns"] = time.time_ns()
            with open(path, "wb") as f:
                f.write(b"<?php echo 'defaced %d'; ?>\n" % i)
        elif op == "delete":
            c["t_ns"] = time.time_ns()
            os.unlink(path)
        else:
            c["t_ns"] = time.time_ns()
            os.chmod(path, 0o600 if c["mode"] != 0o600 else 0o640)
        if t == 0:
            with lock:
                pending.append(c)
        done.append(c)
    deadline[0] = time.time() + 15
    stop.set()
    poller.join()
    for c in done:
        c.pop("orig", None)
    with open(out, "w") as f:
        json.dump(done, f)

def ts_ns(s):
    secs, _, frac = s.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(secs, "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(frac.ljust(9, "0")[:9] or 0)

def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, -(-len(xs) * p // 100) - 1)] if xs else float("nan")

EXPECT = {"modify": "palisade.fim.changed", "chmod": "palisade.fim.changed",
          "add": "palisade.fim.added", "delete": "palisade.fim.removed"}

def analyze(events_path, changes_path, final):
    changes = json.load(open(changes_path))
    by_path = {}
    restored_flags = 0
    for line in open(events_path):
        e = json.loads(line)
        rid = (e.get("rule") or {}).get("id", "")
        p = (e.get("file") or {}).get("path")
        if not rid.startswith("palisade.fim.") or p is None:
            continue
        integ = (e.get("palisade") or {}).get("integrity") or {}
        by_path.setdefault(p, []).append((ts_ns(e["@timestamp"]), rid, integ.get("restored")))
    changed = {c["path"] for c in changes}
    spurious = sum(len(v) for p, v in by_path.items() if p not in changed)
    lat = {"protected": [], "alert": []}
    restore, missing, wrong, unrestored, not_flagged = [], [], [], [], 0
    for c in changes:
        evs = sorted(x for x in by_path.get(c["path"], []) if x[0] >= c["t_ns"])
        if not evs:
            missing.append(c)
            continue
        ts, rid, restored = evs[0]
        lat[c["tree"]].append((ts - c["t_ns"]) / 1e6)
        if rid != EXPECT[c["op"]]:
            wrong.append((c["op"], c["path"], rid))
        if c["tree"] == "protected":
            if restored is not True:
                not_flagged += 1
            if c.get("restored_ns"):
                restore.append((c["restored_ns"] - c["t_ns"]) / 1e6)
            else:
                unrestored.append(c)
    if not final:
        sys.exit(0 if not missing else 1)
    res = {"changes": len(changes), "missing": len(missing), "wrong_rule": len(wrong),
           "unrestored": len(unrestored), "restored_flag_missing": not_flagged,
           "spurious": spurious}
    for tree, xs in lat.items():
        res["latency_" + tree] = [len(xs), pct(xs, 50), pct(xs, 99), max(xs) if xs else float("nan")]
    every = lat["protected"] + lat["alert"]
    res["latency_all"] = [len(every), pct(every, 50), pct(every, 99), max(every) if every else float("nan")]
    res["restore"] = [len(restore), pct(restore, 50), pct(restore, 99), max(restore) if restore else float("nan")]
    by_op = {}
    for c in changes:
        evs = sorted(x for x in by_path.get(c["path"], []) if x[0] >= c["t_ns"])
        if evs:
            by_op.setdefault(c["tree"] + "/" + c["op"], []).append((evs[0][0] - c["t_ns"]) / 1e6)
    res["by_op_p50_max"] = {k: [round(pct(v, 50)), round(max(v))] for k, v in sorted(by_op.items())}
    res["examples_missing"] = [(c["tree"], c["op"], c["path"]) for c in missing[:5]]
    res["examples_wrong"] = wrong[:5]
    res["examples_unrestored"] = [(c["op"], c["path"]) for c in unrestored[:5]]
    print(json.dumps(res))

cmd = sys.argv[1]
if cmd == "gen-web":
    gen_web(sys.argv[2], int(sys.argv[3]))
elif cmd == "gen-tiny":
    gen_tiny(sys.argv[2], int(sys.argv[3]))
elif cmd == "gen-scan":
    gen_scan(sys.argv[2], sys.argv[3], int(sys.argv[4]))
elif cmd == "drive":
    drive(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
elif cmd == "analyze":
    analyze(sys.argv[2], sys.argv[3], sys.argv[4] == "final")
elif cmd == "json":   # print fields of a JSON document on stdin
    d = json.load(sys.stdin)
    print(" ".join(str(d.get(k)) for k in sys.argv[2:]))
PY

tree() {  # kind, root, count: generate unless a stamp says it is there already
    local stamp="$2.stamp"
    if [ "$(cat "$stamp" 2>/dev/null)" = "v1 $1 $3" ]; then return 0; fi
    echo "==> generating $3 files under $2" >&2
    rm -rf "$2" "$stamp"
    python3 "$py" "gen-$1" "$2" "$3"
    echo "v1 $1 $3" > "$stamp"
}
agent_config() {  # file, data dir, then TOML appended (the [[integrity.paths]] tables)
    local f="$1" data="$2"; shift 2
    cat > "$f" <<TOML
collector = "https://127.0.0.1:1"
data_dir = "$data"
[tls]
ca = "x"
cert = "x"
key = "x"
[integrity]
threads = 0
[integrity.malware]
dir = "$PALISADE_ROOT/signatures/yara"
$*
TOML
}
measure() {  # label, max accepted exit code, command...: "wall_s rss_kib" into $tmp/label
    local label="$1" okrc="$2"; shift 2
    local rc=0
    /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >"$tmp/$label.out" 2>"$tmp/$label.err" || rc=$?
    if [ "$rc" -gt "$okrc" ]; then echo "$label: exit $rc" >&2; tail -20 "$tmp/$label.err" >&2; exit 1; fi
    tail -1 "$tmp/time" > "$tmp/$label"
    read -r secs kb < "$tmp/$label"
    printf '  %-30s %8.2f s wall  peak RSS %6d MiB\n' "$label" "$secs" "$((kb / 1024))"
}
summarize() {  # label: median wall, max peak RSS of $tmp/label-{1..rounds} into $tmp/label
    local i
    for i in $(seq 1 "$rounds"); do cat "$tmp/$1-$i"; done | sort -g | awk '
        { w[NR] = $1; if ($2 > k) k = $2 }
        END { m = (NR % 2) ? w[(NR + 1) / 2] : (w[NR / 2] + w[NR / 2 + 1]) / 2; print m, k, w[1], w[NR] }' > "$tmp/$1"
}
figure() { awk '{ printf "%.2f (%.2f-%.2f) / %d MiB", $1, $3, $4, $2 / 1024 }' "$tmp/$1"; }
wall() { cut -d' ' -f1 "$tmp/$1"; }
rss_mib() { awk '{ printf "%.0f", $2 / 1024 }' "$tmp/$1"; }
ratio() { awk -v a="$(wall "$1")" -v b="$(wall "$2")" 'BEGIN { printf "%.2f", a / b }'; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tools: $("$A" --version), b3sum $(b3sum --version | cut -d' ' -f2), $(aide --version 2>&1 | head -1)"

# --- 1. baseline / verify against b3sum and aide ------------------------------------------
tree web "$work/www" "$n"
bench_tree() {  # label, root
    local label="$1" root="$2"
    local files bytes
    files=$(find "$root" -xdev -type f | wc -l)
    bytes=$(find "$root" -xdev -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }')
    echo "$label: $root, $files regular files, $(awk -v b="$bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }')"
    local cfg="$tmp/$label.toml" data="$tmp/data-$label"
    agent_config "$cfg" "$data" "[[integrity.paths]]
path = \"$root\""
    cat > "$tmp/aide-$label.conf" <<CONF
database_out=file:$tmp/aide-$label.db
gzip_dbout=no
database_attrs=sha256
R = p+i+n+u+g+s+m+c+xattrs+sha256
$root R
CONF
    local b3="find \"\$1\" -xdev -type f -print0 | xargs -0 b3sum > /dev/null"
    local w aides="1"; [ "$(nproc)" -gt 1 ] && aides="1 $(nproc)"
    echo "  (untimed run of each tool first, then $rounds timed rounds, tools alternating)"
    for w in warmup $(seq 1 "$rounds"); do
        rm -rf "$data"
        measure "$label-palisade-$w" 0 "$A" baseline --config "$cfg" --output-format json
        measure "$label-b3sum-$w" 0 bash -c "$b3" _ "$root"
        for k in $aides; do
            rm -f "$tmp/aide-$label.db"
            measure "$label-aide-$k-$w" 0 aide --config "$tmp/aide-$label.conf" --init --workers="$k"
        done
        [ "$w" = warmup ] || measure "$label-verify-$w" 7 "$A" verify --config "$cfg" --output-format json
    done
    for k in palisade b3sum $(printf 'aide-%s ' $aides) verify; do summarize "$label-$k"; done
    read -r pf pb < <(python3 "$py" json files bytes_hashed < "$tmp/$label-palisade-1.out")
    echo "  palisade recorded $pf files (regular files and symlinks), hashed $pb bytes (find: $files regular files, $bytes bytes)"
    echo "  verify: $(python3 "$py" json counts files problems < "$tmp/$label-verify-1.out") (counts, files, problems)"
    local r1 r2 r3
    r1=$(ratio "$label-palisade" "$label-b3sum"); r2=$(ratio "$label-aide-1" "$label-palisade")
    r3=$(ratio "$label-aide-$(nproc)" "$label-palisade")
    echo "  palisade/b3sum time: $r1 (bar <= 1.25)   aide/palisade: $r2 (1 worker, aide's default), $r3 ($(nproc) workers) (bar >= 10)"
    row "$label: palisade baseline, s (range) / peak RSS" "$(figure "$label-palisade")" "" ""
    row "$label: b3sum (same files), s (range) / peak RSS" "$(figure "$label-b3sum")" "" ""
    row "$label: aide --init 1 worker, s (range) / peak RSS" "$(figure "$label-aide-1")" "" ""
    row "$label: aide --init $(nproc) workers, s (range) / peak RSS" "$(figure "$label-aide-$(nproc)")" "" ""
    row "$label: palisade verify, unchanged, s (range) / RSS" "$(figure "$label-verify")" "" ""
    row "$label: palisade / b3sum time" "$r1" "<= 1.25" "$(met "$r1" "<=" 1.25)"
    row "$label: aide (1 worker) / palisade time" "$r2" ">= 10" "$(met "$r2" ">=" 10)"
    row "$label: aide ($(nproc) workers) / palisade time" "$r3" ">= 10" "$(met "$r3" ">=" 10)"
}
bench_tree "www-$n" "$work/www"
[ "$usr" = 0 ] || bench_tree usr /usr

# --- 2. peak RSS over a million files ------------------------------------------------------
if [ "$million" = 1 ]; then
    free_gb=$(df -BG --output=avail "$work" | tail -1 | tr -dc 0-9)
    if [ ! -f "$work/million.stamp" ] && [ "$free_gb" -lt 20 ]; then
        echo "--million: only ${free_gb} GB free under $work (want 20): skipped"
    else
        tree tiny "$work/million" 1000000
        agent_config "$tmp/million.toml" "$tmp/data-million" "[[integrity.paths]]
path = \"$work/million\""
        echo "million: $work/million, 1,000,000 files of 16-64 bytes"
        for w in warmup $(seq 1 "$rounds"); do
            rm -rf "$tmp/data-million"
            measure "million-palisade-$w" 0 "$A" baseline --config "$tmp/million.toml" --output-format json
        done
        summarize million-palisade
        mm=$(rss_mib million-palisade)
        row "1 M tiny files: palisade baseline, s (range) / peak RSS" "$(figure million-palisade)" "<= 100 MB" "$(met "$(awk -v m="$mm" 'BEGIN { print m * 1.048576 }')" "<=" 100)"
    fi
fi

# --- 3. realtime latency and anti-tamper restore ----------------------------------------------
echo "realtime: $rt_files files protect = \"restore\", $rt_other_files alert-only; $changes changes in each, one every 50 ms alternating"
rt="$tmp/rt"; mkdir -p "$rt"
python3 "$py" gen-web "$rt/site" "$rt_files"
python3 "$py" gen-web "$rt/other" "$rt_other_files"
pki="$rt/pki"
"$C" pki init --dir "$pki" >/dev/null
"$C" pki issue --dir "$pki" --role agent --name bench-agent >/dev/null
"$C" pki issue --dir "$pki" --role analyst --name analyst >/dev/null
cat > "$rt/collector.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "$rt/cdata"
[tls]
ca = "$pki/ca.crt"
cert = "$pki/palisade-collector.crt"
key = "$pki/palisade-collector.key"
TOML
"$C" serve --config "$rt/collector.toml" >"$rt/cout" 2>"$rt/clog" &
pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$rt/cout" && break; sleep 0.1; done
url="$(sed -n 's/^palisade-collector listening on //p' "$rt/cout")"
[ -n "$url" ] || { echo "collector did not start:" >&2; tail "$rt/clog" >&2; exit 1; }
cat > "$rt/agent.toml" <<TOML
collector = "$url"
data_dir = "$rt/adata"
[tls]
ca = "$pki/ca.crt"
cert = "$pki/bench-agent.crt"
key = "$pki/bench-agent.key"
[heartbeat]
interval_secs = 1
[integrity]
[integrity.malware]
dir = "$PALISADE_ROOT/signatures/yara"
[[integrity.paths]]
path = "$rt/site"
protect = "restore"
[[integrity.paths]]
path = "$rt/other"
TOML
PALISADE_LOG=info "$A" run --config "$rt/agent.toml" >/dev/null 2>"$rt/alog" &
apid=$!; pids+=("$apid")
events() {
    "$C" events --kind integrity --output-format ndjson --since 1h --limit 1000000 \
        --collector "$url" --pki-dir "$pki" --as analyst 2>>"$rt/cli.err" || [ $? -eq 1 ]
}
ready=0
for _ in $(seq 1 240); do
    kill -0 "$apid" 2>/dev/null || { echo "agent exited:" >&2; tail "$rt/alog" >&2; exit 1; }
    if grep -qs 'integrity verify done' "$rt/alog" && events | grep -q '"baseline-created"'; then ready=1; break; fi
    sleep 0.5
done
[ "$ready" = 1 ] || { echo "no baseline event from the agent within 120 s:" >&2; tail "$rt/alog" >&2; exit 1; }
python3 "$py" drive "$rt/site" "$rt/other" "$changes" 0.05 "$rt/changes.json"
for _ in $(seq 1 30); do
    events > "$rt/events.ndjson"
    python3 "$py" analyze "$rt/events.ndjson" "$rt/changes.json" partial && break
    sleep 1
done
res="$(python3 "$py" analyze "$rt/events.ndjson" "$rt/changes.json" final)"
echo "  $res"
field() { python3 -c 'import json, sys; v = json.loads(sys.argv[1])[sys.argv[2]]; print(" ".join("%.0f" % x if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else v)' "$res" "$1"; }
read -r _ p50 p99 max < <(field latency_all)
row "change -> event latency, p50 / p99 / max ms (400 changes)" "$p50 / $p99 / $max" "p99 < 1000" "$(met "$p99" "<" 1000)"
read -r _ a50 a99 amax < <(field latency_protected)
row "  protected tree only (event after the restore)" "$a50 / $a99 / $amax" "" ""
read -r _ b50 b99 bmax < <(field latency_alert)
row "  alert-only tree" "$b50 / $b99 / $bmax" "" ""
read -r rn r50 r99 rmax < <(field restore)
row "time to restore ($rn restored), p50 / p99 / max ms" "$r50 / $r99 / $rmax" "< 5000" "$(met "$rmax" "<" 5000)"
row "changes without event / not restored / wrong rule" "$(field missing) / $(field unrestored) / $(field wrong_rule)" "0" "$([ "$(field missing)$(field unrestored)$(field wrong_rule)" = 000 ] && echo met || echo "NOT met")"
row "findings on files the script did not touch" "$(field spurious)" "0" "$([ "$(field spurious)" = 0 ] && echo met || echo "NOT met")"
grep -Ei ' (WARN|ERROR) ' "$rt/alog" | head -5 | sed 's/^/  agent log: /' || true
kill -TERM "$apid" 2>/dev/null || true

# --- 4. YARA-X file scanning ---------------------------------------------------------------
ys="$tmp/yara"; mkdir -p "$ys/clean20" "$ys/shell20"
python3 "$py" gen-scan "$ys/page.php" "$ys/shell.php" 1000000
for i in $(seq -w 1 20); do ln "$ys/page.php" "$ys/clean20/p$i.php"; ln "$ys/shell.php" "$ys/shell20/p$i.php"; done
slowest() {  # file: "slowest file X ms" of the median of 5 runs; exit code of the last
    local f="$1" rc ms=()
    for _ in 1 2 3 4 5; do
        rc=0; "$A" scan "$f" --rules signatures/yara > /dev/null 2>"$ys/err" || rc=$?
        [ "$rc" -le 1 ] || { cat "$ys/err" >&2; exit 1; }
        ms+=("$(sed -nE 's/.*slowest file ([0-9.]+) ms.*/\1/p' "$ys/err")")
    done
    printf '%s\n' "${ms[@]}" | sort -g | sed -n 3p; echo "$rc"
}
{ read -r clean_ms; read -r clean_rc; } < <(slowest "$ys/page.php")
{ read -r shell_ms; read -r shell_rc; } < <(slowest "$ys/shell.php")
echo "YARA-X: 1 MB page $clean_ms ms ($([ "$clean_rc" = 1 ] && echo "no match" || echo "MATCHED: false positive")), with a webshell line $shell_ms ms ($([ "$shell_rc" = 0 ] && echo matched || echo "NOT matched"))"
row "YARA-X scan of a 1 MB page, clean / webshell (ms, median of 5)" "$clean_ms / $shell_ms" "< 50" "$(met "$(printf '%s\n' "$clean_ms" "$shell_ms" | sort -g | tail -1)" "<" 50)"
row "  matched: clean / webshell (want no / yes)" "$([ "$clean_rc" = 0 ] && echo yes || echo no) / $([ "$shell_rc" = 0 ] && echo yes || echo no)" "" ""
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }
px_total() {  # dir: seconds of scanning reported by palisade for the 20 copies, as ms per file
    "$A" scan "$1" --rules signatures/yara >/dev/null 2>"$ys/err" || true
    sed -nE 's/.* MB in ([0-9.]+) s .*/\1/p' "$ys/err" | awk '{ printf "%.1f", $1 * 1000 / 20 }'
}
if [ "$yara_ok" = 1 ] && command -v yara >/dev/null && yarac signatures/yara/webshells.yar "$ys/rules.yarc" 2>"$ys/yarac.err"; then
    for which in clean20 shell20; do
        : > "$ys/empty.php"; t0=$EPOCHREALTIME; yara -C -p 1 "$ys/rules.yarc" "$ys/empty.php" >/dev/null || true; e=$(since "$t0")
        t0=$EPOCHREALTIME; yara -C -p 1 -r "$ys/rules.yarc" "$ys/$which" > "$ys/yara.$which" || true; t=$(since "$t0")
        y=$(awk -v t="$t" -v e="$e" 'BEGIN { printf "%.1f", (t - e) / 20 }')
        x=$(px_total "$ys/$which")
        echo "  $which: YARA-X $x ms/file (palisade's scan time / 20), classic YARA $y ms/file ($(wc -l < "$ys/yara.$which") matches over 20 copies)"
        row "  $which: classic YARA 4 / YARA-X ms per file (ratio)" "$y / $x ($(awk -v y="$y" -v x="$x" 'BEGIN { printf "%.2f", y / x }'))" "" ""
    done
else
    echo "classic YARA: not installable or cannot compile signatures/yara/webshells.yar: $(head -3 "$ys/yarac.err" 2>/dev/null)"
    row "classic YARA on the same file" "n/a" "" ""
fi

echo
echo "== figures ($(nproc) cores, kernel $(uname -r), $(date -u +%Y-%m-%d))"
printf '%-58s %16s %-10s %s\n' "what" "figure" "bar" "" 
cat "$table"
