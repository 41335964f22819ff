//! The ordered key-value database under the incident store, in one of two engines: sled
//! (every collector until 2026-12) or redb (new data directories since).
//!
//! The incident store needs little of an engine: point reads, ordered scans both ways, a write
//! of several tables that a crash leaves whole or not at all (or, in sled, in a known order),
//! a counter for alert ids, and a flush that makes everything before it durable. Both engines
//! give that through [`Kv`] and [`Tx`]; the choice is made once per data directory (see
//! [`Kv::open`]) and never converted in place.
//!
//! Why a second engine: sled 0.34 keeps ~190 bytes resident for every leaf page it has ever
//! written (a page splits at 16 keys), cached or not, so the collector's memory grew with every
//! alert ever raised: ~20 bytes per key in a standalone program writing this store's pattern,
//! against 0.16 for redb, which was also 40% faster there (design-notes, "Resident memory per
//! key, and the second backend").

use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};

use crate::store::StoreError;

/// A table of the incident database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Alerts = 0,
    Incidents = 1,
    Timeline = 2,
    Open = 3,
}

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Alerts => "alerts",
            Table::Incidents => "incidents",
            Table::Timeline => "timeline",
            Table::Open => "open",
        }
    }
}

/// Which engine a new incident database is created with (`correlation.incident_backend`). A
/// directory that already holds a database keeps its engine, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// redb: resident memory that does not grow with the keys written (the default).
    #[default]
    Redb,
    /// sled 0.34, as before 2026-12.
    Sled,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Redb => "redb",
            Backend::Sled => "sled",
        })
    }
}

/// The redb file inside the incident directory.
const REDB_FILE: &str = "incidents.redb";

const REDB_TABLES: [redb::TableDefinition<'static, &[u8], &[u8]>; 4] = [
    redb::TableDefinition::new("alerts"),
    redb::TableDefinition::new("incidents"),
    redb::TableDefinition::new("timeline"),
    redb::TableDefinition::new("open"),
];

/// Counters kept with the data they count (redb): `next_alert_id`.
const REDB_META: redb::TableDefinition<'static, &str, u64> = redb::TableDefinition::new("meta");
const NEXT_ALERT_ID: &str = "next_alert_id";

/// A value read: sled's shared buffer, or a copy out of redb's page.
pub(crate) enum Val {
    Sled(sled::IVec),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Val {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Val::Sled(v) => v,
            Val::Owned(v) => v,
        }
    }
}

/// Called for each row of a scan, in order; returns whether to go on.
pub(crate) type Visit<'f> = &'f mut dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError>;

/// Bounds of a scan.
pub(crate) type Span<'k> = (Bound<&'k [u8]>, Bound<&'k [u8]>);

fn sled_err(context: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Sled {
        context: format!("incidents: {context}"),
        source,
    }
}

fn redb_err<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Redb {
        context: context.to_string(),
        source: Box::new(e.into()),
    }
}

/// Reading: through the database (the latest commit) or inside a write ([`Tx`]).
pub(crate) trait Read {
    /// The value under `key`.
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Val>, StoreError>;
    /// Rows within `span`, ascending or (`rev`) descending, until `visit` says stop.
    fn scan(&self, t: Table, span: Span<'_>, rev: bool, visit: Visit<'_>)
        -> Result<(), StoreError>;

    /// The row with the greatest key.
    fn last(&self, t: Table) -> Result<Option<(Vec<u8>, Val)>, StoreError> {
        let mut out = None;
        self.scan(
            t,
            (Bound::Unbounded, Bound::Unbounded),
            true,
            &mut |k, v| {
                out = Some((k.to_vec(), Val::Owned(v.to_vec())));
                Ok(false)
            },
        )?;
        Ok(out)
    }
}

fn sled_scan(
    tree: &sled::Tree,
    span: Span<'_>,
    rev: bool,
    visit: Visit<'_>,
) -> Result<(), StoreError> {
    let mut go = |kv: sled::Result<(sled::IVec, sled::IVec)>| -> Result<bool, StoreError> {
        let (k, v) = kv.map_err(sled_err("read"))?;
        visit(&k, &v)
    };
    let range = tree.range::<&[u8], _>(span);
    if rev {
        for kv in range.rev() {
            if !go(kv)? {
                break;
            }
        }
    } else {
        for kv in range {
            if !go(kv)? {
                break;
            }
        }
    }
    Ok(())
}

fn redb_get(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Val>, StoreError> {
    Ok(table
        .get(key)
        .map_err(redb_err("read"))?
        .map(|g| Val::Owned(g.value().to_vec())))
}

fn redb_scan(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    span: Span<'_>,
    rev: bool,
    visit: Visit<'_>,
) -> Result<(), StoreError> {
    let mut go = |kv: Result<_, redb::StorageError>| -> Result<bool, StoreError> {
        let (k, v): (redb::AccessGuard<'_, &[u8]>, redb::AccessGuard<'_, &[u8]>) =
            kv.map_err(redb_err("read"))?;
        visit(k.value(), v.value())
    };
    let range = table.range(span).map_err(redb_err("read"))?;
    if rev {
        for kv in range.rev() {
            if !go(kv)? {
                break;
            }
        }
    } else {
        for kv in range {
            if !go(kv)? {
                break;
            }
        }
    }
    Ok(())
}

/// The incident database.
pub(crate) enum Kv {
    Sled {
        db: sled::Db,
        trees: [sled::Tree; 4],
    },
    Redb {
        db: redb::Database,
        path: PathBuf,
    },
}

impl Kv {
    /// Opens the database in `dir`, or creates one there with `new`'s engine. A directory
    /// holding a sled database (its `conf` file) stays sled, one holding `incidents.redb` stays
    /// redb: the engine is never changed in place.
    pub(crate) fn open(dir: &Path, new: Backend, cache_bytes: u64) -> Result<Kv, StoreError> {
        let redb_file = dir.join(REDB_FILE);
        let has_sled = dir.join("conf").exists() || dir.join("db").exists();
        let has_redb = redb_file.exists();
        let backend = match (has_sled, has_redb) {
            (true, true) => {
                return Err(StoreError::Corrupt {
                    tree: dir.display().to_string(),
                    reason: format!(
                        "holds both a sled database and {REDB_FILE}; move the one not in use away"
                    ),
                })
            }
            (true, false) => Backend::Sled,
            (false, true) => Backend::Redb,
            (false, false) => new,
        };
        match backend {
            Backend::Sled => Self::open_sled(dir, cache_bytes),
            Backend::Redb => Self::open_redb(dir, &redb_file, cache_bytes),
        }
    }

    fn open_sled(dir: &Path, cache_bytes: u64) -> Result<Kv, StoreError> {
        let config = sled::Config::new().path(dir).cache_capacity(cache_bytes);
        let db = palisade_wire::process::open_waiting_for_lock(|| config.open())
            .map_err(sled_err("open"))?;
        let tree = |t: Table| db.open_tree(t.name()).map_err(sled_err("open tree"));
        let trees = [
            tree(Table::Alerts)?,
            tree(Table::Incidents)?,
            tree(Table::Timeline)?,
            tree(Table::Open)?,
        ];
        Ok(Kv::Sled { db, trees })
    }

    fn open_redb(dir: &Path, file: &Path, cache_bytes: u64) -> Result<Kv, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let shown = file.display().to_string();
        let db = redb::Database::builder()
            .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
            .set_repair_callback(move |r| {
                tracing::warn!(
                    file = %shown,
                    progress = format_args!("{:.0}%", r.progress() * 100.0),
                    "repairing the incident database after an unclean stop"
                );
            })
            .create(file)
            .map_err(redb_err("open"))?;
        // Every table exists from the start, so that reads never meet a missing one.
        let txn = db.begin_write().map_err(redb_err("open"))?;
        for def in REDB_TABLES {
            txn.open_table(def).map_err(redb_err("open table"))?;
        }
        txn.open_table(REDB_META).map_err(redb_err("open table"))?;
        txn.commit().map_err(redb_err("open"))?;
        Ok(Kv::Redb {
            db,
            path: file.to_path_buf(),
        })
    }

    /// Which engine this is.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Kv::Sled { .. } => Backend::Sled,
            Kv::Redb { .. } => Backend::Redb,
        }
    }

    /// Runs `f` as one write. In redb it commits as one transaction (not yet durable: see
    /// [`Self::flush`]), or not at all when `f` fails. In sled each table's writes are one
    /// batch, applied in the order the tables were first written to, so a crash between two
    /// leaves the earlier ones: callers write what is referred to before what refers to it.
    /// Reads inside see what was committed before `f` began and, in redb only, `f`'s own
    /// writes: `f` must not read what it wrote.
    pub(crate) fn write<R>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match self {
            Kv::Sled { db, trees } => {
                let mut tx = Tx::Sled {
                    db,
                    trees,
                    batches: Default::default(),
                    order: Vec::with_capacity(4),
                };
                let r = f(&mut tx)?;
                if let Tx::Sled {
                    mut batches, order, ..
                } = tx
                {
                    for t in order {
                        if let Some(b) = batches[t as usize].take() {
                            trees[t as usize]
                                .apply_batch(b)
                                .map_err(sled_err("write"))?;
                        }
                    }
                }
                Ok(r)
            }
            Kv::Redb { db, .. } => {
                let mut txn = db.begin_write().map_err(redb_err("begin a write"))?;
                txn.set_durability(redb::Durability::None)
                    .map_err(redb_err("begin a write"))?;
                let r = {
                    let table = |i: usize| txn.open_table(REDB_TABLES[i]).map_err(redb_err("open"));
                    let mut tx = Tx::Redb {
                        tables: [table(0)?, table(1)?, table(2)?, table(3)?],
                        meta: txn.open_table(REDB_META).map_err(redb_err("open"))?,
                        next_alert: None,
                    };
                    let r = f(&mut tx)?;
                    if let Tx::Redb {
                        mut meta,
                        next_alert: Some(next),
                        ..
                    } = tx
                    {
                        meta.insert(NEXT_ALERT_ID, next)
                            .map_err(redb_err("write alert id"))?;
                    }
                    r
                };
                txn.commit().map_err(redb_err("commit"))?;
                Ok(r)
            }
        }
    }

    /// Makes every write before it durable.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        match self {
            Kv::Sled { db, .. } => db.flush().map(|_| ()).map_err(sled_err("flush")),
            Kv::Redb { db, .. } => {
                // An empty durable commit makes the non-durable ones before it durable. With
                // quick repair it also saves the allocator's state, so that the open after a
                // crash does not walk the whole file.
                let mut txn = db.begin_write().map_err(redb_err("flush"))?;
                txn.set_durability(redb::Durability::Immediate)
                    .map_err(redb_err("flush"))?;
                txn.set_quick_repair(true);
                txn.commit().map_err(redb_err("flush"))
            }
        }
    }

    /// Bytes the database takes on disk.
    #[cfg(test)]
    pub(crate) fn size_on_disk(&self) -> Result<u64, StoreError> {
        match self {
            Kv::Sled { db, .. } => db.size_on_disk().map_err(sled_err("size")),
            Kv::Redb { path, .. } => {
                std::fs::metadata(path)
                    .map(|m| m.len())
                    .map_err(|source| StoreError::Io {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        // sled flushes on drop by itself; redb's last commits may be non-durable ones.
        if let Kv::Redb { path, .. } = self {
            let path = path.clone();
            if let Err(e) = self.flush() {
                tracing::error!(file = %path.display(), error = %e, "cannot flush the incident database at close");
            }
        }
    }
}

impl Read for Kv {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Val>, StoreError> {
        match self {
            Kv::Sled { trees, .. } => Ok(trees[t as usize]
                .get(key)
                .map_err(sled_err("read"))?
                .map(Val::Sled)),
            Kv::Redb { db, .. } => {
                let txn = db.begin_read().map_err(redb_err("begin a read"))?;
                let table = txn
                    .open_table(REDB_TABLES[t as usize])
                    .map_err(redb_err("open"))?;
                redb_get(&table, key)
            }
        }
    }

    fn scan(
        &self,
        t: Table,
        span: Span<'_>,
        rev: bool,
        visit: Visit<'_>,
    ) -> Result<(), StoreError> {
        match self {
            Kv::Sled { trees, .. } => sled_scan(&trees[t as usize], span, rev, visit),
            Kv::Redb { db, .. } => {
                // One snapshot for the whole scan: rows committed meanwhile are not seen.
                let txn = db.begin_read().map_err(redb_err("begin a read"))?;
                let table = txn
                    .open_table(REDB_TABLES[t as usize])
                    .map_err(redb_err("open"))?;
                redb_scan(&table, span, rev, visit)
            }
        }
    }
}

/// One write in progress (see [`Kv::write`]). One at a time lives on a writer's stack, so
/// the size of redb's open tables is not worth a box per write.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Tx<'a> {
    Sled {
        db: &'a sled::Db,
        trees: &'a [sled::Tree; 4],
        batches: [Option<sled::Batch>; 4],
        /// Tables in the order first written to.
        order: Vec<Table>,
    },
    Redb {
        tables: [redb::Table<'a, &'static [u8], &'static [u8]>; 4],
        meta: redb::Table<'a, &'static str, u64>,
        /// The next alert id to hand out, once one was (written at commit).
        next_alert: Option<u64>,
    },
}

impl Tx<'_> {
    fn sled_batch<'b>(
        batches: &'b mut [Option<sled::Batch>; 4],
        order: &mut Vec<Table>,
        t: Table,
    ) -> &'b mut sled::Batch {
        if !order.contains(&t) {
            order.push(t);
        }
        batches[t as usize].get_or_insert_with(sled::Batch::default)
    }

    /// Writes `value` under `key`.
    pub(crate) fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        match self {
            Tx::Sled { batches, order, .. } => {
                Self::sled_batch(batches, order, t).insert(key, value);
                Ok(())
            }
            Tx::Redb { tables, .. } => tables[t as usize]
                .insert(key, value)
                .map(|_| ())
                .map_err(redb_err("write")),
        }
    }

    /// Removes `key`.
    pub(crate) fn remove(&mut self, t: Table, key: &[u8]) -> Result<(), StoreError> {
        match self {
            Tx::Sled { batches, order, .. } => {
                Self::sled_batch(batches, order, t).remove(key);
                Ok(())
            }
            Tx::Redb { tables, .. } => tables[t as usize]
                .remove(key)
                .map(|_| ())
                .map_err(redb_err("remove")),
        }
    }

    /// A new alert id: never handed out before in this database, also across crashes (ids
    /// may be skipped).
    pub(crate) fn next_alert_id(&mut self) -> Result<u64, StoreError> {
        match self {
            Tx::Sled { db, .. } => db
                .generate_id()
                .map(|id| id + 1)
                .map_err(sled_err("alert id")),
            Tx::Redb {
                meta, next_alert, ..
            } => {
                let id = match *next_alert {
                    Some(id) => id,
                    None => meta
                        .get(NEXT_ALERT_ID)
                        .map_err(redb_err("read alert id"))?
                        .map_or(1, |g| g.value()),
                };
                *next_alert = Some(id + 1);
                Ok(id)
            }
        }
    }
}

impl Read for Tx<'_> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Val>, StoreError> {
        match self {
            Tx::Sled { trees, .. } => Ok(trees[t as usize]
                .get(key)
                .map_err(sled_err("read"))?
                .map(Val::Sled)),
            Tx::Redb { tables, .. } => redb_get(&tables[t as usize], key),
        }
    }

    fn scan(
        &self,
        t: Table,
        span: Span<'_>,
        rev: bool,
        visit: Visit<'_>,
    ) -> Result<(), StoreError> {
        match self {
            Tx::Sled { trees, .. } => sled_scan(&trees[t as usize], span, rev, visit),
            Tx::Redb { tables, .. } => redb_scan(&tables[t as usize], span, rev, visit),
        }
    }
}
