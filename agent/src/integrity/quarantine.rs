//! The quarantine: files taken out of service (a YARA-X match with `action = "quarantine"`, or
//! something planted in a protected web root) kept as evidence in a 0700 directory, one
//! sub-directory per item with the content (`data`, mode 0400) and `meta.json` saying where it
//! came from, what it was and why it was taken. `palisade-agent quarantine list|restore`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::entry::{hex, Kind};
use super::store::private_dir;

/// Quarantine trouble.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// File system.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No such item.
    #[error("no quarantined item {0} (see `palisade-agent quarantine list`)")]
    Unknown(String),
    /// Restoring would overwrite something.
    #[error("{0} exists; give --force to overwrite it or --to another path")]
    Exists(PathBuf),
    /// A damaged item.
    #[error("quarantined item {id} is damaged: {reason}")]
    Damaged {
        /// The item.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

/// What is kept about a quarantined item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Item {
    /// Item id (time and content hash).
    pub id: String,
    /// Where it was.
    pub original_path: PathBuf,
    /// When it was taken (RFC 3339).
    pub quarantined_at: String,
    /// Why (`malware`, `tamper-added`, `tamper-replaced`).
    pub reason: String,
    /// Rule ids that matched (malware).
    #[serde(default)]
    pub rules: Vec<String>,
    /// `file`, `dir`, `symlink`, …
    pub kind: String,
    /// blake3 of the content (files).
    pub blake3: Option<String>,
    /// Size.
    pub size: u64,
    /// Permission bits it had.
    pub mode: u32,
    /// Owner it had.
    pub uid: u32,
    /// Group it had.
    pub gid: u32,
}

/// The quarantine directory.
#[derive(Debug, Clone)]
pub struct Quarantine {
    dir: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> QuarantineError {
    let path = path.to_path_buf();
    move |source| QuarantineError::Io {
        action,
        path,
        source,
    }
}

/// Moves `from` to `to`: a rename, or copy-and-delete across file systems (files only).
fn move_path(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let m = std::fs::symlink_metadata(from)?;
            if m.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
            } else if m.is_file() {
                std::fs::copy(from, to)?;
            } else {
                return Err(e);
            }
            std::fs::remove_file(from)
        }
        r => r,
    }
}

impl Quarantine {
    /// Opens (creating, 0700) the quarantine at `dir`.
    pub fn open(dir: &Path) -> Result<Quarantine, QuarantineError> {
        private_dir(dir).map_err(io("create", dir))?;
        Ok(Quarantine {
            dir: dir.to_path_buf(),
        })
    }

    /// Moves `path` into the quarantine.
    pub fn put(
        &self,
        path: &Path,
        reason: &str,
        rules: Vec<String>,
    ) -> Result<Item, QuarantineError> {
        let m = std::fs::symlink_metadata(path).map_err(io("read", path))?;
        let kind = Kind::of(&m);
        let hash = if kind == Kind::File {
            super::entry::hash_file(path, &m, &mut Vec::new(), None)
                .ok()
                .map(|(h, _)| hex(&h))
        } else {
            None
        };
        let now = palisade_wire::Timestamp::now();
        let id = format!(
            "{}-{}",
            now.0,
            hash.as_deref().map_or_else(
                || format!("{:08x}", fastrand::u32(..)),
                |h| h[..8].to_string()
            )
        );
        let item_dir = self.dir.join(&id);
        private_dir(&item_dir).map_err(io("create", &item_dir))?;
        let data = item_dir.join("data");
        move_path(path, &data).map_err(io("move into quarantine", path))?;
        if kind == Kind::File {
            let _ = std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o400));
        }
        let item = Item {
            id,
            original_path: path.to_path_buf(),
            quarantined_at: now.to_string(),
            reason: reason.to_string(),
            rules,
            kind: kind.name().to_string(),
            blake3: hash,
            size: m.size(),
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        };
        let meta = item_dir.join("meta.json");
        std::fs::write(&meta, serde_json::to_vec_pretty(&item).unwrap_or_default())
            .map_err(io("write", &meta))?;
        Ok(item)
    }

    /// Every item, oldest first. Damaged items are listed by the error they give.
    pub fn list(&self) -> Result<Vec<Result<Item, QuarantineError>>, QuarantineError> {
        let mut ids = Vec::new();
        for d in std::fs::read_dir(&self.dir).map_err(io("list", &self.dir))? {
            let d = d.map_err(io("list", &self.dir))?;
            if d.file_type().is_ok_and(|t| t.is_dir()) {
                ids.push(d.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids.into_iter().map(|id| self.get(&id)).collect())
    }

    /// One item.
    pub fn get(&self, id: &str) -> Result<Item, QuarantineError> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(QuarantineError::Unknown(id.to_string()));
        }
        let meta = self.dir.join(id).join("meta.json");
        let text = match std::fs::read(&meta) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(QuarantineError::Unknown(id.to_string()))
            }
            Err(e) => return Err(io("read", &meta)(e)),
        };
        serde_json::from_slice(&text).map_err(|e| QuarantineError::Damaged {
            id: id.to_string(),
            reason: format!("meta.json: {e}"),
        })
    }

    /// Puts item `id` back (at `to`, default where it came from) with its mode and owner, and
    /// removes it from the quarantine. Returns where it went.
    pub fn restore(
        &self,
        id: &str,
        to: Option<&Path>,
        force: bool,
    ) -> Result<PathBuf, QuarantineError> {
        let item = self.get(id)?;
        let data = self.dir.join(id).join("data");
        if let Some(want) = &item.blake3 {
            let m = std::fs::symlink_metadata(&data).map_err(io("read", &data))?;
            let (got, _) = super::entry::hash_file(&data, &m, &mut Vec::new(), None)
                .map_err(io("read", &data))?;
            if &hex(&got) != want {
                return Err(QuarantineError::Damaged {
                    id: id.to_string(),
                    reason: "content no longer matches its recorded blake3".into(),
                });
            }
        }
        let dest = to.map_or_else(|| item.original_path.clone(), Path::to_path_buf);
        if std::fs::symlink_metadata(&dest).is_ok() {
            if !force {
                return Err(QuarantineError::Exists(dest));
            }
            if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&dest).map_err(io("remove", &dest))?;
            }
        }
        if item.kind == "file" {
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o600))
                .map_err(io("restore", &data))?;
        }
        move_path(&data, &dest).map_err(io("restore to", &dest))?;
        if item.kind != "symlink" {
            match std::os::unix::fs::lchown(&dest, Some(item.uid), Some(item.gid)) {
                Err(e) if e.raw_os_error() != Some(libc::EPERM) => {
                    return Err(io("chown", &dest)(e))
                }
                _ => {}
            }
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(item.mode))
                .map_err(io("chmod", &dest))?;
        }
        let item_dir = self.dir.join(id);
        std::fs::remove_dir_all(&item_dir).map_err(io("remove", &item_dir))?;
        Ok(dest)
    }
}
