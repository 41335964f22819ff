//! `verify`: the repository's promises, checked. Structure always (every snapshot's trees load,
//! every referenced blob is indexed, every pack is where and as long as its index says); with
//! `--read-data`, every stored byte is re-hashed, and with the key every blob is opened and its
//! content checked against its id. Like `restic check --read-data` and `borg check
//! --verify-data`, but a repository without the key still verifies every byte it holds.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::chunk::Id;
use crate::error::Result;
use crate::repo::format::{self, FLAG_TREE};
use crate::repo::keys::Keys;
use crate::repo::snapshot;
use crate::repo::{decode_record, Repository, Store};
use crate::restore::TreeWalk;

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Trees walked.
    pub trees: u64,
    /// Distinct blobs referenced.
    pub blobs_referenced: u64,
    /// Packs.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs_indexed: u64,
    /// Whether every pack was read.
    pub read_data: bool,
    /// Whether blob contents were checked against their ids (needs the key when encrypted).
    pub content_checked: bool,
    /// Bytes read with `--read-data`.
    pub bytes_read: u64,
    /// Indexed blobs no snapshot references (prune reclaims them).
    pub blobs_unreferenced: u64,
    /// Every problem, one line each. Empty = the repository is sound.
    pub errors: Vec<String>,
    /// Blob ids found damaged or missing (for repair from another site).
    pub damaged_blobs: Vec<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// Checks `repo`. `keys` is `None` for an encrypted repository opened without its key.
pub fn verify(repo: &Repository, keys: Option<&Keys>, read_data: bool) -> Result<VerifyReport> {
    let started = Instant::now();
    let mut r = VerifyReport {
        read_data,
        content_checked: read_data && keys.is_some(),
        ..VerifyReport::default()
    };
    let mut damaged: HashSet<Id> = HashSet::new();
    for d in repo.dangling_indexes() {
        r.errors.push(format!("index {d}: its pack is missing"));
    }
    let blobs = repo.all_blobs();
    r.blobs_indexed = blobs.len() as u64;
    let packs = repo.packs();
    r.packs = packs.len() as u64;

    // Structure: every pack present with its indexed length.
    for (pack, len) in &packs {
        let path = repo.pack_path(pack);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == *len => {}
            Ok(m) => r.errors.push(format!(
                "pack {}: {} bytes, index says {len}",
                crate::chunk::hex(pack),
                m.len()
            )),
            Err(e) => r
                .errors
                .push(format!("pack {}: {e}", crate::chunk::hex(pack))),
        }
    }

    // Snapshots and their trees.
    let mut referenced: HashSet<Id> = HashSet::new();
    let mut walk = TreeWalk::default();
    match repo.snapshot_files() {
        Err(e) => r.errors.push(e.to_string()),
        Ok(files) => {
            for (id, bytes) in files {
                r.snapshots += 1;
                let Some(keys) = keys else {
                    // Sealed snapshots: the bytes were checked against the name; the trees
                    // cannot be read without the key.
                    continue;
                };
                let snap = match snapshot::Snapshot::decode(&bytes, Some(keys), &id) {
                    Ok(s) => s,
                    Err(e) => {
                        r.errors.push(e.to_string());
                        continue;
                    }
                };
                walk.add_root(snap.tree);
                while let Some((tid, at, tree)) = walk.next_tree(repo, keys) {
                    referenced.insert(tid);
                    r.trees += 1;
                    let tree = match tree {
                        Ok(t) => t,
                        Err(e) => {
                            damaged.insert(tid);
                            r.errors.push(format!("snapshot {}: {e}", &id[..8]));
                            continue;
                        }
                    };
                    for n in tree.entries {
                        for c in n.chunks {
                            if referenced.insert(c) && repo.lookup(&c).is_none() {
                                damaged.insert(c);
                                r.errors.push(format!(
                                    "snapshot {}: chunk {} of {}/{} is missing",
                                    &id[..8],
                                    c.short(),
                                    at.trim_end_matches('/'),
                                    n.name
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    r.blobs_referenced = referenced.len() as u64;
    if keys.is_some() {
        r.blobs_unreferenced = blobs
            .iter()
            .filter(|(id, _)| !referenced.contains(id))
            .count() as u64;
    }

    if read_data {
        let mut by_pack: HashMap<[u8; 32], Vec<format::Entry>> = HashMap::new();
        for (_, loc) in &blobs {
            by_pack.entry(loc.pack).or_default().push(loc.entry);
        }
        let work: Vec<_> = by_pack.into_iter().collect();
        let next = AtomicUsize::new(0);
        let bytes_read = AtomicU64::new(0);
        let errors = Mutex::new(Vec::new());
        let bad = Mutex::new(Vec::new());
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((pack, entries)) = work.get(i) else {
                        return;
                    };
                    let (errs, ids, n) = check_pack(repo, keys, pack, entries);
                    bytes_read.fetch_add(n, Ordering::Relaxed);
                    if let Ok(mut e) = errors.lock() {
                        e.extend(errs);
                    }
                    if let Ok(mut b) = bad.lock() {
                        b.extend(ids);
                    }
                });
            }
        });
        r.bytes_read = bytes_read.into_inner();
        r.errors.extend(errors.into_inner().unwrap_or_default());
        damaged.extend(bad.into_inner().unwrap_or_default());
    }
    let mut d: Vec<String> = damaged.iter().map(|i| i.hex()).collect();
    d.sort();
    r.damaged_blobs = d;
    r.errors.sort();
    r.duration_ms = started.elapsed().as_millis() as u64;
    Ok(r)
}

fn check_pack(
    repo: &Repository,
    keys: Option<&Keys>,
    pack: &[u8; 32],
    entries: &[format::Entry],
) -> (Vec<String>, Vec<Id>, u64) {
    let name = crate::chunk::hex(pack);
    let path = repo.pack_path(pack);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            return (
                vec![format!("pack {name}: cannot read: {e}")],
                entries.iter().map(|e| e.header.id).collect(),
                0,
            )
        }
    };
    let n = bytes.len() as u64;
    let mut errors = Vec::new();
    let mut bad = Vec::new();
    if blake3::hash(&bytes).as_bytes() != pack {
        errors.push(format!("pack {name}: content does not match its name"));
    }
    // One check per record: a frame's chunks share it.
    let mut records: HashMap<u64, Vec<&format::Entry>> = HashMap::new();
    for e in entries {
        records.entry(e.offset).or_default().push(e);
    }
    let mut records: Vec<_> = records.into_iter().collect();
    records.sort_by_key(|(offset, _)| *offset);
    for (_, members) in records {
        let e = members[0];
        let ids = members.iter().map(|m| m.header.id);
        let h = &e.header;
        let kind = if h.flags & FLAG_TREE != 0 {
            "tree"
        } else if h.is_frame() {
            "frame"
        } else {
            "data"
        };
        let start = e.record_start() as usize;
        let end = e.offset as usize + h.stored_len as usize;
        let Some(record) = bytes.get(start..end) else {
            errors.push(format!(
                "pack {name}: {kind} {} lies past the end",
                h.id.short()
            ));
            bad.extend(ids);
            continue;
        };
        let parsed = format::parse_record(record, &name)
            .ok()
            .filter(|(rh, _, body)| {
                *body as u64 == e.offset - e.record_start() && rh.blob_hash == h.blob_hash
            });
        let Some((header, members_table, body)) = parsed else {
            errors.push(format!(
                "pack {name}: {kind} {} does not match its index entry",
                h.id.short()
            ));
            bad.extend(ids);
            continue;
        };
        let blob = format::Blob {
            header,
            members: members_table,
            stored: record[body..].to_vec(),
        };
        if !blob.hash_ok() {
            errors.push(format!(
                "pack {name}: blob {} ({kind}) does not match its hash",
                h.id.short(),
            ));
            bad.extend(ids);
            continue;
        }
        if let Some(keys) = keys {
            if let Err(err) = decode_record(keys, &blob) {
                errors.push(format!("pack {name}: {err}"));
                bad.extend(ids);
            }
        }
    }
    (errors, bad, n)
}
