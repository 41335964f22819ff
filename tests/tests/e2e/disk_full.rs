//! Full disks: a program whose disk fills up says so, names what it could not write, corrupts
//! nothing it had stored, and carries on once space returns. Each test mounts a small tmpfs,
//! which needs root; without it they skip and say why.

use std::fs;
use std::path::Path;
use std::time::Duration;

use palisade_tests::{is_root, run, run_ok, wait_for, Agent, Collector, Pki, Tmpfs};

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
    // Room for roughly 130k of the 150k synthetic events.
    let disk = Tmpfs::mount(&cdir.join("data"), 6);
    let mut collector = Collector::start(&cdir, &pki, 0, "");
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
        refusal.contains("No space left on device") && refusal.contains("collector/data"),
        "the refusal names the reason and the file: {refusal}"
    );
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
    let out = run(
        "palisade-collector",
        &[
            "audit",
            "verify",
            "--config",
            collector.config.to_str().unwrap(),
        ],
    );
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
