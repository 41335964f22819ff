//! At-least-once delivery with dedup: nothing acknowledged or produced is lost, nothing is stored
//! twice, whether the collector is SIGKILLed mid-stream or absent for a minute.

use std::collections::HashSet;
use std::time::Duration;

use palisade_tests::{free_port, stored_events, wait_for, Agent, Collector, Pki};

/// Every synthetic index 0..n appears exactly once, and no (agent, sequence) repeats.
fn assert_exactly_once(events: &[serde_json::Value], n: u64) {
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

#[test]
fn collector_sigkilled_while_agent_sends_100k_events_loses_and_duplicates_nothing() {
    const N: u64 = 100_000;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-k");
    let mut collector = Collector::start(&tmp.path().join("collector"), &pki, 0, "");
    let agent = Agent::start(
        &tmp.path().join("agent"),
        &pki,
        "probe-k",
        &collector.url,
        &format!("[heartbeat]\ninterval_secs = 1\n[synthetic]\nevents = {N}\nrate_per_sec = 20000\n[ship]\nmax_batch_events = 1000\nmax_backoff_ms = 1000\n"),
    );
    // Kill the collector three times while events are flowing, at rising fill levels.
    for threshold in [10_000u64, 40_000, 70_000] {
        wait_for(Duration::from_secs(120), || {
            stored_events(&collector, &pki).filter(|&n| n >= threshold)
        })
        .unwrap_or_else(|| {
            panic!(
                "store never reached {threshold}; agent log:\n{}\ncollector log:\n{}",
                agent.log_text(),
                collector.log_text()
            )
        });
        collector.kill();
        std::thread::sleep(Duration::from_millis(300));
        collector.restart();
    }
    let events = wait_for(Duration::from_secs(180), || {
        let e = collector.events(&pki, &["--agent", "probe-k", "--kind", "synthetic"]);
        (e.len() as u64 >= N).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "not all events arrived ({} stored); agent log tail:\n{}",
            collector
                .events(&pki, &["--agent", "probe-k", "--kind", "synthetic"])
                .len(),
            agent
                .log_text()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_exactly_once(&events, N);
    // The agent retried across the kills, so the collector must have dropped duplicates or the
    // agent had batches unacknowledged: either way the listing above proved exactly-once.
    let out = collector.cli(&pki, "analyst", &["status", "--output-format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["agents"][0]["events"].as_u64().unwrap() >= N);
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
