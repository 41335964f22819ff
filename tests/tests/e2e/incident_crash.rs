//! The incident database's crash promise, with real processes: a writer recording alerts as
//! the collector's alert writer does (`incident-writer`) is killed with SIGKILL at random
//! moments, `kill_rounds()` times per engine (20 by default, `PALISADE_KILL_ROUNDS=50` for the
//! campaign). After every kill the database opens and holds every alert the writer had flushed,
//! once; no alert id is handed out twice across lives; every stored alert's incident exists and
//! every incident's timeline names as many alerts as it counts; analysts' actions that returned
//! are kept.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use palisade_collector::incidents::{AlertFilter, Backend, IncidentFilter, IncidentStore, Status};
use palisade_tests::{bin, kill_rounds};

/// What one life of the writer said was durable.
#[derive(Default)]
struct Life {
    /// The last `flushed FIRST LAST COUNT`.
    flushed: Option<(u64, u64, u64)>,
    /// `acted INCIDENT STATUS`, in order.
    acted: Vec<(u64, String)>,
    /// Lines said (to wait for load).
    flushes: usize,
    /// `incidents ID…`: every incident id this life named.
    incidents: HashSet<u64>,
}

fn rank(status: &str) -> u8 {
    match status {
        "new" => 0,
        "acknowledged" => 1,
        "resolved" => 2,
        other => panic!("unknown status {other:?}"),
    }
}

fn status_rank(s: Status) -> u8 {
    rank(s.name())
}

/// What the database holds, checked for consistency; returns (alert ids, incidents' ranks,
/// milliseconds the open took: recovery, the listing order checked (sled) and the tallies).
fn check(dir: &Path, engine: Backend, round: usize) -> (Vec<u64>, HashMap<u64, u8>, u64) {
    let started = Instant::now();
    let store = IncidentStore::open_with(dir, 3600, engine)
        .unwrap_or_else(|e| panic!("round {round}: the database does not open after a kill: {e}"));
    let open_ms = started.elapsed().as_millis() as u64;
    let alerts = store
        .alerts(&AlertFilter {
            limit: usize::MAX,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("round {round}: alerts unreadable: {e}"));
    let mut ids = Vec::with_capacity(alerts.len());
    let mut seen = HashSet::new();
    for a in &alerts {
        assert!(
            seen.insert(a.id),
            "round {round}: alert {} stored twice",
            a.id
        );
        ids.push(a.id);
    }
    let incidents = store
        .incidents(&IncidentFilter {
            limit: usize::MAX,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("round {round}: incidents unreadable: {e}"));
    let mut ranks = HashMap::new();
    let mut counted = 0u64;
    for listed in &incidents {
        let inc = store
            .incident(listed.id)
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: INC-{} listed, not readable", listed.id));
        let alert_entries = inc.timeline.iter().filter(|e| e.alert.is_some()).count() as u64;
        assert_eq!(
            alert_entries + inc.timeline_dropped,
            inc.alerts,
            "round {round}: INC-{} counts {} alerts, its timeline names {alert_entries} (+{} dropped)",
            inc.id,
            inc.alerts,
            inc.timeline_dropped
        );
        counted += inc.alerts;
        assert!(
            ranks.insert(inc.id, status_rank(inc.status)).is_none(),
            "round {round}: INC-{} listed twice",
            inc.id
        );
    }
    // The open counts `situation` shows agree with the listing.
    let (open, new) = store.open_counts();
    let listed_open = incidents.iter().filter(|i| i.status != Status::Resolved);
    assert_eq!(
        (open.values().sum::<u64>(), new),
        (
            listed_open.clone().count() as u64,
            listed_open.filter(|i| i.status == Status::New).count() as u64
        ),
        "round {round}: open counts against the listing"
    );
    for a in &alerts {
        assert!(
            ranks.contains_key(&a.incident),
            "round {round}: alert {} names INC-{}, which is not stored",
            a.id,
            a.incident
        );
    }
    match engine {
        // One transaction per call: what the incidents count is exactly what is stored.
        Backend::Redb => assert_eq!(
            counted,
            alerts.len() as u64,
            "round {round}: incidents count {counted} alerts, {} stored",
            alerts.len()
        ),
        // A batch per table, incidents before alerts: a kill between them leaves incidents
        // counting alerts not stored, never the other way round.
        Backend::Sled => assert!(
            counted >= alerts.len() as u64,
            "round {round}: incidents count {counted} alerts, {} stored",
            alerts.len()
        ),
    }
    (ids, ranks, open_ms)
}

fn killed_at_random(engine: Backend, seed: u64) {
    let rounds = kill_rounds();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("incidents");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut durable: Vec<(u64, u64, u64)> = Vec::new();
    let mut acted: HashMap<u64, u8> = HashMap::new();
    let mut highest = 0u64;
    // Incident ids named by a life and not in the store after its kill: never to come back.
    let mut lost_incidents: HashSet<u64> = HashSet::new();
    let mut reopen_ms = Vec::new();
    let mut stored_total = 0;
    for round in 1..=rounds {
        let mut child = Command::new(bin("incident-writer"))
            .args([
                dir.to_str().unwrap(),
                &engine.to_string(),
                &(seed * 1000 + round as u64).to_string(),
                "60",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut life = Life::default();
        let take = |line: String, life: &mut Life| {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["flushed", a, b, c] => {
                    life.flushed =
                        Some((a.parse().unwrap(), b.parse().unwrap(), c.parse().unwrap()));
                    life.flushes += 1;
                }
                ["acted", id, status] => life.acted.push((id.parse().unwrap(), status.to_string())),
                ["incidents", ids @ ..] => life
                    .incidents
                    .extend(ids.iter().map(|id| id.parse::<u64>().unwrap())),
                _ => {}
            }
        };
        // Under load: a few flushes done, then a random moment.
        let deadline = Instant::now() + Duration::from_secs(60);
        while life.flushes < 3 && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => take(line, &mut life),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        assert!(
            life.flushes >= 3,
            "round {round}: the writer never got going"
        );
        std::thread::sleep(Duration::from_millis(rng.u64(0..300)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        reader.join().unwrap();
        for line in rx.try_iter() {
            take(line, &mut life);
        }
        assert!(
            status.code().is_none(),
            "round {round}: the writer ended by itself ({status}) before its kill"
        );
        if let Some((first, _, _)) = life.flushed {
            assert!(
                first > highest,
                "round {round}: alert id {first} handed out again (the database held up to {highest})"
            );
            durable.push(life.flushed.unwrap());
        }
        for (id, s) in &life.acted {
            let r = acted.entry(*id).or_default();
            *r = (*r).max(rank(s));
        }
        let (ids, ranks, open_ms) = check(&dir, engine, round);
        reopen_ms.push(open_ms);
        let held: HashSet<u64> = ids.iter().copied().collect();
        for (first, last, count) in &durable {
            let in_range = (*first..=*last).filter(|id| held.contains(id)).count() as u64;
            assert_eq!(
                in_range, *count,
                "round {round}: {count} alerts {first}..={last} were flushed, {in_range} stored"
            );
        }
        for (id, r) in &acted {
            let now = ranks.get(id).copied();
            assert!(
                now.is_some_and(|n| n >= *r),
                "round {round}: INC-{id} was moved on by an analyst, now {now:?}"
            );
        }
        let mut back: Vec<u64> = life
            .incidents
            .intersection(&lost_incidents)
            .copied()
            .collect();
        back.sort_unstable();
        assert!(
            back.is_empty(),
            "round {round}: {} incident ids (the lowest {:?}) were named before a kill lost them, and handed out again",
            back.len(),
            &back[..back.len().min(8)]
        );
        lost_incidents.extend(life.incidents.iter().filter(|id| !ranks.contains_key(id)));
        highest = ids.iter().copied().max().unwrap_or(0).max(highest);
        stored_total = ids.len();
    }
    reopen_ms.sort_unstable();
    println!(
        "incident database ({engine}) killed {rounds} times: opened and consistent after every kill; \
         {} flushed alerts all kept, {stored_total} stored at the end; {} analyst actions kept; \
         {} incidents named and then lost at a kill, none of their ids handed out again; \
         open after a kill median {} ms, max {} ms",
        durable.iter().map(|d| d.2).sum::<u64>(),
        acted.len(),
        lost_incidents.len(),
        reopen_ms[reopen_ms.len() / 2],
        reopen_ms[reopen_ms.len() - 1]
    );
}

#[test]
fn incident_database_on_redb_killed_at_random_moments_keeps_what_was_flushed() {
    killed_at_random(Backend::Redb, 41);
}

#[test]
fn incident_database_on_sled_killed_at_random_moments_keeps_what_was_flushed() {
    killed_at_random(Backend::Sled, 43);
}

/// `palisade-collector migrate-incidents` on a data directory whose incident database a writer
/// filled on sled: the command says what it copied and verified, and the directory then opens
/// as redb holding every alert and incident.
#[test]
fn migrate_incidents_converts_a_sled_directory_whole() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let dir = data.join("incidents");
    let out = Command::new(bin("incident-writer"))
        .args([dir.to_str().unwrap(), "sled", "5", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = |engine: Backend| {
        let s = IncidentStore::open_with(&dir, 3600, engine).unwrap();
        let all = IncidentFilter {
            limit: usize::MAX,
            ..Default::default()
        };
        let every = AlertFilter {
            limit: usize::MAX,
            ..Default::default()
        };
        (s.incidents(&all).unwrap(), s.alerts(&every).unwrap().len())
    };
    let before = counts(Backend::Sled);
    assert!(before.1 > 0);
    let out = palisade_tests::run_ok(
        "palisade-collector",
        &["migrate-incidents", "--data-dir", data.to_str().unwrap()],
    );
    assert!(
        out.contains("migrated to redb") && out.contains("verified"),
        "{out}"
    );
    assert!(dir.join("incidents.redb").exists());
    // Asked for sled, the directory opens as what it now is.
    assert_eq!(counts(Backend::Sled), before);
}

/// `palisade-collector migrate-store` on a data directory whose event store has a sled index:
/// the command says what it copied and verified, and the store then opens on redb with every
/// event, its dedup sets and its agents.
#[test]
fn migrate_store_converts_a_sled_index_whole() {
    use palisade_collector::store::{EventStore, Query, SegmentStore};
    use palisade_wire::batch::{decode, encode, Limits};
    use palisade_wire::{Event, EventKind, Severity, Timestamp};
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let dir = data.join("store");
    let now = Timestamp::now().nanos();
    let batch = |agent: &str, seqs: std::ops::Range<u64>| {
        let lines: Vec<(u64, Vec<u8>)> = seqs
            .map(|s| {
                let mut e = Event::new(agent, EventKind::Synthetic, Severity::Low);
                e.timestamp = Timestamp(now - 3_600_000_000_000 + s as i64 * 1_000_000);
                e.seal(s);
                (s, e.to_json())
            })
            .collect();
        let pairs: Vec<(u64, &[u8])> = lines.iter().map(|(s, l)| (*s, &l[..])).collect();
        decode(&encode(agent, &pairs, 1).unwrap(), &Limits::default()).unwrap()
    };
    let everything = |s: &SegmentStore| {
        let q = Query::everything(usize::MAX);
        let mut n = 0;
        s.query(&q, &mut |_| {
            n += 1;
            true
        })
        .unwrap();
        (n, s.stats().unwrap().events, s.agents().unwrap().len())
    };
    let before = {
        let s = SegmentStore::open_with(&dir, 8 << 20, Backend::Sled).unwrap();
        for agent in ["agent-1", "agent-2"] {
            for first in (1..2_000).step_by(500) {
                s.write(&[&batch(agent, first..first + 500)]).unwrap();
            }
        }
        everything(&s)
    };
    assert_eq!(before, (4_000, 4_000, 2));
    assert!(dir.join("index/conf").exists());
    let out = palisade_tests::run_ok(
        "palisade-collector",
        &["migrate-store", "--data-dir", data.to_str().unwrap()],
    );
    assert!(
        out.contains("index migrated to redb") && out.contains("verified"),
        "{out}"
    );
    assert!(dir.join("index.redb").exists() && !dir.join("index").exists());
    // Asked for sled, the directory opens as what it now is.
    let s = SegmentStore::open_with(&dir, 8 << 20, Backend::Sled).unwrap();
    assert_eq!(everything(&s), before);
    let again = s.write(&[&batch("agent-1", 1..500)]).unwrap();
    assert_eq!((again[0].accepted, again[0].duplicates), (0, 499));
}
