//! `diff`: what changed between two snapshots. Subtrees with the same id are skipped whole (the
//! Merkle property), so comparing two snapshots of a large, mostly unchanged tree is cheap.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::chunk::Id;
use crate::error::Result;
use crate::repo::keys::Keys;
use crate::repo::tree::{Kind, Node};
use crate::repo::Store;
use crate::restore::load_tree;

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `+` added, `-` removed, `M` content changed, `U` metadata only, `T` type changed.
    pub change: char,
    /// The path.
    pub path: String,
    /// Size in the newer snapshot (0 when removed).
    pub size: u64,
}

/// Changes from tree `a` to tree `b`, sorted by path.
pub fn diff(store: &dyn Store, keys: &Keys, a: &Id, b: &Id) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(store, keys, Some(*a), Some(*b), String::new(), &mut out)?;
    out.sort_by(|x, y| x.path.cmp(&y.path));
    Ok(out)
}

fn walk(
    store: &dyn Store,
    keys: &Keys,
    a: Option<Id>,
    b: Option<Id>,
    at: String,
    out: &mut Vec<Change>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let load = |id: Option<Id>| -> Result<BTreeMap<String, Node>> {
        Ok(match id {
            Some(id) => load_tree(store, keys, &id, &at)?
                .entries
                .into_iter()
                .map(|n| (n.name.clone(), n))
                .collect(),
            None => BTreeMap::new(),
        })
    };
    let (old, new) = (load(a)?, load(b)?);
    let path = |name: &str| {
        if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}/{name}")
        }
    };
    for (name, n) in &old {
        if !new.contains_key(name) {
            out.push(Change {
                change: '-',
                path: path(name),
                size: 0,
            });
            if n.kind == Kind::Dir {
                walk(store, keys, n.subtree, None, path(name), out)?;
            }
        }
    }
    for (name, n) in &new {
        match old.get(name) {
            None => {
                out.push(Change {
                    change: '+',
                    path: path(name),
                    size: n.size,
                });
                if n.kind == Kind::Dir {
                    walk(store, keys, None, n.subtree, path(name), out)?;
                }
            }
            Some(o) if o.kind != n.kind => out.push(Change {
                change: 'T',
                path: path(name),
                size: n.size,
            }),
            Some(o) => {
                if n.kind == Kind::Dir {
                    walk(store, keys, o.subtree, n.subtree, path(name), out)?;
                } else if o.chunks != n.chunks || o.target != n.target {
                    out.push(Change {
                        change: 'M',
                        path: path(name),
                        size: n.size,
                    });
                } else if o.mode != n.mode
                    || o.mtime_ns != n.mtime_ns
                    || o.uid != n.uid
                    || o.gid != n.gid
                    || o.xattrs != n.xattrs
                {
                    out.push(Change {
                        change: 'U',
                        path: path(name),
                        size: n.size,
                    });
                }
            }
        }
    }
    Ok(())
}
