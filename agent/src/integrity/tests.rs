use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::config::{Attr, IntegrityConfig, PathConfig, Protect};
use super::verify::{self, Change};
use super::walk::{Root, WalkOptions};
use super::*;

const OPTS: WalkOptions<'static> = WalkOptions {
    threads: 2,
    hash: true,
    progress: None,
};

pub(crate) fn config_for(root: &Path, protect: Protect) -> IntegrityConfig {
    IntegrityConfig {
        paths: vec![PathConfig {
            path: root.to_path_buf(),
            protect,
            include: Vec::new(),
            exclude: vec!["**/*.log".into()],
            follow_symlinks: false,
            cross_filesystems: false,
            check: None,
        }],
        threads: 2,
        ..Default::default()
    }
}

/// A temp dir with the test tree under `www`, its config, and a baseline taken.
struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    c: IntegrityConfig,
    layout: Layout,
    files: u64,
}

fn fixture(protect: Protect) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    tree(&root);
    let c = config_for(&root, protect);
    let layout = Layout {
        dir: dir.path().join("state"),
    };
    let files = create_baseline(&c, &layout, "t", "init", None, None)
        .unwrap()
        .baseline
        .header
        .files;
    Fixture {
        dir,
        root,
        c,
        layout,
        files,
    }
}

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>hello</h1>").unwrap();
    std::fs::write(root.join("a/one.txt"), "one").unwrap();
    std::fs::write(root.join("a/b/two.txt"), "two").unwrap();
    std::fs::write(root.join("skip.log"), "noise").unwrap();
    std::os::unix::fs::symlink("index.html", root.join("link")).unwrap();
}

fn verify_now(c: &IntegrityConfig, layout: &Layout) -> verify::Report {
    let db = open_baseline(c, layout).unwrap();
    let roots = Root::all(c).unwrap();
    verify::verify_all(&db, &roots, OPTS).unwrap()
}

fn changes(r: &verify::Report) -> Vec<(String, Change)> {
    r.findings
        .iter()
        .map(|f| {
            (
                f.path.file_name().unwrap().to_string_lossy().into_owned(),
                f.change,
            )
        })
        .collect()
}

#[test]
fn verify_reports_added_removed_changed_and_type_changes() {
    let Fixture {
        dir: _dir,
        root,
        c,
        layout,
        files,
    } = fixture(Protect::Alert);
    assert_eq!(files, 4, "index, one, two, link (skip.log excluded)");
    assert_eq!(verify_now(&c, &layout).findings.len(), 0);

    std::fs::write(root.join("a/one.txt"), "ONE!").unwrap();
    std::fs::write(root.join("new.php"), "<?php").unwrap();
    std::fs::remove_file(root.join("a/b/two.txt")).unwrap();
    std::fs::remove_file(root.join("index.html")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("index.html")).unwrap();
    std::fs::write(root.join("skip.log"), "more noise").unwrap();
    let r = verify_now(&c, &layout);
    assert_eq!(
        changes(&r),
        vec![
            ("two.txt".to_string(), Change::Removed),
            ("one.txt".to_string(), Change::Changed),
            ("index.html".to_string(), Change::TypeChanged),
            ("new.php".to_string(), Change::Added),
        ]
    );
    let one = &r.findings[1];
    assert!(one.attrs.contains(Attr::Content) && one.attrs.contains(Attr::Size));
    assert_eq!(r.exit_code(), 1 | 2 | 4);
}

#[test]
fn a_removed_directory_reports_every_file_below_it() {
    let Fixture {
        dir: _dir,
        root,
        c,
        layout,
        ..
    } = fixture(Protect::Alert);
    std::fs::remove_dir_all(root.join("a")).unwrap();
    let r = verify_now(&c, &layout);
    assert_eq!(
        changes(&r),
        vec![
            ("a".to_string(), Change::Removed),
            ("b".to_string(), Change::Removed),
            ("two.txt".to_string(), Change::Removed),
            ("one.txt".to_string(), Change::Removed),
        ]
    );
    assert_eq!(r.exit_code(), 2);
}

#[test]
fn an_edited_or_resigned_baseline_is_refused() {
    let Fixture { dir, c, layout, .. } = fixture(Protect::Alert);
    let db = layout.db();
    let good = std::fs::read(&db).unwrap();
    // One flipped bit anywhere in the body.
    for at in [3, 20, good.len() / 2, good.len() - 70] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        std::fs::write(&db, &bad).unwrap();
        let err = open_baseline(&c, &layout).unwrap_err().to_string();
        assert!(
            err.contains("refused") || err.contains("malformed"),
            "byte {at}: {err}"
        );
    }
    // Truncated: unsigned.
    std::fs::write(&db, &good[..good.len() - 64]).unwrap();
    assert!(open_baseline(&c, &layout).is_err());
    // Re-signed with another key: refused when the key is pinned (or is the agent's own).
    std::fs::write(&db, &good).unwrap();
    let other = Layout {
        dir: dir.path().join("other"),
    };
    create_baseline(&c, &other, "t", "init", None, None).unwrap();
    std::fs::copy(other.db(), &db).unwrap();
    let err = open_baseline(&c, &layout).unwrap_err().to_string();
    assert!(err.contains("not the pinned key"), "{err}");
}

#[test]
fn update_of_one_path_accepts_it_and_keeps_the_rest() {
    let Fixture {
        dir: _dir,
        root,
        c,
        layout,
        ..
    } = fixture(Protect::Alert);
    std::fs::write(root.join("a/one.txt"), "approved").unwrap();
    std::fs::write(root.join("a/b/two.txt"), "not approved").unwrap();
    std::fs::write(root.join("fresh.txt"), "approved too").unwrap();
    let old = open_baseline(&c, &layout).unwrap();
    let out = update_paths(
        &c,
        &layout,
        &old,
        &[root.join("a/one.txt"), root.join("fresh.txt")],
        "update",
        Some("alice".into()),
    )
    .unwrap();
    assert_eq!(out.baseline.header.generation, 2);
    assert_eq!(out.baseline.header.approved_by.as_deref(), Some("alice"));
    let r = verify_now(&c, &layout);
    assert_eq!(changes(&r), vec![("two.txt".to_string(), Change::Changed)]);
}

#[test]
fn verify_paths_checks_only_what_it_is_given() {
    let Fixture {
        dir: _dir,
        root,
        c,
        layout,
        ..
    } = fixture(Protect::Alert);
    std::fs::write(root.join("a/one.txt"), "x").unwrap();
    std::fs::create_dir_all(root.join("new/deep/er")).unwrap();
    std::fs::write(root.join("new/deep/er/shell.php"), "<?php").unwrap();
    std::fs::write(root.join("index.html"), "defaced").unwrap();
    let db = open_baseline(&c, &layout).unwrap();
    let roots = Root::all(&c).unwrap();
    let r = verify::verify_paths(
        &db,
        &roots,
        &[root.join("new"), root.join("index.html")],
        &|_| true,
        OPTS,
    )
    .unwrap();
    let got: Vec<PathBuf> = r.findings.iter().map(|f| f.path.clone()).collect();
    assert_eq!(
        got,
        vec![
            root.join("index.html"),
            root.join("new"),
            root.join("new/deep"),
            root.join("new/deep/er"),
            root.join("new/deep/er/shell.php"),
        ]
    );
}

#[test]
fn restore_puts_a_protected_tree_back() {
    let Fixture {
        dir: _dir,
        root,
        c,
        layout,
        ..
    } = fixture(Protect::Restore);
    let store = store::Store::open(&layout.store()).unwrap();
    let quarantine = quarantine::Quarantine::open(&layout.quarantine()).unwrap();
    std::fs::write(root.join("index.html"), "defaced").unwrap();
    std::fs::set_permissions(
        root.join("a/one.txt"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    std::fs::remove_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("shell.php"), "<?php eval($_POST[1]);").unwrap();
    let r = verify_now(&c, &layout);
    assert_eq!(r.findings.len(), 5, "{:?}", changes(&r));
    for f in &r.findings {
        restore::respond(f, &store, &quarantine).unwrap();
    }
    assert_eq!(verify_now(&c, &layout).findings.len(), 0);
    assert_eq!(
        std::fs::read_to_string(root.join("index.html")).unwrap(),
        "<h1>hello</h1>"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("a/b/two.txt")).unwrap(),
        "two"
    );
    let items = quarantine.list().unwrap();
    assert_eq!(items.len(), 1);
    let item = items[0].as_ref().unwrap();
    assert_eq!(item.original_path, root.join("shell.php"));
    // Round trip out of quarantine.
    let back = quarantine.restore(&item.id, None, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(back).unwrap(),
        "<?php eval($_POST[1]);"
    );
    assert!(quarantine.list().unwrap().is_empty());
}

#[test]
fn a_corrupt_known_good_copy_is_not_restored() {
    let Fixture {
        dir: _dir,
        root,
        c,
        layout,
        ..
    } = fixture(Protect::Restore);
    let store = store::Store::open(&layout.store()).unwrap();
    let quarantine = quarantine::Quarantine::open(&layout.quarantine()).unwrap();
    let obj = store.object_path(blake3::hash(b"<h1>hello</h1>").as_bytes());
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&obj, "<h1>planted</h1>").unwrap();
    std::fs::write(root.join("index.html"), "defaced").unwrap();
    let r = verify_now(&c, &layout);
    let err = restore::respond(&r.findings[0], &store, &quarantine).unwrap_err();
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(
        std::fs::read_to_string(root.join("index.html")).unwrap(),
        "defaced"
    );
}

#[test]
fn verify_paths_of_single_files_reports_nothing_else() {
    // Regression: with no directory to walk, the "sections never reached" sweep covered the
    // whole baseline and reported every file removed.
    let Fixture {
        dir: _dir,
        root,
        c,
        layout,
        ..
    } = fixture(Protect::Alert);
    std::fs::write(root.join("a/one.txt"), "changed").unwrap();
    let db = open_baseline(&c, &layout).unwrap();
    let roots = Root::all(&c).unwrap();
    for deep in [true, false] {
        let r =
            verify::verify_paths(&db, &roots, &[root.join("a/one.txt")], &|_| deep, OPTS).unwrap();
        assert_eq!(changes(&r), vec![("one.txt".to_string(), Change::Changed)]);
        // A watched directory's own event checks its entry only (nothing changed there).
        let r = verify::verify_paths(
            &db,
            &roots,
            &[root.join("a"), root.clone()],
            &|_| deep,
            OPTS,
        )
        .unwrap();
        let want = if deep {
            vec![("one.txt".to_string(), Change::Changed)]
        } else {
            Vec::new()
        };
        assert_eq!(changes(&r), want, "deep = {deep}");
    }
}
