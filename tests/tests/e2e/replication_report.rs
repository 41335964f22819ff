//! Backups report to the collector: the event carries the snapshot and its figures, `situation`
//! shows the freshness, and a collector that is down loses no report (the outbox sends it on the
//! next run).

use std::fs;
use std::process::Command;
use std::time::Duration;

use palisade_tests::{bin, free_port, wait_for, Collector, Pki};

#[test]
fn backups_report_to_the_collector_and_reports_survive_a_collector_outage() {
    let t = tempfile::tempdir().unwrap();
    let pki = Pki::init(&t.path().join("pki"));
    pki.issue("replicator", "site-a");
    let src = t.path().join("www");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("index.html"), "<h1>portal</h1>\n").unwrap();
    let repo = t.path().join("repo");
    let state = t.path().join("state");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let replicator = |args: &[&str]| {
        Command::new(bin("palisade-replicator"))
            .args(args)
            .args([
                "--collector",
                &url,
                "--pki-dir",
                pki.dir.to_str().unwrap(),
                "--identity",
                "site-a",
            ])
            .env("XDG_STATE_HOME", &state)
            .output()
            .unwrap()
    };
    assert!(replicator(&["init", repo.to_str().unwrap()])
        .status
        .success());

    // Collector down: the backup succeeds and keeps its report.
    let out = replicator(&[
        "backup",
        src.to_str().unwrap(),
        "--to",
        repo.to_str().unwrap(),
        "--quiet",
        "--output-format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("kept for the next run"));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Collector up: the next run delivers both reports.
    let collector = Collector::start(&t.path().join("collector"), &pki, port, "");
    fs::write(src.join("news.html"), "<p>news</p>\n").unwrap();
    let out = replicator(&[
        "backup",
        src.to_str().unwrap(),
        "--to",
        repo.to_str().unwrap(),
        "--quiet",
        "--output-format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = wait_for(Duration::from_secs(20), || {
        let e = collector.events(&pki, &["--kind", "replication"]);
        (e.len() >= 2).then_some(e)
    })
    .expect("both run reports at the collector");
    let snaps: Vec<&str> = events
        .iter()
        .filter_map(|e| {
            e.pointer("/palisade/replication/snapshot")
                .and_then(|s| s.as_str())
        })
        .collect();
    assert_eq!(
        snaps,
        vec![
            first["snapshot"].as_str().unwrap(),
            second["snapshot"].as_str().unwrap()
        ]
    );
    for e in &events {
        assert_eq!(e["agent"]["id"], "site-a");
        assert_eq!(e["event"]["action"], "backup");
        assert!(
            e.pointer("/palisade/replication/bytes_sent").is_some(),
            "{e}"
        );
    }
    let situation = collector.cli(&pki, "analyst", &["situation"]);
    let text = String::from_utf8_lossy(&situation.stdout);
    assert!(
        text.contains("site-a"),
        "situation does not show the backup:\n{text}"
    );
}
