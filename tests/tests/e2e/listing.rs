//! Agent → collector → analyst CLI, in all three output formats, with the exit-code contract.

use std::time::Duration;

use palisade_tests::{wait_for, Agent, Collector, Pki};

#[test]
fn agent_events_reach_the_collector_and_are_listed_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-1");
    let collector = Collector::start(&tmp.path().join("collector"), &pki, 0, "");
    let _agent = Agent::start(
        &tmp.path().join("agent"),
        &pki,
        "probe-1",
        &collector.url,
        "[heartbeat]\ninterval_secs = 1\n[synthetic]\nevents = 250\n",
    );
    let events = wait_for(Duration::from_secs(60), || {
        let e = collector.events(&pki, &["--agent", "probe-1", "--kind", "synthetic"]);
        (e.len() == 250).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "250 synthetic events did not arrive; collector log:\n{}",
            collector.log_text()
        )
    });
    // ECS field names, our identity, and strictly increasing sequences.
    let mut last = 0;
    for e in &events {
        assert_eq!(e["agent"]["id"], "probe-1");
        assert_eq!(e["observer"]["name"], "probe-1");
        assert_eq!(e["event"]["dataset"], "palisade.synthetic");
        assert!(e["@timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(e["event"]["id"].as_str().unwrap().len(), 64);
        let seq = e["event"]["sequence"].as_u64().unwrap();
        assert!(seq > last);
        last = seq;
    }
    // Heartbeats carry host, uptime and spool depth.
    let hb = wait_for(Duration::from_secs(20), || {
        collector.events(&pki, &["--kind", "heartbeat"]).pop()
    })
    .expect("a heartbeat");
    assert!(hb["host"]["name"].as_str().is_some());
    assert!(hb["palisade"]["spool"]["events"].as_u64().is_some());
    assert!(hb["palisade"]["counters"]["produced"].as_u64().is_some());

    // json: one array.
    let out = collector.cli(
        &pki,
        "analyst",
        &[
            "events",
            "--since",
            "1h",
            "--kind",
            "synthetic",
            "--limit",
            "10",
            "--output-format",
            "json",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arr: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json array");
    assert_eq!(arr.len(), 10);
    // text: a header and one line per event.
    let out = collector.cli(
        &pki,
        "analyst",
        &[
            "events",
            "--since",
            "1h",
            "--kind",
            "synthetic",
            "--limit",
            "5",
            "--output-format",
            "text",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].starts_with("TIME"));
    assert!(
        lines[1].contains("probe-1") && lines[1].contains("synthetic"),
        "{text}"
    );

    // Nothing found: exit 1, and an empty JSON array.
    let out = collector.cli(
        &pki,
        "analyst",
        &["events", "--agent", "nobody", "--output-format", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .len(),
        0
    );
    // Error: exit 2 with a message naming the problem.
    let out = collector.cli(&pki, "analyst", &["events", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("yesterday"));

    // status shows the agent and its heartbeat.
    let out = collector.cli(&pki, "analyst", &["status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("probe-1") && text.contains("events stored"),
        "{text}"
    );
    let out = collector.cli(&pki, "analyst", &["status", "--output-format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["agents"][0]["id"], "probe-1");
    assert!(v["agents"][0]["last_heartbeat"].is_string());
    assert!(v["store"]["size_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn sigterm_stops_collector_and_agent_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-t");
    let mut collector = Collector::start(&tmp.path().join("collector"), &pki, 0, "");
    let mut agent = Agent::start(
        &tmp.path().join("agent"),
        &pki,
        "probe-t",
        &collector.url,
        "[heartbeat]\ninterval_secs = 1\n",
    );
    wait_for(Duration::from_secs(30), || {
        (!collector.events(&pki, &["--kind", "heartbeat"]).is_empty()).then_some(())
    })
    .expect("a heartbeat arrives");
    assert!(
        agent.terminate(),
        "agent did not exit on SIGTERM; log:\n{}",
        agent.log_text()
    );
    assert!(agent.log_text().contains("agent stopped"));
    assert!(collector.terminate(), "collector did not exit on SIGTERM");
    assert!(collector.log_text().contains("collector stopped"));
}
