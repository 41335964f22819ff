//! `palisade-replicator`: verified delta shipping between sites (off-site backup, active-active)
//! and DR drills.
//!
//! - [`chunk`]: FastCDC chunking and keyed-blake3 ids.
//! - [`repo`]: the content-addressed repository (packs, indexes, trees, snapshots, keys) and the
//!   [`repo::Store`] trait shared by local repositories and peers.
//! - [`backup`], [`restore`], [`verify`], [`prune`], [`diff`]: the operations.
//! - [`transport`]: mutual-TLS HTTPS between replicators (`serve`, and a peer as a store).
//! - [`sync`]: active-active directories with version vectors.
//! - [`report`]: run events to the collector.

pub mod backup;
pub mod chunk;
pub mod cli;
pub mod diff;
pub mod drill;
pub mod error;
pub mod progress;
pub mod prune;
pub mod repo;
pub mod report;
pub mod restore;
pub mod sync;
pub mod transport;
pub mod verify;

pub use error::{Error, Result};

/// Entry points for the fuzz targets (`fuzz/`): parsers of bytes from disk and from peers.
#[doc(hidden)]
pub mod fuzzing {
    /// Pack files.
    pub fn pack_parse(data: &[u8]) {
        let _ = crate::repo::format::parse_pack(data, "fuzz");
    }

    /// Index files.
    pub fn index_parse(data: &[u8]) {
        let _ = crate::repo::format::IndexFile::decode(data, "fuzz");
    }

    /// Trees (manifests), including the path checks a restore applies.
    pub fn tree_parse(data: &[u8]) {
        if let Ok(t) = crate::repo::tree::Tree::parse(data, "fuzz") {
            for n in &t.entries {
                if let Some(target) = &n.target {
                    let _ = crate::repo::tree::symlink_stays_inside(3, target);
                }
            }
        }
    }

    /// Blob uploads from peers (`POST /v1/blobs` bodies).
    pub fn peer_blobs_parse(data: &[u8]) {
        let _ = crate::transport::peer::parse_blobs(data);
    }

    /// Snapshot files and repository configs.
    pub fn snapshot_parse(data: &[u8]) {
        let _ = crate::repo::Snapshot::decode(data, None, "fuzz0000");
        let _ = crate::repo::Config::parse(data, std::path::Path::new("fuzz"));
    }
}
