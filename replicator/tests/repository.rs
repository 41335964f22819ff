//! The repository's promises, through the library on real files: round trips over random trees
//! and edits, damage found, manifests that try to escape refused, encryption at rest, and prune
//! beside backups.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use palisade_replicator::backup::{backup, BackupOptions, BackupReport};
use palisade_replicator::chunk::{ChunkerParams, Id};
use palisade_replicator::error::Error;
use palisade_replicator::prune::{prune, PruneOptions};
use palisade_replicator::repo::format::Blob;
use palisade_replicator::repo::keys::Keys;
use palisade_replicator::repo::snapshot::{self, KeepPolicy, Snapshot};
use palisade_replicator::repo::tree::{Kind, Node, Tree};
use palisade_replicator::repo::{encode_blob, new_config, InitOptions, Repository, Store};
use palisade_replicator::restore::{restore, RestoreOptions};
use palisade_replicator::verify::verify;
use proptest::prelude::*;

fn small_chunks() -> ChunkerParams {
    ChunkerParams {
        min_bytes: 1024,
        avg_bytes: 4096,
        max_bytes: 16384,
        seed: 42,
    }
}

fn new_repo(dir: &Path, key_file: Option<PathBuf>) -> (Repository, Keys) {
    let config = new_config(&InitOptions {
        key_file: key_file.clone(),
        compression_level: 3,
        chunker: small_chunks(),
    })
    .unwrap();
    let repo = Repository::init(dir, &config).unwrap();
    let keys = repo.config().keys(key_file.as_deref()).unwrap().unwrap();
    (repo, keys)
}

fn run_backup(repo: &Repository, keys: &Keys, src: &Path) -> BackupReport {
    backup(
        repo,
        keys,
        &BackupOptions {
            source: src.to_path_buf(),
            host: "test".into(),
            threads: 2,
            ..BackupOptions::default()
        },
    )
    .unwrap()
}

fn run_restore(repo: &Repository, keys: &Keys, snap: &str, to: &Path) -> Result<(), Error> {
    restore_with(repo, keys, snap, to, false)
}

fn restore_with(
    repo: &Repository,
    keys: &Keys,
    snap: &str,
    to: &Path,
    delete: bool,
) -> Result<(), Error> {
    let snaps = snapshot::list(repo, Some(keys))?;
    let (id, s) = snapshot::select(&snaps, snap, i64::MAX)?;
    restore(
        repo,
        keys,
        &id,
        &s.tree,
        &RestoreOptions {
            target: to.to_path_buf(),
            threads: 2,
            delete,
            ..RestoreOptions::default()
        },
    )
    .map(|_| ())
}

/// Every entry under `root`: path → (kind, blake3 of content or link target, mode).
fn tree_state(root: &Path) -> BTreeMap<String, (char, String, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.insert(rel, ('l', t.display().to_string(), 0));
            } else if m.is_dir() {
                out.insert(rel, ('d', String::new(), mode));
                stack.push(p);
            } else {
                let data = fs::read(&p).unwrap();
                let sum = blake3::hash(&data).to_hex()[..12].to_string();
                out.insert(rel, ('f', format!("{sum} {}", data.len()), mode));
            }
        }
    }
    out
}

/// A file operation of the property test.
#[derive(Clone, Debug)]
enum Op {
    Write {
        dir: u8,
        name: u8,
        len: usize,
        seed: u64,
    },
    Append {
        dir: u8,
        name: u8,
        len: usize,
    },
    Delete {
        dir: u8,
        name: u8,
    },
    Link {
        dir: u8,
        name: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 0u8..6, 0usize..200_000, any::<u64>())
            .prop_map(|(dir, name, len, seed)| Op::Write { dir, name, len, seed }),
        2 => (0u8..4, 0u8..6, 1usize..50_000).prop_map(|(dir, name, len)| Op::Append { dir, name, len }),
        1 => (0u8..4, 0u8..6).prop_map(|(dir, name)| Op::Delete { dir, name }),
        1 => (0u8..4, 0u8..6).prop_map(|(dir, name)| Op::Link { dir, name }),
    ]
}

fn apply(root: &Path, ops: &[Op]) {
    let dirs = ["", "a", "a/b", "c"];
    let path = |d: u8, n: u8| {
        let dir = root.join(dirs[d as usize]);
        fs::create_dir_all(&dir).unwrap();
        dir.join(format!("f{n}"))
    };
    for op in ops {
        match op {
            Op::Write {
                dir,
                name,
                len,
                seed,
            } => {
                let p = path(*dir, *name);
                let _ = fs::remove_file(&p);
                // Half compressible text, half random: both code paths of the encoder.
                let mut rng = fastrand::Rng::with_seed(*seed);
                let data: Vec<u8> = if seed % 2 == 0 {
                    (0..*len).map(|i| b"palisade replicator "[i % 20]).collect()
                } else {
                    (0..*len).map(|_| rng.u8(..)).collect()
                };
                fs::write(&p, data).unwrap();
                fs::set_permissions(
                    &p,
                    fs::Permissions::from_mode(0o640 | ((*name as u32 % 2) * 0o100)),
                )
                .unwrap();
            }
            Op::Append { dir, name, len } => {
                let p = path(*dir, *name);
                if fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                    use std::io::Write;
                    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
                    f.write_all(&vec![b'x'; *len]).unwrap();
                }
            }
            Op::Delete { dir, name } => {
                let _ = fs::remove_file(path(*dir, *name));
            }
            Op::Link { dir, name } => {
                let p = path(*dir, *name);
                let _ = fs::remove_file(&p);
                // A link that stays inside the tree.
                symlink(format!("f{}", (name + 1) % 6), &p).unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random trees, random edits: every snapshot restores to exactly what was backed up.
    #[test]
    fn restore_equals_source_after_random_edits(
        first in prop::collection::vec(op(), 1..25),
        second in prop::collection::vec(op(), 1..15),
    ) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        let (repo, keys) = new_repo(&t.path().join("repo"), None);
        apply(&src, &first);
        let s1 = run_backup(&repo, &keys, &src);
        let state1 = tree_state(&src);
        apply(&src, &second);
        let s2 = run_backup(&repo, &keys, &src);
        let state2 = tree_state(&src);
        for (snap, state, out) in [(&s1.snapshot, &state1, "out1"), (&s2.snapshot, &state2, "out2")] {
            let out = t.path().join(out);
            run_restore(&repo, &keys, snap, &out).unwrap();
            prop_assert_eq!(&tree_state(&out), state);
        }
        // Restoring the older snapshot over the newer one (with --delete) reuses what matches
        // and still equals it.
        restore_with(&repo, &keys, &s1.snapshot, &t.path().join("out2"), true).unwrap();
        prop_assert_eq!(&tree_state(&t.path().join("out2")), &state1);
        let v = verify(&repo, Some(&keys), true).unwrap();
        prop_assert!(v.errors.is_empty(), "{:?}", v.errors);
    }
}

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("www/html")).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let big: Vec<u8> = (0..400_000).map(|_| rng.u8(..)).collect();
    fs::write(root.join("www/html/app.bin"), &big).unwrap();
    fs::write(
        root.join("www/html/index.html"),
        "<html>GOV-PORTAL-MARKER</html>\n".repeat(200),
    )
    .unwrap();
    fs::write(root.join("www/empty"), b"").unwrap();
    symlink("html/index.html", root.join("www/home")).unwrap();
}

#[test]
fn a_flipped_bit_in_a_stored_chunk_is_found_by_verify_and_refused_by_restore() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let (repo, keys) = new_repo(&t.path().join("repo"), None);
    run_backup(&repo, &keys, &src);
    assert!(verify(&repo, Some(&keys), true).unwrap().errors.is_empty());
    // Damage one data blob.
    let (id, loc) = repo
        .all_blobs()
        .into_iter()
        .find(|(_, l)| l.entry.header.flags & 4 == 0 && l.entry.header.stored_len > 1000)
        .unwrap();
    repo.flip_bit(&loc).unwrap();
    let v = verify(&repo, Some(&keys), true).unwrap();
    assert!(
        v.errors
            .iter()
            .any(|e| e.contains(&id.short()) && e.contains("does not match")),
        "{:?}",
        v.errors
    );
    // Every chunk of the damaged record (a frame holds several) is reported, and nothing else.
    let mut record: Vec<String> = repo
        .all_blobs()
        .iter()
        .filter(|(_, l)| l.pack == loc.pack && l.entry.offset == loc.entry.offset)
        .map(|(i, _)| i.hex())
        .collect();
    record.sort();
    assert!(record.contains(&id.hex()));
    assert_eq!(v.damaged_blobs, record);
    // Without --read-data the structure still checks out: only reading finds rot.
    assert!(verify(&repo, Some(&keys), false).unwrap().errors.is_empty());
    let e = run_restore(&repo, &keys, "latest", &t.path().join("out")).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

/// Stores a hand-made tree (as a hostile peer or an edited repository would) and snapshots it.
fn store_tree(repo: &Repository, keys: &Keys, entries: Vec<Node>) -> Id {
    let json = serde_json::to_vec(&Tree { entries }).unwrap();
    let blob = encode_blob(repo.config(), keys, &json, true).unwrap();
    repo.write_pack(std::slice::from_ref(&blob)).unwrap();
    blob.header.id
}

fn node(name: &str, kind: Kind) -> Node {
    Node {
        name: name.into(),
        name_hex: None,
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        inode: 0,
        size: 0,
        target: None,
        xattrs: vec![],
        chunks: vec![],
        subtree: None,
    }
}

fn snapshot_of(repo: &Repository, keys: &Keys, tree: Id) -> String {
    let s = Snapshot {
        time_ns: 1,
        host: "evil".into(),
        site: None,
        source: "/".into(),
        tree,
        parent: None,
        tags: vec![],
        files: 0,
        dirs: 0,
        bytes: 0,
    };
    repo.put_snapshot(&s.encode(keys).unwrap()).unwrap()
}

#[test]
fn manifests_that_escape_the_target_are_refused_before_anything_is_written() {
    let t = tempfile::tempdir().unwrap();
    let (repo, keys) = new_repo(&t.path().join("repo"), None);
    let empty = store_tree(&repo, &keys, vec![]);
    let mut link_out = node("etc", Kind::Symlink);
    link_out.target = Some("../../outside".into());
    let mut abs_link = node("passwd", Kind::Symlink);
    abs_link.target = Some("/etc/passwd".into());
    let mut dir_a = node("a", Kind::Dir);
    dir_a.subtree = Some(empty);
    let mut link_a = node("a", Kind::Symlink);
    link_a.target = Some("/tmp".into());
    let cases: Vec<(&str, Vec<Node>, &str)> = vec![
        ("dot-dot", vec![node("..", Kind::File)], "`.` or `..`"),
        (
            "absolute",
            vec![node("/etc/cron.d/x", Kind::File)],
            "a `/` in a name",
        ),
        (
            "nested",
            vec![node("a/../../x", Kind::File)],
            "a `/` in a name",
        ),
        ("duplicate", vec![link_a, dir_a.clone()], "appears twice"),
        (
            "symlink escape",
            vec![dir_a.clone(), link_out],
            "points outside the restore target",
        ),
        (
            "absolute symlink",
            vec![abs_link],
            "points outside the restore target",
        ),
    ];
    for (what, entries, expect) in cases {
        let root = store_tree(&repo, &keys, entries);
        let id = snapshot_of(&repo, &keys, root);
        let out = t.path().join(format!("out-{}", what.replace(' ', "-")));
        let e = run_restore(&repo, &keys, &id, &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains(expect), "{what}: {e}");
        // Refused before the first write: the target holds nothing.
        let written = fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
        assert_eq!(written, 0, "{what}: something was written");
    }
    assert!(!t.path().join("outside").exists());
}

#[test]
fn restore_replaces_a_planted_symlink_instead_of_writing_through_it() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let (repo, keys) = new_repo(&t.path().join("repo"), None);
    run_backup(&repo, &keys, &src);
    let out = t.path().join("out");
    let victim = t.path().join("victim");
    fs::create_dir_all(out.join("www")).unwrap();
    fs::create_dir_all(&victim).unwrap();
    // An attacker (or a previous tamper) put a symlink where a directory will be restored.
    symlink(&victim, out.join("www/html")).unwrap();
    run_restore(&repo, &keys, "latest", &out).unwrap();
    assert_eq!(
        fs::read_dir(&victim).unwrap().count(),
        0,
        "wrote through the symlink"
    );
    assert_eq!(tree_state(&out), tree_state(&src));
}

#[test]
fn an_encrypted_repository_holds_no_plaintext_and_needs_its_key() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let key = t.path().join("repo.key");
    let (repo, keys) = new_repo(&t.path().join("repo"), Some(key.clone()));
    assert!(repo.config().encrypted());
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    run_backup(&repo, &keys, &src);
    let mut stack = vec![t.path().join("repo")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = fs::read(&p).unwrap();
                assert!(
                    !bytes.windows(17).any(|w| w == b"GOV-PORTAL-MARKER"),
                    "plaintext in {}",
                    p.display()
                );
            }
        }
    }
    // Without the key: store-only (bytes verify), nothing readable.
    assert!(repo.config().keys(None).unwrap().is_none());
    let v = verify(&repo, None, true).unwrap();
    assert!(v.errors.is_empty() && !v.content_checked, "{v:?}");
    // With another key: refused by name.
    let other = t.path().join("other.key");
    palisade_replicator::repo::keys::create_key_file(&other).unwrap();
    let e = repo.config().keys(Some(&other)).unwrap_err().to_string();
    assert!(e.contains("does not open this repository"), "{e}");
    // With the key: byte-identical.
    let out = t.path().join("out");
    run_restore(&repo, &keys, "latest", &out).unwrap();
    assert_eq!(tree_state(&out), tree_state(&src));
}

#[test]
fn prune_marks_then_deletes_and_a_backup_in_between_keeps_its_data() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let (repo, keys) = new_repo(&t.path().join("repo"), None);
    let old = run_backup(&repo, &keys, &src);
    // Replace everything: the first snapshot's data becomes garbage once it is forgotten.
    fs::remove_dir_all(&src).unwrap();
    fs::create_dir_all(src.join("new")).unwrap();
    fs::write(src.join("new/file"), vec![9u8; 300_000]).unwrap();
    let newer = run_backup(&repo, &keys, &src);
    let opts = PruneOptions {
        policy: KeepPolicy {
            last: 1,
            ..KeepPolicy::default()
        },
        grace_secs: 3600,
        dry_run: false,
    };
    let r = prune(&repo, &keys, &opts).unwrap();
    assert_eq!(r.forgotten, vec![old.snapshot.clone()]);
    assert!(r.packs_marked > 0 && r.packs_deleted == 0, "{r:?}");
    // A backup of the old content after the mark stores fresh copies instead of leaning on
    // marked packs...
    let src2 = t.path().join("src2");
    sample_tree(&src2);
    let again = run_backup(&repo, &keys, &src2);
    assert!(again.blobs_new > 0, "{again:?}");
    // ...so deleting the marked packs (grace over) loses nothing.
    let r = prune(
        &repo,
        &keys,
        &PruneOptions {
            grace_secs: 0,
            policy: KeepPolicy {
                last: 2,
                ..KeepPolicy::default()
            },
            ..opts
        },
    )
    .unwrap();
    assert!(r.packs_deleted > 0, "{r:?}");
    let repo = Repository::open(&t.path().join("repo")).unwrap();
    let v = verify(&repo, Some(&keys), true).unwrap();
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    let out = t.path().join("out");
    run_restore(&repo, &keys, &again.snapshot, &out).unwrap();
    assert_eq!(tree_state(&out), tree_state(&src2));
    run_restore(&repo, &keys, &newer.snapshot, &t.path().join("out-new")).unwrap();
}

#[test]
fn a_long_running_process_sees_what_a_prune_beside_it_deleted() {
    // `serve` or a backup that outlives the grace period holds an index loaded before a prune
    // run by another process; its last check before committing must see the repository as it
    // is now.
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let (repo, keys) = new_repo(&t.path().join("repo"), None);
    let old = run_backup(&repo, &keys, &src);
    let long_running = Repository::open(&t.path().join("repo")).unwrap();
    let old_ids: Vec<Id> = long_running.known_ids().unwrap().into_iter().collect();
    fs::remove_dir_all(&src).unwrap();
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("other"), vec![7u8; 100_000]).unwrap();
    run_backup(&repo, &keys, &src);
    let opts = |grace_secs| PruneOptions {
        policy: KeepPolicy {
            last: 1,
            ..KeepPolicy::default()
        },
        grace_secs,
        dry_run: false,
    };
    let marked = prune(&repo, &keys, &opts(0)).unwrap();
    assert_eq!(marked.forgotten, vec![old.snapshot]);
    assert!(marked.packs_marked > 0, "{marked:?}");
    // Marked but not deleted: still held (the second phase re-checks snapshots first), though
    // `missing` already tells a sender to store fresh copies.
    assert!(long_running.lost(&old_ids).unwrap().is_empty());
    assert!(!long_running.missing(&old_ids).unwrap().is_empty());
    let deleted = prune(&repo, &keys, &opts(0)).unwrap();
    assert!(deleted.packs_deleted > 0, "{deleted:?}");
    let lost = long_running.lost(&old_ids).unwrap();
    assert!(!lost.is_empty(), "deleted blobs still counted as held");
    assert_eq!(
        long_running.missing(&lost).unwrap(),
        lost,
        "missing after the refresh"
    );
}

#[test]
fn point_in_time_restore_picks_the_snapshot_before_the_tamper() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sample_tree(&src);
    let (repo, keys) = new_repo(&t.path().join("repo"), None);
    run_backup(&repo, &keys, &src);
    let clean = tree_state(&src);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let between = palisade_wire::event::Timestamp::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(src.join("www/html/index.html"), "defaced").unwrap();
    run_backup(&repo, &keys, &src);
    let snaps = snapshot::list(&repo, Some(&keys)).unwrap();
    let at = between.to_string();
    let (id, _) = snapshot::select(&snaps, &at, i64::MAX).unwrap();
    let out = t.path().join("out");
    run_restore(&repo, &keys, &id, &out).unwrap();
    assert_eq!(tree_state(&out), clean);
}

/// A store that counts record reads, around a local repository.
struct Counting<'a> {
    repo: &'a Repository,
    reads: std::sync::atomic::AtomicUsize,
}

impl Store for Counting<'_> {
    fn config(&self) -> &palisade_replicator::repo::Config {
        self.repo.config()
    }
    fn location(&self) -> String {
        self.repo.location()
    }
    fn known_ids(&self) -> palisade_replicator::Result<std::collections::HashSet<Id>> {
        self.repo.known_ids()
    }
    fn missing(&self, ids: &[Id]) -> palisade_replicator::Result<Vec<Id>> {
        self.repo.missing(ids)
    }
    fn put_blobs(&self, blobs: &[Blob]) -> palisade_replicator::Result<u64> {
        self.repo.put_blobs(blobs)
    }
    fn read_stored(&self, id: &Id) -> palisade_replicator::Result<Blob> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.repo.read_stored(id)
    }
    fn put_snapshot(&self, stored: &[u8]) -> palisade_replicator::Result<String> {
        self.repo.put_snapshot(stored)
    }
    fn snapshot_files(&self) -> palisade_replicator::Result<Vec<(String, Vec<u8>)>> {
        self.repo.snapshot_files()
    }
}

#[test]
fn new_chunks_are_compressed_together_in_frames_and_each_frame_is_read_once_by_restore() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("logs")).unwrap();
    // Compressible data across many chunks and files: a log of varied lines, and small files.
    let mut rng = fastrand::Rng::with_seed(11);
    let mut log = String::new();
    while log.len() < 3 << 20 {
        log.push_str(&format!(
            "2026-12-05T02:{:02}:{:02}Z host-{} sshd[{}]: Failed password for user{} from 10.{}.{}.{} port {}\n",
            rng.u8(..60), rng.u8(..60), rng.u8(..8), rng.u32(..99999), rng.u16(..500),
            rng.u8(..), rng.u8(..), rng.u8(..), rng.u16(1024..)
        ));
    }
    fs::write(src.join("logs/auth.log"), &log).unwrap();
    for i in 0..40 {
        fs::write(
            src.join(format!("logs/small-{i}.txt")),
            &log[i * 997..i * 997 + 3000],
        )
        .unwrap();
    }
    let (repo, keys) = new_repo(&t.path().join("repo"), Some(t.path().join("key")));
    let report = run_backup(&repo, &keys, &src);

    // Frames hold many chunks each, so far fewer records than chunks.
    let blobs = repo.all_blobs();
    let data: Vec<_> = blobs
        .iter()
        .filter(|(_, l)| l.entry.header.flags & 4 == 0)
        .collect();
    let records: std::collections::HashSet<_> =
        data.iter().map(|(_, l)| (l.pack, l.entry.offset)).collect();
    assert!(data
        .iter()
        .all(|(_, l)| l.entry.members > 0 || l.entry.part_len == l.entry.header.raw_len));
    assert!(
        records.len() * 20 < data.len(),
        "{} records for {} chunks",
        records.len(),
        data.len()
    );
    // Compressed as frames, the log shrinks far more than chunk by chunk (4 KiB chunks here).
    let mut one_by_one = 0usize;
    for (id, _) in &data {
        let plain = {
            let b = repo.read_stored(id).unwrap();
            palisade_replicator::repo::decode_blob(&keys, &b, id).unwrap()
        };
        one_by_one += zstd::bulk::compress(&plain, 3).unwrap().len();
    }
    assert!(
        (report.bytes_stored as usize) * 10 < one_by_one * 9,
        "frames stored {} bytes, chunk by chunk would be {one_by_one}",
        report.bytes_stored
    );

    // Restore reads each frame once, not once per chunk.
    let counting = Counting {
        repo: &repo,
        reads: Default::default(),
    };
    let snaps = snapshot::list(&repo, Some(&keys)).unwrap();
    let (id, s) = snapshot::select(&snaps, "latest", i64::MAX).unwrap();
    restore(
        &counting,
        &keys,
        &id,
        &s.tree,
        &RestoreOptions {
            target: t.path().join("out"),
            threads: 2,
            ..RestoreOptions::default()
        },
    )
    .unwrap();
    assert_eq!(tree_state(&src), tree_state(&t.path().join("out")));
    let reads = counting.reads.into_inner();
    let trees = blobs.len() - data.len();
    assert!(
        reads <= records.len() * 2 + trees,
        "{reads} reads for {} frames and {trees} trees",
        records.len()
    );
    let v = verify(&repo, Some(&keys), true).unwrap();
    assert!(v.errors.is_empty(), "{:?}", v.errors);
}
