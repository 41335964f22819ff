//! `situation`'s alert figures across a restart. Agents' alert events are counted as they are
//! committed (the collector's alert tally) and the part of a period before the collector
//! started is scanned from the store; together they must hold every stored alert event once:
//! events from before the start, events stamped ahead of it (an agent whose clock runs fast),
//! events after a restart, and none of a resent batch twice.

use palisade_tests::{send_batch, Collector, Pki};
use palisade_wire::event::{Endpoint, Rule};
use palisade_wire::{Event, EventKind, Severity, Timestamp};

fn alert(src: &str, dst: &str, rule: &str, t: Timestamp) -> Event {
    let mut e = Event::new("x", EventKind::Alert, Severity::Medium).with_message(rule);
    e.timestamp = t;
    e.rule = Some(Rule {
        id: Some(format!("pal.{rule}")),
        name: Some(rule.into()),
        ..Default::default()
    });
    e.source = Some(Endpoint {
        ip: Some(src.parse().unwrap()),
        ..Default::default()
    });
    e.destination = Some(Endpoint {
        ip: Some(dst.parse().unwrap()),
        ..Default::default()
    });
    e
}

fn at(minutes: f64) -> Timestamp {
    Timestamp(Timestamp::now().nanos() + (minutes * 60e9) as i64)
}

/// (alert events, previous period's, top source, top attacked, top detector) from
/// `situation --output-format json`.
fn figures(c: &Collector, pki: &Pki) -> (u64, u64, String, String, String) {
    let out = c.cli(pki, "analyst", &["situation", "--output-format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = |k: &str| format!("{}={}", s[k][0]["name"], s[k][0]["count"]);
    (
        s["alert_events"].as_u64().unwrap(),
        s["alert_events_previous"].as_u64().unwrap(),
        first("top_sources"),
        first("top_attacked"),
        first("top_detectors"),
    )
}

#[test]
fn situation_counts_every_alert_event_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    pki.issue("agent", "probe-1");
    let mut c = Collector::start(&dir.path().join("c"), &pki, 0, "");

    // Before this start (scanned): 6 scans, 2 beacons, one flow event (not an alert), and one
    // scan from the previous hour.
    let mut before: Vec<Event> = (0..6)
        .map(|i| {
            alert(
                "203.0.113.5",
                "192.0.2.10",
                "scan",
                at(-5.0 - i as f64 / 10.0),
            )
        })
        .collect();
    before.push(alert("198.51.100.7", "192.0.2.11", "beacon", at(-4.0)));
    before.push(alert("198.51.100.7", "192.0.2.11", "beacon", at(-3.9)));
    before.push(Event::new("x", EventKind::Flow, Severity::Info));
    before.push(alert("203.0.113.5", "192.0.2.10", "scan", at(-90.0)));
    assert_eq!(send_batch(&c.url, &pki, "probe-1", 1, &mut before), 200);
    // Stamped ahead of this start (counted as committed): 4 scans, 1 DNS tunnel.
    let mut ahead: Vec<Event> = (0..4)
        .map(|i| {
            alert(
                "203.0.113.5",
                "192.0.2.10",
                "scan",
                at(3.0 + i as f64 / 10.0),
            )
        })
        .collect();
    ahead.push(alert("198.51.100.9", "192.0.2.12", "dns-tunnel", at(3.5)));
    assert_eq!(send_batch(&c.url, &pki, "probe-1", 11, &mut ahead), 200);

    let expected = (
        13,
        1,
        "\"203.0.113.5\"=10".to_string(),
        "\"192.0.2.10\"=10".to_string(),
        "\"scan\"=10".to_string(),
    );
    assert_eq!(figures(&c, &pki), expected);
    // The same batch again (an agent that did not see the answer): counted once.
    assert_eq!(send_batch(&c.url, &pki, "probe-1", 11, &mut ahead), 200);
    assert_eq!(
        figures(&c, &pki),
        expected,
        "a resent batch was counted twice"
    );

    // After a restart, the events stamped ahead of the new start come from the store, the
    // others from the scan; new ones are counted as committed.
    c.restart();
    assert_eq!(
        figures(&c, &pki),
        expected,
        "figures changed across the restart"
    );
    assert_eq!(send_batch(&c.url, &pki, "probe-1", 11, &mut ahead), 200);
    let mut after = vec![
        alert("203.0.113.5", "192.0.2.10", "scan", at(4.0)),
        alert("203.0.113.5", "192.0.2.13", "scan", at(4.1)),
    ];
    assert_eq!(send_batch(&c.url, &pki, "probe-1", 16, &mut after), 200);
    let (events, previous, source, attacked, detector) = figures(&c, &pki);
    assert_eq!(
        (events, previous, source, attacked, detector),
        (
            15,
            1,
            "\"203.0.113.5\"=12".to_string(),
            "\"192.0.2.10\"=11".to_string(),
            "\"scan\"=12".to_string()
        )
    );
}

/// The collector times its own answers and exports them per route on its metrics listener
/// (`palisade_api_request_duration_seconds`), which is how a soak tells a query that got slower
/// from a busy client: after two `situation` and one `incidents` the scrape counts exactly those.
/// Beside it the CPU time of their work (`palisade_api_request_cpu_seconds_total`), which tells
/// a query doing more work from one waiting for a busy machine: some for the routes that ran
/// (never more than their answer times: the work runs on one thread within them), none for a
/// route never asked.
#[test]
fn answer_times_are_exported_per_route() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let port = palisade_tests::free_port();
    let c = Collector::start(
        &dir.path().join("c"),
        &pki,
        0,
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    for args in [&["situation"][..], &["situation"], &["incidents"]] {
        let out = c.cli(&pki, "analyst", args);
        assert!(out.status.code().is_some_and(|c| c <= 1), "{out:?}");
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let value = |route: &str, sample: &str| -> f64 {
        let name = match sample {
            "cpu" => "palisade_api_request_cpu_seconds_total".to_string(),
            _ => format!("palisade_api_request_duration_seconds_{sample}"),
        };
        let prefix = format!("{name}{{method=\"GET\",route=\"{route}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{body}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("/v1/situation", "count"), 2.0);
    assert_eq!(value("/v1/incidents", "count"), 1.0);
    assert_eq!(value("/v1/events", "count"), 0.0);
    assert!(value("/v1/situation", "sum") > 0.0);
    for route in ["/v1/situation", "/v1/incidents"] {
        let (cpu, took) = (value(route, "cpu"), value(route, "sum"));
        assert!(
            cpu > 0.0 && cpu <= took,
            "{route}: {cpu} s of CPU in {took} s"
        );
    }
    assert_eq!(value("/v1/events", "cpu"), 0.0);
    assert!(body.contains(
        "palisade_api_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/situation\",le=\"+Inf\"} 2"
    ));
}
