//! The known-good store for web anti-tamper: file contents of `protect = "restore"` trees,
//! content-addressed by blake3 (`objects/ab/abcd…`), in a 0700 directory outside the web root.
//! Objects are checked against their name when read back, so a corrupted or planted copy is
//! never restored.

use std::fs::{File, Metadata, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::entry::{hex, Entry};

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A temporary name beside `target`, unlikely to collide and easy to recognise.
pub fn temp_beside(target: &Path) -> PathBuf {
    let name = format!(
        ".palisade-tmp-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    );
    target.parent().unwrap_or(Path::new("/")).join(name)
}

/// Creates `dir` (and parents) with mode 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(0o700))
}

impl Store {
    /// Opens (creating) the store under `dir`.
    pub fn open(dir: &Path) -> io::Result<Store> {
        private_dir(&dir.join("objects"))?;
        std::fs::set_permissions(dir, Permissions::from_mode(0o700))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// Where object `hash` lives.
    pub fn object_path(&self, hash: &[u8; 32]) -> PathBuf {
        let h = hex(hash);
        self.dir.join("objects").join(&h[..2]).join(h)
    }

    /// Whether the store holds `hash`.
    pub fn has(&self, hash: &[u8; 32]) -> bool {
        self.object_path(hash).is_file()
    }

    /// A temporary file (0400) for object `hash` and where it goes, or `None` when the store
    /// has it already.
    fn new_object(&self, hash: &[u8; 32]) -> io::Result<Option<(PathBuf, PathBuf, File)>> {
        let dest = self.object_path(hash);
        if dest.is_file() {
            return Ok(None);
        }
        if let Some(parent) = dest.parent() {
            private_dir(parent)?;
        }
        let tmp = temp_beside(&dest);
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&tmp)?;
        Ok(Some((dest, tmp, out)))
    }

    /// Copies the file at `path` (whose stat is `m`) into the store unless it is there; the copy
    /// must hash to `expect`, or the file changed while it was read and nothing is stored.
    pub fn put_file(&self, path: &Path, m: &Metadata, expect: &[u8; 32]) -> io::Result<()> {
        let Some((dest, tmp, mut out)) = self.new_object(expect)? else {
            return Ok(());
        };
        let result = (|| {
            let (got, _) = super::entry::hash_file(path, m, &mut Vec::new(), Some(&mut out))?;
            if &got != expect {
                return Err(io::Error::other(format!(
                    "{} changed while it was stored",
                    path.display()
                )));
            }
            out.sync_all()?;
            std::fs::rename(&tmp, &dest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Writes object `hash` to `target` with the attributes of `entry` (mode, owner, mtime,
    /// xattrs): to a temporary file beside it, checked against the hash, then renamed over it.
    pub fn restore_file(&self, entry: &Entry, target: &Path) -> io::Result<()> {
        let Some(hash) = entry.hash() else {
            return Err(io::Error::other("the baseline has no content hash for it"));
        };
        let mut src = File::open(self.object_path(hash)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("known-good copy {} unavailable: {e}", hex(hash)),
            )
        })?;
        let tmp = temp_beside(target);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let result = (|| {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
            }
            if hasher.finalize().as_bytes() != hash {
                return Err(io::Error::other(format!(
                    "known-good copy {} is corrupt (its content no longer hashes to its name)",
                    hex(hash)
                )));
            }
            apply_attributes(&out, &tmp, entry)?;
            out.sync_all()?;
            std::fs::rename(&tmp, target)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Sets mode, owner (when permitted), xattrs and mtime of an open file to those of `entry`.
pub fn apply_attributes(f: &File, path: &Path, entry: &Entry) -> io::Result<()> {
    // Owner first: chown clears setuid/setgid bits, which the mode then puts back.
    match std::os::unix::fs::fchown(f, Some(entry.uid), Some(entry.gid)) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        r => r?,
    }
    f.set_permissions(Permissions::from_mode(entry.mode & 0o7777))?;
    for (name, value) in &entry.xattrs {
        // Only root may write trusted.* and most security.*; the rest must succeed.
        if let Err(e) = xattr::set(path, name, value) {
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(e);
            }
        }
    }
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::from_nanos(u64::try_from(entry.mtime_ns).unwrap_or(0));
    f.set_times(std::fs::FileTimes::new().set_modified(mtime))
}
