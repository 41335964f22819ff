//! The agent's wall clock jumps forward and back by hours while it runs (libfaketime moves the
//! clock of the agent process only; the monotonic clock, which a real clock step leaves alone,
//! is left alone here too). Sequence numbers, not timestamps, order the spool, so nothing is
//! lost or duplicated; heartbeats keep their pace (timers run on the monotonic clock); the
//! collector files each event under the day of its own timestamp, and retention (180 days,
//! from the collector's clock) drops none of them for being hours off.
//!
//! Needs libfaketime (`apt-get install faketime`; scripts/common.sh installs it); skips with
//! the reason when it is missing.

use std::path::Path;
use std::time::{Duration, Instant};

use palisade_tests::{wait_for, Agent, Collector, Pki};
use palisade_wire::Timestamp;

use crate::delivery::assert_exactly_once;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const HOUR_NANOS: i64 = 3_600 * 1_000_000_000;

fn ts(e: &serde_json::Value) -> i64 {
    e["@timestamp"]
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(|t| t.nanos())
        .unwrap_or_else(|| panic!("event without a timestamp: {e}"))
}

#[test]
fn agent_clock_jumping_hours_forward_and_back_loses_nothing_and_keeps_its_pace() {
    if !Path::new(LIBFAKETIME).exists() {
        println!(
            "skipped: {LIBFAKETIME} is missing (apt-get install faketime; scripts/common.sh does)"
        );
        return;
    }
    const N: u64 = 6_000;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-t");
    let mut collector = Collector::start(&tmp.path().join("collector"), &pki, 0, "");
    let clock = tmp.path().join("faketime");
    std::fs::write(&clock, "+0\n").unwrap();
    let real_start = Timestamp::now().nanos();
    let started = Instant::now();
    let agent = Agent::start_with_env(
        &tmp.path().join("agent"),
        &pki,
        "probe-t",
        &collector.url,
        &format!("[heartbeat]\ninterval_secs = 1\n[synthetic]\nevents = {N}\nrate_per_sec = 500\n[ship]\nmax_backoff_ms = 300\n"),
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", clock.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    // 12 s of production: on time, 3 hours fast, 3 hours slow, on time again.
    // While it is slow, the collector restarts, so the agent must make a new TLS handshake with
    // its clock 3 hours behind (certificates are issued valid from an hour before `pki issue`).
    for (offset, secs) in [("+0", 3), ("+3h", 4), ("-3h", 4), ("+0", 3)] {
        std::fs::write(&clock, format!("{offset}\n")).unwrap();
        if offset == "-3h" {
            std::thread::sleep(Duration::from_millis(500));
            collector.kill();
            collector.restart();
            std::thread::sleep(Duration::from_millis(secs * 1000 - 500));
        } else {
            std::thread::sleep(Duration::from_secs(secs));
        }
    }
    let real_secs = started.elapsed().as_secs() as usize;
    let real_end = Timestamp::now().nanos();
    let all_of = |collector: &Collector, kind: &str| {
        collector.events(
            &pki,
            &[
                "--agent",
                "probe-t",
                "--kind",
                kind,
                "--until",
                "2100-01-01T00:00:00Z",
            ],
        )
    };
    let events = wait_for(Duration::from_secs(90), || {
        let e = all_of(&collector, "synthetic");
        (e.len() as u64 >= N).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "not all events arrived ({}); agent log tail:\n{}",
            all_of(&collector, "synthetic").len(),
            agent.log_tail(20)
        )
    });
    assert_exactly_once(&events, N);
    // The clock did move (or this test proves nothing): events stamped hours ahead and behind.
    let ahead = events
        .iter()
        .filter(|e| ts(e) > real_end + 2 * HOUR_NANOS)
        .count();
    let behind = events
        .iter()
        .filter(|e| ts(e) < real_start - 2 * HOUR_NANOS)
        .count();
    assert!(
        ahead > 0 && behind > 0,
        "libfaketime did not move the agent's clock ({ahead} ahead, {behind} behind)"
    );
    // Sequence, not time, orders what the agent produced.
    let mut by_seq: Vec<(u64, u64)> = events
        .iter()
        .map(|e| {
            (
                e["event"]["sequence"].as_u64().unwrap(),
                e["palisade"]["synthetic"]["index"].as_u64().unwrap(),
            )
        })
        .collect();
    by_seq.sort_unstable();
    assert!(
        by_seq.windows(2).all(|w| w[0].1 < w[1].1),
        "synthetic indexes out of sequence order"
    );
    // Heartbeats kept their pace: about one per real second, no burst after the jump forward,
    // no stall after the jump back; their uptime (monotonic) never went backwards.
    let mut beats = all_of(&collector, "heartbeat");
    beats.sort_by_key(|e| e["event"]["sequence"].as_u64().unwrap());
    let uptimes: Vec<u64> = beats
        .iter()
        .map(|e| e["palisade"]["uptime_secs"].as_u64().unwrap())
        .collect();
    assert!(
        beats.len() + 3 >= real_secs && beats.len() <= real_secs + 30,
        "{} heartbeats in {real_secs} s",
        beats.len()
    );
    assert!(
        uptimes.windows(2).all(|w| w[1] >= w[0] && w[1] - w[0] <= 3),
        "heartbeat pace broke: uptimes {uptimes:?}"
    );
    // Retention runs when the collector starts: nothing hours off is dropped.
    collector.kill();
    collector.restart();
    let again = all_of(&collector, "synthetic");
    assert_exactly_once(&again, N);
    let log = agent.log_text();
    let tls_refusals = log
        .lines()
        .filter(|l| l.contains("cannot deliver batch") && l.contains("valid"))
        .count();
    // The handshake made while the clock was 3 hours slow was refused (the collector's
    // certificate was "not valid yet" for the agent); delivery resumed with the clock.
    assert!(
        tls_refusals > 0,
        "no TLS refusal while slow; agent log:\n{log}"
    );
    println!(
        "agent clock +3h then -3h: {N} events delivered exactly once, {ahead} stamped 2+ h ahead, {behind} 2+ h behind; {} heartbeats in {real_secs} s; {tls_refusals} delivery attempts refused by TLS while the clock was behind (the collector restarted then)",
        beats.len()
    );
}
