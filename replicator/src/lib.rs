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

    /// Drill runbooks, resolved with placeholders as `drill validate` does.
    pub fn runbook_parse(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let _ = crate::drill::runbook::parse(
            text,
            std::path::Path::new("fuzz.toml"),
            &[],
            crate::drill::runbook::Resolve::Placeholder,
        );
    }

    /// Separates the messages of one `sync_messages` input.
    pub const SYNC_MESSAGE_SEPARATOR: &[u8] = b"\n--\n";

    /// What a sync peer sends, delivered to a real site: a fresh [`Engine`] on an empty tree
    /// in this process's scratch directory receives the messages of `data` (split at
    /// [`SYNC_MESSAGE_SEPARATOR`]) in order, through the calls the server makes. The first
    /// byte of each message picks its kind: an offer (JSON), an update (the framed body), the
    /// peer's index (JSON, as anti-entropy reads it), or a reply to our own offer or update.
    ///
    /// [`Engine`]: crate::sync::engine::Engine
    pub fn sync_messages(data: &[u8]) {
        use crate::sync::protocol::{self, Index, Offer, OfferReply, UpdateReply};
        let dir = std::env::temp_dir().join(format!("palisade-fuzz-sync-{}", std::process::id()));
        // Failures here are the fuzzing machine's, not the parser's: stop loudly.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("clear the fuzz sync directory");
        }
        let (root, state) = (dir.join("tree"), dir.join("state"));
        std::fs::create_dir_all(&root).expect("create the fuzz sync tree");
        std::fs::create_dir_all(&state).expect("create the fuzz sync state directory");
        let engine = crate::sync::engine::Engine::open(root, state, "site-a".into(), None)
            .expect("open an empty sync site");
        let mut rest = data;
        for _ in 0..8 {
            let (msg, next) = match rest
                .windows(SYNC_MESSAGE_SEPARATOR.len())
                .position(|w| w == SYNC_MESSAGE_SEPARATOR)
            {
                Some(i) => (&rest[..i], Some(&rest[i + SYNC_MESSAGE_SEPARATOR.len()..])),
                None => (rest, None),
            };
            if let Some((&kind, body)) = msg.split_first() {
                match kind % 4 {
                    0 => {
                        if let Ok(offer) = serde_json::from_slice::<Offer>(body) {
                            let _ = engine.offer(&offer);
                        }
                    }
                    1 => {
                        if let Ok((header, chunks)) = protocol::decode_update(body) {
                            let _ = engine.update(&header, chunks);
                        }
                    }
                    2 => {
                        if let Ok(index) = serde_json::from_slice::<Index>(body) {
                            let _ = engine.queue_unseen_by(&index);
                        }
                    }
                    _ => {
                        let _ = serde_json::from_slice::<OfferReply>(body);
                        let _ = serde_json::from_slice::<UpdateReply>(body);
                    }
                }
            }
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }
        let _ = engine.index();
    }
}
