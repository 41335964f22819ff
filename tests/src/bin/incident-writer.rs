//! A child process for the incident database's crash test (`tests/tests/e2e/incident_crash.rs`):
//! records alerts into `<dir>` as the collector's alert writer does — calls of 200 alerts from
//! a few thousand sources (so most join incidents, some open new ones), a flush every ~50 ms,
//! now and then an analyst's acknowledgement or resolution — and tells its parent on stdout
//! what is durable:
//!
//! - `flushed FIRST LAST COUNT`: alerts FIRST..=LAST (COUNT of them, this life's) are durable;
//! - `acted INCIDENT STATUS`: the action returned (it flushes before returning);
//! - `incidents ID…`: incident ids this life names for the first time (not yet durable).
//!
//! The parent kills it with SIGKILL at a random moment and checks the database. Bounded: it
//! stops by itself after `SECS` seconds (default 60).
//!
//! Usage: `incident-writer DIR (redb|sled) SEED [SECS]`

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use palisade_collector::incidents::{Alert, Backend, IncidentStore, Status};
use palisade_tests::detection;
use palisade_wire::Timestamp;

const PER_CALL: u64 = 200;
const SOURCES: u64 = 3_000;

fn main() {
    if let Err(e) = run() {
        eprintln!("incident-writer: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, engine, seed, rest @ ..] = args.as_slice() else {
        return Err("usage: incident-writer DIR (redb|sled) SEED [SECS]".into());
    };
    let engine = match engine.as_str() {
        "redb" => Backend::Redb,
        "sled" => Backend::Sled,
        other => return Err(format!("unknown engine {other:?} (redb or sled)")),
    };
    let mut rng: u64 = seed
        .parse::<u64>()
        .map_err(|e| format!("seed {seed:?}: {e}"))?
        | 1;
    let secs: u64 = match rest.first() {
        Some(s) => s.parse().map_err(|e| format!("secs {s:?}: {e}"))?,
        None => 60,
    };
    let store = IncidentStore::open_with(&PathBuf::from(dir), 3600, engine)
        .map_err(|e| format!("open {dir}: {e}"))?;
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock<'_>, line: String| -> Result<(), String> {
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(|e| format!("stdout: {e}"))
    };
    say(&mut out, "open".into())?;
    let started = Instant::now();
    let mut last_flush = Instant::now();
    let (mut first, mut last, mut count) = (None::<u64>, 0u64, 0u64);
    let mut calls = 0u64;
    // Incident ids this life has named.
    let mut seen = std::collections::HashSet::new();
    while started.elapsed() < Duration::from_secs(secs) {
        let now = Timestamp::now().nanos() / 1_000_000_000;
        let alerts: Vec<Alert> = (0..PER_CALL)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                detection(rng % SOURCES, (rng >> 32) % 5, now)
            })
            .collect();
        let stored = store.record(alerts).map_err(|e| format!("record: {e}"))?;
        calls += 1;
        let mut new_incidents = Vec::new();
        for a in &stored {
            first.get_or_insert(a.id);
            last = last.max(a.id);
            if seen.insert(a.incident) {
                new_incidents.push(a.incident.to_string());
            }
        }
        if !new_incidents.is_empty() {
            // Seen, as an analyst or a forwarder could have seen them, before any flush.
            say(&mut out, format!("incidents {}", new_incidents.join(" ")))?;
        }
        count += stored.len() as u64;
        if last_flush.elapsed() >= Duration::from_millis(50) {
            store.flush().map_err(|e| format!("flush: {e}"))?;
            last_flush = Instant::now();
            say(
                &mut out,
                format!("flushed {} {last} {count}", first.unwrap_or(0)),
            )?;
        }
        if calls % 10 == 0 {
            // The analyst's side: the incident of this call's last alert moves one step on.
            let Some(id) = stored.last().map(|a| a.incident) else {
                continue;
            };
            let acted = match store.incident(id).map_err(|e| format!("read: {e}"))? {
                Some(i) if i.status == Status::New => store.ack(id, "analyst-c", None),
                Some(i) if i.status == Status::Acknowledged => {
                    store.resolve(id, "analyst-c", Some("checked".into()))
                }
                _ => continue,
            };
            let inc = acted.map_err(|e| format!("act on INC-{id}: {e}"))?;
            say(&mut out, format!("acted {id} {}", inc.status.name()))?;
        }
    }
    store.flush().map_err(|e| format!("flush: {e}"))?;
    say(
        &mut out,
        format!("flushed {} {last} {count}", first.unwrap_or(0)),
    )?;
    say(&mut out, "done".into())
}
