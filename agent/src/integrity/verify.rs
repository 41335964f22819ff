//! Comparing the live trees with the baseline: everywhere (`verify`, the periodic full check),
//! or below a set of paths (what realtime found dirty). Both walk the live side with the same
//! parallel walker and compare one directory at a time with the baseline's section of it; a
//! baseline directory the walk never reached is reported removed, entry by entry.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use serde_json::json;

use super::config::AttrSet;
use super::db::{Baseline, DbError};
use super::entry::{Entry, Kind};
use super::walk::{self, root_of, Root, Section, Start, WalkOptions, WalkStats};

/// What happened to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// Not in the baseline.
    Added,
    /// In the baseline, gone now.
    Removed,
    /// Attributes differ.
    Changed,
    /// A file became a directory, a symlink, …
    TypeChanged,
}

impl Change {
    /// Report word.
    pub fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
            Change::TypeChanged => "type_changed",
        }
    }

    /// AIDE-style exit bit: 1 added, 2 removed, 4 changed.
    pub fn exit_bit(self) -> u8 {
        match self {
            Change::Added => 1,
            Change::Removed => 2,
            Change::Changed | Change::TypeChanged => 4,
        }
    }
}

/// One difference between the baseline and the live tree.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The path.
    pub path: PathBuf,
    /// Index of its root in the config.
    pub root: usize,
    /// What happened.
    pub change: Change,
    /// Which attributes differ (for `Changed`).
    pub attrs: AttrSet,
    /// Baseline state.
    pub old: Option<Entry>,
    /// Live state.
    pub new: Option<Entry>,
}

impl Finding {
    /// The finding as JSON (used in reports and in `palisade.integrity` of events).
    pub fn to_json(&self) -> serde_json::Value {
        let attrs: Vec<_> = self
            .attrs
            .iter()
            .map(|a| {
                json!({
                    "name": a.name(),
                    "old": self.old.as_ref().map(|e| e.attr_text(a)),
                    "new": self.new.as_ref().map(|e| e.attr_text(a)),
                })
            })
            .collect();
        json!({
            "path": self.path.to_string_lossy(),
            "change": self.change.name(),
            "attributes": attrs,
            "old_type": self.old.as_ref().map(|e| e.kind.name()),
            "new_type": self.new.as_ref().map(|e| e.kind.name()),
        })
    }

    /// One line for people: `changed  /var/www/index.html  content,size,mtime`.
    pub fn text(&self) -> String {
        let detail = match self.change {
            Change::Changed => self.attrs.names().join(","),
            Change::TypeChanged => format!(
                "{} -> {}",
                self.old.as_ref().map_or("?", |e| e.kind.name()),
                self.new.as_ref().map_or("?", |e| e.kind.name())
            ),
            _ => self
                .new
                .as_ref()
                .or(self.old.as_ref())
                .map_or("", |e| e.kind.name())
                .to_string(),
        };
        format!(
            "{:<12} {}  {}",
            self.change.name(),
            self.path.display(),
            detail
        )
    }
}

/// The outcome of a comparison.
#[derive(Debug, Default)]
pub struct Report {
    /// Differences, sorted by path.
    pub findings: Vec<Finding>,
    /// What could not be read.
    pub problems: Vec<walk::Problem>,
    /// Problems in all (beyond the kept ones).
    pub problem_count: u64,
    /// Directories read.
    pub dirs: u64,
    /// Files checked.
    pub files: u64,
    /// Bytes hashed.
    pub bytes: u64,
}

impl Report {
    /// AIDE-style exit code: the OR of 1 (added), 2 (removed), 4 (changed).
    pub fn exit_code(&self) -> u8 {
        self.findings
            .iter()
            .fold(0, |acc, f| acc | f.change.exit_bit())
    }

    /// Counts per change.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for c in [
            Change::Added,
            Change::Removed,
            Change::Changed,
            Change::TypeChanged,
        ] {
            m.insert(c.name(), 0);
        }
        for f in &self.findings {
            *m.entry(f.change.name()).or_default() += 1;
        }
        m
    }
}

fn checks_for(root: &Root, kind: Kind) -> AttrSet {
    if kind == Kind::Dir {
        root.config.dir_checks()
    } else {
        root.config.file_checks()
    }
}

/// Compares one recorded and one live state of `path`.
pub fn compare_entry(
    root_index: usize,
    root: &Root,
    path: &Path,
    old: Option<&Entry>,
    new: Option<&Entry>,
) -> Option<Finding> {
    let (change, attrs) = match (old, new) {
        (None, None) => return None,
        (None, Some(_)) => (Change::Added, AttrSet::default()),
        (Some(_), None) => (Change::Removed, AttrSet::default()),
        (Some(o), Some(n)) if o.kind != n.kind => (Change::TypeChanged, AttrSet::default()),
        (Some(o), Some(n)) => {
            let d = o.differences(n, checks_for(root, o.kind));
            if d.is_empty() {
                return None;
            }
            (Change::Changed, d)
        }
    };
    Some(Finding {
        path: path.to_path_buf(),
        root: root_index,
        change,
        attrs,
        old: old.cloned(),
        new: new.cloned(),
    })
}

/// Compares a live section with the baseline's section of the same directory.
pub fn compare_section(
    roots: &[Root],
    base: Option<&Section>,
    live: &Section,
    out: &mut Vec<Finding>,
) {
    let Some((ri, root)) = root_of(roots, &live.dir) else {
        return;
    };
    if live.own.is_some() {
        if let Some(f) = compare_entry(
            ri,
            root,
            &live.dir,
            base.and_then(|b| b.own.as_ref()),
            live.own.as_ref(),
        ) {
            out.push(f);
        }
    }
    let empty = Vec::new();
    let old = base.map_or(&empty, |b| &b.entries);
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < live.entries.len() {
        let (o, n) = match (old.get(i), live.entries.get(j)) {
            (Some(o), Some(n)) => match o.name.as_encoded_bytes().cmp(n.name.as_encoded_bytes()) {
                std::cmp::Ordering::Less => (Some(o), None),
                std::cmp::Ordering::Greater => (None, Some(n)),
                std::cmp::Ordering::Equal => (Some(o), Some(n)),
            },
            (o, n) => (o, n),
        };
        if o.is_some() {
            i += 1;
        }
        if n.is_some() {
            j += 1;
        }
        let name = o.or(n).map(|e| e.name.clone()).unwrap_or_default();
        let path = live.dir.join(&name);
        // A file left out by the current include/exclude globs is not "removed".
        if n.is_none() && o.is_some_and(|o| o.kind != Kind::Dir) && !root.included(&path) {
            continue;
        }
        if let Some(f) = compare_entry(ri, root, &path, o, n) {
            out.push(f);
        }
    }
}

fn removed_section(roots: &[Root], section: &Section, out: &mut Vec<Finding>) {
    let Some((ri, root)) = root_of(roots, &section.dir) else {
        return;
    };
    if let Some(own) = &section.own {
        if let Some(f) = compare_entry(ri, root, &section.dir, Some(own), None) {
            out.push(f);
        }
    }
    for e in &section.entries {
        let path = section.dir.join(&e.name);
        if let Some(f) = compare_entry(ri, root, &path, Some(e), None) {
            out.push(f);
        }
    }
}

/// Compares everything.
pub fn verify_all(
    db: &Baseline,
    roots: &[Root],
    options: WalkOptions<'_>,
) -> Result<Report, DbError> {
    verify_from(db, roots, &Start::roots(roots), None, options)
}

/// Compares below `paths` (each a file or a directory under some root): the entries of the
/// paths themselves, and whole subtrees below the directories among them for which `deep`
/// holds (realtime passes "not watched yet": a watched directory's children report their own
/// changes, so an event on the directory itself needs no walk).
pub fn verify_paths(
    db: &Baseline,
    roots: &[Root],
    paths: &[PathBuf],
    deep: &dyn Fn(&Path) -> bool,
    options: WalkOptions<'_>,
) -> Result<Report, DbError> {
    let mut starts = Vec::new();
    let mut singles = Vec::new();
    let mut sorted: Vec<&PathBuf> = paths.iter().collect();
    sorted.sort();
    sorted.dedup();
    // A path below a directory that is itself walked needs no check of its own.
    let mut walked: Vec<&Path> = Vec::new();
    let mut root_selves = Vec::new();
    for p in sorted {
        if walked.iter().any(|w| p.starts_with(w)) {
            continue;
        }
        let Some((ri, root)) = root_of(roots, p) else {
            continue;
        };
        if root.excluded(p) {
            continue;
        }
        let live_dir = std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
            || (root.config.follow_symlinks && std::fs::metadata(p).is_ok_and(|m| m.is_dir()));
        let base_dir = db.position(p).is_some();
        if (live_dir || base_dir) && deep(p) {
            walked.push(p);
            if live_dir {
                starts.push(Start {
                    dir: p.clone(),
                    root: ri,
                });
            }
        }
        if p.as_path() != root.path() {
            singles.push((ri, p.clone()));
        } else if !walked.contains(&p.as_path()) {
            root_selves.push(ri);
        }
    }
    let subtree_roots: Vec<PathBuf> = walked.iter().map(|p| p.to_path_buf()).collect();
    let mut report = verify_from(db, roots, &starts, Some(&subtree_roots), options)?;
    // The entries of the paths themselves, grouped by parent so each baseline section is read
    // once however many of its files changed.
    let mut by_parent: BTreeMap<PathBuf, Vec<(usize, OsString)>> = BTreeMap::new();
    for (ri, p) in singles {
        if let (Some(parent), Some(name)) = (p.parent(), p.file_name()) {
            by_parent
                .entry(parent.to_path_buf())
                .or_default()
                .push((ri, name.to_os_string()));
        }
    }
    let mut buf = Vec::new();
    // Roots checked without a walk: their own entry only.
    for ri in root_selves {
        let root = &roots[ri];
        let old = db.section(root.path())?.and_then(|s| s.own);
        let name = root.path().as_os_str().to_os_string();
        let new = match walk::read_one(root, root.path(), name, false, &mut buf) {
            Ok((e, _)) => Some(e),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                report.problems.push(walk::Problem {
                    path: root.path().to_path_buf(),
                    what: "metadata",
                    error: e.to_string(),
                });
                continue;
            }
        };
        if let Some(f) = compare_entry(ri, root, root.path(), old.as_ref(), new.as_ref()) {
            report.findings.push(f);
        }
    }
    for (parent, names) in by_parent {
        let base = db.section(&parent)?;
        for (ri, name) in names {
            let root = &roots[ri];
            let path = parent.join(&name);
            let old = base
                .as_ref()
                .and_then(|s| s.entries.iter().find(|e| e.name == name));
            let new = match walk::read_one(root, &path, name.clone(), true, &mut buf) {
                Ok((e, problems)) => {
                    for p in problems {
                        report.problems.push(walk::Problem {
                            path: path.clone(),
                            what: p.what,
                            error: p.error.to_string(),
                        });
                    }
                    Some(e)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    report.problems.push(walk::Problem {
                        path: path.clone(),
                        what: "metadata",
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            // Files outside include globs were never recorded and are not watched for.
            if new.as_ref().is_some_and(|n| n.kind != Kind::Dir) && !root.included(&path) {
                continue;
            }
            if let Some(f) = compare_entry(ri, root, &path, old, new.as_ref()) {
                report.files += 1;
                report.findings.push(f);
            }
        }
    }
    report.findings.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

/// Walks from `starts`, comparing sections; baseline sections never reached are reported
/// removed when they lie under one of `scope` (anywhere, when `scope` is `None`).
fn verify_from(
    db: &Baseline,
    roots: &[Root],
    starts: &[Start],
    scope: Option<&[PathBuf]>,
    options: WalkOptions<'_>,
) -> Result<Report, DbError> {
    let visited: Vec<AtomicBool> = (0..db.len()).map(|_| AtomicBool::new(false)).collect();
    let findings = Mutex::new(Vec::new());
    let error: Mutex<Option<DbError>> = Mutex::new(None);
    let stats = WalkStats::default();
    walk::walk(roots, starts, options, &stats, &|live: Section| {
        let base = match db.position(&live.dir) {
            Some(i) => {
                visited[i].store(true, Ordering::Relaxed);
                match db.section_at(i) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        *error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                        return;
                    }
                }
            }
            None => None,
        };
        let mut out = Vec::new();
        compare_section(roots, base.as_ref(), &live, &mut out);
        if !out.is_empty() {
            findings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(out);
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e);
    }
    let mut findings = findings
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let ranges: Vec<std::ops::Range<usize>> = match scope {
        None => std::iter::once(0..db.len()).collect(),
        Some(dirs) => dirs.iter().map(|p| db.positions_under(p)).collect(),
    };
    for range in ranges {
        for i in range {
            if !visited[i].load(Ordering::Relaxed) {
                visited[i].store(true, Ordering::Relaxed);
                let s = db.section_at(i)?;
                // A root that is gone is reported through its own entry, a configured root
                // that is no longer configured is not reported at all.
                if root_of(roots, &s.dir).is_some() {
                    removed_section(roots, &s, &mut findings);
                }
            }
        }
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Report {
        findings,
        problem_count: stats.problem_count.load(Ordering::Relaxed),
        problems: stats.take_problems(),
        dirs: stats.dirs.load(Ordering::Relaxed),
        files: stats.files.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
    })
}
