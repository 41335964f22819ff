#!/usr/bin/env bash
# The quickstart: sets everything up under one folder and runs the main job.
#   - installs missing system packages (libpcap headers, pkg-config) and builds (release);
#   - creates a dev PKI, collector and agent configs and data dirs under DIR (default ./palisade-demo);
#   - starts the collector and an agent on loopback; a second sensor replays the demo capture
#     (ordinary traffic of a small segment plus one of each attack) into the collector through
#     the real spool and mutual-TLS path, with every detector on, including YARA-X;
#   - shows the analyst what was detected, then refreshes the picture every 10 s until Ctrl-C,
#     which stops everything cleanly.
# Usage: scripts/quickstart.sh [--once] [DIR]     (--once: show the first events and stop)
set -euo pipefail
source "$(dirname "$0")/common.sh"

once=0
if [ "${1:-}" = "--once" ]; then once=1; shift; fi
DIR="$(mkdir -p "${1:-palisade-demo}" && cd "${1:-palisade-demo}" && pwd)"
PORT="${PALISADE_PORT:-7443}"

ensure_rust
ensure_system_packages
build_release
C="$PALISADE_BIN/palisade-collector"
A="$PALISADE_BIN/palisade-agent"
R="$PALISADE_BIN/palisade-replicator"

if [ ! -f "$DIR/pki/ca.crt" ]; then
    echo "==> creating a dev PKI in $DIR/pki" >&2
    "$C" pki init --dir "$DIR/pki" >/dev/null
    "$C" pki issue --dir "$DIR/pki" --role analyst --name analyst >/dev/null
    "$C" pki issue --dir "$DIR/pki" --role agent --name demo-probe >/dev/null
fi
[ -f "$DIR/pki/demo-sensor.crt" ] || "$C" pki issue --dir "$DIR/pki" --role agent --name demo-sensor >/dev/null
# The replicator: site-a backs up the web root to an off-site repository and reports each run.
[ -f "$DIR/pki/site-a.crt" ] || "$C" pki issue --dir "$DIR/pki" --role replicator --name site-a >/dev/null
cat > "$DIR/collector.toml" <<TOML
# Collector config written by scripts/quickstart.sh (see README, "Configuration").
listen = "127.0.0.1:$PORT"
data_dir = "collector-data"
[tls]
ca = "pki/ca.crt"
cert = "pki/palisade-collector.crt"
key = "pki/palisade-collector.key"
crl = "pki/crl.pem"
[correlation]
# The team's Sigma rules: detections over the agents' alerts and cross-agent stories.
rules_dir = "$PALISADE_ROOT/signatures/sigma"
TOML
# A small government web root that the agent guards (anti-tamper with restore).
if [ ! -d "$DIR/www" ]; then
    mkdir -p "$DIR/www/news" "$DIR/www/static"
    printf '<html><body><h1>City e-government portal</h1></body></html>\n' > "$DIR/www/index.html"
    printf '<p>Office hours 9:00-17:00</p>\n' > "$DIR/www/news/hours.html"
    printf 'body { font-family: sans-serif; }\n' > "$DIR/www/static/site.css"
fi
cat > "$DIR/agent.toml" <<TOML
# Agent config written by scripts/quickstart.sh (see README, "Configuration").
collector = "https://127.0.0.1:$PORT"
data_dir = "agent-data"
[tls]
ca = "pki/ca.crt"
cert = "pki/demo-probe.crt"
key = "pki/demo-probe.key"
[heartbeat]
interval_secs = 5
[[integrity.paths]]
path = "$DIR/www"
protect = "restore"
[integrity.malware]
dir = "$PALISADE_ROOT/signatures/yara"
action = "quarantine"
TOML
cat > "$DIR/sensor.toml" <<TOML
# Network sensor config written by scripts/quickstart.sh: replays captures into the collector.
collector = "https://127.0.0.1:$PORT"
data_dir = "sensor-data"
[tls]
ca = "pki/ca.crt"
cert = "pki/demo-sensor.crt"
key = "pki/demo-sensor.key"
[detect.ioc]
dir = "$PALISADE_ROOT/signatures/net"
[detect.yara]
dir = "$PALISADE_ROOT/signatures/yara"
TOML

pids=()
stop() {
    trap - INT TERM EXIT
    echo >&2; echo "==> stopping agent and collector" >&2
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    echo "==> stopped; data, logs and certificates stay in $DIR" >&2
}
trap stop INT TERM EXIT

echo "==> starting collector on https://127.0.0.1:$PORT (log: $DIR/collector.log)" >&2
"$C" serve --config "$DIR/collector.toml" >"$DIR/collector.out" 2>"$DIR/collector.log" &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q "listening on" "$DIR/collector.out" 2>/dev/null && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$DIR/collector.log" >&2; exit 2; }
    sleep 0.1
done
echo "==> starting agent demo-probe (log: $DIR/agent.log)" >&2
"$A" run --config "$DIR/agent.toml" 2>"$DIR/agent.log" &
pids+=($!)

analyst=(--collector "https://127.0.0.1:$PORT" --pki-dir "$DIR/pki" --as analyst)
for _ in $(seq 1 100); do
    "$C" events --since 5m --kind heartbeat --limit 1 "${analyst[@]}" --output-format ndjson >/dev/null 2>&1 && break
    sleep 0.2
done
echo "==> sensor demo-sensor replays the demo capture into the collector (log: $DIR/sensor.log)" >&2
"$A" demo-capture --out "$DIR/demo.pcap" >/dev/null
"$A" replay "$DIR/demo.pcap" --config "$DIR/sensor.toml" 2>"$DIR/sensor.log" \
    || { cat "$DIR/sensor.log" >&2; exit 2; }
grep '^replay:' "$DIR/sensor.log" >&2 || true
# The agent took its integrity baseline of the web root at first start; now an attacker
# defaces the home page and drops a webshell. The agent restores the page and quarantines
# the shell within a second or so.
for _ in $(seq 1 100); do
    "$C" events --since 1d --kind integrity --limit 1 "${analyst[@]}" --output-format ndjson 2>/dev/null \
        | grep -q 'baseline-' && break
    sleep 0.2
done
echo "==> an attacker defaces $DIR/www/index.html and uploads a webshell" >&2
printf '<h1>hacked</h1>\n' > "$DIR/www/index.html"
printf '<?php @eval($_POST["pass"]); ?>\n' > "$DIR/www/static/up.php"
for _ in $(seq 1 50); do
    grep -q 'City e-government portal' "$DIR/www/index.html" && [ ! -e "$DIR/www/static/up.php" ] && break
    sleep 0.2
done
grep -q 'City e-government portal' "$DIR/www/index.html" && echo "==> index.html restored by the agent" >&2
echo "==> replicator site-a backs up the web root to the off-site repository $DIR/offsite-repo" >&2
replicator=(--collector "https://127.0.0.1:$PORT" --pki-dir "$DIR/pki" --identity site-a)
[ -f "$DIR/offsite-repo/config" ] || "$R" init "$DIR/offsite-repo" >/dev/null
"$R" backup "$DIR/www" --to "$DIR/offsite-repo" --site site-a --quiet "${replicator[@]}" >&2
"$R" -r "$DIR/offsite-repo" verify --read-data "${replicator[@]}" >&2
sleep 2
show() {
    echo
    echo "################ what the analyst sees: palisade-collector status"
    "$C" status "${analyst[@]}"
    echo
    echo "################ what was detected: palisade-collector events --kind alert --since 1h"
    "$C" events --kind alert --since 1h --limit 50 --oldest-first "${analyst[@]}" || true
    echo
    echo "################ host integrity: palisade-collector events --kind integrity / --kind malware"
    "$C" events --kind integrity --since 1h --limit 20 --oldest-first "${analyst[@]}" || true
    "$C" events --kind malware --since 1h --limit 20 --oldest-first "${analyst[@]}" || true
    echo
    echo "################ incidents (Sigma rules, grouped by rule and entity): palisade-collector incidents"
    "$C" incidents "${analyst[@]}" || true
    echo
    echo "################ situational awareness: palisade-collector situation"
    "$C" situation "${analyst[@]}" || true
    echo
    echo "################ latest events: palisade-collector events --since 15m --limit 10"
    "$C" events --since 15m --limit 10 "${analyst[@]}" || true
    echo
    echo "################ agents alive: palisade-collector events --kind heartbeat --since 15m --limit 3"
    "$C" events --kind heartbeat --since 15m --limit 3 "${analyst[@]}" || true
}
show
echo
echo "################ off-site backups: palisade-replicator -r $DIR/offsite-repo snapshots"
"$R" -r "$DIR/offsite-repo" snapshots || true
echo
echo "Try it yourself (same flags):  $C events --since 1h --kind alert --severity high ${analyst[*]}"
echo "Or without a collector:         $A replay $DIR/demo.pcap --kind alert --output-format text"
[ "$once" -eq 1 ] && exit 0
echo "Refreshing every 10 s; Ctrl-C stops everything."
while sleep 10; do show; done
