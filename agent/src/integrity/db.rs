//! The baseline database: one file, signed with the agent's Ed25519 key.
//!
//! ```text
//! "PALBASE1" | u32 header length | header (JSON)
//! ( 'S' | u32 length | section )*        sections sorted by directory path bytes, unique
//! 'T' | public key (32) | signature (64)  signature over blake3 of every byte before it
//! section = dir (varint length + bytes) | root (varint) | own entry flag (0/1) [entry]
//!           | count (varint) | entries sorted by name
//! ```
//!
//! Opening reads the file once, checks the signature (against the pinned key when one is
//! configured) and keeps only a small index in memory: directory, offset, length and blake3 of
//! each section. A section is read back with a positioned read and re-hashed, so a file swapped
//! after the signature check cannot slip in. Memory is per directory, not per file.
//!
//! Writing spills sections to a temporary file as the walk produces them (in any order), then
//! writes the final file in sorted order, fsyncs it and renames it over the old one (kept as
//! `baseline.db.prev`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::entry::{hex, put_bytes, put_varint, Entry, Reader};
use super::sign::{self, Key};
use super::walk::Section;

const MAGIC: &[u8; 8] = b"PALBASE1";
/// Largest header and section accepted when reading (a hostile file cannot make us allocate
/// more).
const MAX_HEADER: u32 = 1 << 20;
const MAX_SECTION: u32 = 1 << 30;

/// Baseline database trouble.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// I/O on the file.
    #[error("cannot {action} baseline {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// There is no baseline yet.
    #[error("no baseline at {0}; create one with `palisade-agent baseline`")]
    Missing(PathBuf),
    /// The file is not a well-formed baseline.
    #[error("baseline {path} is malformed at byte {offset}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The signature does not hold: the file was edited, or signed by another key.
    #[error("baseline {path} is refused: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What the header says about a baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Format version (1).
    pub version: u32,
    /// The agent that made it.
    pub agent_id: String,
    /// When it was written (ns since the epoch).
    pub created_ns: i64,
    /// 1 for the first baseline, +1 for each update.
    pub generation: u64,
    /// Who approved this state (for updates and publishes).
    pub approved_by: Option<String>,
    /// Why (`init`, `update`, `publish <dest>`).
    pub reason: String,
    /// The configured roots.
    pub roots: Vec<PathBuf>,
    /// Non-directory entries recorded.
    pub files: u64,
    /// Directories recorded.
    pub dirs: u64,
}

/// Index entry of one section.
#[derive(Debug, Clone)]
struct Slot {
    dir: PathBuf,
    offset: u64,
    len: u32,
    hash: [u8; 32],
}

/// An opened, signature-checked baseline.
#[derive(Debug)]
pub struct Baseline {
    path: PathBuf,
    file: File,
    /// Its header.
    pub header: Header,
    slots: Vec<Slot>,
    /// blake3 of the signed body (hex): names this exact baseline in events.
    pub digest: String,
    /// The key that signed it (hex).
    pub public_key: String,
}

fn malformed(path: &Path, offset: u64, reason: impl Into<String>) -> DbError {
    DbError::Malformed {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// A reader that hashes what it reads and counts bytes.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    offset: u64,
}

impl<R: Read> HashingReader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)?;
        self.hasher.update(buf);
        self.offset += buf.len() as u64;
        Ok(())
    }
}

impl Baseline {
    /// Opens `path` and checks its signature; with `pinned`, the signer must be that key.
    pub fn open(path: &Path, pinned: Option<&VerifyingKey>) -> Result<Baseline, DbError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DbError::Missing(path.to_path_buf()))
            }
            Err(source) => {
                return Err(DbError::Io {
                    action: "open",
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let mut r = HashingReader {
            inner: BufReader::with_capacity(1 << 16, &file),
            hasher: blake3::Hasher::new(),
            offset: 0,
        };
        let eof = |e: std::io::Error, at: u64| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                malformed(path, at, "file ends early (unsigned or truncated)")
            } else {
                DbError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        };
        let mut magic = [0u8; 8];
        r.exact(&mut magic).map_err(|e| eof(e, 0))?;
        if &magic != MAGIC {
            return Err(malformed(path, 0, "not a Palisade baseline (bad magic)"));
        }
        let mut len = [0u8; 4];
        r.exact(&mut len).map_err(|e| eof(e, 8))?;
        let hlen = u32::from_le_bytes(len);
        if hlen > MAX_HEADER {
            return Err(malformed(path, 8, format!("header of {hlen} bytes")));
        }
        let mut hbuf = vec![0u8; hlen as usize];
        r.exact(&mut hbuf).map_err(|e| eof(e, 12))?;
        let mut slots: Vec<Slot> = Vec::new();
        let mut buf = Vec::new();
        loop {
            let at = r.offset;
            let mut tag = [0u8; 1];
            r.exact(&mut tag).map_err(|e| eof(e, at))?;
            match tag[0] {
                b'S' => {
                    r.exact(&mut len).map_err(|e| eof(e, at + 1))?;
                    let slen = u32::from_le_bytes(len);
                    if slen > MAX_SECTION {
                        return Err(malformed(path, at, format!("section of {slen} bytes")));
                    }
                    buf.resize(slen as usize, 0);
                    r.exact(&mut buf).map_err(|e| eof(e, at + 5))?;
                    let dir = Reader::new(&buf)
                        .bytes()
                        .map_err(|e| malformed(path, at + 5, e))?;
                    let dir = PathBuf::from(std::ffi::OsString::from_vec(dir.to_vec()));
                    if let Some(prev) = slots.last() {
                        if prev.dir.as_os_str().as_bytes() >= dir.as_os_str().as_bytes() {
                            return Err(malformed(path, at, "sections out of order"));
                        }
                    }
                    slots.push(Slot {
                        dir,
                        offset: at + 5,
                        len: slen,
                        hash: *blake3::hash(&buf).as_bytes(),
                    });
                }
                b'T' => break,
                other => {
                    return Err(malformed(
                        path,
                        at,
                        format!("unknown record tag {other:#04x}"),
                    ))
                }
            }
        }
        let mut public = [0u8; 32];
        let at = r.offset;
        r.exact(&mut public).map_err(|e| eof(e, at))?;
        let digest = *r.hasher.finalize().as_bytes();
        let mut signature = [0u8; 64];
        r.inner
            .read_exact(&mut signature)
            .map_err(|e| eof(e, at + 32))?;
        let mut rest = [0u8; 1];
        if r.inner.read(&mut rest).map_err(|e| eof(e, at + 96))? != 0 {
            return Err(malformed(path, at + 96, "bytes after the signature"));
        }
        let signer = VerifyingKey::from_bytes(&public)
            .map_err(|_| malformed(path, at, "the signer's public key is not valid"))?;
        if let Some(p) = pinned {
            if p != &signer {
                return Err(DbError::Refused {
                    path: path.to_path_buf(),
                    reason: format!(
                        "signed by key {}, not the pinned key {}",
                        hex(&public),
                        hex(p.as_bytes())
                    ),
                });
            }
        }
        if !sign::verify(&signer, &digest, &signature) {
            return Err(DbError::Refused {
                path: path.to_path_buf(),
                reason: "the signature does not match the content (edited after signing)".into(),
            });
        }
        // The header is read only once the signature holds: an edited header is "refused",
        // like any other edit, rather than a parse error.
        let header: Header = serde_json::from_slice(&hbuf)
            .map_err(|e| malformed(path, 12, format!("header: {e}")))?;
        if header.version != 1 {
            return Err(malformed(
                path,
                12,
                format!("format version {} (this agent reads 1)", header.version),
            ));
        }
        Ok(Baseline {
            path: path.to_path_buf(),
            file,
            header,
            slots,
            digest: hex(&digest),
            public_key: hex(&public),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Directories recorded, in order.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.slots.iter().map(|s| s.dir.as_path())
    }

    /// Number of sections.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it records nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn find(&self, dir: &Path) -> Result<usize, usize> {
        self.slots
            .binary_search_by(|s| s.dir.as_os_str().as_bytes().cmp(dir.as_os_str().as_bytes()))
    }

    /// Position of `dir` among the sections, if recorded.
    pub fn position(&self, dir: &Path) -> Option<usize> {
        self.find(dir).ok()
    }

    /// Positions of the sections at or below `dir` (`dir` itself and `dir/...`).
    pub fn positions_under(&self, dir: &Path) -> std::ops::Range<usize> {
        let start = match self.find(dir) {
            Ok(i) | Err(i) => i,
        };
        let mut prefix = dir.as_os_str().as_bytes().to_vec();
        prefix.push(b'/');
        let mut end = start;
        while end < self.slots.len() {
            let d = self.slots[end].dir.as_os_str().as_bytes();
            if d == dir.as_os_str().as_bytes() || d.starts_with(&prefix) {
                end += 1;
            } else {
                break;
            }
        }
        start..end
    }

    /// The raw bytes of section `i`, re-checked against the hash taken at open.
    fn raw(&self, i: usize) -> Result<Vec<u8>, DbError> {
        let slot = &self.slots[i];
        let mut buf = vec![0u8; slot.len as usize];
        self.file
            .read_exact_at(&mut buf, slot.offset)
            .map_err(|source| DbError::Io {
                action: "read",
                path: self.path.clone(),
                source,
            })?;
        if blake3::hash(&buf).as_bytes() != &slot.hash {
            return Err(DbError::Refused {
                path: self.path.clone(),
                reason: format!(
                    "section {} changed on disk after the signature was checked",
                    slot.dir.display()
                ),
            });
        }
        Ok(buf)
    }

    /// Section `i`.
    pub fn section_at(&self, i: usize) -> Result<Section, DbError> {
        let buf = self.raw(i)?;
        decode_section(&buf).map_err(|e| malformed(&self.path, self.slots[i].offset, e))
    }

    /// The section of `dir`, when recorded.
    pub fn section(&self, dir: &Path) -> Result<Option<Section>, DbError> {
        match self.find(dir) {
            Ok(i) => self.section_at(i).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The recorded entry of `path` (a root's own entry for a root), when recorded.
    pub fn entry(&self, path: &Path) -> Result<Option<Entry>, DbError> {
        if let Ok(i) = self.find(path) {
            let s = self.section_at(i)?;
            if let Some(own) = s.own {
                return Ok(Some(own));
            }
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(None);
        };
        Ok(self
            .section(parent)?
            .and_then(|s| s.entries.into_iter().find(|e| e.name.as_os_str() == name)))
    }
}

fn non_dirs(s: &Section) -> u64 {
    s.entries
        .iter()
        .filter(|e| e.kind != super::entry::Kind::Dir)
        .count() as u64
}

/// Encodes a section.
pub fn encode_section(s: &Section) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + s.entries.len() * 96);
    put_bytes(&mut out, s.dir.as_os_str().as_bytes());
    put_varint(&mut out, s.root as u64);
    match &s.own {
        None => out.push(0),
        Some(e) => {
            out.push(1);
            e.encode(&mut out);
        }
    }
    put_varint(&mut out, s.entries.len() as u64);
    for e in &s.entries {
        e.encode(&mut out);
    }
    out
}

/// Decodes a section.
pub fn decode_section(buf: &[u8]) -> Result<Section, String> {
    let mut r = Reader::new(buf);
    let dir = PathBuf::from(std::ffi::OsString::from_vec(r.bytes()?.to_vec()));
    let root = usize::try_from(r.varint()?).map_err(|_| "root index out of range")?;
    let own = match r.u8()? {
        0 => None,
        1 => Some(Entry::decode(&mut r)?),
        _ => return Err("bad own-entry flag".into()),
    };
    let n = r.varint()?;
    // Each entry takes at least 24 bytes, so a count beyond that is a lie.
    if n > (r.remaining() / 24) as u64 + 1 {
        return Err(format!("{n} entries cannot fit in {} bytes", r.remaining()));
    }
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        entries.push(Entry::decode(&mut r)?);
    }
    if r.remaining() != 0 {
        return Err(format!("{} bytes after the last entry", r.remaining()));
    }
    Ok(Section {
        dir,
        root,
        own,
        entries,
    })
}

/// Builds a new baseline file: sections arrive in any order (from several threads).
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    spill_path: PathBuf,
    inner: Mutex<Spill>,
}

#[derive(Debug)]
struct Spill {
    file: BufWriter<File>,
    offset: u64,
    index: Vec<(PathBuf, u64, u32)>,
    files: u64,
    error: Option<std::io::Error>,
}

impl Writer {
    /// A writer that will replace `path`.
    pub fn create(path: &Path) -> Result<Writer, DbError> {
        let spill_path = path.with_extension("spill");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&spill_path)
            .map_err(|source| DbError::Io {
                action: "create",
                path: spill_path.clone(),
                source,
            })?;
        Ok(Writer {
            path: path.to_path_buf(),
            spill_path,
            inner: Mutex::new(Spill {
                file: BufWriter::with_capacity(1 << 20, file),
                offset: 0,
                index: Vec::new(),
                files: 0,
                error: None,
            }),
        })
    }

    /// Adds a section.
    pub fn add(&self, section: &Section) {
        let bytes = encode_section(section);
        self.add_raw(&section.dir, &bytes, non_dirs(section));
    }

    fn add_raw(&self, dir: &Path, bytes: &[u8], files: u64) {
        let mut s = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.error.is_some() {
            return;
        }
        if let Err(e) = s.file.write_all(bytes) {
            s.error = Some(e);
            return;
        }
        let at = s.offset;
        s.offset += bytes.len() as u64;
        s.files += files;
        s.index.push((dir.to_path_buf(), at, bytes.len() as u32));
    }

    /// Copies every section of `old` for which `keep(dir)` holds.
    pub fn copy_from(&self, old: &Baseline, keep: impl Fn(&Path) -> bool) -> Result<(), DbError> {
        for i in 0..old.slots.len() {
            if keep(&old.slots[i].dir) {
                let raw = old.raw(i)?;
                let n = non_dirs(
                    &decode_section(&raw)
                        .map_err(|e| malformed(&old.path, old.slots[i].offset, e))?,
                );
                self.add_raw(&old.slots[i].dir, &raw, n);
            }
        }
        Ok(())
    }

    /// Writes the signed file (sorted, fsynced, renamed into place) and returns it opened.
    pub fn finish(self, mut header: Header, key: &Key) -> Result<Baseline, DbError> {
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| DbError::Io {
                action,
                path,
                source,
            }
        };
        let spill = self
            .inner
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = spill.error {
            return Err(io("write", &self.spill_path)(e));
        }
        let Spill {
            file,
            mut index,
            files,
            ..
        } = spill;
        let spill_file = file
            .into_inner()
            .map_err(|e| io("write", &self.spill_path)(e.into_error()))?;
        index.sort_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
        if let Some(w) = index.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(malformed(
                &self.path,
                0,
                format!("directory {} recorded twice", w[0].0.display()),
            ));
        }
        header.files = files;
        header.dirs = index.len() as u64;
        let tmp = self.path.with_extension("new");
        let out = File::create(&tmp).map_err(io("create", &tmp))?;
        let mut w = BufWriter::with_capacity(1 << 20, out);
        let mut hasher = blake3::Hasher::new();
        let mut put = |w: &mut BufWriter<File>, b: &[u8]| {
            hasher.update(b);
            w.write_all(b)
        };
        let hjson = serde_json::to_vec(&header).unwrap_or_default();
        put(&mut w, MAGIC).map_err(io("write", &tmp))?;
        put(&mut w, &(hjson.len() as u32).to_le_bytes()).map_err(io("write", &tmp))?;
        put(&mut w, &hjson).map_err(io("write", &tmp))?;
        let mut buf = Vec::new();
        for (_, offset, len) in &index {
            buf.resize(*len as usize, 0);
            spill_file
                .read_exact_at(&mut buf, *offset)
                .map_err(io("read", &self.spill_path))?;
            put(&mut w, b"S").map_err(io("write", &tmp))?;
            put(&mut w, &len.to_le_bytes()).map_err(io("write", &tmp))?;
            put(&mut w, &buf).map_err(io("write", &tmp))?;
        }
        put(&mut w, b"T").map_err(io("write", &tmp))?;
        put(&mut w, key.public().as_bytes()).map_err(io("write", &tmp))?;
        let digest = *hasher.finalize().as_bytes();
        w.write_all(&key.sign(&digest)).map_err(io("write", &tmp))?;
        let out = w
            .into_inner()
            .map_err(|e| io("write", &tmp)(e.into_error()))?;
        out.sync_all().map_err(io("sync", &tmp))?;
        drop(spill_file);
        let _ = std::fs::remove_file(&self.spill_path);
        // The old baseline stays reachable as `.prev` and the swap itself is one rename, so a
        // crash leaves either the old or the new file in place, never neither.
        if self.path.exists() {
            let prev = self.path.with_extension("db.prev");
            let _ = std::fs::remove_file(&prev);
            std::fs::hard_link(&self.path, &prev).map_err(io("keep the previous", &self.path))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io("rename into place", &self.path))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Baseline::open(&self.path, Some(&key.public()))
    }
}

#[doc(hidden)]
pub mod fuzzing {
    /// Decodes arbitrary bytes as a baseline section; must never panic.
    pub fn section(data: &[u8]) {
        let _ = super::decode_section(data);
    }

    /// Opens arbitrary bytes as a baseline file (unsigned, so refused unless malformed
    /// earlier); must never panic or allocate without bound.
    pub fn baseline_file(data: &[u8]) {
        let path =
            std::env::temp_dir().join(format!("palisade-fuzz-baseline-{}.db", std::process::id()));
        if std::fs::write(&path, data).is_ok() {
            if let Ok(b) = super::Baseline::open(&path, None) {
                for i in 0..b.len() {
                    let _ = b.section_at(i);
                }
            }
        }
    }
}
