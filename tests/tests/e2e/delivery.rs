//! At-least-once delivery with dedup: nothing acknowledged or produced is lost, nothing is stored
//! twice, whether the collector is SIGKILLed mid-stream (`kill_rounds()` times) or absent for a
//! minute.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use palisade_tests::{free_port, kill_rounds, stored_events, wait_for, Agent, Collector, Pki};

/// Every synthetic index 0..n appears exactly once, and no (agent, sequence) repeats.
pub(crate) fn assert_exactly_once(events: &[serde_json::Value], n: u64) {
    let mut seqs = HashSet::new();
    let mut indexes = HashSet::new();
    for e in events {
        let seq = e["event"]["sequence"].as_u64().unwrap();
        assert!(seqs.insert(seq), "sequence {seq} stored twice");
        let i = e["palisade"]["synthetic"]["index"].as_u64().unwrap();
        assert!(indexes.insert(i), "synthetic event {i} stored twice");
    }
    let missing: Vec<u64> = (0..n).filter(|i| !indexes.contains(i)).take(10).collect();
    assert!(
        missing.is_empty(),
        "missing synthetic events, first ones: {missing:?}"
    );
    assert_eq!(events.len() as u64, n);
}

/// Median and maximum of `ms` (milliseconds), for the campaign's figures.
pub(crate) fn median_max(ms: &mut [u64]) -> (u64, u64) {
    ms.sort_unstable();
    (
        ms.get(ms.len() / 2).copied().unwrap_or(0),
        ms.last().copied().unwrap_or(0),
    )
}

/// Two agents keep sending while the collector is SIGKILLed `kill_rounds()` times (20 by
/// default, `PALISADE_KILL_ROUNDS=50` for the campaign) and restarted each time on the same
/// store. Each kill lands mid-ingest: the collector's life is only ended after the store has
/// grown during it (so the agents were sending), at a random moment 0-400 ms later. After every
/// restart the store opens (the collector listens); at the end every event of both agents is
/// stored exactly once and the audit log's chain verifies.
#[test]
fn collector_sigkilled_at_random_moments_under_two_agents_loses_and_duplicates_nothing() {
    let rounds = kill_rounds() as u64;
    // Enough production that the agents still send when the last kill lands.
    let n = rounds * 2_500;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-k1");
    pki.issue("agent", "probe-k2");
    // Anchors often, so kills also land between an audit record and its anchor.
    let mut collector = Collector::start(
        &tmp.path().join("collector"),
        &pki,
        0,
        "[audit]\nanchor_every_records = 3\nanchor_interval_secs = 1\n",
    );
    let agents: Vec<Agent> = ["probe-k1", "probe-k2"]
        .iter()
        .map(|name| {
            Agent::start(
                &tmp.path().join(name),
                &pki,
                name,
                &collector.url,
                &format!("[heartbeat]\ninterval_secs = 1\n[synthetic]\nevents = {n}\nrate_per_sec = 2500\n[ship]\nmax_batch_events = 500\nmax_backoff_ms = 300\n"),
            )
        })
        .collect();
    let logs = |collector: &Collector| {
        format!(
            "collector log tail:\n{}\nagent logs:\n{}",
            tail(&collector.log_text(), 20),
            agents
                .iter()
                .map(|a| tail(&a.log_text(), 10))
                .collect::<Vec<_>>()
                .join("\n--\n")
        )
    };
    let mut rng = fastrand::Rng::with_seed(8);
    let mut stored = 0u64;
    let mut restart_ms = Vec::new();
    let mut first_ingest_ms = Vec::new();
    for round in 1..=rounds {
        let life = Instant::now();
        if round > 1 {
            // What the store held when this life began (events may have landed between the
            // last reading and the kill).
            stored = stored_events(&collector, &pki).unwrap_or(stored);
        }
        // The store has grown in this life: the agents are sending right now.
        let now = wait_for(Duration::from_secs(60), || {
            stored_events(&collector, &pki).filter(|&s| s > stored)
        })
        .unwrap_or_else(|| {
            panic!(
                "round {round}: the store never grew past {stored}\n{}",
                logs(&collector)
            )
        });
        if round > 1 {
            first_ingest_ms.push(life.elapsed().as_millis() as u64);
        }
        stored = now;
        std::thread::sleep(Duration::from_millis(rng.u64(0..400)));
        collector.kill();
        let started = Instant::now();
        // `restart` returns once the collector listens: its store opened.
        collector.restart();
        restart_ms.push(started.elapsed().as_millis() as u64);
    }
    let total = n;
    for name in ["probe-k1", "probe-k2"] {
        let events = wait_for(Duration::from_secs(240), || {
            let e = collector.events(&pki, &["--agent", name, "--kind", "synthetic"]);
            (e.len() as u64 >= total).then_some(e)
        })
        .unwrap_or_else(|| {
            panic!(
                "{name}: not all events arrived ({} stored)\n{}",
                collector
                    .events(&pki, &["--agent", name, "--kind", "synthetic"])
                    .len(),
                logs(&collector)
            )
        });
        assert_exactly_once(&events, total);
    }
    // No sequence of either agent stored twice, heartbeats and all.
    let mut all = 0;
    for name in ["probe-k1", "probe-k2"] {
        let events = collector.events(&pki, &["--agent", name]);
        let mut seqs = HashSet::new();
        for e in &events {
            let seq = e["event"]["sequence"].as_u64().unwrap();
            assert!(seqs.insert(seq), "{name}: sequence {seq} stored twice");
        }
        all += events.len();
    }
    let out = collector.cli(&pki, "analyst", &["status", "--output-format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Re-sent events the store recognised and dropped, over all lives (persisted per agent).
    let duplicates_dropped: u64 = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["duplicates"].as_u64().unwrap_or(0))
        .sum();
    // The incident list answers, and the audit log's chain (records of every CLI call above,
    // anchored every 3 records) verifies after all those kills.
    let out = collector.cli(&pki, "analyst", &["incidents", "--output-format", "ndjson"]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "incidents: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    collector.kill();
    let out = collector.audit_verify();
    assert_eq!(
        out.status.code(),
        Some(0),
        "audit verify after {rounds} kills:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (rm, rx) = median_max(&mut restart_ms);
    let (im, ix) = median_max(&mut first_ingest_ms);
    println!(
        "collector kills: {rounds}; synthetic events per agent {total} x 2 stored exactly once; {all} events stored in all (heartbeats too); re-sent duplicates dropped by the store {duplicates_dropped}; restart to listening median {rm} ms max {rx} ms; restart to first new event stored median {im} ms max {ix} ms"
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn agent_started_before_the_collector_delivers_everything_once_it_appears() {
    const SECS: u64 = 60;
    const RATE: u64 = 50;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-d");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let agent = Agent::start(
        &tmp.path().join("agent"),
        &pki,
        "probe-d",
        &url,
        &format!(
            "[heartbeat]\ninterval_secs = 5\n[synthetic]\nevents = {}\nrate_per_sec = {RATE}\n",
            SECS * RATE
        ),
    );
    // 60 s of production with nobody listening.
    std::thread::sleep(Duration::from_secs(SECS));
    assert!(
        agent.log_text().contains("cannot deliver batch"),
        "agent should have been retrying; log:\n{}",
        agent.log_text()
    );
    let collector = Collector::start(&tmp.path().join("collector"), &pki, port, "");
    let events = wait_for(Duration::from_secs(90), || {
        let e = collector.events(&pki, &["--agent", "probe-d", "--kind", "synthetic"]);
        (e.len() as u64 >= SECS * RATE).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "events did not all arrive; agent log:\n{}",
            agent.log_text()
        )
    });
    assert_exactly_once(&events, SECS * RATE);
    // Heartbeats produced while the collector was down arrive too.
    assert!(
        collector
            .events(&pki, &["--agent", "probe-d", "--kind", "heartbeat"])
            .len()
            >= 10
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The collector's store is lost while it is running and acknowledging, and comes back from a
/// backup older than many acknowledgements: the agent notices (`stored_before` below what it had
/// acknowledged) and replays what it retained, so every event ends up stored exactly once.
#[test]
fn collector_restored_from_an_older_backup_gets_acknowledged_events_replayed() {
    const N: u64 = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-r");
    let dir = tmp.path().join("collector");
    let data = dir.join("data");
    let backup = tmp.path().join("backup");
    let mut collector = Collector::start(&dir, &pki, 0, "");
    let agent = Agent::start(
        &tmp.path().join("agent"),
        &pki,
        "probe-r",
        &collector.url,
        &format!("[heartbeat]\ninterval_secs = 1\n[synthetic]\nevents = {N}\nrate_per_sec = 1000\n[ship]\nmax_batch_events = 500\nmax_backoff_ms = 500\n"),
    );
    let reach = |collector: &Collector, n: u64| {
        wait_for(Duration::from_secs(120), || {
            stored_events(collector, &pki).filter(|&s| s >= n)
        })
        .unwrap_or_else(|| {
            panic!(
                "store never reached {n}; agent log:\n{}\ncollector log:\n{}",
                agent.log_text(),
                collector.log_text()
            )
        })
    };
    reach(&collector, 2_000);
    // The backup: a closed, consistent copy of the store.
    assert!(collector.terminate(), "collector did not stop on SIGTERM");
    copy_dir(&data, &backup);
    collector.restart();
    let at_backup = stored_events(&collector, &pki).unwrap();
    // Many more events acknowledged after the backup, then the store is lost while running.
    reach(&collector, at_backup + 3_000);
    collector.kill();
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    collector.restart();
    assert!(stored_events(&collector, &pki).unwrap() < at_backup + 3_000);
    let events = wait_for(Duration::from_secs(120), || {
        let e = collector.events(&pki, &["--agent", "probe-r", "--kind", "synthetic"]);
        (e.len() as u64 >= N).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "not all events arrived ({} stored); agent log:\n{}",
            collector
                .events(&pki, &["--agent", "probe-r", "--kind", "synthetic"])
                .len(),
            agent.log_text()
        )
    });
    assert_exactly_once(&events, N);
    let log = agent.log_text();
    assert!(
        log.contains("collector is behind") && log.contains("replaying"),
        "agent should have replayed; log:\n{log}"
    );
    // Nothing was outside the replay window: no gap event.
    assert!(collector
        .events(&pki, &["--agent", "probe-r", "--kind", "gap"])
        .is_empty());
}
