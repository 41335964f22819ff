//! Host integrity: signed file baselines (`baseline`, `verify`), realtime watching with
//! `notify`, web anti-tamper with restore from a known-good store, and YARA-X malware scanning
//! with quarantine.
//!
//! Everything lives in the integrity dir (default `<data_dir>/integrity`, 0700):
//! `baseline.db` (+ `.prev`), `baseline.key` (Ed25519, 0600), `store/` (known-good copies),
//! `quarantine/`, and `publish.lock` while a publish runs.

pub mod commands;
pub mod config;
pub mod db;
pub mod entry;
pub mod events;
#[cfg(feature = "yara")]
pub mod malware;
pub mod monitor;
pub mod quarantine;
pub mod restore;
pub mod sign;
pub mod store;
pub mod verify;
pub mod walk;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use config::{IntegrityConfig, PathConfig, Protect};
use db::{Baseline, DbError, Header, Writer};
use sign::{Key, KeyError};
use walk::{Root, Start, WalkOptions, WalkStats};

/// Integrity trouble.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    /// The baseline.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The signing key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The config.
    #[error("integrity config: {0}")]
    Config(String),
    /// The file system.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the integrity state lives.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The integrity dir.
    pub dir: PathBuf,
}

impl Layout {
    /// For a config and data dir.
    pub fn new(config: &IntegrityConfig, data_dir: &Path) -> Layout {
        Layout {
            dir: config.state_dir(data_dir),
        }
    }

    /// Creates the dir (0700).
    pub fn create(&self) -> Result<(), IntegrityError> {
        store::private_dir(&self.dir).map_err(|source| IntegrityError::Io {
            action: "create",
            path: self.dir.clone(),
            source,
        })
    }

    /// The baseline file.
    pub fn db(&self) -> PathBuf {
        self.dir.join("baseline.db")
    }

    /// The signing key.
    pub fn key(&self) -> PathBuf {
        self.dir.join("baseline.key")
    }

    /// The known-good store.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// The quarantine.
    pub fn quarantine(&self) -> PathBuf {
        self.dir.join("quarantine")
    }

    /// Present while `publish` copies into a protected tree.
    pub fn publish_lock(&self) -> PathBuf {
        self.dir.join("publish.lock")
    }
}

/// Opens the baseline, refusing it unless its signature holds (with the pinned key when the
/// config has one, else with the agent's own key).
pub fn open_baseline(
    config: &IntegrityConfig,
    layout: &Layout,
) -> Result<Baseline, IntegrityError> {
    let pinned = match &config.public_key {
        Some(k) => sign::parse_public_key(k).map_err(IntegrityError::Config)?,
        // Never create a key here: a missing key means the baseline cannot be vouched for.
        None if !layout.key().exists() => {
            return Err(IntegrityError::Db(if layout.db().exists() {
                DbError::Refused {
                    path: layout.db(),
                    reason: format!(
                        "the agent's signing key {} is gone; pin integrity.public_key or take a new baseline",
                        layout.key().display()
                    ),
                }
            } else {
                DbError::Missing(layout.db())
            }))
        }
        None => Key::load_or_create(&layout.key())?.public(),
    };
    Ok(Baseline::open(&layout.db(), Some(&pinned))?)
}

/// What a baseline run did.
#[derive(Debug)]
pub struct BaselineOutcome {
    /// The new baseline.
    pub baseline: Baseline,
    /// Walk counters.
    pub stats: WalkStats,
    /// Known-good copies that could not be stored.
    pub store_errors: Vec<(PathBuf, String)>,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IntegrityError {
    let path = path.to_path_buf();
    move |source| IntegrityError::Io {
        action,
        path,
        source,
    }
}

/// Stores the content of the regular files of `section` (a `protect = "restore"` tree) in the
/// known-good store.
fn store_section(
    store: &store::Store,
    section: &walk::Section,
    errors: &std::sync::Mutex<Vec<(PathBuf, String)>>,
) {
    for e in &section.entries {
        let Some(hash) = e.hash() else { continue };
        if store.has(hash) {
            continue;
        }
        let path = section.dir.join(&e.name);
        let r = std::fs::symlink_metadata(&path).and_then(|m| {
            if m.ino() != e.inode {
                return Err(std::io::Error::other(
                    "replaced while the baseline was taken",
                ));
            }
            store.put_file(&path, &m, hash)
        });
        if let Err(err) = r {
            errors
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((path, err.to_string()));
        }
    }
}

/// Walks every configured tree and writes a new signed baseline (`baseline`, and
/// `baseline --update` without paths). Known-good copies of `protect = "restore"` trees are
/// stored as they are hashed.
pub fn create_baseline(
    config: &IntegrityConfig,
    layout: &Layout,
    agent_id: &str,
    reason: &str,
    approved_by: Option<String>,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<BaselineOutcome, IntegrityError> {
    config.check().map_err(IntegrityError::Config)?;
    if config.paths.is_empty() {
        return Err(IntegrityError::Config(
            "no [[integrity.paths]] configured: nothing to baseline".into(),
        ));
    }
    layout.create()?;
    let key = Key::load_or_create(&layout.key())?;
    let generation = match Baseline::open(&layout.db(), Some(&key.public())) {
        Ok(old) => old.header.generation + 1,
        Err(_) => 1,
    };
    let roots = Root::all(config).map_err(IntegrityError::Config)?;
    let store = store::Store::open(&layout.store()).map_err(io_err("create", &layout.store()))?;
    let writer = Writer::create(&layout.db())?;
    let stats = WalkStats::default();
    let store_errors = std::sync::Mutex::new(Vec::new());
    walk::walk(
        &roots,
        &Start::roots(&roots),
        WalkOptions {
            threads: config.thread_count(),
            hash: true,
            progress,
        },
        &stats,
        &|section| {
            writer.add(&section);
            if roots[section.root].config.protect == Protect::Restore {
                store_section(&store, &section, &store_errors);
            }
        },
    );
    let header = Header::new(config, agent_id, generation, approved_by, reason);
    finish(writer, header, &key, stats, store_errors)
}

impl Header {
    fn new(
        config: &IntegrityConfig,
        agent_id: &str,
        generation: u64,
        approved_by: Option<String>,
        reason: &str,
    ) -> Header {
        Header {
            version: 1,
            agent_id: agent_id.to_string(),
            created_ns: palisade_wire::Timestamp::now().0,
            generation,
            approved_by,
            reason: reason.to_string(),
            roots: config.paths.iter().map(|p| p.path.clone()).collect(),
            // Counted by the writer.
            files: 0,
            dirs: 0,
        }
    }
}

fn finish(
    writer: Writer,
    header: Header,
    key: &Key,
    stats: WalkStats,
    store_errors: std::sync::Mutex<Vec<(PathBuf, String)>>,
) -> Result<BaselineOutcome, IntegrityError> {
    Ok(BaselineOutcome {
        baseline: writer.finish(header, key)?,
        stats,
        store_errors: store_errors
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    })
}

/// Accepts the live state of `paths` (files or subtrees) into the baseline and leaves the rest
/// as it was (`baseline --update --path`, `publish`).
pub fn update_paths(
    config: &IntegrityConfig,
    layout: &Layout,
    old: &Baseline,
    paths: &[PathBuf],
    reason: &str,
    approved_by: Option<String>,
) -> Result<BaselineOutcome, IntegrityError> {
    let key = Key::load_or_create(&layout.key())?;
    let roots = Root::all(config).map_err(IntegrityError::Config)?;
    for p in paths {
        if walk::root_of(&roots, p).is_none() {
            return Err(IntegrityError::Config(format!(
                "{} is not under any [[integrity.paths]] root",
                p.display()
            )));
        }
    }
    let under = |d: &Path| paths.iter().any(|p| d.starts_with(p));
    // Parents whose entry lists change, unless they are rewritten anyway.
    let parents: BTreeSet<PathBuf> = paths
        .iter()
        .filter(|p| walk::root_of(&roots, p).is_some_and(|(_, r)| r.path() != p.as_path()))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .filter(|d| !under(d))
        .collect();
    let store = store::Store::open(&layout.store()).map_err(io_err("create", &layout.store()))?;
    let writer = Writer::create(&layout.db())?;
    writer.copy_from(old, |d| !under(d) && !parents.contains(d))?;
    let stats = WalkStats::default();
    let store_errors = std::sync::Mutex::new(Vec::new());
    let starts: Vec<Start> = paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .filter_map(|p| {
            walk::root_of(&roots, p).map(|(i, _)| Start {
                dir: p.clone(),
                root: i,
            })
        })
        .collect();
    walk::walk(
        &roots,
        &starts,
        WalkOptions {
            threads: config.thread_count(),
            hash: true,
            progress: None,
        },
        &stats,
        &|section| {
            if roots[section.root].config.protect == Protect::Restore {
                store_section(&store, &section, &store_errors);
            }
            writer.add(&section);
        },
    );
    let mut buf = Vec::new();
    for parent in &parents {
        let Some((ri, root)) = walk::root_of(&roots, parent) else {
            continue;
        };
        let mut section = old.section(parent)?.unwrap_or(walk::Section {
            dir: parent.clone(),
            root: ri,
            own: None,
            entries: Vec::new(),
        });
        for p in paths
            .iter()
            .filter(|p| p.parent() == Some(parent.as_path()))
        {
            let Some(name) = p.file_name() else { continue };
            section.entries.retain(|e| e.name != name);
            match walk::read_one(root, p, name.to_os_string(), true, &mut buf) {
                Ok((e, _)) => section.entries.push(e),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("read", p)(e)),
            }
        }
        section
            .entries
            .sort_by(|a, b| a.name.as_encoded_bytes().cmp(b.name.as_encoded_bytes()));
        if root.config.protect == Protect::Restore {
            store_section(&store, &section, &store_errors);
        }
        writer.add(&section);
    }
    let header = Header::new(
        config,
        &old.header.agent_id,
        old.header.generation + 1,
        approved_by,
        reason,
    );
    finish(writer, header, &key, stats, store_errors)
}

#[cfg(test)]
mod tests;
