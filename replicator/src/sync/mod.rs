//! Active-active directories (同城双活). STUB: replaced by the sync work.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::transport::PeerTls;

/// Options of `sync`.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// The directory kept in step.
    pub dir: PathBuf,
    /// This site's name (appears in version vectors and conflict copies).
    pub site: String,
    /// `host:port` to listen on for the peer.
    pub listen: String,
    /// The peer's URL.
    pub peer: String,
    /// Where sync keeps its state (version vectors); default `DIR/../.palisade-sync-SITE`.
    pub state_dir: Option<PathBuf>,
    /// Stop after this many seconds (tests, drills); run until a signal otherwise.
    pub run_secs: Option<u64>,
}

/// Runs sync until a signal (or `run_secs`).
pub fn run(_opts: &SyncOptions, _tls: &PeerTls) -> Result<()> {
    Err(Error::Usage("sync: not built yet".into()))
}
