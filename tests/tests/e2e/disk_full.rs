//! Full disks: a program whose disk fills up says so, names what it could not write, corrupts
//! nothing it had stored, and carries on once space returns. Each test mounts a small tmpfs,
//! which needs root; without it they skip and say why.

use std::fs;
use std::path::Path;
use std::time::Duration;

use palisade_collector::incidents::{AlertFilter, Backend, IncidentStore};
use palisade_tests::{detection, is_root, run, run_ok, wait_for, Agent, Collector, Pki, Tmpfs};

use crate::replication::{assert_latest_restores, json, peer_args, served, verify_read_data};

const SKIP: &str = "skipped: mounting a small tmpfs needs root, and this test runs as uid != 0";

/// `files` incompressible files of `mib` MiB each (so the repository grows by what is read).
fn random_tree(root: &Path, files: usize, mib: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 3));
        fs::create_dir_all(&dir).unwrap();
        let mut data = vec![0u8; mib << 20];
        rng.fill(&mut data);
        fs::write(dir.join(format!("f{i}.bin")), data).unwrap();
    }
}

/// Temp files a failed write left behind anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            out.extend(leftovers(&e.path()));
        } else if name.starts_with(".tmp-") {
            out.push(e.path().display().to_string());
        }
    }
    out
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn replicator_backup_onto_a_full_disk_fails_clearly_and_resumes_when_space_returns() {
    if !is_root() {
        println!("{SKIP}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    random_tree(&src, 12, 6, 41); // 72 MiB: four 16 MiB packs and a bit
    let disk = Tmpfs::mount(&t.path().join("disk"), 40);
    let repo = disk.dir.join("repo");
    let r = repo.to_str().unwrap();
    run_ok("palisade-replicator", &["init", r]);

    let out = run(
        "palisade-replicator",
        &["backup", src.to_str().unwrap(), "--to", r, "--quiet"],
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(r),
        "the error names the file it could not write: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // What landed before the disk filled is intact, and no temp file is left taking space.
    assert!(leftovers(&repo).is_empty(), "{:?}", leftovers(&repo));
    verify_read_data(&repo);
    // No snapshot was committed (exit 1: nothing found).
    let out = run(
        "palisade-replicator",
        &["-r", r, "snapshots", "--output-format", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let snaps = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(snaps.as_array().unwrap().len(), 0, "{snaps}");

    // Space returns: the same backup finishes, storing only what had not landed.
    disk.resize(160);
    let done = json(&run_ok(
        "palisade-replicator",
        &[
            "backup",
            src.to_str().unwrap(),
            "--to",
            r,
            "--quiet",
            "--output-format",
            "json",
        ],
    ));
    let read = done["bytes_read"].as_u64().unwrap();
    let new = done["bytes_new"].as_u64().unwrap();
    assert!(
        new < read,
        "packs that landed before were stored again: {done}"
    );
    verify_read_data(&repo);
    let back = t.path().join("restored");
    assert_latest_restores(None, r, &src, &back);
}

#[test]
fn replicator_serve_on_a_full_disk_refuses_clearly_keeps_serving_and_resumes() {
    if !is_root() {
        println!("{SKIP}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    random_tree(&src, 12, 6, 42);
    let disk = Tmpfs::mount(&t.path().join("disk"), 40);
    let repo = disk.dir.join("offsite");
    let (pki, mut serve) = served(t.path(), &repo, &[]);
    let url = serve.url.clone();
    let backup = || {
        run(
            "palisade-replicator",
            &peer_args(
                &pki,
                "site-a",
                &[
                    "backup",
                    src.to_str().unwrap(),
                    "--to",
                    &url,
                    "--quiet",
                    "--output-format",
                    "json",
                ],
            ),
        )
    };
    let out = backup();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("No space left on device"),
        "the client is told why: {err}\nserver log:\n{}",
        serve.log_text()
    );
    assert!(
        !serve.log_text().contains("panicked"),
        "{}",
        serve.log_text()
    );

    // The server is still up; once space returns the same backup completes and resumes.
    disk.resize(160);
    let out = backup();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let done = json(&String::from_utf8_lossy(&out.stdout));
    let read = done["bytes_read"].as_u64().unwrap();
    let sent = done["bytes_sent"].as_u64().unwrap();
    assert!(sent < read, "what landed before was sent again: {done}");
    serve.stop();
    assert!(leftovers(&repo).is_empty(), "{:?}", leftovers(&repo));
    verify_read_data(&repo);
}

/// Which lines of `log` mention `needle` (at most `n`), for failure messages.
fn lines_with(log: &str, needle: &str, n: usize) -> String {
    log.lines()
        .filter(|l| l.contains(needle))
        .take(n)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn collector_store_on_a_full_disk_refuses_ingest_clearly_and_resumes_when_space_returns() {
    if !is_root() {
        println!("{SKIP}");
        return;
    }
    const N: u64 = 150_000;
    let t = tempfile::tempdir().unwrap();
    let pki = Pki::init(&t.path().join("pki"));
    pki.issue("agent", "probe-f");
    let cdir = t.path().join("collector");
    // Room for roughly 130k of the 150k synthetic events above a 2 MiB reserve.
    let disk = Tmpfs::mount(&cdir.join("data"), 8);
    let mut collector = Collector::start(&cdir, &pki, 0, "[ingest]\nmin_free_bytes = 2097152\n");
    let agent = Agent::start(
        &t.path().join("agent"),
        &pki,
        "probe-f",
        &collector.url,
        &format!("[heartbeat]\ninterval_secs = 1\n[synthetic]\nevents = {N}\nrate_per_sec = 20000\n[ship]\nmax_batch_events = 1000\nmax_backoff_ms = 500\n"),
    );
    // The disk fills: the collector refuses with the reason, the agent keeps its spool and
    // retries (several refusals, so the store is hit more than once while full).
    let refusals = || agent.log_text().matches("store write failed").count();
    let full = wait_for(Duration::from_secs(120), || (refusals() >= 4).then_some(()));
    let clog = collector.log_text();
    assert!(
        full.is_some(),
        "the agent was not refused 4 times; agent log:\n{}\ncollector log:\n{clog}",
        agent.log_text()
    );
    let refusal = lines_with(&agent.log_text(), "store write failed", 1);
    assert!(
        refusal.contains("store disk full") && refusal.contains("collector/data/store"),
        "the refusal names the reason and the directory: {refusal}"
    );
    // The reserve kept sled from meeting the full disk itself (it would stay failed until a
    // restart).
    assert!(!clog.contains("No space left on device"), "{clog}");
    assert!(!clog.contains("panicked"), "{clog}");
    // Still serving queries, and what was acknowledged is there.
    let before = collector.events(&pki, &["--agent", "probe-f", "--kind", "synthetic"]);
    assert!(
        !before.is_empty() && (before.len() as u64) < N,
        "{}",
        before.len()
    );
    let spooled = agent.log_text();
    assert!(!spooled.contains("spool full"), "{spooled}");

    // Space returns: ingest resumes by itself, every event exactly once.
    disk.resize(256);
    let events = wait_for(Duration::from_secs(120), || {
        let e = collector.events(&pki, &["--agent", "probe-f", "--kind", "synthetic"]);
        (e.len() as u64 >= N).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "ingest did not resume; collector log:\n{}\nagent log:\n{}",
            collector.log_text(),
            agent.log_text()
        )
    });
    crate::delivery::assert_exactly_once(&events, N);
    // No corruption: after a SIGKILL the store opens with the same events, and the audit log
    // (which lives on the same full disk) verifies.
    drop(agent);
    collector.kill();
    collector.restart();
    let again = collector.events(&pki, &["--agent", "probe-f", "--kind", "synthetic"]);
    crate::delivery::assert_exactly_once(&again, N);
    collector.kill();
    let out = collector.audit_verify();
    assert_eq!(
        out.status.code(),
        Some(0),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    println!(
        "collector full disk: {} refusals while full, {} events stored before the resize, {N} after, exactly once; audit verified",
        refusals_at(&collector.log_text()),
        before.len()
    );
}

fn refusals_at(collector_log: &str) -> usize {
    collector_log.matches("store write failed").count()
}

/// Synthetic indexes delivered (each at most once) and the sum of `dropped` over gap events.
fn delivered_and_dropped(collector: &Collector, pki: &Pki, agent: &str) -> (u64, u64, Vec<String>) {
    let events = collector.events(pki, &["--agent", agent, "--kind", "synthetic"]);
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        let i = e["palisade"]["synthetic"]["index"].as_u64().unwrap();
        assert!(seen.insert(i), "synthetic event {i} stored twice");
    }
    let gaps = collector.events(pki, &["--agent", agent, "--kind", "gap"]);
    let dropped = gaps
        .iter()
        .map(|g| g["palisade"]["dropped"].as_u64().unwrap())
        .sum();
    let actions = gaps
        .iter()
        .map(|g| {
            g["event"]["action"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    (events.len() as u64, dropped, actions)
}

#[test]
fn agent_spool_on_a_full_disk_says_so_and_resumes_when_space_returns() {
    if !is_root() {
        println!("{SKIP}");
        return;
    }
    const N: u64 = 60_000;
    let t = tempfile::tempdir().unwrap();
    let pki = Pki::init(&t.path().join("pki"));
    pki.issue("agent", "probe-s");
    let adir = t.path().join("agent");
    let disk = Tmpfs::mount(&adir.join("probe-s-data"), 8);
    // Nobody listens yet: everything stays in the spool, which fills the disk.
    let port = palisade_tests::free_port();
    let url = format!("https://127.0.0.1:{port}");
    let agent = Agent::start(
        &adir,
        &pki,
        "probe-s",
        &url,
        &format!("[spool]\nmin_free_bytes = 2097152\n[heartbeat]\ninterval_secs = 1\n[synthetic]\nevents = {N}\nrate_per_sec = 20000\n"),
    );
    // Full: the agent says so, naming the spool; heartbeats meanwhile are dropped (counted).
    let lost = || {
        agent
            .log_text()
            .matches("cannot spool events; they are lost")
            .count() as u64
    };
    let full = wait_for(Duration::from_secs(60), || (lost() >= 2).then_some(()));
    let log = agent.log_text();
    assert!(
        full.is_some(),
        "no heartbeat was refused; agent log:\n{log}"
    );
    let refusal = lines_with(&log, "spool disk full", 1);
    assert!(
        refusal.contains("probe-s-data/spool") && refusal.contains("min_free_bytes"),
        "the error names the spool and the reserve: {refusal}"
    );
    assert!(
        !log.contains("No space left on device"),
        "sled met the full disk:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // Space returns, a collector appears: everything spooled and everything held back arrives,
    // and one gap event counts the heartbeats dropped while the disk was full.
    disk.resize(256);
    let collector = Collector::start(&t.path().join("collector"), &pki, port, "");
    let got = wait_for(Duration::from_secs(120), || {
        let (n, dropped, actions) = delivered_and_dropped(&collector, &pki, "probe-s");
        (n >= N && dropped > 0).then_some((n, dropped, actions))
    });
    let (n, dropped, actions) = got.unwrap_or_else(|| {
        panic!(
            "did not resume: {:?}; agent log tail:\n{}",
            delivered_and_dropped(&collector, &pki, "probe-s"),
            agent.log_tail(20)
        )
    });
    assert_eq!(n, N);
    assert_eq!(actions, vec!["spool-write-failed".to_string()]);
    assert_eq!(
        dropped,
        lost(),
        "the gap counts exactly the heartbeats dropped"
    );
    println!("agent full disk: {N} synthetic events delivered once after the resize; {dropped} heartbeats dropped while full, one gap event says so");
}

#[test]
fn agent_spool_at_its_cap_drops_the_oldest_and_says_how_many() {
    const N: u64 = 5_000;
    let t = tempfile::tempdir().unwrap();
    let pki = Pki::init(&t.path().join("pki"));
    pki.issue("agent", "probe-c");
    let port = palisade_tests::free_port();
    let url = format!("https://127.0.0.1:{port}");
    // About 2 MB of events against a 256 KiB cap, with nobody listening.
    let agent = Agent::start(
        &t.path().join("agent"),
        &pki,
        "probe-c",
        &url,
        &format!("[spool]\nmax_bytes = 262144\n[heartbeat]\ninterval_secs = 0\n[synthetic]\nevents = {N}\nrate_per_sec = 0\n"),
    );
    let done = wait_for(Duration::from_secs(60), || {
        agent
            .log_text()
            .contains("synthetic source finished")
            .then_some(())
    });
    assert!(done.is_some(), "{}", agent.log_text());
    assert!(
        agent
            .log_text()
            .contains("spool full: oldest events dropped"),
        "{}",
        agent.log_text()
    );
    let collector = Collector::start(&t.path().join("collector"), &pki, port, "");
    let got = wait_for(Duration::from_secs(60), || {
        let (n, dropped, actions) = delivered_and_dropped(&collector, &pki, "probe-c");
        (n + dropped >= N).then_some((n, dropped, actions))
    });
    let (n, dropped, actions) = got.unwrap_or_else(|| {
        panic!(
            "{:?}; agent log:\n{}",
            delivered_and_dropped(&collector, &pki, "probe-c"),
            agent.log_text()
        )
    });
    assert_eq!(
        n + dropped,
        N,
        "every event delivered or counted as dropped"
    );
    assert!(n > 0 && dropped > 0, "{n} delivered, {dropped} dropped");
    assert!(actions.iter().all(|a| a == "spool-overflow"), "{actions:?}");
    // The newest survive: the delivered ones are the last n indexes.
    let events = collector.events(&pki, &["--agent", "probe-c", "--kind", "synthetic"]);
    let lowest = events
        .iter()
        .map(|e| e["palisade"]["synthetic"]["index"].as_u64().unwrap())
        .min()
        .unwrap();
    assert_eq!(lowest, N - n, "the oldest were dropped first");
    println!("agent spool cap: {N} events into a 256 KiB spool: {n} delivered, {dropped} dropped and counted by {} gap events", actions.len());
}

/// The incident database (redb) on a disk that fills up: the write that meets it fails with
/// an error naming the file and the cause; nothing flushed before is lost; once space returns
/// the very next write succeeds in the same process (redb latches its first I/O error, the
/// store reopens it), and everything is there after a reopen.
#[test]
fn incident_database_on_a_full_disk_fails_clearly_and_resumes_in_process() {
    if !is_root() {
        println!("{SKIP}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&t.path().join("disk"), 8);
    let dir = disk.dir.join("incidents");
    let store = IncidentStore::open_with(&dir, 3600, Backend::Redb).unwrap();
    let now = palisade_wire::Timestamp::now().nanos() / 1_000_000_000;
    let mut flushed: Vec<u64> = Vec::new();
    let mut source = 0u64;
    let mut call = |store: &IncidentStore| {
        // A new incident per alert: the database grows as fast as it can.
        let alerts = (0..200)
            .map(|_| {
                source += 1;
                detection(source, source % 5, now)
            })
            .collect();
        let stored = store.record(alerts)?;
        store.flush()?;
        Ok::<_, palisade_collector::store::StoreError>(stored)
    };
    let mut failure = None;
    for _ in 0..5_000 {
        match call(&store) {
            Ok(stored) => flushed.extend(stored.iter().map(|a| a.id)),
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    let failure = failure.expect("8 MiB never filled up");
    assert!(
        failure.contains("No space left on device") && failure.contains("incidents.redb"),
        "the error names the cause and the file: {failure}"
    );
    assert!(
        !flushed.is_empty(),
        "nothing was written before the disk filled"
    );
    // Still full: the store reopened after the failure, which may have given back the failed
    // write's pages, so a call may fit or be refused; either way nothing breaks.
    match call(&store) {
        Ok(stored) => flushed.extend(stored.iter().map(|a| a.id)),
        Err(e) => assert!(e.to_string().contains("No space left on device"), "{e}"),
    }
    disk.resize(64);
    let after = call(&store).unwrap_or_else(|e| panic!("no write once space returned: {e}"));
    flushed.extend(after.iter().map(|a| a.id));
    let held = |store: &IncidentStore| -> std::collections::HashSet<u64> {
        store
            .alerts(&AlertFilter {
                limit: usize::MAX,
                ..Default::default()
            })
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect()
    };
    let now_held = held(&store);
    let missing = flushed.iter().filter(|id| !now_held.contains(id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} flushed alerts lost",
        flushed.len()
    );
    drop(store);
    let store = IncidentStore::open_with(&dir, 3600, Backend::Redb).unwrap();
    let reopened = held(&store);
    let missing = flushed.iter().filter(|id| !reopened.contains(id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} flushed alerts lost after a reopen",
        flushed.len()
    );
    println!(
        "incident database on a full disk: {} alerts flushed before and after, all kept; the failure said: {failure}",
        flushed.len()
    );
}
