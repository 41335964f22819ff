//! Correlation end to end: batches from two agents over mTLS → Sigma detection and correlation
//! → incidents; analyst/security-admin actions with their role checks; a broken rule file on
//! reload keeps the previous set; a resent batch is not counted twice.

use std::path::Path;
use std::time::Duration;

use palisade_tests::{send_batch, wait_for, Collector, Pki};
use palisade_wire::event::{Endpoint, Rule};
use palisade_wire::{Event, EventKind, Severity, Timestamp};

const RULES: &str = r#"title: Port scan reported by a probe
id: t-scan
logsource:
  product: palisade
  service: alert
detection:
  sel:
    event.dataset: palisade.alert
    rule.id|startswith: pal.scan
  condition: sel
level: medium
---
title: Same scanner seen on two segments
id: t-scan-two-segments
correlation:
  type: value_count
  rules:
    - t-scan
  group-by:
    - source.ip
  timespan: 1h
  condition:
    field: agent.id
    gte: 2
generate: true
level: high
"#;

fn scan(src: &str, t: Timestamp) -> Event {
    let mut e = Event::new("x", EventKind::Alert, Severity::Medium).with_message("port scan");
    e.timestamp = t;
    e.rule = Some(Rule {
        id: Some("pal.scan.horizontal".into()),
        name: Some("horizontal port scan".into()),
        ..Default::default()
    });
    e.source = Some(Endpoint {
        ip: Some(src.parse().unwrap()),
        ..Default::default()
    });
    e
}

fn ndjson(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn incidents(c: &Collector, pki: &Pki, status: &str) -> Vec<serde_json::Value> {
    ndjson(&c.cli(
        pki,
        "analyst",
        &["incidents", "--status", status, "--output-format", "ndjson"],
    ))
}

#[test]
fn scans_from_two_segments_become_incidents_that_admins_handle() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    pki.issue("agent", "probe-1");
    pki.issue("agent", "probe-2");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("scan.yml"), RULES).unwrap();
    let c = Collector::start(
        &dir.path().join("c"),
        &pki,
        0,
        &format!(
            "[correlation]\nrules_dir = \"{}\"\nreload_check_secs = 1\n",
            rules.display()
        ),
    );
    let t0 = Timestamp::now();
    assert_eq!(
        send_batch(&c.url, &pki, "probe-1", 1, &mut [scan("198.51.100.9", t0)]),
        200
    );
    assert_eq!(
        send_batch(
            &c.url,
            &pki,
            "probe-2",
            1,
            &mut [scan("198.51.100.9", Timestamp(t0.nanos() + 1_000_000_000))]
        ),
        200
    );
    let open = wait_for(Duration::from_secs(20), || {
        let v = incidents(&c, &pki, "open");
        (v.len() == 2).then_some(v)
    })
    .unwrap_or_else(|| panic!("two incidents expected; log:\n{}", c.log_text()));
    let corr = open
        .iter()
        .find(|i| i["rule_id"] == "t-scan-two-segments")
        .expect("the correlation incident");
    assert_eq!(corr["severity"], 4, "{corr}");
    assert!(
        corr["title"].as_str().unwrap().contains("198.51.100.9"),
        "{corr}"
    );
    let det = open.iter().find(|i| i["rule_id"] == "t-scan").unwrap();
    assert_eq!(
        det["alerts"], 2,
        "both probes' scans group into one incident: {det}"
    );
    let id = format!("INC-{}", corr["id"]);

    // The timeline shows the alert and the events behind it.
    let show = c.cli(&pki, "analyst", &["incident", "show", &id]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{text}");
    assert!(
        text.contains("Timeline") && text.contains("value_count"),
        "{text}"
    );

    // Separation of duties: an analyst may not acknowledge; a security-admin may.
    let refused = c.cli(&pki, "analyst", &["ack", &id, "--comment", "mine"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{refused:?}"
    );
    let ok = c.cli(
        &pki,
        "security-admin",
        &["ack", &id, "--comment", "blocking at the border"],
    );
    assert!(ok.status.success(), "{ok:?}");
    let again = c.cli(&pki, "security-admin", &["ack", &id]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "acknowledging twice is a conflict"
    );
    let ok = c.cli(
        &pki,
        "security-admin",
        &["resolve", &id, "--comment", "blocked"],
    );
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(incidents(&c, &pki, "open").len(), 1);
    let resolved = incidents(&c, &pki, "resolved");
    assert_eq!(resolved.len(), 1);
    let whats: Vec<&str> = resolved[0]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["what"].as_str().unwrap())
        .collect();
    assert_eq!(whats, vec!["alert", "acknowledged", "resolved"]);

    // A resent batch (same sequences) does not raise alerts again.
    let alerts_before =
        ndjson(&c.cli(&pki, "analyst", &["alerts", "--output-format", "ndjson"])).len();
    assert_eq!(
        send_batch(&c.url, &pki, "probe-1", 1, &mut [scan("198.51.100.9", t0)]),
        200
    );

    // A broken rule file is refused with file and line; the previous set stays active.
    std::fs::write(
        rules.join("broken.yml"),
        "title: fine\nid: t-fine\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    rule.id: x\n  condition: sel\n---\ntitle: Broken\nid: t-broken\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    rule.id: y\n  condition: sel and missing_selection\n",
    )
    .unwrap();
    let refusal = wait_for(Duration::from_secs(15), || {
        let out = c.cli(&pki, "analyst", &["rules", "list"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("REFUSED").then_some(text)
    })
    .unwrap_or_else(|| panic!("reload refusal not reported; log:\n{}", c.log_text()));
    assert!(refusal.contains("broken.yml:10"), "{refusal}");
    assert!(
        refusal.contains("t-scan-two-segments"),
        "old set still listed: {refusal}"
    );
    assert_eq!(
        send_batch(
            &c.url,
            &pki,
            "probe-1",
            2,
            &mut [scan("203.0.113.5", Timestamp::now())]
        ),
        200
    );
    let alerts = wait_for(Duration::from_secs(15), || {
        let v = ndjson(&c.cli(&pki, "analyst", &["alerts", "--output-format", "ndjson"]));
        (v.len() > alerts_before).then_some(v)
    })
    .expect("the previous rule set still raises alerts");
    assert_eq!(
        alerts.len(),
        alerts_before + 1,
        "the resent batch raised nothing: {alerts:?}"
    );

    // Fixed: the new set loads on its own.
    std::fs::remove_file(rules.join("broken.yml")).unwrap();
    std::fs::write(
        rules.join("fine.yml"),
        "title: fine\nid: t-fine\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    rule.id: x\n  condition: sel\n",
    )
    .unwrap();
    wait_for(Duration::from_secs(15), || {
        let out = c.cli(&pki, "analyst", &["rules", "list"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains("t-fine") && !text.contains("REFUSED")).then_some(())
    })
    .unwrap_or_else(|| panic!("fixed rules not loaded; log:\n{}", c.log_text()));
    let sit = c.cli(&pki, "analyst", &["situation"]);
    let text = String::from_utf8_lossy(&sit.stdout);
    assert!(sit.status.success(), "{sit:?}");
    // The one still open from the first scans, and the new scanner's.
    assert!(text.contains("open incidents 2"), "{text}");
    assert!(
        text.contains("probe-1") && text.contains("probe-2"),
        "{text}"
    );

    // `agents`: both online, certificates recorded at ingest and far from expiry.
    let out = c.cli(&pki, "analyst", &["agents", "--output-format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let agents: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agents.len(), 2, "{agents:?}");
    for a in &agents {
        assert_eq!(a["state"], "online", "{a}");
        assert_eq!(a["certificate"], "ok", "{a}");
        assert!(a["certificate_days_left"].as_i64().unwrap() > 300, "{a}");
        assert!(
            a["cert_serial"].as_str().is_some_and(|s| !s.is_empty()),
            "{a}"
        );
    }
    let expiring = c.cli(
        &pki,
        "analyst",
        &["agents", "--expiring-within-days", "400", "--expiring"],
    );
    assert_eq!(expiring.status.code(), Some(0), "{expiring:?}");
    assert!(
        String::from_utf8_lossy(&expiring.stdout).contains("EXPIRING in"),
        "{expiring:?}"
    );

    // `report`: the evidence for an assessor, audit chain verified with the audit-admin's
    // certificate; every check passes here (exit 0).
    let report = c.cli(
        &pki,
        "analyst",
        &["report", "--since", "1h", "--audit-as", "audit-admin"],
    );
    let md = String::from_utf8_lossy(&report.stdout);
    assert_eq!(
        report.status.code(),
        Some(0),
        "{md}\n{}",
        String::from_utf8_lossy(&report.stderr)
    );
    for want in [
        "# Palisade evidence report",
        "- [x] retention 180 days",
        "- [x] audit log intact",
        "Hash chain verified: **intact**",
        "| probe-1 |",
        "blocking at the border",
        "Same scanner seen on two segments",
    ] {
        assert!(md.contains(want), "report lacks {want:?}:\n{md}");
    }
    // Without the audit-admin, the report says the log was not verified (a failed check).
    let partial = c.cli(
        &pki,
        "analyst",
        &["report", "--since", "1h", "--format", "html"],
    );
    let html = String::from_utf8_lossy(&partial.stdout);
    assert_eq!(partial.status.code(), Some(1), "{html}");
    assert!(
        html.contains("<table>") && html.contains("not verified by this report"),
        "{html}"
    );
    let _ = Path::new("");
}
