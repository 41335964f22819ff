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
