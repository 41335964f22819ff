//! The ordered key-value database under the incident store, in one of two engines: sled
//! (every collector until 2026-12) or redb (new data directories since).
//!
//! The incident store needs little of an engine: point reads, ordered scans both ways, a write
//! of several tables that a crash leaves whole or not at all (or, in sled, in a known order),
//! a counter for alert ids, and a flush that makes everything before it durable. Both engines
//! give that through [`Kv`] and [`Tx`]; the choice is made once per data directory (see
//! [`Kv::open`]); an existing sled one is converted only offline ([`migrate_sled_to_redb`]).
//!
//! Why a second engine: sled 0.34 keeps ~190 bytes resident for every leaf page it has ever
//! written (a page splits at 16 keys), cached or not, so the collector's memory grew with every
//! alert ever raised: ~20 bytes per key in a standalone program writing this store's pattern,
//! against 0.16 for redb, which was also 40% faster there (design-notes, "Resident memory per
//! key, and the second backend").

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use redb::{ReadableDatabase, ReadableTable};

use crate::store::StoreError;

/// A table of the incident database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Alerts = 0,
    Incidents = 1,
    Timeline = 2,
    Open = 3,
    /// Every incident by its latest alert (the listing's order) with what listings filter
    /// on: derived from `incidents` (see `IncidentStore`'s `recent` functions).
    Recent = 4,
}

/// How many tables.
const N_TABLES: usize = 5;

/// The tables a migration copies: `recent` is derived from `incidents` and built again by the
/// first open of the copy.
const MIGRATED: [Table; 4] = [
    Table::Alerts,
    Table::Incidents,
    Table::Timeline,
    Table::Open,
];

impl Table {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Alerts => "alerts",
            Table::Incidents => "incidents",
            Table::Timeline => "timeline",
            Table::Open => "open",
            Table::Recent => "recent",
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

const REDB_TABLES: [redb::TableDefinition<'static, &[u8], &[u8]>; N_TABLES] = [
    redb::TableDefinition::new("alerts"),
    redb::TableDefinition::new("incidents"),
    redb::TableDefinition::new("timeline"),
    redb::TableDefinition::new("open"),
    redb::TableDefinition::new("recent"),
];

/// Counters kept with the data they count: `next_alert_id` (redb; sled has its own id
/// generator), `next_incident_id`, and `closed` (1 once the database was closed cleanly, 0
/// while it is open). In redb a table of their own; in sled its default tree, as 8 bytes
/// big-endian.
const REDB_META: redb::TableDefinition<'static, &str, u64> = redb::TableDefinition::new("meta");
const NEXT_ALERT_ID: &str = "next_alert_id";
const NEXT_INCIDENT_ID: &str = "next_incident_id";
const CLOSED: &str = "closed";

/// Incident ids skipped at an open after an unclean stop, for the reason alert ids are (below):
/// an incident opened after the last flush may have been listed, forwarded or acted on before
/// the crash lost it, and its `INC-n` must not come back naming another incident. More than
/// the incidents opened between two flushes (200 ms apart: 10,000 if every alert at 50,000
/// alerts/s opened one).
pub(crate) const INCIDENT_IDS_SKIPPED_AFTER_CRASH: u64 = 100_000;

/// Alert ids skipped at an open after an unclean stop. The id counter is written with every
/// call but made durable only by a flush, so after a crash it is back where the last flush
/// left it, while the ids handed out after that may have been seen (in the API, a forwarder)
/// before the crash lost them: the next ids must not repeat them. Far more than the alerts
/// written between two flushes (200 ms apart: ~10,000 at 50,000 alerts/s); sled's id
/// generator skips ahead after a crash in the same way.
const ALERT_IDS_SKIPPED_AFTER_CRASH: u64 = 1_000_000;

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

pub(crate) fn redb_err<E: Into<redb::Error>>(
    context: &'static str,
) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Redb {
        context: context.to_string(),
        source: Box::new(e.into()),
    }
}

/// Whether `dir` holds a sled database (its `conf` or `db` file).
pub(crate) fn holds_sled(dir: &Path) -> bool {
    dir.join("conf").exists() || dir.join("db").exists()
}

/// The engine of the database whose sled form lives in `sled_dir` and redb form in `dir/file`:
/// the one present, `new` when neither is, refused when both are (an interrupted migration).
pub(crate) fn choose_engine(
    what: &'static str,
    sled_dir: &Path,
    dir: &Path,
    file: &'static str,
    new: Backend,
) -> Result<Backend, StoreError> {
    match (holds_sled(sled_dir), dir.join(file).exists()) {
        (true, true) => Err(StoreError::TwoEngines {
            what,
            dir: dir.to_path_buf(),
            file,
        }),
        (true, false) => Ok(Backend::Sled),
        (false, true) => Ok(Backend::Redb),
        (false, false) => Ok(new),
    }
}

/// Opens (or creates) the redb file of `what`, with a page cache of `cache_bytes`, logging the
/// progress of a repair after an unclean stop.
pub(crate) fn create_redb(
    what: &'static str,
    file: &Path,
    cache_bytes: u64,
) -> Result<redb::Database, StoreError> {
    let shown = file.display().to_string();
    redb::Database::builder()
        .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
        .set_repair_callback(move |r| {
            tracing::warn!(
                file = %shown,
                progress = format_args!("{:.0}%", r.progress() * 100.0),
                "repairing the {what} after an unclean stop"
            );
        })
        .create(file)
        .map_err(redb_err("open"))
}

/// Begins a durable write that also saves the allocator's state (quick repair), so that the
/// open after a crash does not walk the whole file.
pub(crate) fn durable_write(
    db: &redb::Database,
    context: &'static str,
) -> Result<redb::WriteTransaction, StoreError> {
    let mut txn = db.begin_write().map_err(redb_err(context))?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(redb_err(context))?;
    txn.set_quick_repair(true);
    Ok(txn)
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

fn sled_get(tree: &sled::Tree, key: &[u8]) -> Result<Option<Val>, StoreError> {
    Ok(tree.get(key).map_err(sled_err("read"))?.map(Val::Sled))
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
    walk(tree.range::<&[u8], _>(span), rev, &mut go)
}

/// Hands `range`'s rows to `go`, ascending or (`rev`) descending, until it says stop.
pub(crate) fn walk<I: DoubleEndedIterator>(
    range: I,
    rev: bool,
    go: &mut impl FnMut(I::Item) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    fn each<J: Iterator>(
        rows: J,
        go: &mut impl FnMut(J::Item) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        for row in rows {
            if !go(row)? {
                break;
            }
        }
        Ok(())
    }
    if rev {
        each(range.rev(), go)
    } else {
        each(range, go)
    }
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
    walk(table.range(span).map_err(redb_err("read"))?, rev, &mut go)
}

/// The incident database.
pub(crate) enum Kv {
    Sled {
        db: sled::Db,
        trees: [sled::Tree; N_TABLES],
    },
    Redb(RedbKv),
}

/// A redb database that reopens itself after an I/O error. redb, like sled, latches the first
/// I/O error (a full disk, say) and fails every later operation until the file is reopened;
/// here the next write after it drops the database and opens it again (a reopen after a
/// failed write is an unclean stop: non-durable commits since the last flush are lost, alert
/// ids skip ahead), so the store resumes by itself once the cause is gone.
pub(crate) struct RedbKv {
    /// `None` between a failed reopen and the next attempt.
    db: RwLock<Option<redb::Database>>,
    path: PathBuf,
    cache_bytes: u64,
    /// What the database is, for errors and the log ("incident database", "event index").
    what: &'static str,
    /// Opens (or creates) the file, with whatever it needs set up.
    opener: fn(&Path, u64) -> Result<redb::Database, StoreError>,
    /// Times the database was dropped to be reopened: what the store holds in memory about
    /// it (open counts) is read again after one, since commits not yet durable were lost.
    reopens: AtomicU64,
}

/// A counter in sled's default tree (see [`REDB_META`]).
fn sled_meta(db: &sled::Db, key: &str) -> Result<Option<u64>, StoreError> {
    match db.get(key).map_err(sled_err("read meta"))? {
        None => Ok(None),
        Some(v) => <[u8; 8]>::try_from(&*v)
            .map(|b| Some(u64::from_be_bytes(b)))
            .map_err(|_| StoreError::Corrupt {
                tree: "meta".into(),
                reason: format!("{key}: {} bytes, not 8", v.len()),
            }),
    }
}

/// Where: redb's errors do not name the file.
fn named(what: &str, path: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Redb { context, source } => StoreError::Redb {
            context: format!("{what} {} ({context})", path.display()),
            source,
        },
        other => other,
    }
}

/// Whether redb now fails everything until reopened.
fn latched(e: &StoreError) -> bool {
    matches!(e, StoreError::Redb { source, .. }
        if matches!(**source, redb::Error::Io(_) | redb::Error::PreviousIo))
}

impl RedbKv {
    /// Opens the file at `path` with `opener`.
    pub(crate) fn open(
        path: &Path,
        cache_bytes: u64,
        what: &'static str,
        opener: fn(&Path, u64) -> Result<redb::Database, StoreError>,
    ) -> Result<RedbKv, StoreError> {
        let db = opener(path, cache_bytes).map_err(|e| named(what, path, e))?;
        Ok(RedbKv {
            db: RwLock::new(Some(db)),
            path: path.to_path_buf(),
            cache_bytes,
            what,
            opener,
            reopens: AtomicU64::new(0),
        })
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Times the database was reopened after an I/O error.
    pub(crate) fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// The database as it is now, if open, for what must not reopen it (a close).
    pub(crate) fn current(&self) -> std::sync::RwLockReadGuard<'_, Option<redb::Database>> {
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with the database, reopening it first if an I/O error closed it, and after `f`
    /// if `f` met one.
    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let r = {
            let mut guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
            if guard.is_none() {
                drop(guard);
                self.reopen()?;
                guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
            }
            match guard.as_ref() {
                Some(db) => f(db),
                None => Err(StoreError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::other("closed after an I/O error; not reopened"),
                }),
            }
        };
        let r = r.map_err(|e| named(self.what, &self.path, e));
        if let Err(e) = &r {
            if latched(e) {
                tracing::error!(file = %self.path.display(), error = %e, "{} failed: reopening it", self.what);
                if let Err(again) = self.reopen() {
                    tracing::error!(file = %self.path.display(), error = %again, "{} does not reopen yet; the next write tries again", self.what);
                }
            }
        }
        r
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // The old handle first: it holds the file's lock.
        if slot.take().is_some() {
            self.reopens.fetch_add(1, Ordering::Relaxed);
        }
        *slot = Some((self.opener)(&self.path, self.cache_bytes)?);
        Ok(())
    }
}

/// The id counter `key` of the database at `path`, at `next` when it was not closed cleanly:
/// where it resumes (`skip` further), said in the log.
fn skip_ahead(path: &Path, key: &str, next: u64, skip: u64) -> u64 {
    let skipped = next.saturating_add(skip);
    tracing::warn!(
        path = %path.display(),
        counter = key,
        from = next,
        to = skipped,
        "incident database not closed cleanly: ids skip ahead"
    );
    skipped
}

/// Opens (or creates) redb's file with every table, marking it open (see [`CLOSED`]).
fn open_redb_file(file: &Path, cache_bytes: u64) -> Result<redb::Database, StoreError> {
    let db = create_redb("incident database", file, cache_bytes)?;
    // Every table exists from the start, so that reads never meet a missing one.
    let txn = db.begin_write().map_err(redb_err("open"))?;
    for def in REDB_TABLES {
        txn.open_table(def).map_err(redb_err("open table"))?;
    }
    {
        let mut meta = txn.open_table(REDB_META).map_err(redb_err("open table"))?;
        let read = |meta: &redb::Table<'_, &'static str, u64>, key: &str| {
            meta.get(key)
                .map(|g| g.map(|v| v.value()))
                .map_err(redb_err("read meta"))
        };
        let clean = read(&meta, CLOSED)? == Some(1);
        for (key, skip) in [
            (NEXT_ALERT_ID, ALERT_IDS_SKIPPED_AFTER_CRASH),
            (NEXT_INCIDENT_ID, INCIDENT_IDS_SKIPPED_AFTER_CRASH),
        ] {
            if let (Some(next), false) = (read(&meta, key)?, clean) {
                let skipped = skip_ahead(file, key, next, skip);
                meta.insert(key, skipped).map_err(redb_err("write meta"))?;
            }
        }
        meta.insert(CLOSED, 0).map_err(redb_err("write meta"))?;
    }
    txn.commit().map_err(redb_err("open"))?;
    Ok(db)
}

impl Kv {
    /// Opens the database in `dir`, or creates one there with `new`'s engine. A directory
    /// holding a sled database (its `conf` file) stays sled, one holding `incidents.redb` stays
    /// redb: only the offline [`migrate_sled_to_redb`] changes it.
    pub(crate) fn open(dir: &Path, new: Backend, cache_bytes: u64) -> Result<Kv, StoreError> {
        match choose_engine("incident database", dir, dir, REDB_FILE, new)? {
            Backend::Sled => Self::open_sled(dir, cache_bytes),
            Backend::Redb => Self::open_redb(dir, &dir.join(REDB_FILE), cache_bytes),
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
            tree(Table::Recent)?,
        ];
        // As in redb: after an unclean stop the incident ids skip ahead (sled's own id
        // generator, which gives the alert ids, does so by itself); then marked open.
        let clean = sled_meta(&db, CLOSED)? == Some(1);
        if let (Some(next), false) = (sled_meta(&db, NEXT_INCIDENT_ID)?, clean) {
            let skipped = skip_ahead(
                dir,
                NEXT_INCIDENT_ID,
                next,
                INCIDENT_IDS_SKIPPED_AFTER_CRASH,
            );
            db.insert(NEXT_INCIDENT_ID, &skipped.to_be_bytes()[..])
                .map_err(sled_err("write meta"))?;
        }
        db.insert(CLOSED, &0u64.to_be_bytes()[..])
            .map_err(sled_err("write meta"))?;
        db.flush().map_err(sled_err("open"))?;
        Ok(Kv::Sled { db, trees })
    }

    /// The next incident id this database recorded (after the skip of an unclean stop), if it
    /// keeps one: databases written before the counter existed do not.
    pub(crate) fn next_incident_id(&self) -> Result<Option<u64>, StoreError> {
        match self {
            Kv::Sled { db, .. } => sled_meta(db, NEXT_INCIDENT_ID),
            Kv::Redb(kv) => kv.with(|db| {
                let txn = db.begin_read().map_err(redb_err("read meta"))?;
                let meta = txn.open_table(REDB_META).map_err(redb_err("read meta"))?;
                meta.get(NEXT_INCIDENT_ID)
                    .map(|g| g.map(|v| v.value()))
                    .map_err(redb_err("read meta"))
            }),
        }
    }

    fn open_redb(dir: &Path, file: &Path, cache_bytes: u64) -> Result<Kv, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Kv::Redb(RedbKv::open(
            file,
            cache_bytes,
            "incident database",
            open_redb_file,
        )?))
    }

    /// How many times the database was reopened after an I/O error (commits not yet durable
    /// at that moment are lost); always 0 for sled, which is not reopened.
    pub(crate) fn reopens(&self) -> u64 {
        match self {
            Kv::Sled { .. } => 0,
            Kv::Redb(kv) => kv.reopens(),
        }
    }

    /// Which engine this is.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Kv::Sled { .. } => Backend::Sled,
            Kv::Redb(_) => Backend::Redb,
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
                    order: Vec::with_capacity(N_TABLES),
                    next_incident: None,
                };
                let r = f(&mut tx)?;
                if let Tx::Sled {
                    mut batches,
                    order,
                    next_incident,
                    ..
                } = tx
                {
                    // The counter before the rows that use its ids.
                    if let Some(next) = next_incident {
                        db.insert(NEXT_INCIDENT_ID, &next.to_be_bytes()[..])
                            .map_err(sled_err("write incident id"))?;
                    }
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
            Kv::Redb(kv) => kv.with(|db| {
                let mut txn = db.begin_write().map_err(redb_err("begin a write"))?;
                txn.set_durability(redb::Durability::None)
                    .map_err(redb_err("begin a write"))?;
                let r = {
                    let table = |i: usize| txn.open_table(REDB_TABLES[i]).map_err(redb_err("open"));
                    let mut tx = Tx::Redb {
                        tables: [table(0)?, table(1)?, table(2)?, table(3)?, table(4)?],
                        meta: txn.open_table(REDB_META).map_err(redb_err("open"))?,
                        next_alert: None,
                        next_incident: None,
                    };
                    let r = f(&mut tx)?;
                    if let Tx::Redb {
                        mut meta,
                        next_alert,
                        next_incident,
                        ..
                    } = tx
                    {
                        if let Some(next) = next_alert {
                            meta.insert(NEXT_ALERT_ID, next)
                                .map_err(redb_err("write alert id"))?;
                        }
                        if let Some(next) = next_incident {
                            meta.insert(NEXT_INCIDENT_ID, next)
                                .map_err(redb_err("write incident id"))?;
                        }
                    }
                    r
                };
                txn.commit().map_err(redb_err("commit"))?;
                Ok(r)
            }),
        }
    }

    /// Makes every write before it durable.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        match self {
            Kv::Sled { db, .. } => db.flush().map(|_| ()).map_err(sled_err("flush")),
            Kv::Redb(kv) => kv.with(|db| {
                // An empty durable commit makes the non-durable ones before it durable. With
                // quick repair it also saves the allocator's state, so that the open after a
                // crash does not walk the whole file.
                durable_write(db, "flush")?
                    .commit()
                    .map_err(redb_err("flush"))
            }),
        }
    }

    /// Bytes the database takes on disk.
    #[cfg(test)]
    pub(crate) fn size_on_disk(&self) -> Result<u64, StoreError> {
        match self {
            Kv::Sled { db, .. } => db.size_on_disk().map_err(sled_err("size")),
            Kv::Redb(kv) => std::fs::metadata(&kv.path)
                .map(|m| m.len())
                .map_err(|source| StoreError::Io {
                    path: kv.path.clone(),
                    source,
                }),
        }
    }
}

impl Drop for Kv {
    fn drop(&mut self) {
        // sled: the mark of a clean close, flushed with everything before it.
        if let Kv::Sled { db, .. } = self {
            let closed = db
                .insert(CLOSED, &1u64.to_be_bytes()[..])
                .and_then(|_| db.flush())
                .map_err(sled_err("close"));
            if let Err(e) = closed {
                tracing::error!(error = %e, "cannot flush the incident database at close");
            }
        }
        // redb's last commits may be non-durable ones, made durable here with the mark of a
        // clean close.
        if let Kv::Redb(kv) = self {
            let guard = kv.current();
            let Some(db) = guard.as_ref() else {
                return;
            };
            let closed = || -> Result<(), StoreError> {
                let txn = durable_write(db, "close")?;
                txn.open_table(REDB_META)
                    .map_err(redb_err("close"))?
                    .insert(CLOSED, 1)
                    .map_err(redb_err("close"))?;
                txn.commit().map_err(redb_err("close"))
            };
            if let Err(e) = closed() {
                tracing::error!(file = %kv.path.display(), error = %e, "cannot flush the incident database at close");
            }
        }
    }
}

impl Read for Kv {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Val>, StoreError> {
        match self {
            Kv::Sled { trees, .. } => sled_get(&trees[t as usize], key),
            Kv::Redb(kv) => kv.with(|db| {
                let txn = db.begin_read().map_err(redb_err("begin a read"))?;
                let table = txn
                    .open_table(REDB_TABLES[t as usize])
                    .map_err(redb_err("open"))?;
                redb_get(&table, key)
            }),
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
            Kv::Redb(kv) => kv.with(|db| {
                // One snapshot for the whole scan: rows committed meanwhile are not seen.
                let txn = db.begin_read().map_err(redb_err("begin a read"))?;
                let table = txn
                    .open_table(REDB_TABLES[t as usize])
                    .map_err(redb_err("open"))?;
                redb_scan(&table, span, rev, visit)
            }),
        }
    }
}

/// One write in progress (see [`Kv::write`]). One at a time lives on a writer's stack, so
/// the size of redb's open tables is not worth a box per write.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Tx<'a> {
    Sled {
        db: &'a sled::Db,
        trees: &'a [sled::Tree; N_TABLES],
        batches: [Option<sled::Batch>; N_TABLES],
        /// Tables in the order first written to.
        order: Vec<Table>,
        /// See [`Tx::incident_ids_below`].
        next_incident: Option<u64>,
    },
    Redb {
        tables: [redb::Table<'a, &'static [u8], &'static [u8]>; N_TABLES],
        meta: redb::Table<'a, &'static str, u64>,
        /// The next alert id to hand out, once one was (written at commit).
        next_alert: Option<u64>,
        /// See [`Tx::incident_ids_below`].
        next_incident: Option<u64>,
    },
}

impl Tx<'_> {
    fn sled_batch<'b>(
        batches: &'b mut [Option<sled::Batch>; N_TABLES],
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

    /// Records, with this write, that incident ids below `next` have been handed out: an open
    /// starts after them even when retention has removed those incidents or a crash lost the
    /// newest (see [`INCIDENT_IDS_SKIPPED_AFTER_CRASH`]).
    pub(crate) fn incident_ids_below(&mut self, next: u64) {
        match self {
            Tx::Sled { next_incident, .. } | Tx::Redb { next_incident, .. } => {
                *next_incident = Some(next_incident.unwrap_or(0).max(next));
            }
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
            Tx::Sled { trees, .. } => sled_get(&trees[t as usize], key),
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

/// What [`migrate_sled_to_redb`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Rows per table: alerts (blocks), incidents, timeline, open.
    pub rows: [u64; 4],
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// Where the sled database now is (kept until the operator removes it).
    pub sled_kept_at: PathBuf,
}

/// Feeds one row to a migration's digest (key and value, each after its length) and returns
/// its bytes. Both migrations (event index, incident database) hash rows this way.
pub(crate) fn hash_row(h: &mut blake3::Hasher, k: &[u8], v: &[u8]) -> u64 {
    h.update(&(k.len() as u64).to_be_bytes());
    h.update(k);
    h.update(&(v.len() as u64).to_be_bytes());
    h.update(v);
    (k.len() + v.len()) as u64
}

/// Where a migration keeps the sled database it replaced: `from` is renamed to
/// `<name>.sled-<unix seconds>` beside it, and the directory synced.
pub(crate) fn keep_sled(from: &Path, name: &str) -> Result<PathBuf, StoreError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kept = from.with_file_name(format!("{name}.sled-{secs}"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    std::fs::rename(from, &kept).map_err(io(from))?;
    if let Some(parent) = from.parent() {
        crate::store::sync_dir(parent).map_err(io(parent))?;
    }
    Ok(kept)
}

/// Rows copied per redb transaction while migrating.
const MIGRATE_BATCH: usize = 10_000;

/// Every row of every table in key order, hashed (table, lengths, key, value), and counted.
fn digest(kv: &Kv) -> Result<(blake3::Hash, [u64; 4], u64), StoreError> {
    let mut h = blake3::Hasher::new();
    let mut rows = [0u64; 4];
    let mut bytes = 0u64;
    for t in MIGRATED {
        h.update(t.name().as_bytes());
        kv.scan(
            t,
            (Bound::Unbounded, Bound::Unbounded),
            false,
            &mut |k, v| {
                bytes += hash_row(&mut h, k, v);
                rows[t as usize] += 1;
                Ok(true)
            },
        )?;
    }
    Ok((h.finalize(), rows, bytes))
}

/// Converts the sled incident database in `dir` to redb, offline (the collector stopped: sled's
/// lock refuses otherwise). The copy is written beside it (`<dir>.migrating`), read back and
/// compared row for row (a blake3 digest of every table, and the counts) with the source, and
/// only then swapped in with one atomic `renameat2(RENAME_EXCHANGE)`: a crash at any point
/// leaves either the sled directory in place (a rerun starts over) or the verified redb one.
/// The sled database is kept as `<dir>.sled-<unix seconds>`. Alert ids go on from sled's.
pub fn migrate_sled_to_redb(dir: &Path, cache_bytes: u64) -> Result<Migrated, StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "incidents".into());
    let staging = dir.with_file_name(format!("{name}.migrating"));
    if !holds_sled(dir) {
        return Err(StoreError::Refused {
            what: "incident database",
            path: dir.to_path_buf(),
            reason: if dir.join(REDB_FILE).exists() {
                "already redb: nothing to migrate"
            } else {
                "no sled incident database here: nothing to migrate"
            },
        });
    }
    if staging.exists() {
        if holds_sled(&staging) {
            return Err(StoreError::Refused {
                what: "incident database",
                path: staging,
                reason: "holds a sled database (left by an interrupted swap?): look at it before migrating",
            });
        }
        // An interrupted copy: nothing but a partial redb file.
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let source = Kv::open_sled(dir, cache_bytes)?;
    let next_alert = match &source {
        Kv::Sled { db, .. } => db
            .generate_id()
            .map(|id| id + 1)
            .map_err(sled_err("alert id"))?,
        Kv::Redb(_) => 1,
    };
    let (want, rows, bytes) = digest(&source)?;
    let copy = Kv::open_redb(&staging, &staging.join(REDB_FILE), cache_bytes)?;
    for t in MIGRATED {
        let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(MIGRATE_BATCH);
        let mut after: Option<Vec<u8>> = None;
        loop {
            batch.clear();
            let span = match &after {
                Some(k) => (Bound::Excluded(&k[..]), Bound::Unbounded),
                None => (Bound::Unbounded, Bound::Unbounded),
            };
            source.scan(t, span, false, &mut |k, v| {
                batch.push((k.to_vec(), v.to_vec()));
                Ok(batch.len() < MIGRATE_BATCH)
            })?;
            if batch.is_empty() {
                break;
            }
            copy.write(|tx| batch.iter().try_for_each(|(k, v)| tx.put(t, k, v)))?;
            after = batch.last().map(|(k, _)| k.clone());
        }
    }
    let next_incident = source.next_incident_id()?;
    copy.write(|tx| {
        if let Tx::Redb { next_alert: n, .. } = tx {
            *n = Some(next_alert);
        }
        if let Some(next) = next_incident {
            tx.incident_ids_below(next);
        }
        Ok(())
    })?;
    copy.flush()?;
    let (got, got_rows, _) = digest(&copy)?;
    if got != want || got_rows != rows {
        return Err(StoreError::Corrupt {
            tree: staging.display().to_string(),
            reason: format!(
                "the copy does not read back as the source (rows {got_rows:?} against {rows:?}); the sled database is untouched"
            ),
        });
    }
    drop(copy);
    drop(source);
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &staging,
        nix::fcntl::AT_FDCWD,
        dir,
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(|e| StoreError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::from(e),
    })?;
    let kept = keep_sled(&staging, &name)?;
    Ok(Migrated {
        rows,
        bytes,
        sled_kept_at: kept,
    })
}

/// Marks the closed database in `dir` as not closed cleanly, as a crash leaves it.
#[cfg(test)]
pub(crate) fn mark_unclean(dir: &Path) {
    let file = dir.join(REDB_FILE);
    if file.exists() {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(REDB_META)
            .unwrap()
            .insert(CLOSED, 0)
            .unwrap();
        txn.commit().unwrap();
    } else {
        let db = palisade_wire::process::open_waiting_for_lock(|| sled::open(dir)).unwrap();
        db.insert(CLOSED, &0u64.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_keeps_the_engine_it_was_created_with() {
        let t = tempfile::tempdir().unwrap();
        for (created, asked) in [
            (Backend::Sled, Backend::Redb),
            (Backend::Redb, Backend::Sled),
        ] {
            let dir = t.path().join(created.to_string());
            let kv = Kv::open(&dir, created, 1 << 20).unwrap();
            assert_eq!(kv.backend(), created);
            kv.write(|tx| tx.put(Table::Open, b"k", b"v")).unwrap();
            kv.flush().unwrap();
            drop(kv);
            let kv = Kv::open(&dir, asked, 1 << 20).unwrap();
            assert_eq!(
                kv.backend(),
                created,
                "{created} directory opened as {asked}"
            );
            assert_eq!(
                kv.get(Table::Open, b"k").unwrap().as_deref(),
                Some(&b"v"[..])
            );
        }
        // Both engines' files in one directory: refused, naming it.
        let both = t.path().join("both");
        drop(Kv::open(&both, Backend::Sled, 1 << 20).unwrap());
        std::fs::write(both.join(REDB_FILE), b"").unwrap();
        let err = Kv::open(&both, Backend::Redb, 1 << 20)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&both.display().to_string()) && err.contains("both"),
            "{err}"
        );
    }

    #[test]
    fn alert_ids_rise_across_clean_reopens_and_a_redb_write_that_fails_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let kv = Kv::open(t.path(), Backend::Redb, 1 << 20).unwrap();
        let first = kv.write(|tx| tx.next_alert_id()).unwrap();
        assert_eq!(first, 1);
        drop(kv);
        let kv = Kv::open(t.path(), Backend::Redb, 1 << 20).unwrap();
        // A clean close: no skip.
        assert_eq!(kv.write(|tx| tx.next_alert_id()).unwrap(), 2);
        // A write whose closure fails commits nothing, its id included.
        let failed: Result<(), StoreError> = kv.write(|tx| {
            tx.next_alert_id()?;
            tx.put(Table::Alerts, b"x", b"y")?;
            Err(StoreError::Corrupt {
                tree: "alerts".into(),
                reason: "test".into(),
            })
        });
        assert!(failed.is_err());
        assert!(kv.get(Table::Alerts, b"x").unwrap().is_none());
        assert_eq!(kv.write(|tx| tx.next_alert_id()).unwrap(), 3);
    }
}
