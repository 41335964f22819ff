//! `palisade-replicator`: verified delta shipping between sites (off-site backup, active-active)
//! and DR drills. This slice holds only the command-line shell; the repository, transport, sync
//! and drill modules arrive with the replicator and drill issues.

/// What this build of the replicator can do, printed by `palisade-replicator status`.
pub fn capabilities() -> &'static str {
    "palisade-replicator: repository, transport, sync and drills are not built yet; \
     this build ships the workspace and wire format they will use"
}
