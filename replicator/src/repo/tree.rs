//! Trees: one blob per directory listing its entries, children by id. A snapshot's root tree id
//! is therefore a Merkle root over every file's metadata and chunk list.
//!
//! Trees come back from storage and from peers, so everything in them is checked before a restore
//! writes a byte: names are single path components, unique in their directory, and symlinks do
//! not point out of the restore target unless the operator allows it.

use serde::{Deserialize, Serialize};

use crate::chunk::Id;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory (its listing is `subtree`).
    Dir,
    /// A symbolic link (`target`).
    Symlink,
}

/// One extended attribute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xattr {
    /// Attribute name (e.g. `user.comment`).
    pub name: String,
    /// Value, hex.
    pub value: String,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The name (one path component). Names that are not UTF-8 are in `name_hex` instead.
    pub name: String,
    /// The name's bytes in hex when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_hex: Option<String>,
    /// File, dir or symlink.
    pub kind: Kind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns (change detection only; not restored).
    #[serde(default)]
    pub ctime_ns: i64,
    /// Inode (change detection only).
    #[serde(default)]
    pub inode: u64,
    /// Size in bytes (files).
    #[serde(default)]
    pub size: u64,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Extended attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// A file's chunks, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Id>,
    /// A directory's listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
}

impl Node {
    /// The name's bytes.
    pub fn name_bytes(&self) -> Result<Vec<u8>, String> {
        match &self.name_hex {
            Some(h) => hex_decode(h).ok_or_else(|| format!("name_hex {h:?} is not hex")),
            None => Ok(self.name.clone().into_bytes()),
        }
    }

    /// Sets the name from raw bytes.
    pub fn set_name(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.name = s.to_string();
                self.name_hex = None;
            }
            Err(_) => {
                self.name = String::from_utf8_lossy(bytes).into_owned();
                self.name_hex = Some(crate::chunk::hex(bytes));
            }
        }
    }
}

/// A directory listing, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Entries, sorted by name bytes.
    pub entries: Vec<Node>,
}

impl Tree {
    /// Parses a tree blob and checks every name; `at` is the tree's path for errors.
    pub fn parse(bytes: &[u8], at: &str) -> Result<Tree, String> {
        let tree: Tree =
            serde_json::from_slice(bytes).map_err(|e| format!("tree at {at:?}: {e}"))?;
        let mut seen = std::collections::HashSet::new();
        for n in &tree.entries {
            let name = n.name_bytes().map_err(|e| format!("tree at {at:?}: {e}"))?;
            check_name(&name).map_err(|e| format!("entry {:?} in {at:?}: {e}", n.name))?;
            if !seen.insert(name) {
                return Err(format!(
                    "entry {:?} appears twice in {at:?} (a later one could write through the first)",
                    n.name
                ));
            }
            match n.kind {
                Kind::Dir if n.subtree.is_none() => {
                    return Err(format!("directory {:?} in {at:?} has no subtree", n.name))
                }
                Kind::Symlink if n.target.is_none() => {
                    return Err(format!("symlink {:?} in {at:?} has no target", n.name))
                }
                _ => {}
            }
        }
        Ok(tree)
    }
}

/// A name must be one component: not empty, not `.` or `..`, no `/` and no NUL.
pub fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty name")
    } else if name == b"." || name == b".." {
        Err("`.` or `..` would leave its directory")
    } else if name.contains(&b'/') {
        Err("a `/` in a name would write outside its directory (absolute or nested path)")
    } else if name.contains(&0) {
        Err("NUL in a name")
    } else {
        Ok(())
    }
}

/// Whether a symlink at `depth` directories below the restore root, pointing at `target`, stays
/// inside the root when resolved lexically.
pub fn symlink_stays_inside(depth: usize, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut level = depth as i64;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                level -= 1;
                if level < 0 {
                    return false;
                }
            }
            _ => level += 1,
        }
    }
    true
}

/// Decodes lowercase or uppercase hex.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_are_refused() {
        for bad in [&b""[..], b".", b"..", b"/etc", b"a/../../x", b"a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(b"..hidden").is_ok());
    }

    #[test]
    fn symlink_escapes_are_found_lexically() {
        assert!(symlink_stays_inside(0, "a/b"));
        assert!(symlink_stays_inside(1, "../b"));
        assert!(!symlink_stays_inside(0, "../b"));
        assert!(!symlink_stays_inside(2, "../../../etc/passwd"));
        assert!(!symlink_stays_inside(3, "/etc/passwd"));
        assert!(!symlink_stays_inside(1, "x/../../.."));
    }

    #[test]
    fn duplicate_names_are_refused() {
        let n = |name: &str, kind| Node {
            name: name.into(),
            name_hex: None,
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            size: 0,
            target: (kind == Kind::Symlink).then(|| "/etc".to_string()),
            xattrs: vec![],
            chunks: vec![],
            subtree: (kind == Kind::Dir).then_some(Id([0; 32])),
        };
        let t = Tree {
            entries: vec![n("a", Kind::Symlink), n("a", Kind::Dir)],
        };
        let e = Tree::parse(&serde_json::to_vec(&t).unwrap(), "/").unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let mut n = Node {
            name: String::new(),
            name_hex: None,
            kind: Kind::File,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            size: 0,
            target: None,
            xattrs: vec![],
            chunks: vec![],
            subtree: None,
        };
        n.set_name(b"caf\xe9");
        assert_eq!(n.name_bytes().unwrap(), b"caf\xe9");
    }
}
