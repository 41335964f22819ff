//! The synced directory on disk: which relative paths are acceptable (from the peer and from the
//! walk), listing regular files, writing a file atomically next to where it lands, and the
//! names of conflict copies.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Files sync writes for itself inside the tree (temp files) start with this; the walk and the
/// watcher skip them, and the peer may not name them.
pub const INTERNAL_PREFIX: &str = ".palisade-sync-";

/// Checks a path received from a peer: relative, `/`-separated, no empty, `.` or `..`
/// component, no NUL or backslash, not one of sync's own temp files.
pub fn validate_path(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.len() > 4096 {
        return Err("path longer than 4096 bytes".into());
    }
    if p.starts_with('/') {
        return Err(format!("{p:?} is absolute"));
    }
    if p.contains('\0') {
        return Err(format!("{p:?} contains NUL"));
    }
    if p.contains('\\') {
        return Err(format!("{p:?} contains a backslash"));
    }
    for c in p.split('/') {
        match c {
            "" => return Err(format!("{p:?} has an empty component")),
            "." | ".." => return Err(format!("{p:?} has a {c:?} component")),
            _ if c.starts_with(INTERNAL_PREFIX) => {
                return Err(format!("{p:?} names a sync temp file"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `path` is `prefix` or inside it (`""` is the whole tree).
pub fn under(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// `root/rel`.
pub fn full(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

/// The relative, `/`-separated form of `abs` under `root`; `None` outside it, for non-UTF-8
/// names and for sync's own files.
pub fn relative(root: &Path, abs: &Path) -> Option<String> {
    let rel = abs.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(s) => {
                let s = s.to_str()?;
                if s.starts_with(INTERNAL_PREFIX) {
                    return None;
                }
                parts.push(s);
            }
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// Regular files under `root/prefix` (or `prefix` itself when it is one), as relative paths.
/// Symlinks, sockets and sync's temp files are skipped, and so is `skip` (the state directory
/// when it sits inside the tree).
pub fn walk(root: &Path, prefix: &str, skip: Option<&Path>) -> Vec<String> {
    let mut out = Vec::new();
    let start = if prefix.is_empty() {
        root.to_path_buf()
    } else {
        full(root, prefix)
    };
    let mut stack = vec![start];
    while let Some(p) = stack.pop() {
        if skip.is_some_and(|s| p.starts_with(s)) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(rd) => stack.extend(rd.flatten().map(|e| e.path())),
                Err(e) => tracing::warn!(dir = %p.display(), error = %e, "cannot list; skipped"),
            }
        } else if meta.is_file() {
            match relative(root, &p) {
                Some(rel) if !rel.is_empty() => out.push(rel),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// What identifies a file's current version cheaply: size, mtime, inode (`None`: no file).
pub type Fingerprint = Option<(u64, Option<std::time::SystemTime>, u64)>;

/// The fingerprint of `root/rel` now.
pub fn fingerprint(root: &Path, rel: &str) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(full(root, rel))
        .ok()
        .map(|m| (m.len(), m.modified().ok(), m.ino()))
}

/// Writes `bytes` to `root/rel` atomically: a temp file in the same directory, fsync, mtime,
/// rename, fsync of the directory. Creates missing parent directories.
///
/// With `expect`, the file must still have that fingerprint right before the rename (a local
/// write that slipped in since it was read is never overwritten); `Ok(false)` when it had not.
pub fn write_file(
    root: &Path,
    rel: &str,
    bytes: &[u8],
    mtime_ns: i64,
    mode: u32,
    expect: Option<&Fingerprint>,
) -> Result<bool> {
    let dst = full(root, rel);
    let dir = dst.parent().unwrap_or(root).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
    let mut rnd = [0u8; 8];
    let _ = getrandom::fill(&mut rnd);
    let tmp = dir.join(format!("{INTERNAL_PREFIX}{}", crate::chunk::hex(&rnd)));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        f.write_all(bytes).map_err(Error::io("write", &tmp))?;
        if mode != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(mode & MODE_BITS))
                .map_err(Error::io("set permissions of", &tmp))?;
        }
        if let Ok(ns) = u64::try_from(mtime_ns) {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
            // The mtime is informative; content and version vectors decide.
            let _ = f.set_modified(t);
        }
        f.sync_all().map_err(Error::io("fsync", &tmp))?;
        if expect.is_some_and(|x| *x != fingerprint(root, rel)) {
            return Ok(false);
        }
        std::fs::rename(&tmp, &dst).map_err(Error::io("rename into place", &dst))?;
        crate::repo::sync_dir(&dir)?;
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The permission bits sync carries: setuid, setgid and sticky never cross (a peer must not be
/// able to plant a setuid program).
pub const MODE_BITS: u32 = 0o777;

/// The permission bits of a file as sync records them.
pub fn mode_of(meta: &std::fs::Metadata) -> u32 {
    meta.permissions().mode() & MODE_BITS
}

/// Sets the permission bits of `root/rel` if it still has fingerprint `expect`; `Ok(false)`
/// when it changed since.
pub fn set_mode(root: &Path, rel: &str, mode: u32, expect: &Fingerprint) -> Result<bool> {
    let p = full(root, rel);
    if *expect != fingerprint(root, rel) {
        return Ok(false);
    }
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & MODE_BITS))
        .map_err(Error::io("set permissions of", &p))?;
    Ok(true)
}

/// Removes `root/rel` if it still has fingerprint `expect`; a file already gone is fine.
/// `Ok(false)` when it changed since.
pub fn remove_file(root: &Path, rel: &str, expect: &Fingerprint) -> Result<bool> {
    let p = full(root, rel);
    if *expect != fingerprint(root, rel) {
        return Ok(false);
    }
    match std::fs::remove_file(&p) {
        Ok(()) => {
            if let Some(dir) = p.parent() {
                let _ = crate::repo::sync_dir(dir);
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io("remove", &p)(e)),
    }
}

/// Removes the directories above `rel` that a delete left empty (up to, not including, root),
/// so a directory deleted at one site disappears at the other too.
pub fn remove_empty_parents(root: &Path, rel: &str) {
    let mut p = full(root, rel);
    while let Some(dir) = p.parent() {
        if dir == root || !dir.starts_with(root) || std::fs::remove_dir(dir).is_err() {
            return;
        }
        p = dir.to_path_buf();
    }
}

/// Removes temp files a crash left in the tree.
pub fn clean_temp_files(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(path);
            } else if e.file_name().to_string_lossy().starts_with(INTERNAL_PREFIX) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// `NAME.conflict-SITE-N-YYYYmmddTHHMMSSZ`, next to `rel`: the losing version's site, its
/// change number there (the site's counter in the version vector) and its change time. The
/// name depends on the losing version only, so both sites resolving the same conflict pick the
/// same name, and two versions losing within the same second never share one (a shared name
/// would be a conflict of its own on the copy).
pub fn conflict_name(rel: &str, site: &str, counter: u64, changed_ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(changed_ns)
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    format!("{rel}.conflict-{site}-{counter}-{t}")
}

/// blake3 of `bytes`, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_that_leave_the_tree() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\\..\\b",
            "..",
            ".palisade-sync-0011",
            "d/.palisade-sync-x",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "a/b.txt", ".hidden", "dir/..x", "x..", "日本/語.txt"] {
            assert!(validate_path(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn prefix_match_is_by_component() {
        assert!(under("a/b", "a"));
        assert!(under("a", "a"));
        assert!(!under("ab", "a"));
        assert!(under("anything", ""));
    }

    #[test]
    fn a_write_that_lands_after_the_read_is_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"old").unwrap();
        let seen = fingerprint(d.path(), "f");
        std::fs::write(d.path().join("f"), b"local edit, longer").unwrap();
        assert!(!write_file(d.path(), "f", b"peer", 0, 0, Some(&seen)).unwrap());
        assert!(!remove_file(d.path(), "f", &seen).unwrap());
        assert_eq!(
            std::fs::read(d.path().join("f")).unwrap(),
            b"local edit, longer"
        );
        let now = fingerprint(d.path(), "f");
        assert!(write_file(d.path(), "f", b"peer", 0, 0, Some(&now)).unwrap());
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"peer");
        // No temp files left behind either way.
        assert_eq!(walk(d.path(), "", None), vec!["f".to_string()]);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn conflict_copy_names_site_and_utc_time() {
        assert_eq!(
            conflict_name("d/f.txt", "site-b", 7, 1_700_000_000_000_000_000),
            "d/f.txt.conflict-site-b-7-20231114T221320Z"
        );
    }
}
