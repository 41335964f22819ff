//! `prune`: forget snapshots the keep-policy does not keep, then reclaim space in two phases so
//! that it is safe beside a running backup without any lock:
//!
//! 1. **mark**: packs holding only blobs no snapshot references are written to a prune mark.
//!    From then on, backups treat their blobs as absent and store fresh copies.
//! 2. **delete** (a later prune, once the mark is older than the grace period): each marked pack
//!    is checked again against every snapshot present *now*; a pack a snapshot has come to
//!    reference (a backup that started before the mark) is kept, the rest are deleted.
//!
//! A backup that runs longer than the grace period and reused a blob from a pack deleted in the
//! meantime fails its final check (`Store::lost`, which re-reads the repository first) and says
//! to run again. A process that holds a repository open for long (`serve` above all) re-reads
//! its index whenever `prune/` has changed (`Repository::refresh`): a mark is written before
//! anything is deleted and removed only after, so every deletion changes that directory. The
//! one window left: a backup that outlived the grace period committing its snapshot in the same
//! instant as the second phase deletes a pack it reused, between that phase's listing of the
//! snapshots and its unlink.
//! Packs that are only partly unused are kept whole (no repacking yet); their unused bytes are
//! reported.

use std::collections::HashSet;

use serde::Serialize;

use crate::chunk::Id;
use crate::error::{Error, Result};
use crate::repo::keys::Keys;
use crate::repo::snapshot::{self, KeepPolicy};
use crate::repo::{PruneMark, Repository};
use crate::restore::TreeWalk;

/// Options of `prune`.
#[derive(Clone, Copy, Debug)]
pub struct PruneOptions {
    /// Which snapshots survive.
    pub policy: KeepPolicy,
    /// How old a mark must be before its packs are deleted.
    pub grace_secs: u64,
    /// Say what would happen, change nothing.
    pub dry_run: bool,
}

/// What `prune` did (or, with `--dry-run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Snapshots kept, with the rules that kept them.
    pub kept: Vec<(String, Vec<&'static str>)>,
    /// Snapshots forgotten.
    pub forgotten: Vec<String>,
    /// Packs newly marked.
    pub packs_marked: u64,
    /// Their bytes.
    pub bytes_marked: u64,
    /// Packs deleted (marks past the grace period).
    pub packs_deleted: u64,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Marked packs a newer snapshot references again, kept.
    pub packs_kept_referenced: u64,
    /// Unused bytes inside packs that still hold used blobs.
    pub bytes_unused_in_live_packs: u64,
}

/// Runs a prune.
pub fn prune(repo: &Repository, keys: &Keys, opts: &PruneOptions) -> Result<PruneReport> {
    if opts.policy.is_empty() {
        return Err(Error::Usage(
            "prune needs at least one --keep-* option (it would forget every snapshot)".into(),
        ));
    }
    let now = palisade_wire::event::Timestamp::now().nanos();
    let mut report = PruneReport::default();
    let snaps = snapshot::list(repo, Some(keys))?;
    let keep = opts.policy.apply(&snaps, now);
    for (id, _) in &snaps {
        match keep.get(id) {
            Some(why) => report.kept.push((id.clone(), why.clone())),
            None => {
                if !opts.dry_run {
                    repo.delete_snapshot(id)?;
                }
                report.forgotten.push(id.clone());
            }
        }
    }

    let referenced = |repo: &Repository| -> Result<HashSet<Id>> {
        let mut used = HashSet::new();
        let mut walk = TreeWalk::default();
        for (id, s) in snapshot::list(repo, Some(keys))? {
            if opts.dry_run && !keep.contains_key(&id) {
                continue;
            }
            walk.add_root(s.tree);
            while let Some((t, _, tree)) = walk.next_tree(repo, keys) {
                used.insert(t);
                used.extend(tree?.entries.into_iter().flat_map(|n| n.chunks));
            }
        }
        Ok(used)
    };

    // Phase 2 first: marks past the grace period.
    repo.reload()?;
    let used = referenced(repo)?;
    let blobs = repo.all_blobs();
    let packs = repo.packs();
    let grace_ns = (opts.grace_secs as i64).saturating_mul(1_000_000_000);
    let mut still_marked: HashSet<[u8; 32]> = HashSet::new();
    for mark in repo.prune_marks()? {
        let ripe = now - mark.created_ns >= grace_ns;
        let ids: Vec<[u8; 32]> = mark
            .packs
            .iter()
            .filter_map(|p| crate::chunk::parse_hex32(p))
            .collect();
        if !ripe {
            still_marked.extend(ids);
            continue;
        }
        for pack in ids {
            let in_use = blobs
                .iter()
                .any(|(id, loc)| loc.pack == pack && used.contains(id));
            if in_use {
                report.packs_kept_referenced += 1;
                continue;
            }
            report.packs_deleted += 1;
            report.bytes_deleted += packs.get(&pack).copied().unwrap_or(0);
            if !opts.dry_run {
                repo.delete_pack(&pack)?;
            }
        }
        if !opts.dry_run {
            repo.remove_meta("prune", &mark.file)?;
        }
    }
    if !opts.dry_run {
        repo.reload()?;
        // Index files left by a delete interrupted between pack and index.
        for d in repo.dangling_indexes() {
            repo.remove_meta("index", &d)?;
        }
        repo.reload()?;
    }

    // Phase 1: mark packs with nothing in use.
    let mut per_pack: std::collections::HashMap<[u8; 32], (u64, u64)> = Default::default();
    for (id, loc) in repo.all_blobs() {
        let e = per_pack.entry(loc.pack).or_default();
        // A frame's stored bytes are shared by its chunks: each counts its share.
        let h = &loc.entry.header;
        let len = if h.is_frame() && h.raw_len > 0 {
            u64::from(h.stored_len) * u64::from(loc.entry.part_len) / u64::from(h.raw_len)
        } else {
            u64::from(h.stored_len)
        };
        if used.contains(&id) {
            e.0 += len;
        } else {
            e.1 += len;
        }
    }
    let mut to_mark = Vec::new();
    for (pack, (live, dead)) in per_pack {
        if live == 0 {
            if !still_marked.contains(&pack) {
                to_mark.push(pack);
                report.bytes_marked += repo.packs().get(&pack).copied().unwrap_or(0);
            }
        } else {
            report.bytes_unused_in_live_packs += dead;
        }
    }
    report.packs_marked = to_mark.len() as u64;
    if !to_mark.is_empty() && !opts.dry_run {
        let mut rnd = [0u8; 4];
        let _ = getrandom::fill(&mut rnd);
        let mark = PruneMark {
            created_ns: now,
            packs: to_mark.iter().map(|p| crate::chunk::hex(p)).collect(),
            file: format!("{now}-{}", crate::chunk::hex(&rnd)),
        };
        repo.write_prune_mark(&mark)?;
    }
    Ok(report)
}
