//! `restore`: materialise a snapshot (or one path of it) into a directory, byte-identical.
//!
//! The whole manifest is walked and checked before anything is written: names are single
//! components, no name repeats in a directory, symlinks do not point out of the target (unless
//! allowed), and the manifest is not a blow-up of shared subtrees. Every chunk is checked against
//! its id as it is read; a file already at the target is chunked and its matching chunks are used
//! instead of reading the store (a file that already matches is left alone). Files are written to
//! a temporary name and renamed over the old entry, so nothing is ever written through a symlink.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::chunk::{Chunker, Id};
use crate::error::{Error, Result};
use crate::repo::keys::Keys;
use crate::repo::tree::{self, Kind, Node, Tree};
use crate::repo::{decode_blob, ChunkReader, Store};

/// Where and what to restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// The target directory (created when missing).
    pub target: PathBuf,
    /// Only this path of the snapshot (and what is below it).
    pub path: Option<String>,
    /// Restore symlinks that point outside the target (refused by default).
    pub allow_symlink_escape: bool,
    /// Writer threads (0 = one per core).
    pub threads: usize,
    /// Show a progress bar on a terminal.
    pub progress: bool,
    /// Remove what the target holds that the snapshot does not (a tampered site back to exactly
    /// the recovery point). Refused with `path`.
    pub delete: bool,
}

/// What a restore did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: String,
    /// Files restored.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Bytes of file content in the restored set.
    pub bytes: u64,
    /// Bytes read from the store (verified).
    pub bytes_fetched: u64,
    /// Bytes taken from files already at the target (verified by id).
    pub bytes_reused: u64,
    /// Files already identical at the target, left alone.
    pub files_unchanged: u64,
    /// Entries removed from the target because the snapshot does not have them (`delete`).
    pub removed: u64,
    /// Wall time.
    pub duration_ms: u64,
}

/// No manifest may expand to more entries than this (a DAG of shared subtrees can describe
/// exponentially many paths in a few blobs).
const MAX_ENTRIES: usize = 50_000_000;

struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<(PathBuf, Node)>,
    links: Vec<(PathBuf, Node)>,
}

/// Loads a tree blob and checks it.
pub fn load_tree(store: &dyn Store, keys: &Keys, id: &Id, at: &str) -> Result<Tree> {
    let blob = store.read_stored(id).map_err(|e| match e {
        Error::MissingBlob { id, .. } => Error::MissingBlob {
            id,
            by: format!("tree {at:?}"),
        },
        e => e,
    })?;
    let bytes = decode_blob(keys, &blob, id)?;
    Tree::parse(&bytes, at).map_err(|e| Error::corrupt(format!("tree {}", id.short()), e))
}

/// Every distinct tree below one or more roots, each handed out once with its path. A tree that
/// loads has its subtrees queued; one that does not is handed out as the error and the caller
/// decides (verify counts it, prune and the peer's completeness check stop).
#[derive(Debug, Default)]
pub struct TreeWalk {
    stack: Vec<(Id, String)>,
    seen: HashSet<Id>,
}

impl TreeWalk {
    /// Queues a root (a snapshot's tree); trees already handed out are not visited again.
    pub fn add_root(&mut self, root: Id) {
        self.stack.push((root, "/".to_string()));
    }

    /// The next tree not seen yet, or `None` when every queued root is walked.
    pub fn next_tree(
        &mut self,
        store: &dyn Store,
        keys: &Keys,
    ) -> Option<(Id, String, Result<Tree>)> {
        while let Some((id, at)) = self.stack.pop() {
            if !self.seen.insert(id) {
                continue;
            }
            let tree = load_tree(store, keys, &id, &at);
            if let Ok(t) = &tree {
                for n in &t.entries {
                    if let Some(sub) = n.subtree {
                        self.stack
                            .push((sub, format!("{}/{}", at.trim_end_matches('/'), n.name)));
                    }
                }
            }
            return Some((id, at, tree));
        }
        None
    }
}

fn plan(
    store: &dyn Store,
    keys: &Keys,
    snapshot: &str,
    root: &Id,
    only: Option<&str>,
    allow_escape: bool,
) -> Result<Plan> {
    let mut plan = Plan {
        dirs: Vec::new(),
        files: Vec::new(),
        links: Vec::new(),
    };
    let only: Option<Vec<Vec<u8>>> = match only {
        None => None,
        Some(p) => {
            let parts: Vec<Vec<u8>> = p
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(|s| s.as_bytes().to_vec())
                .collect();
            for part in &parts {
                tree::check_name(part)
                    .map_err(|reason| Error::Usage(format!("--path {p:?}: {reason}")))?;
            }
            Some(parts)
        }
    };
    let mut stack = vec![(PathBuf::new(), *root, 0usize)];
    let mut seen = 0usize;
    let mut matched = only.as_ref().is_none_or(|o| o.is_empty());
    while let Some((rel, id, depth)) = stack.pop() {
        let at = if rel.as_os_str().is_empty() {
            "/".to_string()
        } else {
            rel.display().to_string()
        };
        let t = load_tree(store, keys, &id, &at)?;
        seen += t.entries.len();
        if seen > MAX_ENTRIES {
            return Err(Error::UnsafePath {
                snapshot: snapshot.into(),
                path: at,
                reason: format!("the manifest expands to more than {MAX_ENTRIES} entries"),
            });
        }
        for n in t.entries {
            let name = n.name_bytes().map_err(|e| Error::corrupt("tree", e))?;
            let path = rel.join(std::ffi::OsStr::from_bytes(&name));
            // With --path, walk only the directories on the way to it, and everything below.
            let inside = match &only {
                None => true,
                Some(o) => {
                    let comps: Vec<&[u8]> = path
                        .components()
                        .map(|c| c.as_os_str().as_bytes())
                        .collect();
                    let common = comps.len().min(o.len());
                    if comps[..common]
                        != o.iter().map(|v| v.as_slice()).collect::<Vec<_>>()[..common]
                    {
                        continue;
                    }
                    if comps.len() >= o.len() {
                        matched = true;
                        true
                    } else {
                        false
                    }
                }
            };
            match n.kind {
                Kind::Dir => {
                    let sub = n
                        .subtree
                        .ok_or_else(|| Error::corrupt("tree", "dir without subtree"))?;
                    stack.push((path.clone(), sub, depth + 1));
                    plan.dirs.push((path, n));
                }
                Kind::File if inside => plan.files.push((path, n)),
                Kind::Symlink if inside => {
                    let target = n.target.as_deref().unwrap_or("");
                    if !allow_escape && !tree::symlink_stays_inside(depth, target) {
                        return Err(Error::UnsafePath {
                            snapshot: snapshot.into(),
                            path: path.display().to_string(),
                            reason: format!(
                                "symlink to {target:?} points outside the restore target \
                                 (restore with --allow-symlink-escape to keep it)"
                            ),
                        });
                    }
                    plan.links.push((path, n));
                }
                _ => {}
            }
        }
    }
    if !matched {
        return Err(Error::Usage(format!(
            "--path {:?} is not in snapshot {}",
            only.map(|o| o
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
                .join("/")),
            &snapshot[..8.min(snapshot.len())]
        )));
    }
    plan.dirs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(plan)
}

/// Restores `root` (the tree of snapshot `snapshot`) into `opts.target`.
pub fn restore(
    store: &dyn Store,
    keys: &Keys,
    snapshot: &str,
    root: &Id,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    let started = Instant::now();
    if opts.delete && opts.path.is_some() {
        return Err(Error::Usage(
            "--delete restores a whole snapshot; drop --path".into(),
        ));
    }
    let plan = plan(
        store,
        keys,
        snapshot,
        root,
        opts.path.as_deref(),
        opts.allow_symlink_escape,
    )?;
    let target = &opts.target;
    fs::create_dir_all(target).map_err(Error::io("create", target))?;
    for (rel, _) in &plan.dirs {
        ensure_dir(target, rel)?;
    }
    let total: u64 = plan.files.iter().map(|(_, n)| n.size).sum();
    let progress = crate::progress::bytes_bar(opts.progress, total, "restore");
    let next = AtomicUsize::new(0);
    let fetched = AtomicU64::new(0);
    let reused = AtomicU64::new(0);
    let unchanged = AtomicU64::new(0);
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.threads
    };
    // Files are handed out in order, so the chunks of one frame are wanted by a few threads at
    // about the same time: the frames they share are decoded once.
    let reader = ChunkReader::new(store, keys, 2 * threads + 2);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut chunker = Chunker::new(store.config().chunker);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((rel, node)) = plan.files.get(i) else {
                        return;
                    };
                    if first_err.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    match restore_file(&reader, keys, target, rel, node, &mut chunker) {
                        Ok(r) => {
                            fetched.fetch_add(r.fetched, Ordering::Relaxed);
                            reused.fetch_add(r.reused, Ordering::Relaxed);
                            if r.unchanged {
                                unchanged.fetch_add(1, Ordering::Relaxed);
                            }
                            progress.inc(node.size);
                        }
                        Err(e) => {
                            if let Ok(mut slot) = first_err.lock() {
                                slot.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    progress.finish_and_clear();
    if let Some(e) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    for (rel, node) in &plan.links {
        let dst = target.join(rel);
        remove_any(&dst)?;
        let link_target = node.target.as_deref().unwrap_or("");
        std::os::unix::fs::symlink(link_target, &dst).map_err(Error::io("create symlink", &dst))?;
        set_owner(&dst, node, true);
    }
    let removed = if opts.delete {
        remove_extras(target, &plan)?
    } else {
        0
    };
    // Directory metadata last, deepest first, so writing children does not disturb it.
    for (rel, node) in plan.dirs.iter().rev() {
        apply_meta(&target.join(rel), node, false)?;
    }
    // One sync for the whole restore instead of one per file.
    if let Ok(d) = File::open(target) {
        let _ = d.sync_all();
    }
    #[allow(unsafe_code)]
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe {
        libc::sync();
    }
    Ok(RestoreReport {
        snapshot: snapshot.to_string(),
        files: plan.files.len() as u64,
        dirs: plan.dirs.len() as u64,
        symlinks: plan.links.len() as u64,
        bytes: total,
        bytes_fetched: fetched.into_inner(),
        bytes_reused: reused.into_inner(),
        files_unchanged: unchanged.into_inner(),
        removed,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Removes every entry below `target` that the plan does not hold; never follows symlinks.
fn remove_extras(target: &Path, plan: &Plan) -> Result<u64> {
    let keep: std::collections::HashSet<&Path> = plan
        .dirs
        .iter()
        .chain(&plan.files)
        .chain(&plan.links)
        .map(|(p, _)| p.as_path())
        .collect();
    let mut removed = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = target.join(&rel);
        let entries = fs::read_dir(&dir).map_err(Error::io("list", &dir))?;
        for e in entries {
            let e = e.map_err(Error::io("list", &dir))?;
            let child = rel.join(e.file_name());
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if keep.contains(child.as_path()) {
                if is_dir {
                    stack.push(child);
                }
            } else {
                remove_any(&target.join(&child))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Creates `target/rel` component by component; whatever is in the way that is not a
/// directory (a file, a symlink planted to lead elsewhere) is removed, never followed.
fn ensure_dir(target: &Path, rel: &Path) -> Result<()> {
    let mut cur = target.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => remove_any(&cur)?,
            Err(_) => {}
        }
        match fs::create_dir(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &cur)(e)),
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(Error::io("remove", p)),
        Ok(_) => fs::remove_file(p).map_err(Error::io("remove", p)),
        Err(_) => Ok(()),
    }
}

struct FileResult {
    fetched: u64,
    reused: u64,
    unchanged: bool,
}

fn restore_file(
    reader: &ChunkReader<'_>,
    keys: &Keys,
    target: &Path,
    rel: &Path,
    node: &Node,
    chunker: &mut Chunker,
) -> Result<FileResult> {
    let dst = target.join(rel);
    // What is already there, chunked the same way, is a source of verified chunks.
    let mut local: HashMap<Id, Vec<u8>> = HashMap::new();
    let mut local_ids = Vec::new();
    if fs::symlink_metadata(&dst).is_ok_and(|m| m.is_file()) {
        if let Ok(f) = File::open(&dst) {
            let wanted: std::collections::HashSet<&Id> = node.chunks.iter().collect();
            let _ = chunker.for_each_chunk::<_, ()>(f, |c| {
                let id = crate::chunk::blob_id(&keys.id_key, c);
                local_ids.push(id);
                if wanted.contains(&id) {
                    local.insert(id, c.to_vec());
                }
                Ok(())
            });
        }
    }
    if local_ids == node.chunks && fs::metadata(&dst).is_ok_and(|m| m.len() == node.size) {
        apply_meta(&dst, node, false)?;
        return Ok(FileResult {
            fetched: 0,
            reused: node.size,
            unchanged: true,
        });
    }
    let parent = dst.parent().unwrap_or(target);
    let mut rnd = [0u8; 8];
    let _ = getrandom::fill(&mut rnd);
    let tmp = parent.join(format!(".palisade-restore-{}", crate::chunk::hex(&rnd)));
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        File::create(&tmp).map_err(Error::io("create", &tmp))?,
    );
    let mut r = FileResult {
        fetched: 0,
        reused: 0,
        unchanged: false,
    };
    let mut written = 0u64;
    let write = (|| -> Result<()> {
        for id in &node.chunks {
            let bytes = match local.get(id) {
                Some(b) => {
                    r.reused += b.len() as u64;
                    out.write_all(b).map_err(Error::io("write", &tmp))?;
                    written += b.len() as u64;
                    continue;
                }
                None => reader.read(id).map_err(|e| match e {
                    Error::MissingBlob { id, .. } => Error::MissingBlob {
                        id,
                        by: format!("file {}", rel.display()),
                    },
                    e => e,
                })?,
            };
            r.fetched += bytes.len() as u64;
            written += bytes.len() as u64;
            out.write_all(&bytes).map_err(Error::io("write", &tmp))?;
        }
        out.flush().map_err(Error::io("write", &tmp))?;
        if written != node.size {
            return Err(Error::corrupt(
                format!("file {}", rel.display()),
                format!("chunks hold {written} bytes, manifest says {}", node.size),
            ));
        }
        apply_meta(&tmp, node, false)?;
        if fs::symlink_metadata(&dst).is_ok_and(|m| m.is_dir()) {
            remove_any(&dst)?;
        }
        fs::rename(&tmp, &dst).map_err(Error::io("rename into place", &dst))
    })();
    if write.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    write.map(|()| r)
}

fn apply_meta(path: &Path, node: &Node, is_link: bool) -> Result<()> {
    if !is_link {
        fs::set_permissions(path, fs::Permissions::from_mode(node.mode))
            .map_err(Error::io("set mode of", path))?;
        for x in &node.xattrs {
            if let Some(v) = tree::hex_decode(&x.value) {
                // Not every filesystem takes every namespace (security.*, trusted.*).
                let _ = xattr::set(path, &x.name, &v);
            }
        }
    }
    set_owner(path, node, is_link);
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::from_nanos(u64::try_from(node.mtime_ns).unwrap_or(0));
    if !is_link {
        // futimens needs ownership, not write access: read-only files take it too.
        let f = File::open(path).map_err(Error::io("open", path))?;
        f.set_modified(mtime)
            .map_err(Error::io("set mtime of", path))?;
    }
    Ok(())
}

fn set_owner(path: &Path, node: &Node, is_link: bool) {
    // Only root can give files away; others keep their own ownership, as tar and restic do.
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let r = if is_link {
            std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))
        } else {
            std::os::unix::fs::chown(path, Some(node.uid), Some(node.gid))
        };
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "cannot restore owner");
        }
    }
}
