//! Off-site replication between real replicator processes over mutual TLS: `serve` on one side,
//! `init`/`backup`/`snapshots`/`restore` against `https://…` on the other. Only missing chunks
//! cross the wire, a bit flipped in transit is refused and sent again, a non-replicator
//! certificate is refused, and an encrypted off-site repository holds no plaintext.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use palisade_tests::{bin, run, run_ok, wait_for_line, Pki};

const MARKER: &str = "PALISADE-PLAINTEXT-MARKER-5c1f0e9a";

/// A `palisade-replicator serve` child, killed on drop.
pub(crate) struct Serve {
    child: Option<Child>,
    pub(crate) url: String,
    log: PathBuf,
}

impl Serve {
    pub(crate) fn start(repo: &Path, pki: &Pki, log: PathBuf) -> Serve {
        let log_file = fs::File::create(&log).unwrap();
        let mut child = Command::new(bin("palisade-replicator"))
            .args([
                "-r",
                repo.to_str().unwrap(),
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--pki-dir",
                pki.dir.to_str().unwrap(),
                "--log",
                "info",
            ])
            .env_remove("PALISADE_REPO")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let addr = wait_for_line(&mut child, "listening on ", Duration::from_secs(20));
        let mut serve = Serve {
            child: Some(child),
            url: String::new(),
            log,
        };
        match addr {
            Some(addr) => serve.url = format!("https://{addr}"),
            None => panic!("serve did not start; log:\n{}", serve.log_text()),
        }
        serve
    }

    pub(crate) fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PKI with the serving replicator's certificate (SAN 127.0.0.1) and a client `site-a`.
pub(crate) fn pki(dir: &Path) -> Pki {
    let pki = Pki::init(dir);
    pki.issue_with_sans("replicator", "palisade-replicator", &["127.0.0.1"]);
    pki.issue("replicator", "site-a");
    pki
}

/// A PKI under `dir/pki`, `serve` on `repo` (logging to `dir/serve.log`), and the repository
/// created through it by site-a (`init URL` plus `init_args`).
pub(crate) fn served(dir: &Path, repo: &Path, init_args: &[&str]) -> (Pki, Serve) {
    let pki = pki(&dir.join("pki"));
    let serve = Serve::start(repo, &pki, dir.join("serve.log"));
    let mut args = vec!["init", serve.url.as_str()];
    args.extend_from_slice(init_args);
    run_ok("palisade-replicator", &peer_args(&pki, "site-a", &args));
    (pki, serve)
}

/// A few MB: nested directories, random and compressible files, an empty file, a symlink.
fn source_tree(root: &Path, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for d in 0..4 {
        let dir = root.join(format!("d{d}")).join(format!("sub{}", d % 2));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..6 {
            let len = rng.usize(20_000..300_000);
            let data: Vec<u8> = if f % 2 == 0 {
                (0..len).map(|_| rng.u8(..)).collect()
            } else {
                (0..len)
                    .map(|i| b"10.0.0.7 - - GET /index.html HTTP/1.1 200 512\n"[i % 46])
                    .collect()
            };
            fs::write(dir.join(format!("f{f}.bin")), data).unwrap();
        }
    }
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(
        root.join("d1/secret.txt"),
        format!("the password is {MARKER}\n").repeat(50),
    )
    .unwrap();
    fs::set_permissions(
        root.join("d1/secret.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("d0/sub0/f1.bin", root.join("link")).unwrap();
}

fn tree_size(root: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        if m.is_dir() {
            total += tree_size(&e.path());
        } else if m.is_file() {
            total += m.len();
        }
    }
    total
}

/// Asserts `b` holds exactly what `a` holds: same names, kinds, contents, modes, link targets.
pub(crate) fn assert_same_tree(a: &Path, b: &Path) {
    let names = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b), "entries of {}", a.display());
    for name in names(a) {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "kind of {}", pb.display());
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
        } else if ma.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert_eq!(
                ma.permissions().mode() & 0o777,
                mb.permissions().mode() & 0o777,
                "mode of {}",
                pb.display()
            );
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "content of {} differs",
                pb.display()
            );
        }
    }
}

/// Restores the latest snapshot of `repo` (a path, or a URL reached as site-a of `pki`) into
/// `out` and checks that it equals `src`.
pub(crate) fn assert_latest_restores(pki: Option<&Pki>, repo: &str, src: &Path, out: &Path) {
    let args = [
        "-r",
        repo,
        "restore",
        "latest",
        "--to",
        out.to_str().unwrap(),
        "--quiet",
    ];
    let args = match pki {
        Some(pki) => peer_args(pki, "site-a", &args),
        None => args.to_vec(),
    };
    run_ok("palisade-replicator", &args);
    assert_same_tree(src, out);
}

pub(crate) fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `args` plus the client's TLS identity.
pub(crate) fn peer_args<'a>(pki: &'a Pki, identity: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend([
        "--pki-dir",
        pki.dir.to_str().unwrap(),
        "--identity",
        identity,
    ]);
    all
}

fn backup(pki: &Pki, url: &str, src: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "backup",
        src.to_str().unwrap(),
        "--to",
        url,
        "--output-format",
        "json",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    json(&run_ok(
        "palisade-replicator",
        &peer_args(pki, "site-a", &args),
    ))
}

pub(crate) fn verify_read_data(repo: &Path) {
    let out = run(
        "palisade-replicator",
        &["-r", repo.to_str().unwrap(), "verify", "--read-data"],
    );
    assert!(
        out.status.success(),
        "verify --read-data failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn offsite_backup_sends_only_missing_chunks_and_restores_byte_identical() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    source_tree(&src, 21);
    let repo = t.path().join("offsite");
    let (pki, mut serve) = served(t.path(), &repo, &["--chunk-kib", "16"]);
    let url = serve.url.clone();
    let first = backup(&pki, &url, &src, &[]);
    assert!(first["bytes_sent"].as_u64().unwrap() > 0, "{first}");

    // About 1% of the tree changes: 4 KiB rewritten inside one file, one small file added.
    let size = tree_size(&src);
    let victim = src.join("d2/sub0/f0.bin");
    let mut data = fs::read(&victim).unwrap();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 4096] {
        *b = b.wrapping_add(1);
    }
    fs::write(&victim, data).unwrap();
    fs::write(src.join("d3/new.txt"), "a new file\n".repeat(900)).unwrap();
    let second = backup(&pki, &url, &src, &[]);
    let sent = second["bytes_sent"].as_u64().unwrap();
    assert!(
        sent < size / 10,
        "second backup sent {sent} bytes of a {size}-byte tree: {second}"
    );

    let listed = json(&run_ok(
        "palisade-replicator",
        &peer_args(
            &pki,
            "site-a",
            &["-r", &url, "snapshots", "--output-format", "json"],
        ),
    ));
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let out = t.path().join("restored");
    assert_latest_restores(Some(&pki), &url, &src, &out);

    serve.stop();
    verify_read_data(&repo);
}

#[test]
fn bit_flipped_in_transit_is_refused_and_sent_again() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    source_tree(&src, 22);
    let repo = t.path().join("offsite");
    let (pki, mut serve) = served(t.path(), &repo, &[]);
    let url = serve.url.clone();
    backup(&pki, &url, &src, &["--fault-flip-in-transit", "1"]);
    let log = serve.log_text();
    assert!(
        log.contains("rejected incoming blob"),
        "the receiver did not log a rejection:\n{log}"
    );

    let out = t.path().join("restored");
    assert_latest_restores(Some(&pki), &url, &src, &out);
    serve.stop();
    verify_read_data(&repo);
}

#[test]
fn peer_without_replicator_role_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let pki = pki(&t.path().join("pki"));
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "data\n").unwrap();
    let repo = t.path().join("offsite");
    let serve = Serve::start(&repo, &pki, t.path().join("serve.log"));
    let url = serve.url.clone();

    // No repository yet: a clear error, not a hang or a panic.
    let none = run(
        "palisade-replicator",
        &peer_args(
            &pki,
            "site-a",
            &["backup", src.to_str().unwrap(), "--to", &url, "--quiet"],
        ),
    );
    assert_eq!(none.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("has no repository"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );

    run_ok(
        "palisade-replicator",
        &peer_args(&pki, "site-a", &["init", &url]),
    );
    // `Pki::init` issued an analyst certificate.
    for args in [
        vec!["backup", src.to_str().unwrap(), "--to", &url, "--quiet"],
        vec!["-r", &url, "snapshots"],
    ] {
        let out = run("palisade-replicator", &peer_args(&pki, "analyst", &args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("403") && err.contains("role analyst"),
            "{args:?}: {err}"
        );
    }
    assert!(serve.log_text().contains("not a replicator certificate"));
    assert!(
        !repo.join("snapshots").exists()
            || fs::read_dir(repo.join("snapshots")).unwrap().count() == 0
    );
}

#[test]
fn encrypted_offsite_repository_holds_no_plaintext() {
    let t = tempfile::tempdir().unwrap();
    let pki = pki(&t.path().join("pki"));
    let src = t.path().join("src");
    source_tree(&src, 23);
    let key = t.path().join("offsite.key");
    let key_s = key.to_str().unwrap();
    let repo = t.path().join("offsite");
    let mut serve = Serve::start(&repo, &pki, t.path().join("serve.log"));
    let url = serve.url.clone();
    run_ok(
        "palisade-replicator",
        &peer_args(
            &pki,
            "site-a",
            &["init", &url, "--encrypt", "--key-file", key_s],
        ),
    );
    backup(&pki, &url, &src, &["--key-file", key_s]);

    let out = t.path().join("restored");
    run_ok(
        "palisade-replicator",
        &peer_args(
            &pki,
            "site-a",
            &[
                "-r",
                &url,
                "restore",
                "latest",
                "--to",
                out.to_str().unwrap(),
                "--quiet",
                "--key-file",
                key_s,
            ],
        ),
    );
    assert_same_tree(&src, &out);
    serve.stop();

    // Nothing the off-site operator holds shows the marker.
    let mut files = 0;
    let mut stack = vec![repo.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files += 1;
            let bytes = fs::read(&p).unwrap();
            assert!(
                !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
                "{} holds plaintext",
                p.display()
            );
        }
    }
    assert!(files > 3, "the repository is nearly empty ({files} files)");
    verify_read_data(&repo);
}

#[test]
fn interrupted_transfer_resumes_without_resending_what_landed() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = fastrand::Rng::with_seed(24);
    for f in 0..4 {
        let data: Vec<u8> = (0..1_000_000).map(|_| rng.u8(..)).collect();
        fs::write(src.join(format!("r{f}")), data).unwrap();
    }
    let size = tree_size(&src);
    let repo = t.path().join("offsite");
    let (pki, serve) = served(t.path(), &repo, &[]);
    let url = serve.url.clone();
    // Capped at 1 MiB/s, each request carries about 1 MiB and lands as one pack.
    let mut child = Command::new(bin("palisade-replicator"))
        .args(peer_args(
            &pki,
            "site-a",
            &[
                "backup",
                src.to_str().unwrap(),
                "--to",
                &url,
                "--quiet",
                "--limit-rate",
                "1m",
            ],
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let landed = palisade_tests::wait_for(Duration::from_secs(20), || {
        let n = fs::read_dir(repo.join("index"))
            .ok()?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
            })
            .count();
        (n >= 2).then_some(n)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(landed.is_some(), "no pack landed in time");
    let snaps = fs::read_dir(repo.join("snapshots")).unwrap().count();
    assert_eq!(snaps, 0, "the killed backup finished before it was killed");

    let again = backup(&pki, &url, &src, &[]);
    let sent = again["bytes_sent"].as_u64().unwrap();
    assert!(
        sent < size * 3 / 4,
        "the resumed backup sent {sent} of {size} bytes: {again}"
    );
    let out = t.path().join("restored");
    assert_latest_restores(Some(&pki), &url, &src, &out);
}

#[test]
fn serve_sees_a_prune_run_beside_it_and_never_commits_a_snapshot_with_holes() {
    // The off-site's usual life: `serve` runs for weeks while `prune` runs from cron on the same
    // repository. Packs prune deletes must stop counting as present for the running server, or
    // the next backup of that data sends nothing and commits a snapshot naming deleted blobs.
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    source_tree(&src, 31);
    let repo = t.path().join("offsite");
    let (pki, mut serve) = served(t.path(), &repo, &["--chunk-kib", "16"]);
    let url = serve.url.clone();
    backup(&pki, &url, &src, &[]);
    // Then something sharing no chunk with it, so the first backup's packs become unused.
    fs::remove_dir_all(&src).unwrap();
    fs::create_dir_all(&src).unwrap();
    let mut other = vec![0u8; 200_000];
    fastrand::Rng::with_seed(32).fill(&mut other);
    fs::write(src.join("other.bin"), other).unwrap();
    backup(&pki, &url, &src, &[]);

    // Forget the first snapshot; the first prune marks its packs, the second deletes them.
    let prune = || {
        json(&run_ok(
            "palisade-replicator",
            &[
                "-r",
                repo.to_str().unwrap(),
                "prune",
                "--keep-last",
                "1",
                "--grace-secs",
                "0",
                "--output-format",
                "json",
            ],
        ))
    };
    let marked = prune();
    assert!(marked["packs_marked"].as_u64().unwrap() > 0, "{marked}");
    let deleted = prune();
    assert!(deleted["packs_deleted"].as_u64().unwrap() > 0, "{deleted}");

    // The first tree again: every chunk of it must cross again, since its packs are gone.
    fs::remove_dir_all(&src).unwrap();
    source_tree(&src, 31);
    let again = backup(&pki, &url, &src, &[]);
    assert!(
        again["bytes_sent"].as_u64().unwrap() > tree_size(&src) / 4,
        "the server still counted pruned blobs as present: {again}"
    );
    serve.stop();
    verify_read_data(&repo);
    let out = t.path().join("restored");
    assert_latest_restores(None, repo.to_str().unwrap(), &src, &out);
}

#[test]
fn a_revoked_replicator_certificate_is_refused_without_restarting_serve() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    source_tree(&src, 51);
    let repo = t.path().join("offsite");
    let (pki, serve) = served(t.path(), &repo, &[]);
    let url = serve.url.clone();
    let serial = pki.issue("replicator", "site-b");
    let snapshots = |who: &str| {
        run(
            "palisade-replicator",
            &peer_args(
                &pki,
                who,
                &["-r", &url, "snapshots", "--output-format", "json"],
            ),
        )
    };
    // Before: both sites may talk to it (exit 1 = no snapshot yet, i.e. the call went through).
    assert_eq!(snapshots("site-b").status.code(), Some(1));
    pki.revoke(&serial);
    let out = snapshots("site-b");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "revoked site-b still served: {err}"
    );
    assert!(
        err.contains("CertificateRevoked"),
        "the error says why: {err}"
    );
    // A refusal is not a network failure: not tried again, and no hint that a retry may help.
    assert!(
        !err.contains("trying again") && !err.contains("retrying later may help"),
        "a refused certificate was treated as a transient failure: {err}"
    );
    let out = run(
        "palisade-replicator",
        &peer_args(
            &pki,
            "site-b",
            &["backup", src.to_str().unwrap(), "--to", &url, "--quiet"],
        ),
    );
    assert_eq!(out.status.code(), Some(2), "revoked site-b could back up");
    // Everyone else is unaffected.
    backup(&pki, &url, &src, &[]);
    assert_eq!(snapshots("site-a").status.code(), Some(0));
}
