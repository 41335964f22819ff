//! What a site knows about every path it has ever synced: version vector, content hash (or a
//! tombstone), size, mtime, and which site made the change and when. Kept in `STATE/state.json`,
//! rewritten atomically (temp + fsync + rename + fsync dir), so a crash leaves either the old or
//! the new state and the start-up scan catches up with the disk.
//!
//! Group commit: a change does not write the file; it bumps the in-memory
//! [`State::generation`] ([`State::touch`]). The state is written whole, covering every change
//! since the last write, when someone needs it on disk ([`super::engine::Engine::wait_saved`]:
//! before answering a peer's offer or update, before offering a version to the peer, before
//! sending the index) and otherwise by the periodic saver (every [`SAVE_EVERY`]) and at exit.
//! Changes nobody was told about yet may be lost by a crash; the start-up scan finds them
//! again on disk, and anti-entropy re-offers whatever the peer then lacks.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::vv::VersionVector;
use crate::error::{Error, Result};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// How often changes nobody waits for are written at the latest.
pub const SAVE_EVERY: std::time::Duration = std::time::Duration::from_millis(30);

/// One path's last known version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Changes seen, per site.
    pub vv: VersionVector,
    /// blake3 (hex) of the content; `None` is a tombstone (the file was deleted).
    pub hash: Option<String>,
    /// Bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// The site that made this version.
    pub origin: String,
    /// When that site saw the change, ns since the epoch (replication lag is measured from it).
    pub changed_ns: i64,
    /// When this site last read or wrote the content, ns (local only; 0 = unknown). A scan
    /// trusts an unchanged size and mtime only when the mtime is well before this, so a
    /// second write within the same clock tick is never taken for "unchanged" (racy git).
    #[serde(default)]
    pub seen_ns: i64,
    /// Permission bits (`0o777` at most: setuid, setgid and sticky are never synced); 0 in a
    /// state written before modes were synced, adopted from the file without a new version.
    #[serde(default)]
    pub mode: u32,
}

impl Entry {
    /// Whether this version is a deletion.
    pub fn deleted(&self) -> bool {
        self.hash.is_none()
    }
}

/// Everything a site remembers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// The site this state belongs to (refuses to run as another).
    pub site: String,
    /// Relative path (`/`-separated) → its version. Tombstones are kept so a delete is never
    /// mistaken for "never had it" by a site that comes back later.
    pub entries: BTreeMap<String, Entry>,
    /// Changes made in this process (not saved): bumped by every change, so a save knows which
    /// changes it covers.
    #[serde(skip)]
    pub generation: u64,
}

impl State {
    /// Reads `dir/state.json`, or an empty state for `site` when there is none.
    pub fn load(dir: &Path, site: &str) -> Result<State> {
        let path = dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: 1,
                    site: site.to_string(),
                    entries: BTreeMap::new(),
                    generation: 0,
                })
            }
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        let state: State = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("sync state {}", path.display()), e.to_string()))?;
        if state.version != 1 {
            return Err(Error::corrupt(
                format!("sync state {}", path.display()),
                format!("format version {} is not 1", state.version),
            ));
        }
        if state.site != site {
            return Err(Error::Usage(format!(
                "state directory {} belongs to site {:?}, not {site:?}",
                dir.display(),
                state.site
            )));
        }
        Ok(state)
    }

    /// Records a change (the caller holds the state's lock); returns the generation that must
    /// be saved for the change to be on disk.
    pub fn touch(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Writes the state atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec(self)
            .map_err(|e| Error::Usage(format!("cannot encode sync state: {e}")))?;
        crate::repo::write_atomic(dir, STATE_FILE, &json)
    }
}
