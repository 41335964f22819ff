//! Parallel walk of the configured trees. Worker threads take whole directories from a shared
//! stack (depth first, so the stack stays small), read and sort their entries, hash regular
//! files, and hand each directory over as one [`Section`]. Hashing is spread across cores by
//! spreading directories; a single large file is hashed with blake3's own threads.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use globset::{GlobSet, GlobSetBuilder};

use super::config::{IntegrityConfig, PathConfig};
use super::entry::{Entry, Kind};

/// Problems kept for the report at most; beyond it they are only counted.
const MAX_PROBLEMS: usize = 10_000;

/// One configured tree, ready to walk.
#[derive(Debug)]
pub struct Root {
    /// Its config.
    pub config: PathConfig,
    include: Option<GlobSet>,
    exclude: GlobSet,
}

fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(globset::Glob::new(p).map_err(|e| format!("bad glob {p:?}: {e}"))?);
    }
    b.build().map_err(|e| e.to_string())
}

impl Root {
    /// Compiles the globs of `config`.
    pub fn new(config: &PathConfig) -> Result<Root, String> {
        Ok(Root {
            include: if config.include.is_empty() {
                None
            } else {
                Some(globs(&config.include)?)
            },
            exclude: globs(&config.exclude)?,
            config: config.clone(),
        })
    }

    /// All roots of a config.
    pub fn all(config: &IntegrityConfig) -> Result<Vec<Root>, String> {
        config.paths.iter().map(Root::new).collect()
    }

    /// Whether `path` is left out entirely.
    pub fn excluded(&self, path: &Path) -> bool {
        self.exclude.is_match(path)
    }

    /// Whether a non-directory at `path` is recorded.
    pub fn included(&self, path: &Path) -> bool {
        !self.excluded(path) && self.include.as_ref().is_none_or(|g| g.is_match(path))
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.config.path
    }
}

/// Which root `path` belongs to (the roots never nest).
pub fn root_of<'r>(roots: &'r [Root], path: &Path) -> Option<(usize, &'r Root)> {
    roots
        .iter()
        .enumerate()
        .find(|(_, r)| path.starts_with(r.path()))
}

/// One directory's entries, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The directory.
    pub dir: PathBuf,
    /// Index of its root in the config.
    pub root: usize,
    /// The directory's own state, recorded only for a root (other directories are entries of
    /// their parent's section).
    pub own: Option<Entry>,
    /// Its entries.
    pub entries: Vec<Entry>,
}

/// Something that could not be read during a walk (reported, never fatal).
#[derive(Debug, Clone)]
pub struct Problem {
    /// The path.
    pub path: PathBuf,
    /// What could not be read.
    pub what: &'static str,
    /// Why.
    pub error: String,
}

/// Counters of a walk.
#[derive(Debug, Default)]
pub struct WalkStats {
    /// Directories read.
    pub dirs: AtomicU64,
    /// Non-directory entries recorded.
    pub files: AtomicU64,
    /// Bytes hashed.
    pub bytes: AtomicU64,
    /// Problems (the first [`MAX_PROBLEMS`] are in `problems`).
    pub problem_count: AtomicU64,
    /// The problems.
    pub problems: Mutex<Vec<Problem>>,
}

impl WalkStats {
    fn problem(&self, path: &Path, what: &'static str, error: impl ToString) {
        self.problem_count.fetch_add(1, Ordering::Relaxed);
        let mut p = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        if p.len() < MAX_PROBLEMS {
            p.push(Problem {
                path: path.to_path_buf(),
                what,
                error: error.to_string(),
            });
        }
    }

    /// The problems, sorted by path.
    pub fn take_problems(&self) -> Vec<Problem> {
        let mut p =
            std::mem::take(&mut *self.problems.lock().unwrap_or_else(PoisonError::into_inner));
        p.sort_by(|a, b| a.path.cmp(&b.path));
        p
    }
}

/// Where a walk starts: a directory under root `root` (the root itself, or a subtree).
#[derive(Debug, Clone)]
pub struct Start {
    /// The directory.
    pub dir: PathBuf,
    /// Its root's index.
    pub root: usize,
}

impl Start {
    /// Every root, from the top.
    pub fn roots(roots: &[Root]) -> Vec<Start> {
        roots
            .iter()
            .enumerate()
            .map(|(i, r)| Start {
                dir: r.path().to_path_buf(),
                root: i,
            })
            .collect()
    }
}

struct Job {
    dir: PathBuf,
    root: usize,
    /// Device of the root (for `cross_filesystems = false`).
    dev: u64,
}

struct Queue {
    state: Mutex<(Vec<Job>, usize)>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Job>, usize)> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job, or `None` when the stack is empty and no worker can add to it.
    fn next(&self) -> Option<Job> {
        let mut s = self.lock();
        loop {
            if let Some(job) = s.0.pop() {
                s.1 += 1;
                return Some(job);
            }
            if s.1 == 0 {
                self.ready.notify_all();
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn push(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let mut s = self.lock();
        s.0.extend(jobs.into_iter().rev());
        self.ready.notify_all();
    }

    fn done(&self) {
        let mut s = self.lock();
        s.1 -= 1;
        if s.1 == 0 && s.0.is_empty() {
            self.ready.notify_all();
        }
    }
}

/// Options of a walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkOptions<'a> {
    /// Worker threads.
    pub threads: usize,
    /// Hash regular files.
    pub hash: bool,
    /// Progress shown on a terminal.
    pub progress: Option<&'a indicatif::ProgressBar>,
}

/// Walks from `starts`, calling `visit` (from worker threads) with each directory's section.
pub fn walk(
    roots: &[Root],
    starts: &[Start],
    options: WalkOptions<'_>,
    stats: &WalkStats,
    visit: &(dyn Fn(Section) + Sync),
) {
    let queue = Queue {
        state: Mutex::new((Vec::new(), 0)),
        ready: Condvar::new(),
    };
    let visited_dirs = Mutex::new(HashSet::new());
    let mut first = Vec::new();
    for s in starts {
        let Some(root) = roots.get(s.root) else {
            continue;
        };
        match std::fs::metadata(root.path()) {
            Ok(m) => first.push(Job {
                dir: s.dir.clone(),
                root: s.root,
                dev: m.dev(),
            }),
            Err(e) => stats.problem(root.path(), "root", e),
        }
    }
    queue.push(first);
    std::thread::scope(|scope| {
        for _ in 0..options.threads.max(1) {
            scope.spawn(|| {
                let mut buf = Vec::new();
                while let Some(job) = queue.next() {
                    let (section, subdirs) =
                        read_dir(roots, &job, options, stats, &visited_dirs, &mut buf);
                    queue.push(subdirs);
                    if let Some(s) = section {
                        visit(s);
                    }
                    queue.done();
                }
            });
        }
    });
}

fn lstat_or_stat(path: &Path, follow: bool) -> std::io::Result<std::fs::Metadata> {
    if follow {
        // A dangling link is recorded as the link.
        std::fs::metadata(path).or_else(|_| std::fs::symlink_metadata(path))
    } else {
        std::fs::symlink_metadata(path)
    }
}

/// Reads the state of one path under `root` (the realtime path uses this for single files).
pub fn read_one(
    root: &Root,
    path: &Path,
    name: OsString,
    hash: bool,
    buf: &mut Vec<u8>,
) -> std::io::Result<(Entry, Vec<super::entry::ReadProblem>)> {
    let m = lstat_or_stat(path, root.config.follow_symlinks)?;
    let hash = hash && (Kind::of(&m) == Kind::Dir || root.included(path));
    Ok(Entry::read(path, &name, &m, hash, buf, None))
}

fn read_dir(
    roots: &[Root],
    job: &Job,
    options: WalkOptions<'_>,
    stats: &WalkStats,
    visited: &Mutex<HashSet<(u64, u64)>>,
    buf: &mut Vec<u8>,
) -> (Option<Section>, Vec<Job>) {
    let Some(root) = roots.get(job.root) else {
        return (None, Vec::new());
    };
    let follow = root.config.follow_symlinks;
    let own = if job.dir == root.path() {
        match lstat_or_stat(&job.dir, follow) {
            Ok(m) => {
                let name = job.dir.as_os_str().to_os_string();
                let (e, problems) = Entry::read(&job.dir, &name, &m, false, buf, None);
                for p in problems {
                    stats.problem(&job.dir, p.what, p.error);
                }
                if e.kind != Kind::Dir {
                    return (
                        Some(Section {
                            dir: job.dir.clone(),
                            root: job.root,
                            own: Some(e),
                            entries: Vec::new(),
                        }),
                        Vec::new(),
                    );
                }
                Some(e)
            }
            Err(e) => {
                stats.problem(&job.dir, "root", e);
                return (None, Vec::new());
            }
        }
    } else {
        None
    };
    stats.dirs.fetch_add(1, Ordering::Relaxed);
    let rd = match std::fs::read_dir(&job.dir) {
        Ok(rd) => rd,
        Err(e) => {
            stats.problem(&job.dir, "directory", e);
            return (None, Vec::new());
        }
    };
    let mut names: Vec<OsString> = Vec::new();
    for item in rd {
        match item {
            Ok(d) => names.push(d.file_name()),
            Err(e) => stats.problem(&job.dir, "directory", e),
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut entries = Vec::with_capacity(names.len());
    let mut subdirs = Vec::new();
    for name in names {
        let path = job.dir.join(&name);
        if root.excluded(&path) {
            continue;
        }
        let m = match lstat_or_stat(&path, follow) {
            Ok(m) => m,
            // Gone between readdir and stat: it was never there as far as this walk knows.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                stats.problem(&path, "metadata", e);
                continue;
            }
        };
        let kind = Kind::of(&m);
        if kind == Kind::Dir {
            let descend = (root.config.cross_filesystems || m.dev() == job.dev)
                && (!follow
                    || visited
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((m.dev(), m.ino())));
            if descend {
                subdirs.push(Job {
                    dir: path.clone(),
                    root: job.root,
                    dev: job.dev,
                });
            }
        } else if !root.included(&path) {
            continue;
        }
        let (e, problems) = Entry::read(&path, &name, &m, options.hash, buf, None);
        for p in problems {
            stats.problem(&path, p.what, p.error);
        }
        if kind != Kind::Dir {
            stats.files.fetch_add(1, Ordering::Relaxed);
            if e.hash().is_some() {
                stats.bytes.fetch_add(e.size, Ordering::Relaxed);
            }
            if let Some(pb) = options.progress {
                pb.inc(1);
            }
        }
        entries.push(e);
    }
    (
        Some(Section {
            dir: job.dir.clone(),
            root: job.root,
            own,
            entries,
        }),
        subdirs,
    )
}

/// A progress spinner on a terminal (none when stderr is not one).
pub fn progress(what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {what}: {{human_pos}} files [{{elapsed}}, {{per_sec}}]"
    )) {
        pb.set_style(style);
    }
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(pb)
}
