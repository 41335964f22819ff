//! One file's recorded state (what the baseline keeps per path), reading it off the live file
//! system, its compact binary encoding, and the comparison of two states.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use palisade_wire::event::{FileHash, FileInfo};
use palisade_wire::Timestamp;

use super::config::{Attr, AttrSet};

/// Files at least this large are hashed with several threads (blake3's rayon mode).
const PARALLEL_HASH_BYTES: u64 = 4 << 20;
/// Read size for streamed hashing.
const READ_CHUNK: usize = 1 << 20;
/// Extended attributes recorded per file at most, and bytes per value.
const MAX_XATTRS: usize = 64;
const MAX_XATTR_VALUE: usize = 4096;

/// The type of a file system object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File = 1,
    /// Directory.
    Dir = 2,
    /// Symbolic link.
    Symlink = 3,
    /// Named pipe.
    Fifo = 4,
    /// Unix socket.
    Socket = 5,
    /// Character device.
    Char = 6,
    /// Block device.
    Block = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::File,
            2 => Kind::Dir,
            3 => Kind::Symlink,
            4 => Kind::Fifo,
            5 => Kind::Socket,
            6 => Kind::Char,
            7 => Kind::Block,
            _ => return None,
        })
    }

    /// Of a metadata.
    pub fn of(m: &Metadata) -> Kind {
        let t = m.file_type();
        if t.is_file() {
            Kind::File
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_symlink() {
            Kind::Symlink
        } else if t.is_fifo() {
            Kind::Fifo
        } else if t.is_socket() {
            Kind::Socket
        } else if t.is_char_device() {
            Kind::Char
        } else {
            Kind::Block
        }
    }

    /// ECS `file.type`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::Char => "char",
            Kind::Block => "block",
        }
    }
}

/// How the content hash turned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Not a regular file, or content not recorded.
    None,
    /// blake3 of the content.
    Hash([u8; 32]),
    /// The file could not be read (the reason is reported, not stored).
    Unreadable,
}

/// The recorded state of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// File name within its directory (the root's own entry uses its full path).
    pub name: OsString,
    /// Type.
    pub kind: Kind,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last content change, ns since the epoch.
    pub mtime_ns: i64,
    /// Last metadata change, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Content hash.
    pub content: Content,
    /// Symlink target.
    pub target: Option<OsString>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Reading one path's state went wrong.
#[derive(Debug)]
pub struct ReadProblem {
    /// What could not be read (`content`, `xattrs`, `target`).
    pub what: &'static str,
    /// Why.
    pub error: io::Error,
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Hashes a regular file without following a symlink swapped in since `expect` was read and
/// without blocking on a FIFO swapped in; the open file must still be the inode `expect` saw.
/// Also returns the size read. `copy` receives the content as it is hashed.
pub fn hash_file(
    path: &Path,
    expect: &Metadata,
    buf: &mut Vec<u8>,
    mut copy: Option<&mut dyn io::Write>,
) -> io::Result<([u8; 32], u64)> {
    let mut f = open_nofollow(path)?;
    let m = f.metadata()?;
    if !m.file_type().is_file() || m.ino() != expect.ino() || m.dev() != expect.dev() {
        return Err(io::Error::other("the file was replaced while it was read"));
    }
    if m.len() < PARALLEL_HASH_BYTES && copy.is_none() {
        // Exactly the size the fstat of this open file gave: `read_to_end` would stat and seek
        // again to size its buffer and read once more to see the end, three more system calls
        // per file on trees of small files. Bytes appended after the fstat belong to the next
        // check, like the size recorded with this hash.
        buf.clear();
        buf.resize(m.len() as usize, 0);
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        return Ok((*blake3::hash(buf).as_bytes(), got as u64));
    }
    let mut hasher = blake3::Hasher::new();
    buf.resize(READ_CHUNK, 0);
    let mut total = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == READ_CHUNK && m.len() >= PARALLEL_HASH_BYTES {
            hasher.update_rayon(&buf[..n]);
        } else {
            hasher.update(&buf[..n]);
        }
        if let Some(w) = copy.as_deref_mut() {
            w.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    Ok((*hasher.finalize().as_bytes(), total))
}

/// Opens for reading without following a final symlink, without blocking on a FIFO, and
/// without touching the access time where the kernel allows it.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    let base = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    match OpenOptions::new()
        .read(true)
        .custom_flags(base | libc::O_NOATIME)
        .open(path)
    {
        // O_NOATIME is refused on files the caller does not own unless it is root.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            OpenOptions::new().read(true).custom_flags(base).open(path)
        }
        r => r,
    }
}

/// Extended attributes of `path` (not following symlinks), sorted by name.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        // Symlinks on most file systems, and file systems without xattrs.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names.take(MAX_XATTRS) {
        if let Some(mut v) = xattr::get(path, &name)? {
            v.truncate(MAX_XATTR_VALUE);
            out.push((name, v));
        }
    }
    out.sort();
    Ok(out)
}

impl Entry {
    /// The state of `path` given its (l)stat `m`: content hashed when `hash` and it is a
    /// regular file; problems reading parts of it are returned beside the entry.
    pub fn read(
        path: &Path,
        name: &OsStr,
        m: &Metadata,
        hash: bool,
        buf: &mut Vec<u8>,
        copy: Option<&mut dyn io::Write>,
    ) -> (Entry, Vec<ReadProblem>) {
        let mut problems = Vec::new();
        let kind = Kind::of(m);
        let content = if kind == Kind::File && hash {
            match hash_file(path, m, buf, copy) {
                Ok((h, _)) => Content::Hash(h),
                Err(error) => {
                    problems.push(ReadProblem {
                        what: "content",
                        error,
                    });
                    Content::Unreadable
                }
            }
        } else {
            Content::None
        };
        let target = if kind == Kind::Symlink {
            match std::fs::read_link(path) {
                Ok(t) => Some(t.into_os_string()),
                Err(error) => {
                    problems.push(ReadProblem {
                        what: "target",
                        error,
                    });
                    None
                }
            }
        } else {
            None
        };
        let xattrs = if kind == Kind::Symlink {
            Vec::new()
        } else {
            read_xattrs(path).unwrap_or_else(|error| {
                problems.push(ReadProblem {
                    what: "xattrs",
                    error,
                });
                Vec::new()
            })
        };
        let entry = Entry {
            name: name.to_os_string(),
            kind,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            mtime_ns: nanos(m.mtime(), m.mtime_nsec()),
            ctime_ns: nanos(m.ctime(), m.ctime_nsec()),
            inode: m.ino(),
            content,
            target,
            xattrs,
        };
        (entry, problems)
    }

    /// The attributes in `checks` that differ from `live`. A type change is reported by the
    /// caller (compare `kind` first).
    pub fn differences(&self, live: &Entry, checks: AttrSet) -> AttrSet {
        let mut d = AttrSet::default();
        let mut mark = |a: Attr, differs: bool| {
            if differs && checks.contains(a) {
                d.insert(a);
            }
        };
        let is_file = self.kind == Kind::File;
        let content_differs = match (&self.content, &live.content) {
            (Content::Hash(a), Content::Hash(b)) => a != b,
            (Content::None, Content::None) => false,
            // A file that could not be read is reported as changed: we cannot vouch for it.
            _ => true,
        };
        mark(Attr::Content, is_file && content_differs);
        mark(Attr::Size, is_file && self.size != live.size);
        mark(Attr::Mode, self.mode != live.mode);
        mark(Attr::Owner, self.uid != live.uid);
        mark(Attr::Group, self.gid != live.gid);
        mark(Attr::Mtime, self.mtime_ns != live.mtime_ns);
        mark(Attr::Ctime, self.ctime_ns != live.ctime_ns);
        mark(Attr::Inode, self.inode != live.inode);
        mark(Attr::Target, self.target != live.target);
        mark(Attr::Xattrs, self.xattrs != live.xattrs);
        d
    }

    /// blake3 of the content, when recorded.
    pub fn hash(&self) -> Option<&[u8; 32]> {
        match &self.content {
            Content::Hash(h) => Some(h),
            _ => None,
        }
    }

    /// ECS `file.*` for `path` in this state.
    pub fn file_info(&self, path: &Path) -> FileInfo {
        FileInfo {
            path: path.to_string_lossy().into_owned(),
            kind: Some(self.kind.name().to_string()),
            size: (self.kind == Kind::File).then_some(self.size),
            mode: Some(format!("{:04o}", self.mode & 0o7777)),
            uid: Some(self.uid.to_string()),
            gid: Some(self.gid.to_string()),
            inode: Some(self.inode.to_string()),
            mtime: Some(Timestamp(self.mtime_ns)),
            ctime: Some(Timestamp(self.ctime_ns)),
            target_path: self
                .target
                .as_ref()
                .map(|t| t.to_string_lossy().into_owned()),
            hash: self.hash().map(|h| FileHash {
                blake3: Some(hex(h)),
            }),
        }
    }

    /// Value of one attribute, for reports (`old -> new`).
    pub fn attr_text(&self, a: Attr) -> String {
        match a {
            Attr::Content => match &self.content {
                Content::Hash(h) => hex(h),
                Content::None => "-".into(),
                Content::Unreadable => "unreadable".into(),
            },
            Attr::Size => self.size.to_string(),
            Attr::Mode => format!("{:04o}", self.mode & 0o7777),
            Attr::Owner => self.uid.to_string(),
            Attr::Group => self.gid.to_string(),
            Attr::Mtime => Timestamp(self.mtime_ns).to_string(),
            Attr::Ctime => Timestamp(self.ctime_ns).to_string(),
            Attr::Inode => self.inode.to_string(),
            Attr::Target => self
                .target
                .as_ref()
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_else(|| "-".into()),
            Attr::Xattrs => self
                .xattrs
                .iter()
                .map(|(n, v)| {
                    format!(
                        "{}={}",
                        n.to_string_lossy(),
                        hex(&blake3::hash(v).as_bytes()[..6])
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Appends the binary encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.name.as_bytes());
        out.push(self.kind as u8);
        put_varint(out, u64::from(self.mode));
        put_varint(out, u64::from(self.uid));
        put_varint(out, u64::from(self.gid));
        put_varint(out, self.size);
        out.extend_from_slice(&self.mtime_ns.to_le_bytes());
        out.extend_from_slice(&self.ctime_ns.to_le_bytes());
        put_varint(out, self.inode);
        match &self.content {
            Content::None => out.push(0),
            Content::Hash(h) => {
                out.push(1);
                out.extend_from_slice(h);
            }
            Content::Unreadable => out.push(2),
        }
        match &self.target {
            None => out.push(0),
            Some(t) => {
                out.push(1);
                put_bytes(out, t.as_bytes());
            }
        }
        put_varint(out, self.xattrs.len() as u64);
        for (n, v) in &self.xattrs {
            put_bytes(out, n.as_bytes());
            put_bytes(out, v);
        }
    }

    /// Decodes one entry from the front of `r`.
    pub fn decode(r: &mut Reader<'_>) -> Result<Entry, String> {
        let name = OsString::from_vec(r.bytes()?.to_vec());
        let kind = Kind::from_u8(r.u8()?).ok_or("unknown file type")?;
        let small =
            |v: u64, what: &str| u32::try_from(v).map_err(|_| format!("{what} out of range"));
        let mode = small(r.varint()?, "mode")?;
        let uid = small(r.varint()?, "uid")?;
        let gid = small(r.varint()?, "gid")?;
        let size = r.varint()?;
        let mtime_ns = i64::from_le_bytes(r.array()?);
        let ctime_ns = i64::from_le_bytes(r.array()?);
        let inode = r.varint()?;
        let content = match r.u8()? {
            0 => Content::None,
            1 => Content::Hash(r.array()?),
            2 => Content::Unreadable,
            _ => return Err("unknown content tag".into()),
        };
        let target = match r.u8()? {
            0 => None,
            1 => Some(OsString::from_vec(r.bytes()?.to_vec())),
            _ => return Err("unknown target tag".into()),
        };
        let n = r.varint()?;
        if n > MAX_XATTRS as u64 {
            return Err("too many xattrs".into());
        }
        let mut xattrs = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let k = OsString::from_vec(r.bytes()?.to_vec());
            xattrs.push((k, r.bytes()?.to_vec()));
        }
        Ok(Entry {
            name,
            kind,
            mode,
            uid,
            gid,
            size,
            mtime_ns,
            ctime_ns,
            inode,
            content,
            target,
            xattrs,
        })
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// LEB128 unsigned varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint length, then the bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A bounded reader over a byte slice: every read checks what is left.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.data.len() {
            return Err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.data.len()
            ));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A fixed array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A LEB128 varint of at most 10 bytes.
    pub fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// A varint length, then that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| "length out of range".to_string())?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_truncation_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let (e, problems) = Entry::read(&p, OsStr::new("f"), &m, true, &mut Vec::new(), None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(e.hash(), Some(blake3::hash(b"hello").as_bytes()));
        let mut buf = Vec::new();
        e.encode(&mut buf);
        let back = Entry::decode(&mut Reader::new(&buf)).unwrap();
        assert_eq!(back, e);
        for cut in 0..buf.len() {
            assert!(Entry::decode(&mut Reader::new(&buf[..cut])).is_err());
        }
    }

    #[test]
    fn differences_name_the_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let read = |p: &Path| {
            let m = std::fs::symlink_metadata(p).unwrap();
            Entry::read(p, OsStr::new("f"), &m, true, &mut Vec::new(), None).0
        };
        let a = read(&p);
        std::fs::write(&p, b"two!").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let b = read(&p);
        let d = a.differences(&b, AttrSet::all());
        for attr in [Attr::Content, Attr::Size, Attr::Mode] {
            assert!(d.contains(attr), "{attr:?} in {:?}", d.names());
        }
        assert!(!d.contains(Attr::Owner));
        let only_owner = AttrSet::from_attrs(&[Attr::Owner]);
        assert!(a.differences(&b, only_owner).is_empty());
    }

    #[test]
    fn a_symlink_swapped_in_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let m = std::fs::symlink_metadata(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
        assert!(hash_file(&p, &m, &mut Vec::new(), None).is_err());
    }
}
