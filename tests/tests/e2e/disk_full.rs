//! Full disks: a program whose disk fills up says so, names what it could not write, corrupts
//! nothing it had stored, and carries on once space returns. Each test mounts a small tmpfs,
//! which needs root; without it they skip and say why.

use std::fs;
use std::path::Path;

use palisade_tests::{is_root, run, run_ok, Tmpfs};

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
