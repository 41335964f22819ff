//! Web anti-tamper: putting a `protect = "restore"` tree back to its baseline after a finding.
//! Changed and deleted files come back from the known-good store (checked against their hash),
//! attribute-only changes are undone in place, and whatever was planted (an added file, or the
//! thing that replaced a file) goes to quarantine as evidence rather than being deleted.

use std::path::Path;

use super::entry::{Entry, Kind};
use super::quarantine::Quarantine;
use super::store::{self, Store};
use super::verify::{Change, Finding};

/// Content-bearing attributes: when one of them differs the file is rewritten from the store.
fn content_changed(f: &Finding) -> bool {
    use super::config::Attr;
    [Attr::Content, Attr::Size, Attr::Target]
        .into_iter()
        .any(|a| f.attrs.contains(a))
}

/// Undoes `f`. Returns what was done, for the event.
pub fn respond(f: &Finding, store: &Store, quarantine: &Quarantine) -> Result<String, String> {
    let path = &f.path;
    match (f.change, f.old.as_ref()) {
        (Change::Added, _) => {
            let item = quarantine
                .put(path, "tamper-added", Vec::new())
                .map_err(|e| e.to_string())?;
            Ok(format!("moved to quarantine as {}", item.id))
        }
        (Change::Removed, Some(old)) => recreate(path, old, store).map(|()| "restored".into()),
        (Change::TypeChanged, Some(old)) => {
            let item = quarantine
                .put(path, "tamper-replaced", Vec::new())
                .map_err(|e| e.to_string())?;
            recreate(path, old, store)?;
            Ok(format!(
                "restored (the replacement is in quarantine as {})",
                item.id
            ))
        }
        (Change::Changed, Some(old)) if content_changed(f) || old.kind == Kind::Symlink => {
            recreate(path, old, store).map(|()| "restored".into())
        }
        (Change::Changed, Some(old)) => {
            let file = super::entry::open_nofollow(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            store::apply_attributes(&file, path, old)
                .map_err(|e| format!("cannot reset attributes of {}: {e}", path.display()))?;
            Ok("attributes restored".into())
        }
        (_, None) => Err("the baseline has no record to restore from".into()),
    }
}

/// Makes `path` what `old` records.
fn recreate(path: &Path, old: &Entry, store: &Store) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            // The parent's own finding restores it with its attributes; it comes first in
            // path order, so this only happens when that failed.
            std::fs::create_dir_all(parent).map_err(|e| fail("create the parent of", e))?;
        }
    }
    match old.kind {
        Kind::File => store
            .restore_file(old, path)
            .map_err(|e| fail("restore", e)),
        Kind::Dir => {
            match std::fs::create_dir(path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(fail("create", e))
                }
                _ => {}
            }
            let dir = std::fs::File::open(path).map_err(|e| fail("open", e))?;
            store::apply_attributes(&dir, path, old).map_err(|e| fail("set attributes of", e))
        }
        Kind::Symlink => {
            let Some(target) = &old.target else {
                return Err(format!("no recorded target for {}", path.display()));
            };
            let tmp = store::temp_beside(path);
            std::os::unix::fs::symlink(target, &tmp).map_err(|e| fail("create a link for", e))?;
            std::fs::rename(&tmp, path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                fail("replace", e)
            })
        }
        other => Err(format!(
            "cannot recreate a {} at {}",
            other.name(),
            path.display()
        )),
    }
}
