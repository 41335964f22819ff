//! The agent's crash promise, with real processes: an agent SIGKILLed at random moments while
//! it produces and ships, and restarted on the same spool, loses nothing it had spooled and
//! delivers each spooled event exactly once.
//!
//! What a kill may lose by design: events produced in memory but not yet in the spool (the
//! synthetic chunk being built, the events of an `append` whose flush had not returned). Those
//! never had a durable sequence; the restarted agent hands their sequences to new events. So
//! the test reads the spool's own files after every kill (the agent is dead, nothing else
//! writes them) and holds the collector to what they held: every (sequence, event) that was
//! durably spooled is stored once, with that very content.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use palisade_tests::{kill_rounds, wait_for, Agent, Collector, Pki};

use crate::delivery::median_max;

/// (timestamp, message) of an event's JSON: what identifies it beside its sequence.
fn identity(json: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_else(|e| {
        panic!(
            "spooled event is not JSON ({e}): {:?}",
            String::from_utf8_lossy(json)
        )
    });
    (
        v["@timestamp"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// Opens the (dead) agent's spool with sled and returns every event it holds, pending or
/// delivered and retained for replay, by sequence. Panics if the spool does not open.
pub(crate) fn spooled(spool: &Path) -> HashMap<u64, (String, String)> {
    let db = sled::Config::new()
        .path(spool)
        .open()
        .unwrap_or_else(|e| panic!("spool {} does not open: {e}", spool.display()));
    let mut out = HashMap::new();
    for (tree, skip) in [("events", 0usize), ("acked", 8)] {
        let t = db.open_tree(tree).unwrap();
        for item in t.iter() {
            let (k, v) =
                item.unwrap_or_else(|e| panic!("spool {} tree {tree}: {e}", spool.display()));
            let seq = u64::from_be_bytes(<[u8; 8]>::try_from(k.as_ref()).unwrap());
            out.insert(seq, identity(&v[skip..]));
        }
    }
    out
}

#[test]
fn agent_sigkilled_at_random_moments_delivers_everything_it_spooled_exactly_once() {
    let rounds = kill_rounds();
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::init(&tmp.path().join("pki"));
    pki.issue("agent", "probe-a");
    let collector = Collector::start(&tmp.path().join("collector"), &pki, 0, "");
    let dir = tmp.path().join("agent");
    // Endless production at a steady rate, heartbeats every second, small batches.
    let producing = "[heartbeat]\ninterval_secs = 1\n[synthetic]\nevents = 1000000000\nrate_per_sec = 3000\n[ship]\nmax_batch_events = 400\nmax_backoff_ms = 300\n";
    let mut agent = Agent::start(&dir, &pki, "probe-a", &collector.url, producing);
    let spool = agent.data_dir.join("spool");
    // Every (sequence, event) found durably spooled after any kill.
    let mut promised: HashMap<u64, (String, String)> = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(9);
    let mut open_ms = Vec::new();
    for round in 1..=rounds {
        // The spool opened (the agent logs `agent starting` right after), then a random moment
        // while it produces and ships.
        let started = Instant::now();
        // Polled every 5 ms (not `wait_for`'s 200 ms) so the figure means something.
        let deadline = started + Duration::from_secs(60);
        while agent.log_text().matches("agent starting").count() < round
            && agent.is_running()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            agent.log_text().matches("agent starting").count() >= round && agent.is_running(),
            "round {round}: the agent did not start on its spool; log:\n{}",
            agent.log_text()
        );
        open_ms.push(started.elapsed().as_millis() as u64);
        std::thread::sleep(Duration::from_millis(rng.u64(0..700)));
        agent.kill();
        let now = spooled(&spool);
        // Nothing is deleted from the spool (retention is a day, the cap 1 GiB): every
        // sequence handed out so far is still there, pending or in the replay window.
        let top = now.keys().max().copied().unwrap_or(0);
        let holes: Vec<u64> = (1..=top).filter(|s| !now.contains_key(s)).collect();
        assert!(
            holes.is_empty(),
            "round {round}: after the kill the spool lacks {} of sequences 1..={top} (first {:?}, last {:?})",
            holes.len(),
            holes.first(),
            holes.last()
        );
        for (seq, id) in now {
            if let Some(before) = promised.insert(seq, id.clone()) {
                // A sequence durably spooled before must never name another event later.
                assert_eq!(
                    before, id,
                    "round {round}: sequence {seq} was spooled as one event and then as another"
                );
            }
        }
        agent = Agent::start(&dir, &pki, "probe-a", &collector.url, producing);
    }
    // The last life ends by a kill too; then an agent that only ships drains the spool.
    agent.kill();
    promised.extend(spooled(&spool));
    let drain = Agent::start(
        &dir,
        &pki,
        "probe-a",
        &collector.url,
        "[heartbeat]\ninterval_secs = 0\n[ship]\nmax_batch_events = 2000\nmax_backoff_ms = 300\n",
    );
    let top = promised.keys().max().copied().unwrap_or(0);
    let events = wait_for(Duration::from_secs(180), || {
        let e = collector.events(&pki, &["--agent", "probe-a"]);
        let have: std::collections::HashSet<u64> = e
            .iter()
            .filter_map(|v| v["event"]["sequence"].as_u64())
            .collect();
        promised.keys().all(|s| have.contains(s)).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "not every spooled event arrived; agent log tail:\n{}",
            drain.log_tail(20)
        )
    });
    let mut stored: HashMap<u64, (String, String)> = HashMap::new();
    for e in &events {
        let seq = e["event"]["sequence"].as_u64().unwrap();
        let id = identity(e.to_string().as_bytes());
        assert!(
            stored.insert(seq, id).is_none(),
            "sequence {seq} stored twice"
        );
    }
    let mut mismatched = Vec::new();
    for (seq, id) in &promised {
        if stored.get(seq) != Some(id) {
            mismatched.push((*seq, id.clone(), stored.get(seq).cloned()));
        }
    }
    mismatched.sort();
    assert!(
        mismatched.is_empty(),
        "{} spooled events are stored with other content (first: {:?})",
        mismatched.len(),
        mismatched.first()
    );
    // Sequences are handed out without holes; only the tail produced after the last kill
    // (heartbeats of the draining agent) may lie beyond what was promised.
    let holes: Vec<u64> = (1..=top)
        .filter(|s| !stored.contains_key(s))
        .take(10)
        .collect();
    assert!(holes.is_empty(), "sequences never stored: {holes:?}");
    let out = collector.cli(&pki, "analyst", &["status", "--output-format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dups = v["agents"][0]["duplicates"].as_u64().unwrap_or(0);
    let (om, ox) = median_max(&mut open_ms);
    println!(
        "agent kills: {rounds}; spool opened after every kill; events durably spooled before a kill {} (sequences 1..={top}), stored exactly once with the same content {}; stored in all {}; re-sent duplicates dropped by the collector {dups}; restart to spool open (`agent starting`) median {om} ms max {ox} ms",
        promised.len(),
        promised.len() - mismatched.len(),
        stored.len()
    );
}
