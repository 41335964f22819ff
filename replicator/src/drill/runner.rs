//! Runs a resolved runbook: steps in order (each checks its paths against the scope first),
//! `on_failure` when one fails, `always` at the end, then every child still running is killed.
//! Measures the failure instant, the recovery point, real RPO and RTO.
//!
//! Step timeouts: waits (`wait-until`, `start-site`, `exec`, writer verifies) stop at the
//! timeout; in-process work (backup, restore, verify) cannot be interrupted safely and fails
//! the step once it has overrun.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

use super::actions::*;
use super::data;
use super::output::*;
use super::runbook::{Phase, Runbook, Scope, Step};
use super::sites::{self, Site, Writer};
use crate::backup::{self, BackupOptions};
use crate::repo::keys::Keys;
use crate::repo::snapshot;
use crate::repo::{Repository, Store};
use crate::restore::{self, RestoreOptions};

/// How to run.
#[derive(Debug)]
pub struct RunOptions {
    /// `exec` steps are allowed.
    pub allow_exec: bool,
    /// Key file for encrypted repositories.
    pub key_file: Option<PathBuf>,
    /// Where progress lines go: stdout (text output) or stderr (JSON output).
    pub progress_to_stderr: bool,
}

struct SnapInfo {
    id: String,
    repo: String,
    manifest: data::Manifest,
}

struct Runner<'a> {
    rb: &'a Runbook,
    opts: &'a RunOptions,
    scope: Scope,
    snaps: HashMap<String, SnapInfo>,
    sites: HashMap<String, Site>,
    last_addr: HashMap<String, String>,
    writers: HashMap<String, Writer>,
    failure: Option<(i64, Instant)>,
    recovery_point: Option<RecoveryPoint>,
    last_verify: Option<Instant>,
    verifications: Vec<VerificationRecord>,
    assert_missed: Vec<String>,
    records: Vec<StepRecord>,
    total: usize,
    /// Pids of running children, for the interrupt handler.
    live: Arc<Mutex<HashSet<u32>>>,
}

type StepResult = Result<String, String>;

fn now_ns() -> i64 {
    palisade_wire::event::Timestamp::now().nanos()
}

fn rfc(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn e2s<E: std::fmt::Display>(e: E) -> String {
    format!("{e:#}")
}

/// Runs the drill; the report says how it went.
pub fn run(rb: &Runbook, opts: &RunOptions) -> Result<DrillReport, String> {
    let scope = Scope::new(&rb.meta.scope)?;
    let total = rb.steps.len() + rb.always.len();
    let mut r = Runner {
        rb,
        opts,
        scope,
        snaps: HashMap::new(),
        sites: HashMap::new(),
        last_addr: HashMap::new(),
        writers: HashMap::new(),
        failure: None,
        recovery_point: None,
        last_verify: None,
        verifications: Vec::new(),
        assert_missed: Vec::new(),
        records: Vec::new(),
        total,
        live: Arc::new(Mutex::new(HashSet::new())),
    };
    kill_children_on_interrupt(r.live.clone());
    let started_ns = now_ns();
    let started = Instant::now();
    let mut failed_step = None;
    for step in &rb.steps {
        if failed_step.is_some() {
            r.records.push(StepRecord {
                phase: step.phase,
                number: r.records.len() + 1,
                name: step.name.clone(),
                action: step.action.name().into(),
                status: StepStatus::Skipped,
                duration_secs: 0.0,
                detail: String::new(),
            });
            continue;
        }
        if !r.step(step) {
            failed_step = Some(format!("[{}] {}", step.index, step.name));
        }
    }
    let mut cleanup = Cleanup {
        ok: true,
        ..Cleanup::default()
    };
    if failed_step.is_some() {
        r.total += rb.on_failure.len();
        for step in &rb.on_failure {
            cleanup.on_failure_steps += 1;
            cleanup.ok &= r.step(step);
        }
    }
    for step in &rb.always {
        cleanup.always_steps += 1;
        cleanup.ok &= r.step(step);
    }
    for (_, mut w) in r.writers.drain() {
        if w.stop() {
            cleanup.writers_stopped += 1;
        }
    }
    for (_, site) in r.sites.iter_mut() {
        if site.child.is_some() {
            sites::stop(site, StopSignal::Kill, Duration::from_secs(1));
            cleanup.children_killed += 1;
        }
    }

    let rpo = match (&r.failure, &r.recovery_point) {
        (Some((f, _)), Some(rp)) => Some((f - rp.time_ns) as f64 / 1e9),
        _ => None,
    };
    let rto = match (&r.failure, r.last_verify) {
        (Some((_, f)), Some(v)) if v >= *f => Some(v.duration_since(*f).as_secs_f64()),
        _ => None,
    };
    let mut targets = Vec::new();
    if let Some(t) = rb.meta.rpo_target_secs {
        targets.push(TargetRecord {
            target: "rpo".into(),
            target_secs: t,
            measured_secs: rpo,
            met: rpo.is_some_and(|m| m <= t),
        });
    }
    if let Some(t) = rb.meta.rto_target_secs {
        targets.push(TargetRecord {
            target: "rto".into(),
            target_secs: t,
            measured_secs: rto,
            met: rto.is_some_and(|m| m <= t),
        });
    }
    let verdict = if failed_step.is_some() {
        Verdict::Failed
    } else if targets.iter().any(|t| !t.met) || !r.assert_missed.is_empty() {
        Verdict::TargetMissed
    } else {
        Verdict::Passed
    };
    let finished_ns = now_ns();
    Ok(DrillReport {
        drill: rb.meta.name.clone(),
        owner: rb.meta.owner.clone(),
        description: rb.meta.description.clone(),
        runbook: rb.file.display().to_string(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into()),
        started: rfc(started_ns),
        finished: rfc(finished_ns),
        duration_secs: started.elapsed().as_secs_f64(),
        params: rb.params.clone(),
        steps: r.records,
        failure_at: r.failure.map(|(f, _)| rfc(f)),
        recovery_point: r.recovery_point,
        rpo_secs: rpo,
        rto_secs: rto,
        targets,
        verifications: r.verifications,
        cleanup,
        verdict,
        failed_step,
    })
}

impl Runner<'_> {
    fn progress(&self, line: &str) {
        if self.opts.progress_to_stderr {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(line.as_bytes());
            let _ = e.flush();
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(line.as_bytes());
            let _ = o.flush();
        }
    }

    /// Runs one step; false when it failed.
    fn step(&mut self, step: &Step) -> bool {
        let number = self.records.len() + 1;
        let phase = match step.phase {
            Phase::Steps => String::new(),
            p => format!("{} ", p.table()),
        };
        self.progress(&format!(
            "[{number}/{}] {phase}{} ({}) ... ",
            self.total,
            step.name,
            step.action.name()
        ));
        let t = Instant::now();
        let missed_before = self.assert_missed.len();
        let result = self.check_scope(step).and_then(|()| self.act(step));
        let elapsed = t.elapsed();
        let result = match result {
            Ok(d) if elapsed > Duration::from_secs(step.timeout_secs) => Err(format!(
                "took {:.2} s, over its timeout_secs = {} ({d})",
                elapsed.as_secs_f64(),
                step.timeout_secs
            )),
            r => r,
        };
        let (status, detail) = match result {
            Ok(d) if self.assert_missed.len() > missed_before => (StepStatus::Missed, d),
            Ok(d) => (StepStatus::Ok, d),
            Err(e) => (StepStatus::Failed, e),
        };
        self.progress(&format!(
            "{} {:.2} s{}\n",
            match status {
                StepStatus::Ok => "ok",
                StepStatus::Missed => "MISSED",
                _ => "FAILED",
            },
            elapsed.as_secs_f64(),
            if detail.is_empty() {
                String::new()
            } else {
                format!("  ({detail})")
            }
        ));
        self.records.push(StepRecord {
            phase: step.phase,
            number,
            name: step.name.clone(),
            action: step.action.name().into(),
            status,
            duration_secs: elapsed.as_secs_f64(),
            detail,
        });
        status != StepStatus::Failed
    }

    fn check_scope(&self, step: &Step) -> Result<(), String> {
        for (field, p) in step.action.paths() {
            self.scope
                .check(&p)
                .map_err(|e| format!("refused before doing anything: field `{field}`: {e}"))?;
        }
        Ok(())
    }

    fn keys(&self, store: &dyn Store) -> Result<Keys, String> {
        store
            .config()
            .keys(self.opts.key_file.as_deref())
            .map_err(e2s)?
            .ok_or_else(|| {
                format!(
                    "{} is encrypted; run the drill with --key-file",
                    store.location()
                )
            })
    }

    fn mark_failure(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let ns = now_ns();
        self.failure = Some((ns, Instant::now()));
        // For live replication the recovery point is the newest write the peer had.
        for (name, w) in &self.writers {
            if let Ok(s) = w.state.lock() {
                if let Some(t) = s.recovery_point(ns) {
                    self.recovery_point = Some(RecoveryPoint {
                        source: format!("writer {name}: newest acknowledged write"),
                        time: rfc(t),
                        time_ns: t,
                    });
                }
            }
        }
    }

    fn verified(&mut self, step: &Step, check: String, ok: bool, detail: String, ends_rto: bool) {
        self.verifications.push(VerificationRecord {
            step: step.name.clone(),
            check,
            ok,
            detail,
        });
        if ok && ends_rto && self.failure.is_some() {
            self.last_verify = Some(Instant::now());
        }
    }

    fn act(&mut self, step: &Step) -> StepResult {
        let timeout = Duration::from_secs(step.timeout_secs);
        match &step.action {
            Action::Generate(a) => {
                let (n, bytes) =
                    data::generate(Path::new(&a.dir), a.size_mb, a.files, a.seed).map_err(e2s)?;
                Ok(format!("{n} files, {}", crate::cli::human(bytes)))
            }
            Action::Snapshot(a) => self.snapshot(step, a),
            Action::Ship(a) => {
                let tls = peer_tls(&a.pki_dir, &a.identity);
                let r = data::ship(Path::new(&a.from), &a.to, tls.as_ref()).map_err(e2s)?;
                Ok(format!(
                    "{} snapshots, {} blobs ({}) copied{}",
                    r.snapshots,
                    r.blobs,
                    crate::cli::human(r.bytes),
                    if r.created {
                        "; off-site repository created"
                    } else {
                        ""
                    }
                ))
            }
            Action::Pki(a) => pki(a),
            Action::StartSite(a) => {
                if self.sites.get(&a.site).is_some_and(|s| s.child.is_some()) {
                    return Err(format!("site {} is already running", a.site));
                }
                let log = PathBuf::from(format!("{}.log", a.dir.trim_end_matches('/')));
                let log = self
                    .scope
                    .check(&log.display().to_string())
                    .ok()
                    .map(|()| log);
                let site = sites::start(
                    a,
                    self.last_addr.get(&a.site).map(String::as_str),
                    log,
                    &self.sites,
                    timeout,
                )?;
                if let (Some(c), Ok(mut live)) = (&site.child, self.live.lock()) {
                    live.insert(c.id());
                }
                if let Some(addr) = &site.addr {
                    let addr = addr.trim_start_matches("https://").to_string();
                    self.last_addr.insert(a.site.clone(), addr);
                }
                let d = format!(
                    "{} {} started{}",
                    a.kind.name(),
                    a.site,
                    site.addr
                        .as_ref()
                        .map(|x| format!(", listening on {x}"))
                        .unwrap_or_default()
                );
                self.sites.insert(a.site.clone(), site);
                Ok(d)
            }
            Action::StopSite(a) => {
                let site = self
                    .sites
                    .get_mut(&a.site)
                    .ok_or_else(|| format!("no site {:?}", a.site))?;
                let pid = site.child.as_ref().map(|c| c.id());
                let how = sites::stop(site, a.signal, timeout);
                if let (Some(pid), Ok(mut live)) = (pid, self.live.lock()) {
                    live.remove(&pid);
                }
                if a.failure {
                    self.mark_failure();
                }
                Ok(format!("{} {how}", a.site))
            }
            Action::Fail(a) => {
                self.mark_failure();
                Ok(a.note
                    .clone()
                    .unwrap_or_else(|| "failure instant marked".into()))
            }
            Action::Destroy(a) => {
                data::remove_all(Path::new(&a.path)).map_err(e2s)?;
                self.mark_failure();
                Ok(format!("{} removed; failure instant marked", a.path))
            }
            Action::Corrupt(a) => match a.mode {
                CorruptMode::FlipBlob => {
                    let repo = a.repo.as_deref().unwrap_or_default();
                    let hit = data::flip_blobs(Path::new(repo), a.count).map_err(e2s)?;
                    Ok(format!("bit flipped in {}", hit.join(", ")))
                }
                CorruptMode::DeletePack => {
                    let repo = a.repo.as_deref().unwrap_or_default();
                    let p = data::delete_pack(Path::new(repo)).map_err(e2s)?;
                    Ok(format!("deleted {}", p.display()))
                }
                CorruptMode::Flip => {
                    let f = a.file.as_deref().unwrap_or_default();
                    data::flip_file(Path::new(f)).map_err(e2s)?;
                    Ok(format!("flipped a byte of {f}"))
                }
                CorruptMode::Truncate => {
                    let f = a.file.as_deref().unwrap_or_default();
                    data::truncate_file(Path::new(f)).map_err(e2s)?;
                    Ok(format!("truncated {f} to half"))
                }
            },
            Action::Tamper(a) => {
                let n = data::tamper(Path::new(&a.dir), a.mode, a.every, a.suffix.as_deref())
                    .map_err(e2s)?;
                self.mark_failure();
                Ok(format!(
                    "{n} files hit ({:?}); failure instant marked",
                    a.mode
                ))
            }
            Action::Restore(a) => self.restore(a),
            Action::Promote(a) => {
                let w = self
                    .writers
                    .get(&a.writer)
                    .ok_or_else(|| format!("no writer {:?}", a.writer))?;
                let mut s = w
                    .state
                    .lock()
                    .map_err(|_| "writer state poisoned".to_string())?;
                s.dir = PathBuf::from(&a.dir);
                s.check_dir = PathBuf::from(&a.check_dir);
                Ok(format!("writer {} now writes to {}", a.writer, a.dir))
            }
            Action::Verify(a) => self.verify(step, a, timeout),
            Action::Repair(a) => {
                let r = data::repair(
                    Path::new(&a.repo),
                    Path::new(&a.from),
                    self.opts.key_file.as_deref(),
                )
                .map_err(e2s)?;
                Ok(format!(
                    "{} damaged blobs: {} fetched from {}, {} sound blobs moved, {} packs replaced",
                    r.damaged, r.fetched, a.from, r.kept, r.packs_replaced
                ))
            }
            Action::WaitUntil(a) => {
                let deadline = Instant::now() + timeout;
                let mut last;
                loop {
                    last = self.condition(
                        a.condition,
                        &Cond {
                            path: &a.path,
                            a: &a.a,
                            b: &a.b,
                            count: a.count,
                            site: &a.site,
                            kind: &a.kind,
                            writer: &a.writer,
                            dirs: &[],
                            dir: &None,
                            against: &None,
                        },
                    );
                    if last.is_ok() || Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                last.map_err(|e| format!("not reached within {} s: {e}", step.timeout_secs))
            }
            Action::Exec(a) => {
                if !self.opts.allow_exec {
                    return Err("exec steps need --allow-exec (a shell command is outside the scope checks)".into());
                }
                exec(&a.command, &self.rb.params, timeout)
            }
            Action::Assert(a) => {
                let r = self.condition(
                    a.check,
                    &Cond {
                        path: &a.path,
                        a: &a.a,
                        b: &a.b,
                        count: a.count,
                        site: &a.site,
                        kind: &a.kind,
                        writer: &a.writer,
                        dirs: &a.dirs,
                        dir: &a.dir,
                        against: &a.against,
                    },
                );
                match (a.check, r) {
                    (Condition::Rpo | Condition::Rto, Err(e)) => {
                        self.assert_missed.push(e.clone());
                        Ok(e)
                    }
                    (_, r) => r,
                }
            }
            Action::StartWriter(a) => {
                if self.writers.contains_key(&a.writer) {
                    return Err(format!("writer {} already runs", a.writer));
                }
                std::fs::create_dir_all(&a.dir).map_err(e2s)?;
                let w = Writer::start(
                    PathBuf::from(&a.dir),
                    PathBuf::from(&a.check_dir),
                    PathBuf::from(&a.ledger),
                    Duration::from_millis(a.interval_ms.max(10)),
                );
                self.writers.insert(a.writer.clone(), w);
                Ok(format!("writing to {} every {} ms", a.dir, a.interval_ms))
            }
            Action::StopWriter(a) => {
                let w = self
                    .writers
                    .get_mut(&a.writer)
                    .ok_or_else(|| format!("no writer {:?}", a.writer))?;
                w.stop();
                let s = w
                    .state
                    .lock()
                    .map_err(|_| "writer state poisoned".to_string())?;
                Ok(format!(
                    "{} writes, {} acknowledged, {} failed",
                    s.writes.len(),
                    s.acked(),
                    s.errors
                ))
            }
        }
    }

    fn snapshot(&mut self, step: &Step, a: &Snapshot) -> StepResult {
        let repo_dir = Path::new(&a.repo);
        let repo = if repo_dir.join("config").exists() {
            Repository::open(repo_dir).map_err(e2s)?
        } else {
            let config = crate::repo::new_config(&crate::repo::InitOptions {
                key_file: None,
                compression_level: 3,
                chunker: crate::chunk::ChunkerParams::new_random(),
            })
            .map_err(e2s)?;
            Repository::init(repo_dir, &config).map_err(e2s)?
        };
        let keys = self.keys(&repo)?;
        let manifest = data::manifest(Path::new(&a.source)).map_err(e2s)?;
        let r = backup::backup(
            &repo,
            &keys,
            &BackupOptions {
                source: PathBuf::from(&a.source),
                host: "drill".into(),
                site: None,
                tags: vec![format!("drill-{}", self.rb.meta.name)],
                parent: None,
                force: false,
                threads: 0,
                progress: false,
            },
        )
        .map_err(e2s)?;
        let snaps = snapshot::list(&repo, Some(&keys)).map_err(e2s)?;
        let time_ns = snaps
            .iter()
            .find(|(id, _)| *id == r.snapshot)
            .map(|(_, s)| s.time_ns)
            .ok_or_else(|| format!("snapshot {} not listed after the backup", r.snapshot))?;
        let label = a.label.clone().unwrap_or_else(|| step.name.clone());
        let d = format!(
            "snapshot {} ({label}) at {}: {} files, {}",
            &r.snapshot[..8],
            rfc(time_ns),
            r.files,
            crate::cli::human(r.bytes_total)
        );
        self.snaps.insert(
            label,
            SnapInfo {
                id: r.snapshot,
                repo: a.repo.clone(),
                manifest,
            },
        );
        Ok(d)
    }

    fn restore(&mut self, a: &Restore) -> StepResult {
        let tls = peer_tls(&a.pki_dir, &a.identity);
        let store = data::open_store(&a.repo, tls.as_ref()).map_err(e2s)?;
        let repo = store.as_ref();
        let keys = self.keys(repo)?;
        let snaps = snapshot::list(repo, Some(&keys)).map_err(e2s)?;
        let (id, snap) = if a.snapshot == "before-failure" {
            let (f, _) = self
                .failure
                .ok_or("snapshot = \"before-failure\" but no failure was marked yet")?;
            snaps
                .iter()
                .rev()
                .find(|(_, s)| s.time_ns < f)
                .cloned()
                .ok_or_else(|| format!("{} has no snapshot taken before the failure", a.repo))?
        } else if let Some(label) = a.snapshot.strip_prefix('@') {
            let info = self
                .snaps
                .get(label)
                .ok_or_else(|| format!("no snapshot step labelled {label:?} ran"))?;
            snaps
                .iter()
                .find(|(id, _)| *id == info.id)
                .cloned()
                .ok_or_else(|| {
                    format!("snapshot {} ({label}) is not in {}", &info.id[..8], a.repo)
                })?
        } else {
            snapshot::select(&snaps, &a.snapshot, now_ns()).map_err(e2s)?
        };
        let r = restore::restore(
            repo,
            &keys,
            &id,
            &snap.tree,
            &RestoreOptions {
                target: PathBuf::from(&a.to),
                path: None,
                allow_symlink_escape: false,
                delete: a.delete,
                threads: 0,
                progress: false,
            },
        )
        .map_err(e2s)?;
        self.recovery_point = Some(RecoveryPoint {
            source: format!("snapshot {} in {}", &id[..8], a.repo),
            time: rfc(snap.time_ns),
            time_ns: snap.time_ns,
        });
        let age = self
            .failure
            .map(|(f, _)| {
                format!(
                    ", {:.2} s before the failure",
                    (f - snap.time_ns) as f64 / 1e9
                )
            })
            .unwrap_or_default();
        Ok(format!(
            "snapshot {} ({}{age}): {} files, {} fetched, {} reused, {} removed",
            &id[..8],
            rfc(snap.time_ns),
            r.files,
            crate::cli::human(r.bytes_fetched),
            crate::cli::human(r.bytes_reused),
            r.removed
        ))
    }

    fn verify(&mut self, step: &Step, a: &Verify, timeout: Duration) -> StepResult {
        if let (Some(dir), Some(label)) = (&a.dir, &a.against) {
            let label = label.trim_start_matches('@');
            let info = self
                .snaps
                .get(label)
                .ok_or_else(|| format!("no snapshot step labelled {label:?} ran"))?;
            let have = data::manifest(Path::new(dir)).map_err(e2s)?;
            let c = data::compare(&info.manifest, &have);
            let check = format!("{dir} against the manifest of {label} ({})", &info.id[..8]);
            let ok = c.identical() != a.expect_damage;
            let detail = if a.expect_damage && !c.identical() {
                format!("damage detected: {}", c.summary())
            } else {
                c.summary()
            };
            self.verified(step, check, ok, detail.clone(), !a.expect_damage);
            return if ok {
                Ok(detail)
            } else if a.expect_damage {
                Err(format!("expected damage, found none: {detail}"))
            } else {
                Err(detail)
            };
        }
        if let Some(repo_dir) = &a.repo {
            let repo = Repository::open(Path::new(repo_dir)).map_err(e2s)?;
            let keys = repo
                .config()
                .keys(self.opts.key_file.as_deref())
                .map_err(e2s)?;
            let v = crate::verify::verify(&repo, keys.as_ref(), a.read_data).map_err(e2s)?;
            let sound = v.errors.is_empty();
            let detail = format!(
                "{}: {} snapshots, {} packs, {} read, {} damaged blobs{}",
                if sound { "sound" } else { "DAMAGED" },
                v.snapshots,
                v.packs,
                crate::cli::human(v.bytes_read),
                v.damaged_blobs.len(),
                v.errors
                    .first()
                    .map(|e| format!(" (first error: {e})"))
                    .unwrap_or_default()
            );
            let ok = sound != a.expect_damage;
            let check = format!(
                "verify{} of {repo_dir}",
                if a.read_data { " --read-data" } else { "" }
            );
            self.verified(step, check, ok, detail.clone(), !a.expect_damage);
            return if ok {
                Ok(detail)
            } else if a.expect_damage {
                Err(format!("expected damage, found none: {detail}"))
            } else {
                Err(detail)
            };
        }
        if let (Some(name), Some(n)) = (&a.writer, a.new_writes) {
            let state = self
                .writers
                .get(name)
                .ok_or_else(|| format!("no writer {name:?}"))?
                .state
                .clone();
            let from = state.lock().map(|s| s.writes.len()).unwrap_or(0);
            let deadline = Instant::now() + timeout;
            loop {
                // A new write counts once it is on the disk of the site the writer now uses:
                // the promoted site takes writes again.
                let (done, dir) = state
                    .lock()
                    .map(|s| {
                        let n = s
                            .writes
                            .iter()
                            .skip(from)
                            .filter(|w| w.dir == s.dir && w.dir.join(&w.rel).exists())
                            .count() as u64;
                        (n, s.dir.display().to_string())
                    })
                    .unwrap_or((0, String::new()));
                if done >= n {
                    let detail = format!("{done} new writes stored at {dir}");
                    self.verified(
                        step,
                        format!("writer {name} writes again"),
                        true,
                        detail.clone(),
                        true,
                    );
                    return Ok(detail);
                }
                if Instant::now() >= deadline {
                    let detail = format!(
                        "only {done} of {n} new writes stored at {dir} in {} s",
                        timeout.as_secs()
                    );
                    self.verified(
                        step,
                        format!("writer {name} writes again"),
                        false,
                        detail.clone(),
                        true,
                    );
                    return Err(detail);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let (Some(site), Some(want)) = (&a.site, a.events) {
            let deadline = Instant::now() + timeout;
            let check = format!(
                "collector {site} stores ≥ {want}{} events",
                a.kind
                    .as_deref()
                    .map(|k| format!(" {k}"))
                    .unwrap_or_default()
            );
            loop {
                let r = self.condition(
                    Condition::CollectorEvents,
                    &Cond {
                        path: &None,
                        a: &None,
                        b: &None,
                        count: Some(want),
                        site: &a.site,
                        kind: &a.kind,
                        writer: &None,
                        dirs: &[],
                        dir: &None,
                        against: &None,
                    },
                );
                match r {
                    Ok(d) => {
                        self.verified(step, check, true, d.clone(), true);
                        return Ok(d);
                    }
                    Err(e) if Instant::now() >= deadline => {
                        self.verified(step, check, false, e.clone(), true);
                        return Err(e);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(250)),
                }
            }
        }
        Err("verify needs `dir` + `against`, `repo`, or `writer` + `new_writes`".into())
    }

    fn condition(&self, c: Condition, f: &Cond<'_>) -> StepResult {
        let get = |o: &Option<String>, name: &str| {
            o.clone().ok_or_else(|| format!("missing field `{name}`"))
        };
        match c {
            Condition::FileExists => {
                let p = get(f.path, "path")?;
                if Path::new(&p).exists() {
                    Ok(format!("{p} exists"))
                } else {
                    Err(format!("{p} does not exist"))
                }
            }
            Condition::FilesEqual => {
                let (a, b) = (get(f.a, "a")?, get(f.b, "b")?);
                let ha = data::hash_file(Path::new(&a)).map_err(e2s)?;
                let hb = data::hash_file(Path::new(&b)).map_err(e2s)?;
                if ha == hb {
                    Ok(format!("{a} and {b} are byte-identical"))
                } else {
                    Err(format!("{a} and {b} differ"))
                }
            }
            Condition::DirsEqual => {
                let (a, b) = (get(f.a, "a")?, get(f.b, "b")?);
                let ma = data::manifest(Path::new(&a)).map_err(e2s)?;
                let mb = data::manifest(Path::new(&b)).map_err(e2s)?;
                let cmp = data::compare(&ma, &mb);
                if cmp.identical() {
                    Ok(format!("{a} and {b}: {}", cmp.summary()))
                } else {
                    Err(format!("{b} differs from {a}: {}", cmp.summary()))
                }
            }
            Condition::CollectorEvents => {
                let site = get(f.site, "site")?;
                let s = self
                    .sites
                    .get(&site)
                    .ok_or_else(|| format!("no site {site:?}"))?;
                let addr = self
                    .last_addr
                    .get(&site)
                    .ok_or_else(|| format!("site {site} has no address"))?;
                let n = collector_events(addr, &s.pki_dir, f.kind.as_deref())?;
                let want = f.count.unwrap_or(1);
                if n >= want {
                    Ok(format!("{n} events stored (≥ {want})"))
                } else {
                    Err(format!("{n} events stored, want ≥ {want}"))
                }
            }
            Condition::WriterAcked => {
                let name = get(f.writer, "writer")?;
                let w = self
                    .writers
                    .get(&name)
                    .ok_or_else(|| format!("no writer {name:?}"))?;
                let n = w.state.lock().map(|s| s.acked()).unwrap_or(0);
                let want = f.count.unwrap_or(1);
                if n >= want {
                    Ok(format!("{n} acknowledged writes (≥ {want})"))
                } else {
                    Err(format!("{n} acknowledged writes, want ≥ {want}"))
                }
            }
            Condition::Rpo => {
                let t = self
                    .rb
                    .meta
                    .rpo_target_secs
                    .ok_or("assert rpo: the runbook has no rpo_target_secs")?;
                let (f, _) = self
                    .failure
                    .ok_or("RPO target missed: no failure instant was marked")?;
                let rp = self
                    .recovery_point
                    .as_ref()
                    .ok_or("RPO target missed: no recovery point was used")?;
                let rpo = (f - rp.time_ns) as f64 / 1e9;
                if rpo <= t {
                    Ok(format!("RPO {rpo:.2} s ≤ target {t} s"))
                } else {
                    Err(format!("RPO target missed: {rpo:.2} s > target {t} s"))
                }
            }
            Condition::Rto => {
                let t = self
                    .rb
                    .meta
                    .rto_target_secs
                    .ok_or("assert rto: the runbook has no rto_target_secs")?;
                let (_, f) = self
                    .failure
                    .ok_or("RTO target missed: no failure instant was marked")?;
                let v = self
                    .last_verify
                    .ok_or("RTO target missed: no verify step succeeded after the failure")?;
                let rto = v.duration_since(f).as_secs_f64();
                if rto <= t {
                    Ok(format!("RTO {rto:.2} s ≤ target {t} s"))
                } else {
                    Err(format!("RTO target missed: {rto:.2} s > target {t} s"))
                }
            }
            Condition::NoAckedWriteLost => {
                let name = get(f.writer, "writer")?;
                let ledger = self
                    .writers
                    .get(&name)
                    .map(|w| w.ledger.clone())
                    .ok_or_else(|| format!("no writer {name:?}"))?;
                let entries = sites::read_ledger(&ledger)?;
                if entries.is_empty() {
                    return Err(format!(
                        "the ledger {} holds no acknowledged write",
                        ledger.display()
                    ));
                }
                let mut lost = Vec::new();
                for d in f.dirs {
                    for (rel, hash) in &entries {
                        let p = Path::new(d).join(rel);
                        match data::hash_file(&p) {
                            Ok(h) if &h == hash => {}
                            _ => lost.push(format!("{}", p.display())),
                        }
                    }
                }
                if lost.is_empty() {
                    Ok(format!(
                        "all {} acknowledged writes present in {} directories",
                        entries.len(),
                        f.dirs.len()
                    ))
                } else {
                    Err(format!(
                        "{} acknowledged writes lost (first: {})",
                        lost.len(),
                        lost[0]
                    ))
                }
            }
            Condition::Manifest => {
                let dir = get(f.dir, "dir")?;
                let label = get(f.against, "against")?;
                let label = label.trim_start_matches('@');
                let info = self
                    .snaps
                    .get(label)
                    .ok_or_else(|| format!("no snapshot step labelled {label:?} ran"))?;
                let have = data::manifest(Path::new(&dir)).map_err(e2s)?;
                let c = data::compare(&info.manifest, &have);
                if c.identical() {
                    Ok(format!(
                        "{dir}: {} (snapshot {} in {})",
                        c.summary(),
                        &info.id[..8],
                        info.repo
                    ))
                } else {
                    Err(format!("{dir}: {}", c.summary()))
                }
            }
        }
    }
}

struct Cond<'a> {
    path: &'a Option<String>,
    a: &'a Option<String>,
    b: &'a Option<String>,
    count: Option<u64>,
    site: &'a Option<String>,
    kind: &'a Option<String>,
    writer: &'a Option<String>,
    dirs: &'a [String],
    dir: &'a Option<String>,
    against: &'a Option<String>,
}

/// On SIGINT/SIGTERM the drill is abandoned: its children are killed (they would outlive it
/// otherwise) and the process exits 130. Temp dirs are kept for a post-mortem.
fn kill_children_on_interrupt(live: Arc<Mutex<HashSet<u32>>>) {
    std::thread::spawn(move || {
        let Ok(rt) = palisade_wire::process::runtime() else {
            return;
        };
        rt.block_on(palisade_wire::process::shutdown_signal());
        let pids: Vec<u32> = live
            .lock()
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default();
        for pid in &pids {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        eprintln!(
            "palisade-replicator: drill interrupted; {} child process(es) killed; no report written",
            pids.len()
        );
        std::process::exit(130);
    });
}

fn peer_tls(pki: &Option<String>, identity: &Option<String>) -> Option<crate::transport::PeerTls> {
    match (pki, identity) {
        (Some(p), Some(i)) => Some(crate::transport::PeerTls::from_pki_dir(Path::new(p), i)),
        _ => None,
    }
}

fn pki(a: &Pki) -> StepResult {
    let dir = Path::new(&a.dir);
    let run = |args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new(sites::program("palisade-collector"))
            .args(args)
            .output()
            .map_err(|e| format!("cannot run palisade-collector: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "palisade-collector {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let d = a.dir.as_str();
    let mut done = Vec::new();
    if !dir.join("ca.crt").exists() {
        run(&["pki", "init", "--dir", d])?;
        done.push("CA created".to_string());
    }
    for i in &a.issue {
        if dir.join(format!("{}.crt", i.name)).exists() {
            continue;
        }
        let mut args = vec![
            "pki", "issue", "--dir", d, "--role", &i.role, "--name", &i.name,
        ];
        if let Some(s) = &i.san {
            args.extend(["--san", s]);
        }
        run(&args)?;
        done.push(format!("{} ({})", i.name, i.role));
    }
    Ok(if done.is_empty() {
        "nothing to do".into()
    } else {
        done.join(", ")
    })
}

fn collector_events(addr: &str, pki: &Path, kind: Option<&str>) -> Result<u64, String> {
    let url = format!("https://{addr}");
    let pki_s = pki.display().to_string();
    let mut args = vec![
        "events",
        "--collector",
        &url,
        "--pki-dir",
        &pki_s,
        "--as",
        "analyst",
        "--since",
        "1d",
        "--limit",
        "1000000",
        "--output-format",
        "ndjson",
    ];
    if let Some(k) = kind {
        args.extend(["--kind", k]);
    }
    let out = std::process::Command::new(sites::program("palisade-collector"))
        .args(&args)
        .env_remove("PALISADE_COLLECTOR")
        .output()
        .map_err(|e| format!("cannot run palisade-collector: {e}"))?;
    match out.status.code() {
        Some(0) | Some(1) => Ok(out
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64),
        _ => Err(format!(
            "palisade-collector events: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn exec(
    command: &str,
    params: &std::collections::BTreeMap<String, String>,
    timeout: Duration,
) -> StepResult {
    let mut c = std::process::Command::new("sh");
    c.args(["-c", command]);
    for (k, v) in params {
        c.env(format!("DRILL_{}", k.to_uppercase()), v);
    }
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("cannot run sh: {e}"))?;
    // Drain both pipes while waiting, so a chatty command cannot block on a full pipe.
    fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out_t = drain(child.stdout.take());
    let err_t = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{command}` did not finish in {} s; killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let tail = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        s.lines().last().unwrap_or("").to_string()
    };
    if status.success() {
        Ok(tail(&stdout))
    } else {
        Err(format!("`{command}` failed ({status}): {}", tail(&stderr)))
    }
}
