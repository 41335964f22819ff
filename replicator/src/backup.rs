//! `backup`: walk a directory, chunk what changed since the parent snapshot, store the chunks a
//! store lacks (locally or at a peer), then the trees, then the snapshot — in that order, so a
//! snapshot only ever names blobs that are already durable.
//!
//! Files are read by a pool of workers (one per core); chunks new to the store are compressed and
//! sealed by the worker and handed to one packer that fills packs of ~16 MiB. A file whose size,
//! mtime, ctime and inode match the parent snapshot's is not read again (restic's rule).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::chunk::{ChunkError, Chunker, Id};
use crate::error::{Error, Result};
use crate::repo::format::{Blob, Member};
use crate::repo::keys::Keys;
use crate::repo::snapshot::{self, Snapshot};
use crate::repo::tree::{Kind, Node, Tree, Xattr};
use crate::repo::{
    decode_blob, BlobEncoder, BufferPool, Store, FRAME_TARGET_BYTES, PACK_TARGET_BYTES,
};

/// What to back up and how.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// The directory.
    pub source: PathBuf,
    /// Recorded in the snapshot (defaults to the hostname).
    pub host: String,
    /// Site name (active-active pairs and drills).
    pub site: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Parent snapshot selector; default: the newest snapshot of the same host and source.
    pub parent: Option<String>,
    /// Read every file even when the parent says it is unchanged.
    pub force: bool,
    /// Reader threads (0 = one per core).
    pub threads: usize,
    /// Show a progress bar on a terminal.
    pub progress: bool,
}

/// What a backup did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackupReport {
    /// The new snapshot's id.
    pub snapshot: String,
    /// The parent used for change detection.
    pub parent: Option<String>,
    /// Root tree id.
    pub tree: String,
    /// Files in the snapshot.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Files read (new or changed).
    pub files_read: u64,
    /// Files taken from the parent unread.
    pub files_unchanged: u64,
    /// Sum of file sizes in the snapshot.
    pub bytes_total: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Blobs the store did not have.
    pub blobs_new: u64,
    /// Their plaintext bytes.
    pub bytes_new: u64,
    /// Their stored bytes (after compression).
    pub bytes_stored: u64,
    /// Bytes written to the repository or sent to the peer.
    pub bytes_sent: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// Entries that could not be read (the snapshot holds everything else).
    pub errors: Vec<String>,
}

struct DirRec {
    rel: String,
    entries: Vec<(Node, Slot)>,
}

enum Slot {
    Dir(usize),
    File(usize),
    Link,
}

struct FileRec {
    abs: PathBuf,
    rel: String,
    reuse: Option<Vec<Id>>,
}

struct Walk<'a> {
    store: &'a dyn Store,
    keys: &'a Keys,
    known: &'a HashSet<Id>,
    force: bool,
    dirs: Vec<DirRec>,
    files: Vec<FileRec>,
    errors: Vec<String>,
    bytes_to_read: u64,
    bytes_total: u64,
}

/// Runs a backup into `store`.
pub fn backup(store: &dyn Store, keys: &Keys, opts: &BackupOptions) -> Result<BackupReport> {
    let started = Instant::now();
    let time_ns = palisade_wire::event::Timestamp::now().nanos();
    let source = opts.source.clone();
    let meta = fs::metadata(&source).map_err(Error::io("read source", &source))?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "backup source {} is not a directory",
            source.display()
        )));
    }
    let source_name = fs::canonicalize(&source)
        .unwrap_or_else(|_| source.clone())
        .display()
        .to_string();
    let snaps = snapshot::list(store, Some(keys))?;
    let parent = match &opts.parent {
        Some(sel) => Some(snapshot::select(&snaps, sel, time_ns)?),
        None => snaps
            .iter()
            .rev()
            .find(|(_, s)| s.source == source_name && s.host == opts.host)
            .cloned(),
    };
    let known = store.known_ids()?;

    let mut walk = Walk {
        store,
        keys,
        known: &known,
        force: opts.force,
        dirs: Vec::new(),
        files: Vec::new(),
        errors: Vec::new(),
        bytes_to_read: 0,
        bytes_total: 0,
    };
    let parent_tree = parent.as_ref().map(|(_, s)| s.tree);
    walk.dir(&source, String::new(), parent_tree)?;
    let Walk {
        dirs,
        files,
        mut errors,
        bytes_to_read,
        bytes_total,
        ..
    } = walk;

    let progress = crate::progress::bytes_bar(opts.progress, bytes_to_read, "backup");
    let known = Mutex::new(known);
    let results: Mutex<Vec<Option<Vec<Id>>>> = Mutex::new(vec![None; files.len()]);
    let file_errors = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let bytes_read = AtomicU64::new(0);
    let blobs_new = AtomicU64::new(0);
    let bytes_new = AtomicU64::new(0);
    let bytes_stored = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.threads
    };
    let config = store.config().clone();

    let (tx, rx) = mpsc::sync_channel::<Blob>(16);
    // Stored-byte buffers go back from the writer to the readers.
    let pool = std::sync::Arc::new(BufferPool::default());
    let (bytes_sent, tree) = std::thread::scope(|s| -> Result<(u64, Id)> {
        // The packer fills batches of ~16 MiB; a writer stores them (pack write, fsync,
        // index). One batch can wait between them, so compression goes on while a pack is
        // being made durable instead of stalling behind its fsync.
        let (batch_tx, batch_rx) = mpsc::sync_channel::<Vec<Blob>>(1);
        let writer_pool = pool.clone();
        let writer = s.spawn(move || -> Result<u64> {
            let mut sent = 0u64;
            for batch in batch_rx {
                sent += store.put_blobs(&batch)?;
                for b in batch {
                    writer_pool.give(b.stored);
                }
            }
            Ok(sent)
        });
        let packer = s.spawn(move || -> Result<()> {
            let mut batch = Vec::new();
            let mut size = 0usize;
            for blob in rx {
                size += blob.stored.len();
                batch.push(blob);
                if size >= PACK_TARGET_BYTES {
                    batch_tx
                        .send(std::mem::take(&mut batch))
                        .map_err(|_| packer_gone())?;
                    size = 0;
                }
            }
            if !batch.is_empty() {
                batch_tx.send(batch).map_err(|_| packer_gone())?;
            }
            Ok(())
        });
        let mut workers = Vec::new();
        for _ in 0..threads {
            let tx = tx.clone();
            let (files, results, known, next, config, pool) =
                (&files, &results, &known, &next, &config, &pool);
            let (bytes_read, blobs_new, bytes_new, bytes_stored, failed, file_errors, progress) = (
                &bytes_read,
                &blobs_new,
                &bytes_new,
                &bytes_stored,
                &failed,
                &file_errors,
                &progress,
            );
            workers.push(s.spawn(move || -> Result<()> {
                let mut chunker = Chunker::new(config.chunker);
                let mut encoder = BlobEncoder::with_pool(config, pool.clone())?;
                // New chunks gather here, across files, until the frame is full.
                let mut frame = Frame::default();
                let mut flush = |frame: &mut Frame| -> Result<()> {
                    if frame.members.is_empty() {
                        return Ok(());
                    }
                    let blob = encoder.encode_frame(
                        keys,
                        std::mem::take(&mut frame.members),
                        &frame.plain,
                    )?;
                    frame.plain.clear();
                    bytes_stored.fetch_add(blob.stored.len() as u64, Ordering::Relaxed);
                    tx.send(blob).map_err(|_| packer_gone())
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = files.get(i) else {
                        return flush(&mut frame);
                    };
                    if failed.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    if let Some(ids) = &f.reuse {
                        lock(results)?[i] = Some(ids.clone());
                        continue;
                    }
                    let file = match File::open(&f.abs) {
                        Ok(file) => file,
                        Err(e) => {
                            lock(file_errors)?.push(format!("cannot read {}: {e}", f.rel));
                            continue;
                        }
                    };
                    let mut ids = Vec::new();
                    let r = chunker.for_each_chunk(file, |chunk| -> Result<()> {
                        let id = crate::chunk::blob_id(&keys.id_key, chunk);
                        ids.push(id);
                        progress.inc(chunk.len() as u64);
                        if lock(known)?.insert(id) {
                            blobs_new.fetch_add(1, Ordering::Relaxed);
                            bytes_new.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            frame.members.push(Member {
                                id,
                                len: chunk.len() as u32,
                            });
                            frame.plain.extend_from_slice(chunk);
                            if frame.plain.len() >= FRAME_TARGET_BYTES
                                || frame.members.len() >= MAX_MEMBERS
                            {
                                flush(&mut frame)?;
                            }
                        }
                        Ok(())
                    });
                    match r {
                        Ok(n) => {
                            bytes_read.fetch_add(n, Ordering::Relaxed);
                            lock(results)?[i] = Some(ids);
                        }
                        Err(ChunkError::Read(e)) => {
                            lock(file_errors)?.push(format!("cannot read {}: {e}", f.rel));
                        }
                        Err(ChunkError::Sink(e)) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                }
            }));
        }
        let mut first_err = None;
        for w in workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(Error::Usage("a backup worker panicked".into()));
                }
            }
        }
        progress.finish_and_clear();
        let tree = match first_err {
            Some(e) => Err(e),
            None => write_trees(&dirs, &lock(&results)?, store.config(), keys, &known, &tx),
        };
        drop(tx);
        let packed = packer
            .join()
            .map_err(|_| Error::Usage("the packer panicked".into()))?;
        // The writer's error is the cause when the packer only saw it go away.
        let sent = writer
            .join()
            .map_err(|_| Error::Usage("the pack writer panicked".into()))??;
        packed?;
        let tree = tree?;
        Ok((sent, tree))
    })?;

    // The snapshot may only name blobs that exist: a prune that finished while this backup ran
    // can have deleted a pack it reused.
    let referenced: Vec<Id> = lock(&results)?
        .iter()
        .flatten()
        .flatten()
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let gone = store.lost(&referenced)?;
    if !gone.is_empty() {
        return Err(Error::Peer {
            peer: store.location(),
            reason: format!(
                "{} blobs this backup reused were pruned (or marked for pruning) while it ran; run the backup again",
                gone.len()
            ),
            retryable: true,
        });
    }

    errors.extend(lock(&file_errors)?.drain(..));
    let files_read = files.iter().filter(|f| f.reuse.is_none()).count() as u64;
    let files_saved = lock(&results)?.iter().filter(|r| r.is_some()).count() as u64;
    let snap = Snapshot {
        time_ns,
        host: opts.host.clone(),
        site: opts.site.clone(),
        source: source_name,
        tree,
        parent: parent.as_ref().map(|(id, _)| id.clone()),
        tags: opts.tags.clone(),
        files: files_saved,
        dirs: dirs.len() as u64,
        bytes: bytes_total,
    };
    let stored = snap.encode(keys)?;
    let id = store.put_snapshot(&stored)?;
    Ok(BackupReport {
        snapshot: id,
        parent: snap.parent.clone(),
        tree: tree.hex(),
        files: snap.files,
        dirs: snap.dirs,
        files_read,
        files_unchanged: files.len() as u64 - files_read,
        bytes_total,
        bytes_read: bytes_read.into_inner(),
        blobs_new: blobs_new.into_inner(),
        bytes_new: bytes_new.into_inner(),
        bytes_stored: bytes_stored.into_inner(),
        bytes_sent: bytes_sent + stored.len() as u64,
        duration_ms: started.elapsed().as_millis() as u64,
        errors,
    })
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::Usage("internal lock poisoned".into()))
}

/// New chunks waiting to be compressed together.
#[derive(Default)]
struct Frame {
    members: Vec<Member>,
    plain: Vec<u8>,
}

/// Frames close at this many chunks whatever their size (runs of tiny files).
const MAX_MEMBERS: usize = 1024;

fn packer_gone() -> Error {
    Error::Usage("the packer stopped (see its error)".into())
}

/// Builds and stores every tree, children first; returns the root's id.
fn write_trees(
    dirs: &[DirRec],
    results: &[Option<Vec<Id>>],
    config: &crate::repo::Config,
    keys: &Keys,
    known: &Mutex<HashSet<Id>>,
    tx: &mpsc::SyncSender<Blob>,
) -> Result<Id> {
    let mut tree_ids: Vec<Option<Id>> = vec![None; dirs.len()];
    let mut encoder = BlobEncoder::new(config)?;
    for (i, d) in dirs.iter().enumerate().rev() {
        let mut entries = Vec::with_capacity(d.entries.len());
        for (node, slot) in &d.entries {
            let mut node = node.clone();
            match slot {
                Slot::Dir(c) => node.subtree = tree_ids[*c],
                Slot::File(f) => match &results[*f] {
                    Some(ids) => node.chunks = ids.clone(),
                    None => continue, // unreadable: reported, left out
                },
                Slot::Link => {}
            }
            entries.push(node);
        }
        let json = serde_json::to_vec(&Tree { entries })
            .map_err(|e| Error::Usage(format!("tree {}: {e}", d.rel)))?;
        let id = crate::chunk::blob_id(&keys.id_key, &json);
        tree_ids[i] = Some(id);
        if lock(known)?.insert(id) {
            tx.send(encoder.encode(keys, id, &json, true)?)
                .map_err(|_| packer_gone())?;
        }
    }
    tree_ids
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| Error::Usage("no root tree".into()))
}

impl Walk<'_> {
    /// Records `abs` (a directory) and everything below it, pre-order. Returns its index.
    fn dir(&mut self, abs: &Path, rel: String, parent: Option<crate::chunk::Id>) -> Result<usize> {
        let me = self.dirs.len();
        self.dirs.push(DirRec {
            rel: rel.clone(),
            entries: Vec::new(),
        });
        let old: HashMap<Vec<u8>, Node> = match parent {
            Some(id) => self
                .load_tree(&id, &rel)
                .map(|t| {
                    t.entries
                        .into_iter()
                        .filter_map(|n| n.name_bytes().ok().map(|b| (b, n)))
                        .collect()
                })
                .unwrap_or_default(),
            None => HashMap::new(),
        };
        let mut names: Vec<(OsString, PathBuf)> = match fs::read_dir(abs) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| (e.file_name(), e.path()))
                .collect(),
            Err(e) => {
                self.errors
                    .push(format!("cannot list {}: {e}", display_rel(&rel)));
                Vec::new()
            }
        };
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for (name, path) in names {
            let child_rel = if rel.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", name.to_string_lossy())
            };
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.errors.push(format!("cannot stat {child_rel}: {e}"));
                    continue;
                }
            };
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::File
            } else if ft.is_symlink() {
                Kind::Symlink
            } else {
                self.errors.push(format!(
                    "skipped {child_rel}: not a file, directory or symlink"
                ));
                continue;
            };
            let mut node = node_from(&meta, kind);
            node.set_name(name.as_bytes());
            node.xattrs = read_xattrs(&path);
            let prev = old.get(name.as_bytes());
            let slot = match kind {
                Kind::Dir => {
                    let sub = prev.filter(|p| p.kind == Kind::Dir).and_then(|p| p.subtree);
                    Slot::Dir(self.dir(&path, child_rel, sub)?)
                }
                Kind::Symlink => {
                    match fs::read_link(&path) {
                        Ok(t) => node.target = Some(t.to_string_lossy().into_owned()),
                        Err(e) => {
                            self.errors
                                .push(format!("cannot read link {child_rel}: {e}"));
                            continue;
                        }
                    }
                    Slot::Link
                }
                Kind::File => {
                    self.bytes_total += node.size;
                    let reuse = prev
                        .filter(|p| {
                            !self.force
                                && p.kind == Kind::File
                                && p.size == node.size
                                && p.mtime_ns == node.mtime_ns
                                && p.ctime_ns == node.ctime_ns
                                && p.inode == node.inode
                                && p.chunks.iter().all(|c| self.known.contains(c))
                        })
                        .map(|p| p.chunks.clone());
                    if reuse.is_none() {
                        self.bytes_to_read += node.size;
                    }
                    self.files.push(FileRec {
                        abs: path.clone(),
                        rel: child_rel,
                        reuse,
                    });
                    Slot::File(self.files.len() - 1)
                }
            };
            entries.push((node, slot));
        }
        self.dirs[me].entries = entries;
        Ok(me)
    }

    fn load_tree(&mut self, id: &Id, rel: &str) -> Option<Tree> {
        let loaded = self
            .store
            .read_stored(id)
            .and_then(|b| decode_blob(self.keys, &b, id))
            .and_then(|b| Tree::parse(&b, rel).map_err(|e| Error::corrupt("tree", e)));
        match loaded {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(dir = %display_rel(rel), error = %e, "parent tree unreadable; reading the directory in full");
                None
            }
        }
    }
}

fn display_rel(rel: &str) -> &str {
    if rel.is_empty() {
        "."
    } else {
        rel
    }
}

/// A node's metadata from `lstat`.
pub fn node_from(meta: &Metadata, kind: Kind) -> Node {
    Node {
        name: String::new(),
        name_hex: None,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        inode: meta.ino(),
        size: if kind == Kind::File { meta.len() } else { 0 },
        target: None,
        xattrs: Vec::new(),
        chunks: Vec::new(),
        subtree: None,
    }
}

fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|n| {
            let value = xattr::get(path, &n).ok().flatten()?;
            Some(Xattr {
                name: n.to_string_lossy().into_owned(),
                value: crate::chunk::hex(&value),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
