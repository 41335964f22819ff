//! The event store's index (segment pointers, dedup sets, day counts, agent records) in one of
//! two engines: sled (data directories created before 2026-12-07, in `index/`) or redb (new
//! ones, `index.redb`). The segment bodies are in `segments/` either way.
//!
//! Why redb: sled 0.34 keeps metadata resident for every page it ever wrote, cached or not, so
//! the collector's memory grew with every segment stored until retention dropped its day:
//! ~16 bytes per segment with an 8 MiB cache (`resident_growth`, design-notes "Store layout"),
//! which at the soak's 192,000 segments an hour is ~75 MB a day of retention. redb keeps no
//! per-page state outside its bounded cache. The choice is made once per directory: an index
//! is never converted in place.
//!
//! What the store needs of an engine is small: tables by name (one per UTC day, and
//! `agents`), point reads, ordered scans both ways, a durable write of several tables, and
//! dropping a table (retention).

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle};

use super::StoreError;
use crate::incidents::kv::{
    choose_engine, create_redb, durable_write, hash_row, holds_sled, keep_sled, redb_err, walk,
    RedbKv, Span, Visit,
};
use crate::incidents::Backend;

/// redb's file in the store directory.
const REDB_FILE: &str = "index.redb";
/// sled's directory in the store directory.
const SLED_DIR: &str = "index";

/// Rows to put in one table: keys and values.
pub(crate) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes of one commit: per table, the rows to put.
pub(crate) type Writes = HashMap<String, Rows>;

fn sled_err(context: impl Into<String>) -> impl FnOnce(sled::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Sled { context, source }
}

fn table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// The index.
pub(crate) enum Index {
    Sled {
        db: sled::Db,
        /// Trees opened so far, by name.
        trees: Mutex<HashMap<String, sled::Tree>>,
    },
    Redb(RedbKv),
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.engine())
    }
}

/// sled's tree `name`, opened (created if absent) once.
fn sled_tree(
    db: &sled::Db,
    trees: &Mutex<HashMap<String, sled::Tree>>,
    name: &str,
) -> Result<sled::Tree, StoreError> {
    let mut trees = trees.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = trees.get(name) {
        return Ok(t.clone());
    }
    let tree = db
        .open_tree(name)
        .map_err(sled_err(format!("open {name}")))?;
    trees.insert(name.to_string(), tree.clone());
    Ok(tree)
}

impl Index {
    /// Opens the index of the store in `dir`: sled if `dir/index` holds one, redb if
    /// `dir/index.redb` exists, else a new one in `new`'s engine.
    pub(crate) fn open(dir: &Path, cache_bytes: u64, new: Backend) -> Result<Index, StoreError> {
        let sled_dir = dir.join(SLED_DIR);
        let redb_file = dir.join(REDB_FILE);
        match choose_engine("event store", &sled_dir, dir, REDB_FILE, new)? {
            Backend::Sled => Self::open_sled(&sled_dir, cache_bytes),
            Backend::Redb => {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
                Self::open_redb(&redb_file, cache_bytes)
            }
        }
    }

    fn open_sled(sled_dir: &Path, cache_bytes: u64) -> Result<Index, StoreError> {
        let config = sled::Config::new()
            .path(sled_dir)
            .cache_capacity(cache_bytes);
        let db = palisade_wire::process::open_waiting_for_lock(|| config.open())
            .map_err(sled_err(format!("cannot open {}", sled_dir.display())))?;
        Ok(Index::Sled {
            db,
            trees: Mutex::new(HashMap::new()),
        })
    }

    fn open_redb(file: &Path, cache_bytes: u64) -> Result<Index, StoreError> {
        Ok(Index::Redb(RedbKv::open(
            file,
            cache_bytes,
            "event index",
            |file, cache| create_redb("event index", file, cache),
        )?))
    }

    /// The engine's name.
    pub(crate) fn engine(&self) -> &'static str {
        match self {
            Index::Sled { .. } => "sled",
            Index::Redb(_) => "redb",
        }
    }

    /// The names of the tables that exist.
    pub(crate) fn tables(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Index::Sled { db, .. } => Ok(db
                .tree_names()
                .into_iter()
                .filter_map(|n| String::from_utf8(n.to_vec()).ok())
                .collect()),
            Index::Redb(kv) => kv.with(|db| {
                let txn = db.begin_read().map_err(redb_err("begin a read"))?;
                let names = txn
                    .list_tables()
                    .map_err(redb_err("list tables"))?
                    .map(|t| t.name().to_string())
                    .collect();
                Ok(names)
            }),
        }
    }

    /// The value under `key` in `name` (none if the table does not exist).
    pub(crate) fn get(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Index::Sled { db, trees } => Ok(sled_tree(db, trees, name)?
                .get(key)
                .map_err(sled_err(format!("read {name}")))?
                .map(|v| v.to_vec())),
            Index::Redb(kv) => kv.with(|db| {
                let txn = db.begin_read().map_err(redb_err("begin a read"))?;
                let t = match txn.open_table(table(name)) {
                    Ok(t) => t,
                    Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                    Err(e) => return Err(redb_err("open a table")(e)),
                };
                let v = t
                    .get(key)
                    .map_err(redb_err("read"))?
                    .map(|g| g.value().to_vec());
                Ok(v)
            }),
        }
    }

    /// Rows of `name` with keys in `lo..hi`, ascending or (`rev`) descending, until `visit`
    /// says stop. One snapshot for the whole scan in redb.
    pub(crate) fn range(
        &self,
        name: &str,
        lo: &[u8],
        hi: &[u8],
        rev: bool,
        visit: Visit<'_>,
    ) -> Result<(), StoreError> {
        if lo >= hi {
            return Ok(());
        }
        self.scan(name, (Bound::Included(lo), Bound::Excluded(hi)), rev, visit)
    }

    /// Rows of `name` within `span` (see [`Self::range`]).
    pub(crate) fn scan(
        &self,
        name: &str,
        span: Span<'_>,
        rev: bool,
        visit: Visit<'_>,
    ) -> Result<(), StoreError> {
        match self {
            Index::Sled { db, trees } => {
                let tree = sled_tree(db, trees, name)?;
                let mut go = |kv: sled::Result<(sled::IVec, sled::IVec)>| {
                    let (k, v) = kv.map_err(sled_err(format!("scan {name}")))?;
                    visit(&k, &v)
                };
                walk(tree.range::<&[u8], _>(span), rev, &mut go)
            }
            Index::Redb(kv) => kv.with(|db| {
                let txn = db.begin_read().map_err(redb_err("begin a read"))?;
                let t = match txn.open_table(table(name)) {
                    Ok(t) => t,
                    Err(TableError::TableDoesNotExist(_)) => return Ok(()),
                    Err(e) => return Err(redb_err("open a table")(e)),
                };
                let mut go = |kv: Result<_, redb::StorageError>| -> Result<bool, StoreError> {
                    let (k, v): (redb::AccessGuard<'_, &[u8]>, redb::AccessGuard<'_, &[u8]>) =
                        kv.map_err(redb_err("scan"))?;
                    visit(k.value(), v.value())
                };
                let r = walk(t.range(span).map_err(redb_err("scan"))?, rev, &mut go);
                r
            }),
        }
    }

    /// Writes `writes` and returns once they are durable. In redb the whole is one
    /// transaction; in sled each table's writes are one batch, applied in `order` (tables not
    /// named there last), then flushed: a crash between two leaves the earlier ones, so callers
    /// name what is referred to before what refers to it.
    pub(crate) fn commit(&self, mut writes: Writes, order: &[String]) -> Result<(), StoreError> {
        let mut names: Vec<String> = order
            .iter()
            .filter(|n| writes.contains_key(*n))
            .cloned()
            .collect();
        let mut rest: Vec<String> = writes
            .keys()
            .filter(|n| !order.contains(n))
            .cloned()
            .collect();
        rest.sort();
        names.extend(rest);
        match self {
            Index::Sled { db, trees } => {
                for name in names {
                    let mut batch = sled::Batch::default();
                    for (k, v) in writes.remove(&name).unwrap_or_default() {
                        batch.insert(k, v);
                    }
                    sled_tree(db, trees, &name)?
                        .apply_batch(batch)
                        .map_err(sled_err(format!("write {name}")))?;
                }
                db.flush().map(|_| ()).map_err(sled_err("flush"))
            }
            Index::Redb(kv) => kv.with(|db| {
                let txn = durable_write(db, "begin a write")?;
                for name in &names {
                    let mut t = txn
                        .open_table(table(name))
                        .map_err(redb_err("open a table"))?;
                    for (k, v) in writes.get(name).into_iter().flatten() {
                        t.insert(&k[..], &v[..]).map_err(redb_err("write"))?;
                    }
                }
                txn.commit().map_err(redb_err("commit"))
            }),
        }
    }

    /// Drops table `name` and everything in it, durably.
    pub(crate) fn drop_table(&self, name: &str) -> Result<(), StoreError> {
        match self {
            Index::Sled { db, trees } => {
                trees.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
                db.drop_tree(name)
                    .map_err(sled_err(format!("drop {name}")))?;
                db.flush().map(|_| ()).map_err(sled_err("flush"))
            }
            Index::Redb(kv) => kv.with(|db| {
                let txn = durable_write(db, "begin a write")?;
                txn.delete_table(table(name))
                    .map_err(redb_err("drop a table"))?;
                txn.commit().map_err(redb_err("commit"))
            }),
        }
    }

    /// Removes `key` from `name`, durably (tests: a store as an older version left it).
    #[cfg(test)]
    pub(crate) fn remove(&self, name: &str, key: &[u8]) -> Result<(), StoreError> {
        match self {
            Index::Sled { db, trees } => {
                sled_tree(db, trees, name)?
                    .remove(key)
                    .map_err(sled_err("remove"))?;
                db.flush().map(|_| ()).map_err(sled_err("flush"))
            }
            Index::Redb(kv) => kv.with(|db| {
                let txn = db.begin_write().map_err(redb_err("begin a write"))?;
                txn.open_table(table(name))
                    .map_err(redb_err("open a table"))?
                    .remove(key)
                    .map_err(redb_err("remove"))?;
                txn.commit().map_err(redb_err("commit"))
            }),
        }
    }

    /// Bytes the index takes on disk.
    pub(crate) fn size_on_disk(&self) -> Result<u64, StoreError> {
        match self {
            Index::Sled { db, .. } => db.size_on_disk().map_err(sled_err("size")),
            Index::Redb(kv) => std::fs::metadata(kv.path())
                .map(|m| m.len())
                .map_err(|source| StoreError::Io {
                    path: kv.path().to_path_buf(),
                    source,
                }),
        }
    }
}

/// Rows copied per commit by [`migrate_to_redb`].
const MIGRATE_BATCH: usize = 50_000;

/// What [`migrate_to_redb`] did.
#[derive(Debug)]
pub struct MigratedIndex {
    /// Tables copied (days and `agents`).
    pub tables: u64,
    /// Rows copied.
    pub rows: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// Where the sled index now is (kept until the operator removes it).
    pub sled_kept_at: PathBuf,
}

/// A digest of every table of `index` in name order (and of its rows in key order), with the
/// number of tables, rows and bytes: equal digests mean equal indexes.
fn digest(index: &Index) -> Result<(blake3::Hash, u64, u64, u64), StoreError> {
    let mut h = blake3::Hasher::new();
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut names = copied_tables(index)?;
    names.sort();
    for name in &names {
        h.update(&(name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        index.scan(
            name,
            (Bound::Unbounded, Bound::Unbounded),
            false,
            &mut |k, v| {
                bytes += hash_row(&mut h, k, v);
                rows += 1;
                Ok(true)
            },
        )?;
    }
    Ok((h.finalize(), names.len() as u64, rows, bytes))
}

/// The tables the store wrote (sled's default tree holds nothing of ours).
fn copied_tables(index: &Index) -> Result<Vec<String>, StoreError> {
    Ok(index
        .tables()?
        .into_iter()
        .filter(|n| n == "agents" || n.starts_with("d/"))
        .collect())
}

/// Converts the sled index of the event store in `dir` to redb, offline (the collector
/// stopped: sled's lock refuses otherwise). Every table is copied into
/// `index.redb.migrating`, which must then read back as the source (a digest of every row);
/// only then does it become `index.redb`, and the sled index is moved to `index.sled-<unix
/// time>`. A crash before the first rename leaves sled in place (a rerun starts the copy
/// again); between the two, the store refuses to open with both present, and a rerun checks
/// the redb file against sled again and finishes. The segment files are not touched.
pub fn migrate_to_redb(dir: &Path, cache_bytes: u64) -> Result<MigratedIndex, StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let sled_dir = dir.join(SLED_DIR);
    let redb_file = dir.join(REDB_FILE);
    let staging = dir.join(format!("{REDB_FILE}.migrating"));
    if !holds_sled(&sled_dir) {
        return Err(StoreError::Refused {
            what: "event store",
            path: dir.to_path_buf(),
            reason: if redb_file.exists() {
                "already redb: nothing to migrate"
            } else {
                "no sled index here: nothing to migrate"
            },
        });
    }
    let source = Index::open_sled(&sled_dir, cache_bytes)?;
    if redb_file.exists() {
        // Both present: a swap cut off between its two renames, or something else entirely.
        let copy = Index::open_redb(&redb_file, cache_bytes)?;
        let (want, tables, rows, bytes) = digest(&source)?;
        if digest(&copy)?.0 != want {
            return Err(StoreError::Refused {
                what: "event store",
                path: dir.to_path_buf(),
                reason: "holds both a sled index and an index.redb that differs from it: look at both before migrating",
            });
        }
        drop((copy, source));
        let kept = keep_sled(&sled_dir, SLED_DIR)?;
        return Ok(MigratedIndex {
            tables,
            rows,
            bytes,
            sled_kept_at: kept,
        });
    }
    if staging.exists() {
        // An interrupted copy.
        std::fs::remove_file(&staging).map_err(io(&staging))?;
    }
    let (want, tables, rows, bytes) = digest(&source)?;
    let copy = Index::open_redb(&staging, cache_bytes)?;
    for name in copied_tables(&source)? {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut batch: Rows = Vec::new();
            let span = match &after {
                Some(k) => (Bound::Excluded(&k[..]), Bound::Unbounded),
                None => (Bound::Unbounded, Bound::Unbounded),
            };
            source.scan(&name, span, false, &mut |k, v| {
                batch.push((k.to_vec(), v.to_vec()));
                Ok(batch.len() < MIGRATE_BATCH)
            })?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = Some(last.clone());
            copy.commit(Writes::from([(name.clone(), batch)]), &[])?;
        }
    }
    if digest(&copy)? != (want, tables, rows, bytes) {
        return Err(StoreError::Corrupt {
            tree: staging.display().to_string(),
            reason: "the copy does not read back as the source; the sled index is untouched".into(),
        });
    }
    drop((copy, source));
    std::fs::rename(&staging, &redb_file).map_err(io(&staging))?;
    sync_dir(dir)?;
    let kept = keep_sled(&sled_dir, SLED_DIR)?;
    Ok(MigratedIndex {
        tables,
        rows,
        bytes,
        sled_kept_at: kept,
    })
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    super::sync_dir(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })
}
