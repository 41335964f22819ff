//! The replicator's crash promise, with real processes: a backup killed with SIGKILL at random
//! moments leaves a repository that opens and verifies (`verify --read-data`), and the next run
//! resumes without storing again what already landed.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_tests::{bin, kill_rounds, run, run_ok};

fn tree(root: &Path, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for d in 0..6 {
        let dir = root.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..8 {
            let len = rng.usize(50_000..900_000);
            let data: Vec<u8> = if f % 2 == 0 {
                (0..len).map(|_| rng.u8(..)).collect()
            } else {
                (0..len)
                    .map(|i| b"log line 10.0.0.1 GET /index.html 200\n"[i % 38])
                    .collect()
            };
            fs::write(dir.join(format!("f{f}")), data).unwrap();
        }
    }
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn backup_killed_at_random_points_leaves_a_verifiable_repository_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src, 11);
    let repo = t.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok("palisade-replicator", &["init", repo_s]);
    // Kill moments are drawn from how long a backup takes here (a fixed window would miss
    // every backup on a fast machine): a full `--force` pass over the tree, in a scratch
    // repository that already holds it.
    let scratch = t.path().join("scratch");
    let scratch_s = scratch.to_str().unwrap();
    run_ok("palisade-replicator", &["init", scratch_s]);
    let backup_into = |repo: &str, force: bool| {
        let mut args = vec!["backup", src.to_str().unwrap(), "--to", repo, "--quiet"];
        if force {
            args.push("--force");
        }
        run_ok("palisade-replicator", &args);
    };
    backup_into(scratch_s, false);
    let started = Instant::now();
    backup_into(scratch_s, true);
    let pass_ms = (started.elapsed().as_millis() as u64).max(4);
    // Until `kills` backups died mid-run (some finish before their kill moment), bounded.
    let kills = kill_rounds();
    let mut rng = fastrand::Rng::with_seed(5);
    let mut killed = 0;
    let mut round = 0;
    while killed < kills && round < kills * 3 {
        round += 1;
        // Each round changes a few files so later rounds have new data to write too.
        let f = src.join(format!("d{}/f{}", round % 6, round % 8));
        fs::write(&f, format!("round {round}\n").repeat(20_000)).unwrap();
        let mut child = Command::new(bin("palisade-replicator"))
            // --force: every round reads everything, so a kill can land anywhere in it.
            .args([
                "backup",
                src.to_str().unwrap(),
                "--to",
                repo_s,
                "--quiet",
                "--force",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(1..=pass_ms)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        let v = run(
            "palisade-replicator",
            &["-r", repo_s, "verify", "--read-data"],
        );
        assert!(
            v.status.success(),
            "round {round}: repository does not verify after SIGKILL:\n{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }
    assert_eq!(
        killed, kills,
        "only {killed} of {round} backups were still running when killed (a pass takes {pass_ms} ms)"
    );
    eprintln!("backup SIGKILLed {killed} times in {round} rounds (a pass takes {pass_ms} ms); the repository verified after every one");
    // Resume: what landed before the kills is not stored again.
    let total: u64 = walk_size(&src);
    let r = json(&run_ok(
        "palisade-replicator",
        &[
            "backup",
            src.to_str().unwrap(),
            "--to",
            repo_s,
            "--output-format",
            "json",
            "--quiet",
        ],
    ));
    assert!(
        r["bytes_new"].as_u64().unwrap() < total,
        "the resumed backup stored everything again: {r}"
    );
    run_ok(
        "palisade-replicator",
        &["-r", repo_s, "verify", "--read-data"],
    );
    let out = t.path().join("out");
    run_ok(
        "palisade-replicator",
        &[
            "-r",
            repo_s,
            "restore",
            "latest",
            "--to",
            out.to_str().unwrap(),
            "--quiet",
        ],
    );
    for d in 0..6 {
        for f in 0..8 {
            let rel = format!("d{d}/f{f}");
            assert!(
                fs::read(src.join(&rel)).unwrap() == fs::read(out.join(&rel)).unwrap(),
                "{rel} differs after restore"
            );
        }
    }
}

fn walk_size(root: &Path) -> u64 {
    let mut total = 0;
    for d in fs::read_dir(root).unwrap() {
        let d = d.unwrap().path();
        for f in fs::read_dir(&d).unwrap() {
            total += f.unwrap().metadata().unwrap().len();
        }
    }
    total
}
