//! The content-addressed repository on disk, and the [`Store`] trait that lets backup, restore
//! and verify work the same way on a local repository and on a peer's.
//!
//! Layout:
//! ```text
//! REPO/config                 JSON: format, chunker, compression, keys (id key, or sealed keys)
//! REPO/packs/ab/<pack id>     blobs (see format.rs); pack id = blake3 of the file
//! REPO/index/<pack id>        the pack's entries, checksummed
//! REPO/snapshots/<id>         one snapshot (JSON, sealed when encrypted); id = blake3 of the file
//! REPO/prune/<time>-<rand>    prune marks: packs to delete after the grace period
//! ```
//! Every file is written to a temporary name, fsynced, renamed and its directory fsynced, in the
//! order packs → index → snapshot: a crash at any point leaves only complete files plus, at
//! worst, a pack without an index (re-indexed from the pack itself at the next open) or garbage
//! that `prune` removes. Nothing is ever locked.

pub mod format;
pub mod keys;
pub mod snapshot;
pub mod tree;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::chunk::{blob_id, ChunkerParams, Id};
use crate::error::{Error, Result};
use format::{
    Blob, BlobHeader, Entry, IndexFile, Member, FLAG_FRAME, FLAG_SEALED, FLAG_TREE, FLAG_ZSTD,
    PACK_MAGIC,
};
use keys::Keys;
pub use snapshot::Snapshot;

/// `REPO/config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Always `palisade-repository`.
    pub format: String,
    /// Layout version (1).
    pub version: u32,
    /// Random repository id, hex.
    pub id: String,
    /// Chunk sizes and gear seed.
    pub chunker: ChunkerParams,
    /// zstd level for new blobs (0 = store raw).
    pub compression_level: i32,
    /// The id key, hex, for an unencrypted repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_key: Option<String>,
    /// For an encrypted repository: the id and data keys sealed under the key file's master key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// How an encrypted repository's keys are held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// `xchacha20poly1305`.
    pub algorithm: String,
    /// `nonce || sealed(id_key || data_key)`, hex.
    pub wrapped_keys: String,
}

const FORMAT: &str = "palisade-repository";

impl Config {
    /// Parses and checks a config; `at` names its origin.
    pub fn parse(bytes: &[u8], at: &Path) -> Result<Config> {
        let bad = |reason: String| Error::Repo {
            path: at.to_path_buf(),
            reason,
        };
        let c: Config = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("config does not parse: {e}")))?;
        if c.format != FORMAT || c.version != 1 {
            return Err(bad(format!(
                "config is {:?} version {}, this build reads {FORMAT:?} version 1",
                c.format, c.version
            )));
        }
        c.chunker.validate().map_err(bad)?;
        if !(0..=22).contains(&c.compression_level) {
            return Err(bad(format!(
                "compression_level {} is outside 0..=22",
                c.compression_level
            )));
        }
        match (&c.id_key, &c.encryption) {
            (Some(k), None) if crate::chunk::parse_hex32(k).is_some() => {}
            (None, Some(e)) if e.algorithm == "xchacha20poly1305" => {}
            _ => {
                return Err(bad(
                    "config must hold either an id key or xchacha20poly1305 encryption".into(),
                ))
            }
        }
        Ok(c)
    }

    /// The keys, from the config itself or by unsealing with the key file.
    pub fn keys(&self, key_file: Option<&Path>) -> Result<Option<Keys>> {
        if let Some(k) = &self.id_key {
            let id_key = crate::chunk::parse_hex32(k)
                .ok_or_else(|| Error::Key("config id key is not hex".into()))?;
            return Ok(Some(Keys { id_key, data: None }));
        }
        let Some(enc) = &self.encryption else {
            return Ok(None);
        };
        let Some(path) = key_file else {
            return Ok(None);
        };
        let master = keys::read_key_file(path)?;
        let wrapped = tree::hex_decode(&enc.wrapped_keys)
            .ok_or_else(|| Error::Key("wrapped keys are not hex".into()))?;
        keys::unwrap(&master, &wrapped, path).map(Some)
    }

    /// Whether blobs are sealed.
    pub fn encrypted(&self) -> bool {
        self.encryption.is_some()
    }
}

/// Options of `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Seal blobs and snapshots under this key file (created when missing).
    pub key_file: Option<PathBuf>,
    /// zstd level.
    pub compression_level: i32,
    /// Chunk sizes.
    pub chunker: ChunkerParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            key_file: None,
            compression_level: 3,
            chunker: ChunkerParams::new_random(),
        }
    }
}

/// A new repository's config (and, when encrypting, its key file).
pub fn new_config(opts: &InitOptions) -> Result<Config> {
    let id = keys::random32()?;
    let id_key = keys::random32()?;
    let (id_key_hex, encryption) = match &opts.key_file {
        None => (Some(crate::chunk::hex(&id_key)), None),
        Some(path) => {
            let master = if path.exists() {
                keys::read_key_file(path)?
            } else {
                keys::create_key_file(path)?
            };
            let data_key = keys::random32()?;
            let wrapped = keys::wrap(&master, &id_key, &data_key)?;
            (
                None,
                Some(Encryption {
                    algorithm: "xchacha20poly1305".into(),
                    wrapped_keys: crate::chunk::hex(&wrapped),
                }),
            )
        }
    };
    let config = Config {
        format: FORMAT.into(),
        version: 1,
        id: crate::chunk::hex(&id[..16]),
        chunker: opts.chunker,
        compression_level: opts.compression_level,
        id_key: id_key_hex,
        encryption,
    };
    opts.chunker
        .validate()
        .map_err(|e| Error::Usage(format!("init: {e}")))?;
    Ok(config)
}

/// Where a blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    /// The pack's id.
    pub pack: [u8; 32],
    /// The blob's entry in it.
    pub entry: Entry,
}

/// Storage that backup, restore and verify use: a local repository or a peer's.
pub trait Store: Send + Sync {
    /// The repository's config.
    fn config(&self) -> &Config;
    /// Where this store is, for messages.
    fn location(&self) -> String;
    /// Ids of every blob stored (blobs in packs marked for deletion excluded).
    fn known_ids(&self) -> Result<HashSet<Id>>;
    /// Of `ids`, those the store does not hold.
    fn missing(&self, ids: &[Id]) -> Result<Vec<Id>>;
    /// Of `ids`, those no longer stored at all, judged on the repository as it is now (what a
    /// prune run beside this process may have deleted): the last check before a snapshot is
    /// committed. The default is [`Store::missing`], which also counts blobs in packs marked for
    /// deletion: stricter than needed, never looser.
    fn lost(&self, ids: &[Id]) -> Result<Vec<Id>> {
        self.missing(ids)
    }
    /// Stores records (one pack); a record arriving from elsewhere has its hash checked before
    /// it is kept (a peer's server does it; local callers computed the hashes). Returns the
    /// bytes that crossed to the store (pack bytes locally; request bytes for a peer).
    fn put_blobs(&self, blobs: &[Blob]) -> Result<u64>;
    /// The record holding `id` (the blob, or the frame it is part of), hash-checked.
    fn read_stored(&self, id: &Id) -> Result<Blob>;
    /// Stores a snapshot file (after every blob it names); returns its id.
    fn put_snapshot(&self, stored: &[u8]) -> Result<String>;
    /// Every snapshot file: (id, stored bytes).
    fn snapshot_files(&self) -> Result<Vec<(String, Vec<u8>)>>;
}

/// Encodes a blob for storage: id over the plaintext, zstd when it shrinks, sealed when the
/// repository is encrypted. One-off; a loop over many blobs keeps a [`BlobEncoder`].
pub fn encode_blob(config: &Config, keys: &Keys, data: &[u8], is_tree: bool) -> Result<Blob> {
    let id = blob_id(&keys.id_key, data);
    BlobEncoder::new(config)?.encode(keys, id, data, is_tree)
}

/// A frame of chunks up to this much plaintext is compressed as one (it closes at the first chunk
/// that takes it past this). restic's blobs average 1 MiB; zstd at level 3 keeps a 1 MiB window.
pub const FRAME_TARGET_BYTES: usize = 1 << 20;

/// Buffers of stored bytes handed back by the pack writer for the encoders to fill again: a
/// frame's ~1 MiB buffers are large allocations, and the allocator returns freed ones to the
/// kernel, so each new one would be page-faulted in again (a third more system time on a 1 GiB
/// backup).
#[derive(Debug, Default)]
pub struct BufferPool {
    bufs: Mutex<Vec<Vec<u8>>>,
}

/// Buffers a pool keeps at most.
const POOL_BUFFERS: usize = 64;

impl BufferPool {
    /// An empty buffer, with room if one came back.
    pub fn take(&self) -> Vec<u8> {
        self.bufs
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .unwrap_or_default()
    }

    /// Hands a buffer back.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < 64 << 10 {
            return;
        }
        buf.clear();
        if let Ok(mut b) = self.bufs.lock() {
            if b.len() < POOL_BUFFERS {
                b.push(buf);
            }
        }
    }
}

/// Encodes blobs for storage, keeping one zstd context for all of them (a fresh context per
/// 64 KiB chunk costs its allocation and table setup every time) and one buffer for compressed
/// output.
pub struct BlobEncoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
    pool: Option<Arc<BufferPool>>,
}

impl std::fmt::Debug for BlobEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobEncoder")
            .field("zstd", &self.zstd.is_some())
            .finish()
    }
}

impl BlobEncoder {
    /// An encoder at the repository's compression level (none at level 0).
    pub fn new(config: &Config) -> Result<Self> {
        let zstd = if config.compression_level > 0 {
            Some(
                zstd::bulk::Compressor::new(config.compression_level).map_err(|e| {
                    Error::Usage(format!("zstd level {}: {e}", config.compression_level))
                })?,
            )
        } else {
            None
        };
        Ok(BlobEncoder {
            zstd,
            scratch: Vec::new(),
            pool: None,
        })
    }

    /// An encoder whose output buffers come from `pool`.
    pub fn with_pool(config: &Config, pool: Arc<BufferPool>) -> Result<Self> {
        let mut e = BlobEncoder::new(config)?;
        e.pool = Some(pool);
        Ok(e)
    }

    /// Encodes `data`, whose id the caller computed (`blob_id` with the repository's id key).
    pub fn encode(&mut self, keys: &Keys, id: Id, data: &[u8], is_tree: bool) -> Result<Blob> {
        let flags = if is_tree { FLAG_TREE } else { 0 };
        self.record(keys, id, flags, Vec::new(), data)
    }

    /// Encodes a frame: `data` is the members' plaintexts in order. One member makes a plain
    /// blob.
    pub fn encode_frame(&mut self, keys: &Keys, members: Vec<Member>, data: &[u8]) -> Result<Blob> {
        let first = members
            .first()
            .ok_or_else(|| Error::Usage("a frame needs at least one chunk".into()))?
            .id;
        if members.len() == 1 {
            return self.record(keys, first, 0, Vec::new(), data);
        }
        self.record(keys, first, FLAG_FRAME, members, data)
    }

    fn record(
        &mut self,
        keys: &Keys,
        id: Id,
        mut flags: u8,
        members: Vec<Member>,
        data: &[u8],
    ) -> Result<Blob> {
        let mut compressed = false;
        if let Some(z) = &mut self.zstd {
            // Only output that saves at least 1/64 is kept, so a bound of 63/64 of the input
            // is enough: zstd says "too small" for anything larger (already-compressed data),
            // and that chunk is stored raw.
            let c = &mut self.scratch;
            c.clear();
            c.reserve(data.len() - data.len() / 64);
            if z.compress_to_buffer(data, c).is_ok() && c.len() + c.len() / 64 < data.len() {
                flags |= FLAG_ZSTD;
                compressed = true;
            }
        }
        let mut stored = match &self.pool {
            Some(p) => p.take(),
            None => Vec::new(),
        };
        match &keys.data {
            Some(cipher) => {
                flags |= FLAG_SEALED;
                let body = if compressed { &self.scratch[..] } else { data };
                keys::seal_into(cipher, body, &mut stored)?;
            }
            // The compressed bytes are the stored bytes: hand them over, keep the empty buffer.
            None if compressed => std::mem::swap(&mut self.scratch, &mut stored),
            None => stored.extend_from_slice(data),
        }
        let header = BlobHeader {
            id,
            flags,
            raw_len: u32::try_from(data.len())
                .ok()
                .filter(|n| *n <= format::MAX_BLOB_BYTES)
                .ok_or_else(|| {
                    Error::Usage(format!("blob of {} bytes is too large", data.len()))
                })?,
            stored_len: u32::try_from(stored.len())
                .map_err(|_| Error::Usage("stored blob is too large".into()))?,
            blob_hash: format::record_hash(&members, &stored),
        };
        Ok(Blob {
            header,
            members,
            stored,
        })
    }
}

/// Decodes a record to its whole plaintext and checks it: the hash, the seal, the length, and
/// the id of every chunk in it.
pub fn decode_record(keys: &Keys, blob: &Blob) -> Result<Vec<u8>> {
    let header = &blob.header;
    let what = || {
        if blob.members.is_empty() {
            format!("blob {}", header.id.short())
        } else {
            format!(
                "frame of {} chunks from {}",
                blob.members.len(),
                header.id.short()
            )
        }
    };
    if !blob.hash_ok() {
        return Err(Error::corrupt(
            what(),
            "stored bytes do not match their hash",
        ));
    }
    let opened;
    let mut bytes = blob.stored.as_slice();
    if header.flags & FLAG_SEALED != 0 {
        let cipher = keys
            .data
            .as_ref()
            .ok_or_else(|| Error::Key(format!("{} is sealed; give --key-file", what())))?;
        opened = keys::open(cipher, bytes)
            .ok_or_else(|| Error::corrupt(what(), "does not open with the repository key"))?;
        bytes = &opened;
    }
    let plain = if header.flags & FLAG_ZSTD != 0 {
        zstd::bulk::decompress(bytes, header.raw_len as usize)
            .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?
    } else {
        bytes.to_vec()
    };
    if plain.len() != header.raw_len as usize {
        return Err(Error::corrupt(
            what(),
            format!("{} bytes, header says {}", plain.len(), header.raw_len),
        ));
    }
    if blob.members.is_empty() {
        if blob_id(&keys.id_key, &plain) != header.id {
            return Err(Error::corrupt(what(), "content does not match its id"));
        }
    } else {
        let mut off = 0usize;
        for m in &blob.members {
            let part = plain.get(off..off + m.len as usize).unwrap_or_default();
            if blob_id(&keys.id_key, part) != m.id {
                return Err(Error::corrupt(
                    format!("chunk {} in a {}", m.id.short(), what()),
                    "content does not match its id",
                ));
            }
            off += m.len as usize;
        }
    }
    Ok(plain)
}

/// The plaintext of chunk `id` in `blob`, checked.
pub fn decode_blob(keys: &Keys, blob: &Blob, id: &Id) -> Result<Vec<u8>> {
    let (off, len) = part_of(blob, id)?;
    let plain = decode_record(keys, blob)?;
    if off == 0 && len == plain.len() {
        return Ok(plain);
    }
    Ok(plain[off..off + len].to_vec())
}

/// Where `id` lies in `blob`'s plaintext, or why it does not.
fn part_of(blob: &Blob, id: &Id) -> Result<(usize, usize)> {
    blob.part(id).ok_or_else(|| {
        Error::corrupt(
            format!("record {}", blob.header.id.short()),
            format!("does not hold {}", id.short()),
        )
    })
}

/// Reads chunks by id through a small cache of decoded frames, so reading a frame's chunks one
/// after another (a restore, a file's chunks) fetches and decompresses it once.
pub struct ChunkReader<'a> {
    store: &'a dyn Store,
    keys: &'a Keys,
    /// Decoded frames, oldest first: the record and its whole plaintext.
    cache: Mutex<std::collections::VecDeque<(Blob, Vec<u8>)>>,
    slots: usize,
}

impl std::fmt::Debug for ChunkReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkReader")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl<'a> ChunkReader<'a> {
    /// A reader keeping up to `slots` decoded frames.
    pub fn new(store: &'a dyn Store, keys: &'a Keys, slots: usize) -> Self {
        ChunkReader {
            store,
            keys,
            cache: Mutex::new(std::collections::VecDeque::new()),
            slots: slots.max(1),
        }
    }

    /// The plaintext of chunk `id`, checked against its id.
    pub fn read(&self, id: &Id) -> Result<Vec<u8>> {
        if let Some(bytes) = self.cached(id)? {
            return Ok(bytes);
        }
        let blob = self.store.read_stored(id)?;
        if blob.members.is_empty() {
            return decode_blob(self.keys, &blob, id);
        }
        let (off, len) = part_of(&blob, id)?;
        let plain = decode_record(self.keys, &blob)?;
        let out = plain[off..off + len].to_vec();
        let mut cache = self.cache.lock().map_err(|_| poisoned())?;
        if cache.len() >= self.slots {
            cache.pop_front();
        }
        cache.push_back((blob, plain));
        Ok(out)
    }

    fn cached(&self, id: &Id) -> Result<Option<Vec<u8>>> {
        let cache = self.cache.lock().map_err(|_| poisoned())?;
        for (blob, plain) in cache.iter().rev() {
            if let Some((off, len)) = blob.part(id) {
                return Ok(Some(plain[off..off + len].to_vec()));
            }
        }
        Ok(None)
    }
}

/// A local repository.
pub struct Repository {
    root: PathBuf,
    config: Config,
    index: RwLock<Index>,
    files: Mutex<HashMap<[u8; 32], Arc<File>>>,
    /// Modification time of `prune/` when the index was last loaded (see [`Repository::refresh`]).
    prune_seen: Mutex<Option<SystemTime>>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Index {
    blobs: HashMap<Id, Loc>,
    packs: HashMap<[u8; 32], u64>,
    /// Packs named in prune marks: their blobs count as absent for new backups.
    marked: HashSet<[u8; 32]>,
    /// Index files whose pack is gone.
    dangling: Vec<String>,
}

/// A pack is sealed once it holds this much.
pub const PACK_TARGET_BYTES: usize = 16 << 20;

/// Temporary files older than this are leftovers of a crash, not of a running writer.
const STALE_TMP: Duration = Duration::from_secs(3600);
/// A directory modified this recently may be modified again within the same timestamp, so
/// [`Repository::refresh`] does not trust an unchanged modification time that young.
const RACY_MTIME: Duration = Duration::from_secs(2);

impl Repository {
    /// Creates a repository at `path` (an empty or missing directory).
    pub fn init(path: &Path, config: &Config) -> Result<Repository> {
        if path.join("config").exists() {
            return Err(Error::Repo {
                path: path.to_path_buf(),
                reason: "already a repository".into(),
            });
        }
        for d in ["", "packs", "index", "snapshots", "prune"] {
            let p = path.join(d);
            fs::create_dir_all(&p).map_err(Error::io("create", &p))?;
        }
        let bytes =
            serde_json::to_vec_pretty(config).map_err(|e| Error::Usage(format!("config: {e}")))?;
        write_atomic(path, "config", &bytes)?;
        Repository::open(path)
    }

    /// Opens a repository: reads the config, loads every index, re-indexes packs a crash left
    /// without an index, and reads the prune marks.
    pub fn open(path: &Path) -> Result<Repository> {
        let cfg_path = path.join("config");
        let bytes = fs::read(&cfg_path).map_err(|e| Error::Repo {
            path: path.to_path_buf(),
            reason: format!("no readable config ({e}); run `palisade-replicator init` first"),
        })?;
        let config = Config::parse(&bytes, path)?;
        let repo = Repository {
            root: path.to_path_buf(),
            config,
            index: RwLock::new(Index::default()),
            files: Mutex::new(HashMap::new()),
            prune_seen: Mutex::new(None),
        };
        repo.reload()?;
        Ok(repo)
    }

    /// The repository's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Re-reads indexes and prune marks (another process may have written since).
    pub fn reload(&self) -> Result<()> {
        // Stamped before reading, so a change made while reading shows as a change next time.
        let stamp = self.prune_mtime();
        let mut idx = Index::default();
        let packs_dir = self.root.join("packs");
        let mut on_disk: HashMap<[u8; 32], (PathBuf, u64)> = HashMap::new();
        for fan in read_dir_sorted(&packs_dir)? {
            if !fan.is_dir() {
                continue;
            }
            for p in read_dir_sorted(&fan)? {
                let name = file_name(&p);
                if name.starts_with(".tmp-") {
                    remove_if_stale(&p);
                    continue;
                }
                if let Some(id) = crate::chunk::parse_hex32(&name) {
                    let len = fs::metadata(&p).map_err(Error::io("stat", &p))?.len();
                    on_disk.insert(id, (p, len));
                }
            }
        }
        // Marks first: where a blob has copies in several packs, the index points at a copy
        // outside the marked packs (a backup after a mark writes fresh copies).
        for plan in self.prune_marks()? {
            idx.marked.extend(
                plan.packs
                    .iter()
                    .filter_map(|p| crate::chunk::parse_hex32(p)),
            );
        }
        let index_dir = self.root.join("index");
        let mut indexed = HashSet::new();
        for p in read_dir_sorted(&index_dir)? {
            let name = file_name(&p);
            if name.starts_with(".tmp-") {
                remove_if_stale(&p);
                continue;
            }
            let bytes = fs::read(&p).map_err(Error::io("read", &p))?;
            let file = IndexFile::decode(&bytes, &name)?;
            if !on_disk.contains_key(&file.pack_id) {
                idx.dangling.push(name);
                continue;
            }
            indexed.insert(file.pack_id);
            idx.add(&file);
        }
        for (id, (path, _)) in &on_disk {
            if indexed.contains(id) {
                continue;
            }
            // A crash between a pack's rename and its index's: the pack describes itself.
            let name = crate::chunk::hex(id);
            let bytes = fs::read(path).map_err(Error::io("read", path))?;
            if blake3::hash(&bytes).as_bytes() != id {
                return Err(Error::corrupt(
                    format!("pack {name}"),
                    "has no index and does not match its name",
                ));
            }
            let file = IndexFile {
                pack_id: *id,
                pack_len: bytes.len() as u64,
                entries: format::parse_pack(&bytes, &name)?,
            };
            tracing::warn!(pack = %name, "pack had no index (interrupted write); re-indexed");
            write_atomic(&index_dir, &name, &file.encode())?;
            idx.add(&file);
        }
        for plan in self.prune_marks()? {
            idx.marked.extend(
                plan.packs
                    .iter()
                    .filter_map(|p| crate::chunk::parse_hex32(p)),
            );
        }
        *self.index.write().map_err(|_| poisoned())? = idx;
        *self.prune_seen.lock().map_err(|_| poisoned())? = stamp;
        Ok(())
    }

    /// Reloads the index if a `prune` may have run since it was loaded. A long-running process
    /// (`serve`, a long backup) calls this before it relies on what the repository holds:
    /// prune writes its mark into `prune/` before deleting anything and removes the mark only
    /// after deleting, so every deletion changes that directory's modification time, and one
    /// `stat` tells whether the in-memory index can still be trusted.
    pub fn refresh(&self) -> Result<()> {
        let now = self.prune_mtime();
        let seen = *self.prune_seen.lock().map_err(|_| poisoned())?;
        let racy = now.is_some_and(|m| {
            SystemTime::now()
                .duration_since(m)
                .map_or(true, |age| age < RACY_MTIME)
        });
        if now != seen || racy {
            self.reload()?;
        }
        Ok(())
    }

    fn prune_mtime(&self) -> Option<SystemTime> {
        fs::metadata(self.root.join("prune"))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Index files whose pack is missing (finished prunes leave none; anything else is damage).
    pub fn dangling_indexes(&self) -> Vec<String> {
        self.index
            .read()
            .map(|i| i.dangling.clone())
            .unwrap_or_default()
    }

    /// Where a blob is.
    pub fn lookup(&self, id: &Id) -> Option<Loc> {
        self.index.read().ok()?.blobs.get(id).copied()
    }

    /// Every pack: id → length.
    pub fn packs(&self) -> HashMap<[u8; 32], u64> {
        self.index
            .read()
            .map(|i| i.packs.clone())
            .unwrap_or_default()
    }

    /// Every blob's location.
    pub fn all_blobs(&self) -> Vec<(Id, Loc)> {
        self.index
            .read()
            .map(|i| i.blobs.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }

    /// The path of a pack file.
    pub fn pack_path(&self, pack: &[u8; 32]) -> PathBuf {
        let hex = crate::chunk::hex(pack);
        self.root.join("packs").join(&hex[..2]).join(hex)
    }

    fn pack_file(&self, pack: &[u8; 32]) -> Result<Arc<File>> {
        let mut files = self.files.lock().map_err(|_| poisoned())?;
        if let Some(f) = files.get(pack) {
            return Ok(f.clone());
        }
        let path = self.pack_path(pack);
        let f = Arc::new(File::open(&path).map_err(Error::io("open", &path))?);
        if files.len() > 256 {
            files.clear();
        }
        files.insert(*pack, f.clone());
        Ok(f)
    }

    /// Reads the record at a known location (header, member table, stored bytes) and checks it
    /// against the index entry and its hash.
    pub fn read_at(&self, loc: &Loc) -> Result<Blob> {
        let f = self.pack_file(&loc.pack)?;
        let e = &loc.entry;
        let start = e.record_start();
        let mut buf = vec![0u8; (e.offset - start) as usize + e.header.stored_len as usize];
        let path = self.pack_path(&loc.pack);
        f.read_exact_at(&mut buf, start)
            .map_err(Error::io("read", &path))?;
        let what = format!(
            "blob {} in pack {}",
            e.header.id.short(),
            &crate::chunk::hex(&loc.pack)[..8]
        );
        let rot = "stored bytes do not match their hash (bit rot or tampering)";
        let (header, members, body) =
            format::parse_record(&buf, &what).map_err(|_| Error::corrupt(&what, rot))?;
        if body as u64 != e.offset - start
            || header.blob_hash != e.header.blob_hash
            || header.stored_len != e.header.stored_len
        {
            return Err(Error::corrupt(&what, rot));
        }
        buf.drain(..body);
        let blob = Blob {
            header,
            members,
            stored: buf,
        };
        if !blob.hash_ok() {
            return Err(Error::corrupt(&what, rot));
        }
        Ok(blob)
    }

    /// Writes one pack and its index, durably, and adds them to the in-memory index. The blob
    /// hashes are trusted: callers computed them (`encode_blob`) or checked them (the peer
    /// server checks every incoming blob before it gets here), so they are not hashed again.
    pub fn write_pack(&self, blobs: &[Blob]) -> Result<u64> {
        self.write_pack_named(blobs).map(|(_, n)| n)
    }

    /// [`Repository::write_pack`], also returning the new pack's id (all zeros when `blobs` is
    /// empty and nothing was written).
    pub fn write_pack_named(&self, blobs: &[Blob]) -> Result<([u8; 32], u64)> {
        if blobs.is_empty() {
            return Ok(([0; 32], 0));
        }
        // The pack goes to disk from the blobs' own buffers (headers encoded side by side,
        // written with writev) and is hashed on the way, instead of being copied into one
        // pack-sized buffer first.
        let mut heads = Vec::with_capacity(blobs.len() * format::BLOB_HEADER_LEN);
        let mut head_ends = Vec::with_capacity(blobs.len());
        let mut entries = Vec::with_capacity(blobs.len());
        let mut offset = PACK_MAGIC.len() as u64;
        for b in blobs {
            let before = heads.len();
            b.encode_head(&mut heads);
            head_ends.push(heads.len());
            offset += (heads.len() - before) as u64;
            entries.extend(Entry::of_record(&b.header, &b.members, offset));
            offset += b.stored.len() as u64;
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * blobs.len());
        parts.push(PACK_MAGIC);
        let mut from = 0;
        for (b, end) in blobs.iter().zip(&head_ends) {
            parts.push(&heads[from..*end]);
            parts.push(&b.stored);
            from = *end;
        }
        let mut hasher = blake3::Hasher::new();
        for part in &parts {
            hasher.update(part);
        }
        let pack_id = *hasher.finalize().as_bytes();
        let hex = crate::chunk::hex(&pack_id);
        let packs = self.root.join("packs");
        let fan = packs.join(&hex[..2]);
        if !fan.is_dir() {
            fs::create_dir_all(&fan).map_err(Error::io("create", &fan))?;
            // The new fan directory's own name must survive a crash too.
            sync_dir(&packs)?;
        }
        write_atomic_parts(&fan, &hex, &parts)?;
        let file = IndexFile {
            pack_id,
            pack_len: offset,
            entries,
        };
        let index_bytes = file.encode();
        write_atomic(&self.root.join("index"), &hex, &index_bytes)?;
        self.index.write().map_err(|_| poisoned())?.add(&file);
        Ok((pack_id, offset + index_bytes.len() as u64))
    }

    /// The prune marks on disk.
    pub fn prune_marks(&self) -> Result<Vec<PruneMark>> {
        let dir = self.root.join("prune");
        let mut out = Vec::new();
        for p in read_dir_sorted(&dir)? {
            let name = file_name(&p);
            if name.starts_with(".tmp-") {
                continue;
            }
            let bytes = fs::read(&p).map_err(Error::io("read", &p))?;
            let mut mark: PruneMark = serde_json::from_slice(&bytes).map_err(|e| {
                Error::corrupt(format!("prune mark {name}"), format!("does not parse: {e}"))
            })?;
            mark.file = name;
            out.push(mark);
        }
        Ok(out)
    }

    /// Writes a prune mark.
    pub fn write_prune_mark(&self, mark: &PruneMark) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(mark).map_err(|e| Error::Usage(format!("mark: {e}")))?;
        write_atomic(&self.root.join("prune"), &mark.file, &bytes)?;
        self.reload()
    }

    /// Deletes a pack (then its index), as the second phase of prune.
    pub fn delete_pack(&self, pack: &[u8; 32]) -> Result<()> {
        let hex = crate::chunk::hex(pack);
        let path = self.pack_path(pack);
        if let Ok(mut files) = self.files.lock() {
            files.remove(pack);
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete", &path)(e)),
        }
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        let index = self.root.join("index").join(&hex);
        match fs::remove_file(&index) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete", &index)(e)),
        }
        sync_dir(&self.root.join("index"))
    }

    /// Deletes a finished prune mark or a dangling index file.
    pub fn remove_meta(&self, dir: &str, name: &str) -> Result<()> {
        let p = self.root.join(dir).join(name);
        fs::remove_file(&p).map_err(Error::io("delete", &p))?;
        sync_dir(&self.root.join(dir))
    }

    /// Deletes a snapshot file (forget).
    pub fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.remove_meta("snapshots", id)
    }

    /// The blob whose stored bytes are at `loc`, flipped by one bit (for tests and drills that
    /// simulate bit rot). Returns the pack file touched.
    pub fn flip_bit(&self, loc: &Loc) -> Result<PathBuf> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.pack_path(&loc.pack);
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        let at = loc.entry.offset + u64::from(loc.entry.header.stored_len / 2);
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at))
            .and_then(|_| f.read_exact(&mut b))
            .map_err(Error::io("read", &path))?;
        b[0] ^= 0x10;
        f.seek(SeekFrom::Start(at))
            .and_then(|_| f.write_all(&b))
            .and_then(|_| f.sync_all())
            .map_err(Error::io("write", &path))?;
        if let Ok(mut files) = self.files.lock() {
            files.remove(&loc.pack);
        }
        Ok(path)
    }
}

impl Index {
    fn add(&mut self, file: &IndexFile) {
        self.packs.insert(file.pack_id, file.pack_len);
        let marked = self.marked.contains(&file.pack_id);
        for e in &file.entries {
            let loc = Loc {
                pack: file.pack_id,
                entry: *e,
            };
            match self.blobs.get(&e.header.id) {
                Some(old) if marked || !self.marked.contains(&old.pack) => {}
                _ => {
                    self.blobs.insert(e.header.id, loc);
                }
            }
        }
    }
}

impl Store for Repository {
    fn config(&self) -> &Config {
        &self.config
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn known_ids(&self) -> Result<HashSet<Id>> {
        let idx = self.index.read().map_err(|_| poisoned())?;
        Ok(idx
            .blobs
            .iter()
            .filter(|(_, l)| !idx.marked.contains(&l.pack))
            .map(|(id, _)| *id)
            .collect())
    }

    fn missing(&self, ids: &[Id]) -> Result<Vec<Id>> {
        let idx = self.index.read().map_err(|_| poisoned())?;
        Ok(ids
            .iter()
            .filter(|id| {
                idx.blobs
                    .get(id)
                    .is_none_or(|l| idx.marked.contains(&l.pack))
            })
            .copied()
            .collect())
    }

    fn lost(&self, ids: &[Id]) -> Result<Vec<Id>> {
        self.refresh()?;
        // A blob in a marked pack is still held: the mark's second phase checks the snapshots
        // present then, this one included, before deleting anything.
        let idx = self.index.read().map_err(|_| poisoned())?;
        Ok(ids
            .iter()
            .filter(|id| !idx.blobs.contains_key(id))
            .copied()
            .collect())
    }

    fn put_blobs(&self, blobs: &[Blob]) -> Result<u64> {
        self.write_pack(blobs)
    }

    fn read_stored(&self, id: &Id) -> Result<Blob> {
        let loc = self.lookup(id).ok_or_else(|| Error::MissingBlob {
            id: id.hex(),
            by: "a read".into(),
        })?;
        self.read_at(&loc)
    }

    fn put_snapshot(&self, stored: &[u8]) -> Result<String> {
        let id = crate::chunk::hex(blake3::hash(stored).as_bytes());
        write_atomic(&self.root.join("snapshots"), &id, stored)?;
        Ok(id)
    }

    fn snapshot_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for p in read_dir_sorted(&self.root.join("snapshots"))? {
            let name = file_name(&p);
            if name.starts_with(".tmp-") {
                continue;
            }
            let bytes = fs::read(&p).map_err(Error::io("read", &p))?;
            if crate::chunk::hex(blake3::hash(&bytes).as_bytes()) != name {
                return Err(Error::corrupt(
                    format!("snapshot {name}"),
                    "file does not match its name (altered or truncated)",
                ));
            }
            out.push((name, bytes));
        }
        Ok(out)
    }
}

/// A prune mark: packs that held only unreferenced blobs when the mark was made.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneMark {
    /// When the mark was made, ns since the epoch.
    pub created_ns: i64,
    /// Pack ids, hex.
    pub packs: Vec<String>,
    /// The mark's file name.
    #[serde(skip)]
    pub file: String,
}

fn poisoned() -> Error {
    Error::Usage("internal lock poisoned by a panic in another thread".into())
}

/// Writes `bytes` to `dir/name` so that the name holds either nothing or the whole content:
/// temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    write_atomic_parts(dir, name, &[bytes])
}

/// [`write_atomic`] of the concatenation of `parts`, without concatenating them in memory.
pub fn write_atomic_parts(dir: &Path, name: &str, parts: &[&[u8]]) -> Result<()> {
    let mut rnd = [0u8; 8];
    let _ = getrandom::fill(&mut rnd);
    let tmp = dir.join(format!(".tmp-{}", crate::chunk::hex(&rnd)));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        write_all_parts(&mut f, parts).map_err(Error::io("write", &tmp))?;
        f.sync_all().map_err(Error::io("fsync", &tmp))?;
        let dst = dir.join(name);
        fs::rename(&tmp, &dst).map_err(Error::io("rename into place", &dst))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes every part in order with `writev`, up to 64 parts per call, resuming after short
/// writes.
fn write_all_parts(f: &mut File, parts: &[&[u8]]) -> std::io::Result<()> {
    use std::io::{ErrorKind, IoSlice};
    let (mut i, mut off) = (0usize, 0usize);
    let mut slices = Vec::with_capacity(64);
    loop {
        while i < parts.len() && off == parts[i].len() {
            i += 1;
            off = 0;
        }
        if i == parts.len() {
            return Ok(());
        }
        slices.clear();
        slices.push(IoSlice::new(&parts[i][off..]));
        slices.extend(parts[i + 1..].iter().take(63).map(|p| IoSlice::new(p)));
        let mut n = match f.write_vectored(&slices) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while n > 0 {
            let left = parts[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
}

/// fsyncs a directory so renames and deletes in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(Error::io("list", dir))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("list", dir)(e)),
    };
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn remove_if_stale(p: &Path) {
    let old = fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > STALE_TMP);
    if old {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_written_in_order_whatever_their_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        // Empty parts, parts larger than a pipe buffer and more than 64 parts per writev.
        let owned: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                let n = match i % 7 {
                    0 => 0,
                    1 => 300_000,
                    _ => rng.usize(..5000),
                };
                let mut v = vec![0u8; n];
                rng.fill(&mut v);
                v
            })
            .collect();
        let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        write_atomic_parts(dir.path(), "f", &parts).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), owned.concat());
        write_atomic_parts(dir.path(), "empty", &[]).unwrap();
        assert!(fs::read(dir.path().join("empty")).unwrap().is_empty());
    }
}
