//! What drills do to data: deterministic test data, blake3 manifests, tampering and corruption,
//! shipping a repository's snapshots off-site, and repairing damaged blobs from a healthy copy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::chunk::Id;
use crate::error::{Error, Result};
use crate::repo::format::Blob;
use crate::repo::{Repository, Store};

/// Relative path → blake3 (hex) of every regular file under a directory.
pub type Manifest = BTreeMap<String, String>;

/// Fills `dir` with `size_mb` MiB in `files` files: a third text-like (compressible), the rest
/// pseudo-random (blake3 XOF keyed by `seed`), spread over 8 sub-directories. The same
/// arguments give the same bytes.
pub fn generate(dir: &Path, size_mb: u64, files: u64, seed: u64) -> Result<(u64, u64)> {
    let files = files.max(1);
    let total = size_mb.saturating_mul(1024 * 1024);
    let per = total / files;
    let mut written = 0u64;
    for i in 0..files {
        let sub = dir.join(format!("d{:02}", i % 8));
        fs::create_dir_all(&sub).map_err(Error::io("create", &sub))?;
        let len = if i + 1 == files { total - written } else { per };
        let path = sub.join(format!(
            "f{i:05}.{}",
            if i % 3 == 0 { "txt" } else { "bin" }
        ));
        let mut f = fs::File::create(&path).map_err(Error::io("create", &path))?;
        let mut left = len;
        if i % 3 == 0 {
            let mut n = 0u64;
            let mut buf = Vec::with_capacity(1 << 16);
            while left > 0 {
                buf.clear();
                while buf.len() < 1 << 16 {
                    let _ = writeln!(
                        buf,
                        "{seed} record {i}-{n}: status=ok value={} note=drill test data",
                        (n * 7919 + seed) % 100_003
                    );
                    n += 1;
                }
                let k = left.min(buf.len() as u64) as usize;
                f.write_all(&buf[..k]).map_err(Error::io("write", &path))?;
                left -= k as u64;
            }
        } else {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            key[8..16].copy_from_slice(&i.to_le_bytes());
            let mut xof = blake3::Hasher::new_keyed(&key).finalize_xof();
            let mut buf = vec![0u8; 1 << 16];
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                xof.fill(&mut buf[..k]);
                f.write_all(&buf[..k]).map_err(Error::io("write", &path))?;
                left -= k as u64;
            }
        }
        written += len;
    }
    Ok((files, written))
}

/// Every regular file under `dir`, sorted, relative with `/`.
pub fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d == dir => return Ok(out),
            Err(e) => return Err(Error::io("list", &d)(e)),
        };
        for e in rd {
            let e = e.map_err(Error::io("list", &d))?;
            let p = e.path();
            let ft = e.file_type().map_err(Error::io("stat", &p))?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let rel = p
                    .strip_prefix(dir)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((rel, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The blake3 manifest of a directory (files hashed on all cores).
pub fn manifest(dir: &Path) -> Result<Manifest> {
    let files = walk(dir)?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(files.len()));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((rel, p)) = files.get(i) else { return };
                let r = hash_file(p).map(|h| (rel.clone(), h));
                if let Ok(mut v) = results.lock() {
                    v.push(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .collect::<Result<Manifest>>()
}

/// blake3 of a file, hex.
pub fn hash_file(p: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    let f = fs::File::open(p).map_err(Error::io("open", p))?;
    h.update_reader(f).map_err(Error::io("read", p))?;
    Ok(h.finalize().to_hex().to_string())
}

/// How a directory differs from a manifest.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    /// Files compared.
    pub files: usize,
    /// In the manifest, not on disk.
    pub missing: Vec<String>,
    /// On disk with other bytes.
    pub changed: Vec<String>,
    /// On disk, not in the manifest.
    pub extra: Vec<String>,
}

impl Comparison {
    /// Byte-identical.
    pub fn identical(&self) -> bool {
        self.missing.is_empty() && self.changed.is_empty() && self.extra.is_empty()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        if self.identical() {
            return format!("{} files byte-identical", self.files);
        }
        let first = self
            .missing
            .iter()
            .map(|p| format!("missing {p}"))
            .chain(self.changed.iter().map(|p| format!("changed {p}")))
            .chain(self.extra.iter().map(|p| format!("extra {p}")))
            .next()
            .unwrap_or_default();
        format!(
            "{} missing, {} changed, {} extra of {} files (first: {first})",
            self.missing.len(),
            self.changed.len(),
            self.extra.len(),
            self.files
        )
    }
}

/// Compares two manifests (`want` is the reference).
pub fn compare(want: &Manifest, have: &Manifest) -> Comparison {
    let mut c = Comparison {
        files: want.len(),
        ..Comparison::default()
    };
    for (p, h) in want {
        match have.get(p) {
            None => c.missing.push(p.clone()),
            Some(x) if x != h => c.changed.push(p.clone()),
            _ => {}
        }
    }
    for p in have.keys() {
        if !want.contains_key(p) {
            c.extra.push(p.clone());
        }
    }
    c
}

/// `rm -rf`; a missing path is fine.
pub fn remove_all(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", p)(e)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(Error::io("remove", p)),
        Ok(_) => fs::remove_file(p).map_err(Error::io("remove", p)),
    }
}

/// Ransomware: every `every`th file under `dir` encrypted (XOR key stream), overwritten or
/// deleted, and renamed with `suffix`. Returns the files hit.
pub fn tamper(
    dir: &Path,
    mode: super::actions::TamperMode,
    every: u64,
    suffix: Option<&str>,
) -> Result<u64> {
    use super::actions::TamperMode;
    let mut hit = 0;
    for (i, (_, p)) in walk(dir)?.into_iter().enumerate() {
        if (i as u64) % every.max(1) != 0 {
            continue;
        }
        match mode {
            TamperMode::Delete => fs::remove_file(&p).map_err(Error::io("remove", &p))?,
            TamperMode::Overwrite => fs::write(&p, b"YOUR FILES ARE ENCRYPTED. PAY 1 BTC.\n")
                .map_err(Error::io("write", &p))?,
            TamperMode::Encrypt => {
                let mut data = fs::read(&p).map_err(Error::io("read", &p))?;
                let mut ks = vec![0u8; data.len()];
                blake3::Hasher::new_keyed(&[0x5a; 32])
                    .update(p.to_string_lossy().as_bytes())
                    .finalize_xof()
                    .fill(&mut ks);
                for (d, k) in data.iter_mut().zip(&ks) {
                    *d ^= k | 1;
                }
                fs::write(&p, &data).map_err(Error::io("write", &p))?;
            }
        }
        if let (Some(sfx), false) = (suffix, mode == TamperMode::Delete) {
            let mut to = p.clone().into_os_string();
            to.push(sfx);
            fs::rename(&p, &to).map_err(Error::io("rename", &p))?;
        }
        hit += 1;
    }
    Ok(hit)
}

/// Flips one byte in the middle of a file.
pub fn flip_file(p: &Path) -> Result<()> {
    let mut data = fs::read(p).map_err(Error::io("read", p))?;
    if data.is_empty() {
        return Err(Error::Usage(format!(
            "{} is empty; nothing to flip",
            p.display()
        )));
    }
    let mid = data.len() / 2;
    data[mid] ^= 0x10;
    fs::write(p, &data).map_err(Error::io("write", p))
}

/// Truncates a file to half its length.
pub fn truncate_file(p: &Path) -> Result<()> {
    let len = fs::metadata(p).map_err(Error::io("stat", p))?.len();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(p)
        .map_err(Error::io("open", p))?;
    f.set_len(len / 2).map_err(Error::io("truncate", p))
}

/// Data records of a repository, one chunk each (a frame's chunks share one record), sorted by
/// id (a deterministic choice of victims).
fn data_blobs(repo: &Repository) -> Vec<(Id, crate::repo::Loc)> {
    let mut v: Vec<_> = repo
        .all_blobs()
        .into_iter()
        .filter(|(_, l)| l.entry.header.flags & crate::repo::format::FLAG_TREE == 0)
        .collect();
    v.sort_by_key(|a| a.0 .0);
    let mut seen = HashSet::new();
    v.retain(|(_, l)| seen.insert((l.pack, l.entry.offset)));
    v
}

/// Flips a bit in `count` data blobs; returns a line per blob.
pub fn flip_blobs(repo_dir: &Path, count: u64) -> Result<Vec<String>> {
    let repo = Repository::open(repo_dir)?;
    let blobs = data_blobs(&repo);
    if blobs.is_empty() {
        return Err(Error::Usage(format!(
            "{} holds no data blobs to corrupt",
            repo_dir.display()
        )));
    }
    let step = (blobs.len() / count.max(1) as usize).max(1);
    let mut out = Vec::new();
    for (id, loc) in blobs.iter().step_by(step).take(count as usize) {
        let pack = repo.flip_bit(loc)?;
        out.push(format!("blob {} in {}", id.short(), pack.display()));
    }
    Ok(out)
}

/// Deletes the pack that holds the first data blob; returns its path.
pub fn delete_pack(repo_dir: &Path) -> Result<PathBuf> {
    let repo = Repository::open(repo_dir)?;
    let (_, loc) = data_blobs(&repo)
        .into_iter()
        .next()
        .ok_or_else(|| Error::Usage(format!("{} holds no packs", repo_dir.display())))?;
    let path = repo.pack_path(&loc.pack);
    fs::remove_file(&path).map_err(Error::io("remove", &path))?;
    Ok(path)
}

/// What `ship` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShipReport {
    /// Blobs copied.
    pub blobs: u64,
    /// Bytes written at the destination.
    pub bytes: u64,
    /// Snapshots copied.
    pub snapshots: u64,
    /// The destination was created.
    pub created: bool,
}

const SHIP_BATCH_BYTES: usize = 16 << 20;

/// Opens a repository: a directory, or a peer (`https://`) with the TLS files given.
pub fn open_store(loc: &str, tls: Option<&crate::transport::PeerTls>) -> Result<Box<dyn Store>> {
    if loc.starts_with("https://") {
        let tls =
            tls.ok_or_else(|| Error::Usage(format!("{loc}: a peer needs pki_dir and identity")))?;
        Ok(Box::new(crate::transport::peer::PeerStore::connect(
            loc,
            tls,
            crate::transport::peer::PeerOptions::default(),
        )?))
    } else {
        Ok(Box::new(Repository::open(Path::new(loc))?))
    }
}

/// Copies every blob and snapshot `to` lacks from `from`. `to` (a directory or a peer) is
/// created with `from`'s config when missing (same chunk ids, so blobs are interchangeable:
/// this is what lets `repair` fetch from either side).
pub fn ship(from: &Path, to: &str, tls: Option<&crate::transport::PeerTls>) -> Result<ShipReport> {
    let src = Repository::open(from)?;
    let mut r = ShipReport::default();
    let dst: Box<dyn Store> = if to.starts_with("https://") {
        match open_store(to, tls) {
            Ok(s) => s,
            Err(first) => {
                let t = tls.ok_or_else(|| {
                    Error::Usage(format!("{to}: a peer needs pki_dir and identity"))
                })?;
                crate::transport::peer::PeerStore::init(to, t, src.config())
                    .map_err(|e| Error::Usage(format!("{first}; and creating it there: {e}")))?;
                r.created = true;
                open_store(to, tls)?
            }
        }
    } else if Path::new(to).join("config").exists() {
        open_store(to, None)?
    } else {
        r.created = true;
        Box::new(Repository::init(Path::new(to), src.config())?)
    };
    if dst.config().id != src.config().id {
        return Err(Error::Usage(format!(
            "{to} is another repository (id {}), not a copy of {} (id {})",
            dst.config().id,
            from.display(),
            src.config().id
        )));
    }
    let mut ids: Vec<Id> = src.known_ids()?.into_iter().collect();
    ids.sort_by_key(|a| a.0);
    let missing = dst.missing(&ids)?;
    let mut batch: Vec<Blob> = Vec::new();
    let mut size = 0;
    // A frame holds several of the missing chunks: it is copied once.
    let mut copied: HashSet<Id> = HashSet::new();
    for id in &missing {
        if copied.contains(id) {
            continue;
        }
        let blob = src.read_stored(id)?;
        copied.extend(blob.ids());
        size += blob.stored.len();
        batch.push(blob);
        if size >= SHIP_BATCH_BYTES {
            r.bytes += dst.put_blobs(&batch)?;
            r.blobs += batch.len() as u64;
            batch.clear();
            size = 0;
        }
    }
    if !batch.is_empty() {
        r.bytes += dst.put_blobs(&batch)?;
        r.blobs += batch.len() as u64;
    }
    let have: HashSet<String> = dst
        .snapshot_files()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    for (id, bytes) in src.snapshot_files()? {
        if !have.contains(&id) {
            dst.put_snapshot(&bytes)?;
            r.snapshots += 1;
        }
    }
    Ok(r)
}

/// What `repair` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    /// Damaged blobs found by `verify --read-data`.
    pub damaged: u64,
    /// Blobs fetched from the healthy copy.
    pub fetched: u64,
    /// Healthy blobs moved out of damaged packs.
    pub kept: u64,
    /// Damaged packs replaced.
    pub packs_replaced: u64,
    /// Of the blobs fetched, trees.
    #[serde(skip)]
    pub trees_fetched: u64,
}

/// Repairs `repo_dir` from `healthy_dir`: every pack holding a damaged blob is rewritten with its
/// sound blobs plus the damaged ones fetched (hash-checked) from the healthy copy, then deleted;
/// blobs whose pack is gone are fetched too. Repeats while it makes progress: a lost tree hides
/// the chunks it names until it is back.
pub fn repair(
    repo_dir: &Path,
    healthy_dir: &Path,
    keys_file: Option<&Path>,
) -> Result<RepairReport> {
    let mut total = RepairReport::default();
    for round in 0..16 {
        let r = repair_round(repo_dir, healthy_dir, keys_file)?;
        total.damaged += r.damaged;
        total.fetched += r.fetched;
        total.kept += r.kept;
        total.packs_replaced += r.packs_replaced;
        // Only a tree brought back can reveal more damage.
        if r.trees_fetched == 0 || round == 15 {
            break;
        }
    }
    Ok(total)
}

fn repair_round(
    repo_dir: &Path,
    healthy_dir: &Path,
    keys_file: Option<&Path>,
) -> Result<RepairReport> {
    let repo = Repository::open(repo_dir)?;
    let healthy = Repository::open(healthy_dir)?;
    if repo.config().id != healthy.config().id {
        return Err(Error::Usage(format!(
            "{} is not a copy of {} (repository ids differ); cannot fetch blobs from it",
            healthy_dir.display(),
            repo_dir.display()
        )));
    }
    let keys = repo.config().keys(keys_file)?;
    let v = crate::verify::verify(&repo, keys.as_ref(), true)?;
    let mut r = RepairReport {
        damaged: v.damaged_blobs.len() as u64,
        ..RepairReport::default()
    };
    let damaged: HashSet<Id> = v
        .damaged_blobs
        .iter()
        .filter_map(|h| h.parse::<Id>().ok())
        .collect();
    let mut by_pack: HashMap<[u8; 32], Vec<(Id, crate::repo::Loc)>> = HashMap::new();
    for (id, loc) in repo.all_blobs() {
        by_pack.entry(loc.pack).or_default().push((id, loc));
    }
    let mut bad_packs: HashSet<[u8; 32]> = HashSet::new();
    let mut orphans: Vec<Id> = Vec::new();
    for id in &damaged {
        match repo.lookup(id) {
            Some(loc) => {
                bad_packs.insert(loc.pack);
            }
            None => orphans.push(*id),
        }
    }
    for (pack, len) in repo.packs() {
        let path = repo.pack_path(&pack);
        if fs::metadata(&path).map(|m| m.len() != len).unwrap_or(true) {
            bad_packs.insert(pack);
        }
    }
    // Records come back whole from the healthy copy; a frame fetched for one chunk brings the
    // others in it too.
    let mut fetched: HashSet<Id> = HashSet::new();
    let mut fetch = |id: &Id, r: &mut RepairReport, out: &mut Vec<Blob>| -> Result<()> {
        if fetched.contains(id) {
            return Ok(());
        }
        let b = healthy.read_stored(id)?;
        r.fetched += 1;
        if b.header.flags & crate::repo::format::FLAG_TREE != 0 {
            r.trees_fetched += 1;
        }
        fetched.extend(b.ids());
        out.push(b);
        Ok(())
    };
    for pack in &bad_packs {
        let mut records: std::collections::BTreeMap<u64, Vec<(Id, crate::repo::Loc)>> =
            Default::default();
        for (id, loc) in by_pack.get(pack).map(Vec::as_slice).unwrap_or(&[]) {
            records
                .entry(loc.entry.offset)
                .or_default()
                .push((*id, *loc));
        }
        let mut blobs = Vec::new();
        for members in records.values() {
            if members.iter().all(|(id, _)| !damaged.contains(id)) {
                if let Ok(blob) = repo.read_at(&members[0].1) {
                    blobs.push(blob);
                    r.kept += 1;
                    continue;
                }
            }
            for (id, _) in members {
                fetch(id, &mut r, &mut blobs)?;
            }
        }
        // Records put back in their old order make the old pack again, under its old name
        // (named by content): the rename already replaced the damaged file, and deleting "the
        // old pack" now would delete the repair.
        let (new_pack, _) = repo.write_pack_named(&blobs)?;
        if new_pack != *pack {
            repo.delete_pack(pack)?;
        }
        r.packs_replaced += 1;
    }
    if !orphans.is_empty() {
        let mut blobs = Vec::new();
        for id in &orphans {
            fetch(id, &mut r, &mut blobs)?;
        }
        repo.write_pack(&blobs)?;
    }
    for name in repo.dangling_indexes() {
        repo.remove_meta("index", &name)?;
    }
    repo.reload()?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn generate_is_deterministic_and_exact() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (n, bytes) = generate(a.path(), 2, 10, 5).unwrap();
        generate(b.path(), 2, 10, 5).unwrap();
        assert_eq!((n, bytes), (10, 2 << 20));
        let (ma, mb) = (manifest(a.path()).unwrap(), manifest(b.path()).unwrap());
        assert_eq!(ma.len(), 10);
        assert!(compare(&ma, &mb).identical());
    }

    #[test]
    fn compare_names_missing_changed_and_extra() {
        let d = tempfile::tempdir().unwrap();
        generate(d.path(), 1, 6, 1).unwrap();
        let want = manifest(d.path()).unwrap();
        let n = tamper(
            d.path(),
            super::super::actions::TamperMode::Encrypt,
            3,
            Some(".locked"),
        )
        .unwrap();
        assert_eq!(n, 2);
        let c = compare(&want, &manifest(d.path()).unwrap());
        assert_eq!((c.missing.len(), c.extra.len(), c.changed.len()), (2, 2, 0));
        assert!(!c.identical());
    }

    #[test]
    fn repair_fetches_damaged_blobs_from_the_shipped_copy() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        generate(&src, 3, 8, 2).unwrap();
        let config = crate::repo::new_config(&crate::repo::InitOptions {
            key_file: None,
            compression_level: 3,
            chunker: crate::chunk::ChunkerParams::new_random(),
        })
        .unwrap();
        let a = d.path().join("a");
        let repo = Repository::init(&a, &config).unwrap();
        let keys = repo.config().keys(None).unwrap().unwrap();
        crate::backup::backup(
            &repo,
            &keys,
            &crate::backup::BackupOptions {
                source: src.clone(),
                host: "t".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let b = d.path().join("b");
        let shipped = ship(&a, b.to_str().unwrap(), None).unwrap();
        assert!(shipped.created && shipped.snapshots == 1);
        assert_eq!(ship(&a, b.to_str().unwrap(), None).unwrap().blobs, 0);
        for which in [&a, &b] {
            let v = crate::verify::verify(&Repository::open(which).unwrap(), Some(&keys), true)
                .unwrap();
            assert!(v.errors.is_empty(), "before the damage: {:?}", v.errors);
        }
        let flipped = flip_blobs(&b, 2).unwrap();
        assert_eq!(flipped.len(), 2, "{flipped:?}");
        let r = repair(&b, &a, None).unwrap();
        // Two damaged records (frames of several chunks each), each fetched whole, once.
        assert_eq!(r.fetched, 2, "{r:?}");
        assert!(r.damaged >= 2, "{r:?}");
        let v = crate::verify::verify(&Repository::open(&b).unwrap(), Some(&keys), true).unwrap();
        assert!(v.errors.is_empty(), "{:?}", v.errors);
        // A lost pack too.
        delete_pack(&b).unwrap();
        let r = repair(&b, &a, None).unwrap();
        assert!(r.fetched > 0);
        let v = crate::verify::verify(&Repository::open(&b).unwrap(), Some(&keys), true).unwrap();
        assert!(v.errors.is_empty(), "{:?}", v.errors);
    }
}
