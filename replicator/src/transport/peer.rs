//! A repository served to peers (`serve`) and a peer's repository used as a [`Store`]
//! (`backup --to https://…`, `restore`/`snapshots` with `--repo https://…`).
//! STUB: replaced by the transport work.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::chunk::Id;
use crate::error::{Error, Result};
use crate::repo::format::BlobHeader;
use crate::repo::{Config, Store};
use crate::transport::PeerTls;

/// Client-side options.
#[derive(Clone, Debug, Default)]
pub struct PeerOptions {
    /// Bandwidth cap for uploads, bytes per second.
    pub limit_bytes_per_sec: Option<u64>,
    /// Test-only fault: flip one bit in the Nth blob sent (1-based), once.
    pub flip_in_transit: Option<usize>,
}

/// A peer's repository.
#[derive(Debug)]
pub struct PeerStore {
    url: String,
    config: Config,
}

impl PeerStore {
    /// Connects and reads the peer's config.
    pub fn connect(url: &str, _tls: &PeerTls, _opts: PeerOptions) -> Result<PeerStore> {
        Err(Error::Peer {
            peer: url.into(),
            reason: "peer transport not built yet".into(),
            retryable: false,
        })
    }

    /// Creates the repository at the peer with `config` (refused if it has one).
    pub fn init(url: &str, _tls: &PeerTls, _config: &Config) -> Result<()> {
        Err(Error::Peer {
            peer: url.into(),
            reason: "peer transport not built yet".into(),
            retryable: false,
        })
    }
}

impl Store for PeerStore {
    fn config(&self) -> &Config {
        &self.config
    }
    fn location(&self) -> String {
        self.url.clone()
    }
    fn known_ids(&self) -> Result<HashSet<Id>> {
        Ok(HashSet::new())
    }
    fn missing(&self, ids: &[Id]) -> Result<Vec<Id>> {
        Ok(ids.to_vec())
    }
    fn put_blobs(&self, _blobs: &[(BlobHeader, Vec<u8>)]) -> Result<u64> {
        Ok(0)
    }
    fn read_stored(&self, id: &Id) -> Result<(BlobHeader, Vec<u8>)> {
        Err(Error::MissingBlob {
            id: id.hex(),
            by: "peer".into(),
        })
    }
    fn put_snapshot(&self, _stored: &[u8]) -> Result<String> {
        Ok(String::new())
    }
    fn snapshot_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(Vec::new())
    }
}

/// Options of `serve`.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The repository served (created on a peer's `init` when missing).
    pub repo: PathBuf,
    /// `host:port` to listen on.
    pub listen: String,
}

/// Serves `opts.repo` to peers until SIGINT/SIGTERM; prints `listening on ADDR` on stdout once
/// bound.
pub fn serve(_opts: &ServeOptions, _tls: &PeerTls) -> Result<()> {
    let _ = Path::new("");
    Err(Error::Usage("serve: not built yet".into()))
}
