//! The receiving replicator's crash promise: `serve` killed with SIGKILL at random points while a
//! peer backs up into it, 20 times (`PALISADE_KILL_ROUNDS`); after each restart the repository
//! opens and verifies (`verify --read-data`), the interrupted transfer resumes, and the final
//! snapshot restores byte-identical.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use palisade_tests::{bin, run, run_ok, Pki};

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` on a port of its own choosing (a port freed by a killed server may be taken
/// by another test running in parallel) and returns it with its URL.
fn start_serve(repo: &Path, pki: &Pki) -> (Serve, String) {
    let mut child = Command::new(bin("palisade-replicator"))
        .args([
            "-r",
            repo.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--pki-dir",
            pki.dir.to_str().unwrap(),
            "--identity",
            "offsite",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            fs::File::create(repo.with_extension("log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            let _ = child.wait();
            let err = fs::read_to_string(repo.with_extension("log")).unwrap_or_default();
            panic!("serve said {line:?}; stderr:\n{err}")
        })
        .to_string();
    (Serve(child), format!("https://{addr}"))
}

#[test]
fn serve_killed_at_random_points_keeps_a_verifiable_repository_and_transfers_resume() {
    let t = tempfile::tempdir().unwrap();
    let pki = Pki::init(&t.path().join("pki"));
    pki.issue_with_sans("replicator", "offsite", &["127.0.0.1"]);
    pki.issue("replicator", "site-a");
    let src = t.path().join("src");
    let mut rng = fastrand::Rng::with_seed(9);
    for d in 0..4 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..6 {
            let data: Vec<u8> = (0..rng.usize(200_000..1_500_000))
                .map(|_| rng.u8(..))
                .collect();
            fs::write(src.join(format!("d{d}/f{f}")), data).unwrap();
        }
    }
    let repo = t.path().join("offsite");
    let client = [
        "--pki-dir",
        pki.dir.to_str().unwrap(),
        "--identity",
        "site-a",
    ];
    let (mut serve, mut url) = start_serve(&repo, &pki);
    let mut args = vec!["init", url.as_str()];
    args.extend(client);
    run_ok("palisade-replicator", &args);
    let rounds = palisade_tests::kill_rounds();
    let mut kills = 0;
    for round in 0..rounds {
        fs::write(
            src.join(format!("d{}/round", round % 4)),
            format!("{round}\n").repeat(50_000),
        )
        .unwrap();
        let mut backup = Command::new(bin("palisade-replicator"))
            .args([
                "backup",
                src.to_str().unwrap(),
                "--to",
                &url,
                "--quiet",
                "--force",
            ])
            .args(client)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(5..200)));
        if serve.0.try_wait().unwrap().is_none() {
            serve.0.kill().unwrap(); // SIGKILL, mid-transfer or not
            kills += 1;
        }
        serve.0.wait().unwrap();
        let _ = backup.wait();
        let v = run(
            "palisade-replicator",
            &["-r", repo.to_str().unwrap(), "verify", "--read-data"],
        );
        assert!(
            v.status.success(),
            "round {round}: the receiving repository does not verify after SIGKILL:\n{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        (serve, url) = start_serve(&repo, &pki);
    }
    assert_eq!(kills, rounds);
    eprintln!(
        "serve SIGKILLed {kills} times mid-transfer; the repository verified after every one"
    );
    // The transfer resumes: the last run completes and the snapshot restores exactly.
    let mut args = vec![
        "backup",
        src.to_str().unwrap(),
        "--to",
        url.as_str(),
        "--quiet",
    ];
    args.extend(client);
    run_ok("palisade-replicator", &args);
    let out = t.path().join("out");
    let mut args = vec![
        "-r",
        url.as_str(),
        "restore",
        "latest",
        "--to",
        out.to_str().unwrap(),
        "--quiet",
    ];
    args.extend(client);
    run_ok("palisade-replicator", &args);
    drop(serve);
    run_ok(
        "palisade-replicator",
        &["-r", repo.to_str().unwrap(), "verify", "--read-data"],
    );
    for d in 0..4 {
        for f in ["f0", "f3", "f5", "round"] {
            let rel = format!("d{d}/{f}");
            if src.join(&rel).exists() {
                assert!(
                    fs::read(src.join(&rel)).unwrap() == fs::read(out.join(&rel)).unwrap(),
                    "{rel}"
                );
            }
        }
    }
}
