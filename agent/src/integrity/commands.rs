//! The integrity subcommands: `baseline`, `verify`, `publish`, `scan`, `quarantine`.
//! Exit codes follow AIDE where AIDE users expect them: `verify` returns the OR of 1 (added),
//! 2 (removed) and 4 (changed); 17 means a bad config, 18 a baseline that is missing, refused
//! or unreadable.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use palisade_wire::output::{is_broken_pipe, OutputFormat};
use serde_json::json;

use super::config::IntegrityConfig;
use super::verify::{self, Report};
use super::walk::{self, Root, WalkOptions};
use super::{events, IntegrityError, Layout};
use crate::config::AgentConfig;

/// `verify` / `baseline` exit code for a config problem (AIDE's).
pub const EXIT_CONFIG: u8 = 17;
/// Exit code for a missing, refused or unreadable baseline (AIDE's I/O error).
pub const EXIT_BASELINE: u8 = 18;

/// A command failed; `code` is the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// Exit code.
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

impl From<IntegrityError> for CommandError {
    fn from(e: IntegrityError) -> Self {
        let code = match e {
            IntegrityError::Config(_) => EXIT_CONFIG,
            _ => EXIT_BASELINE,
        };
        CommandError {
            code,
            message: e.to_string(),
        }
    }
}

fn fail(code: u8, message: impl Into<String>) -> CommandError {
    CommandError {
        code,
        message: message.into(),
    }
}

/// The loaded config and what follows from it.
struct Ctx {
    config: AgentConfig,
    layout: Layout,
    agent_id: String,
}

fn load(config: &Path) -> Result<Ctx, CommandError> {
    let config = AgentConfig::load(config).map_err(|e| fail(EXIT_CONFIG, e.to_string()))?;
    let layout = Layout::new(&config.integrity, &config.data_dir);
    // Without readable TLS material (a host that only runs baselines) the id comes from the
    // config, then the host name.
    let agent_id = crate::run::agent_identity(&config)
        .ok()
        .or_else(|| config.agent_id.clone())
        .unwrap_or_else(crate::sources::hostname);
    Ok(Ctx {
        config,
        layout,
        agent_id,
    })
}

fn integrity(ctx: &Ctx) -> &IntegrityConfig {
    &ctx.config.integrity
}

/// Who approves a change: `--approver`, else the user behind sudo, else the login user.
fn approver(given: Option<String>) -> String {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    given
        .or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .map(|u| format!("{u} (uid {uid})"))
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn to_inbox(ctx: &Ctx, events: &[palisade_wire::Event]) {
    match crate::inbox::write(&ctx.config.data_dir, events) {
        Ok(p) => tracing::debug!(file = %p.display(), "audit event queued for the collector"),
        Err(e) => eprintln!(
            "palisade-agent: warning: cannot queue the audit event for the collector: {e}"
        ),
    }
}

fn print_json(v: &serde_json::Value) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{v}") {
        Err(e) if !is_broken_pipe(&e) => Err(fail(2, format!("cannot write output: {e}"))),
        _ => Ok(()),
    }
}

/// `baseline [--update [--path P]…]`.
pub fn baseline(
    config: &Path,
    update: bool,
    paths: &[PathBuf],
    approved_by: Option<String>,
    format: OutputFormat,
) -> Result<u8, CommandError> {
    let ctx = load(config)?;
    let c = integrity(&ctx);
    if !paths.is_empty() && !update {
        return Err(fail(EXIT_CONFIG, "--path only goes with --update"));
    }
    let started = Instant::now();
    let (outcome, accepted, action) = if update {
        let old = super::open_baseline(c, &ctx.layout)?;
        let roots = Root::all(c).map_err(|e| fail(EXIT_CONFIG, e))?;
        let opts = WalkOptions {
            threads: c.thread_count(),
            hash: true,
            progress: None,
        };
        let abs: Vec<PathBuf> = paths
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect();
        let accepted = if abs.is_empty() {
            verify::verify_all(&old, &roots, opts)
        } else {
            verify::verify_paths(&old, &roots, &abs, &|_| true, opts)
        }
        .map_err(|e| fail(EXIT_BASELINE, e.to_string()))?;
        let who = Some(approver(approved_by));
        let outcome = if abs.is_empty() {
            let pb = walk::progress("baseline");
            let o =
                super::create_baseline(c, &ctx.layout, &ctx.agent_id, "update", who, pb.as_ref());
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            o?
        } else {
            super::update_paths(c, &ctx.layout, &old, &abs, "update", who)?
        };
        (outcome, Some(accepted), "baseline-updated")
    } else {
        let pb = walk::progress("baseline");
        let o = super::create_baseline(
            c,
            &ctx.layout,
            &ctx.agent_id,
            "init",
            approved_by.map(|a| approver(Some(a))),
            pb.as_ref(),
        );
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        (o?, None, "baseline-created")
    };
    let b = &outcome.baseline;
    to_inbox(
        &ctx,
        &[events::baseline(
            &ctx.agent_id,
            b,
            action,
            accepted.as_ref(),
        )],
    );
    let secs = started.elapsed().as_secs_f64();
    let bytes = outcome
        .stats
        .bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    let problems = outcome.stats.take_problems();
    match format {
        OutputFormat::Text => {
            if let Some(a) = &accepted {
                for f in &a.findings {
                    println!("accepted {}", f.text());
                }
            }
            for p in &problems {
                eprintln!(
                    "baseline: warning: {}: {}: {}",
                    p.path.display(),
                    p.what,
                    p.error
                );
            }
            for (p, e) in &outcome.store_errors {
                eprintln!(
                    "baseline: warning: no known-good copy of {}: {e}",
                    p.display()
                );
            }
            println!(
                "baseline {}: generation {}, {} files in {} dirs, {:.1} MB hashed in {:.2} s; {} problems; signed by {}",
                b.path().display(),
                b.header.generation,
                b.header.files,
                b.header.dirs,
                bytes as f64 / 1e6,
                secs,
                problems.len(),
                b.public_key
            );
        }
        _ => print_json(&json!({
            "baseline": b.path(),
            "action": action,
            "generation": b.header.generation,
            "files": b.header.files,
            "dirs": b.header.dirs,
            "bytes_hashed": bytes,
            "elapsed_secs": secs,
            "digest": b.digest,
            "public_key": b.public_key,
            "accepted": accepted.as_ref().map(|a| a.findings.iter().map(|f| f.to_json()).collect::<Vec<_>>()),
            "problems": problems.iter().map(|p| json!({"path": p.path, "what": p.what, "error": p.error})).collect::<Vec<_>>(),
            "store_errors": outcome.store_errors.iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
        }))?,
    }
    Ok(0)
}

/// `verify [--path P]…`.
pub fn verify(config: &Path, paths: &[PathBuf], format: OutputFormat) -> Result<u8, CommandError> {
    let ctx = load(config)?;
    let c = integrity(&ctx);
    let db = super::open_baseline(c, &ctx.layout)?;
    let roots = Root::all(c).map_err(|e| fail(EXIT_CONFIG, e))?;
    let started = Instant::now();
    let pb = walk::progress("verify");
    let opts = WalkOptions {
        threads: c.thread_count(),
        hash: true,
        progress: pb.as_ref(),
    };
    let report = if paths.is_empty() {
        verify::verify_all(&db, &roots, opts)
    } else {
        let abs: Vec<PathBuf> = paths
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect();
        verify::verify_paths(&db, &roots, &abs, &|_| true, opts)
    }
    .map_err(|e| fail(EXIT_BASELINE, e.to_string()))?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    print_report(&ctx, &db, &report, started.elapsed().as_secs_f64(), format)?;
    Ok(report.exit_code())
}

fn print_report(
    ctx: &Ctx,
    db: &super::db::Baseline,
    r: &Report,
    secs: f64,
    format: OutputFormat,
) -> Result<(), CommandError> {
    let counts = r.counts();
    let summary = json!({
        "baseline": {
            "path": db.path(),
            "generation": db.header.generation,
            "digest": db.digest,
            "created": palisade_wire::Timestamp(db.header.created_ns).to_string(),
        },
        "counts": counts,
        "files": r.files,
        "dirs": r.dirs,
        "bytes_hashed": r.bytes,
        "elapsed_secs": secs,
        "problems": r.problem_count,
        "exit_code": r.exit_code(),
    });
    let mut out = std::io::stdout().lock();
    let result = (|| -> std::io::Result<()> {
        match format {
            OutputFormat::Text => {
                for f in &r.findings {
                    writeln!(out, "{}", f.text())?;
                    if f.change == verify::Change::Changed {
                        for attr in f.attrs.iter() {
                            writeln!(
                                out,
                                "    {:<8} {} -> {}",
                                attr.name(),
                                f.old
                                    .as_ref()
                                    .map(|e| e.attr_text(attr))
                                    .unwrap_or_default(),
                                f.new
                                    .as_ref()
                                    .map(|e| e.attr_text(attr))
                                    .unwrap_or_default()
                            )?;
                        }
                    }
                }
                for p in &r.problems {
                    eprintln!(
                        "verify: warning: {}: {}: {}",
                        p.path.display(),
                        p.what,
                        p.error
                    );
                }
                writeln!(
                    out,
                    "verify: {} added, {} removed, {} changed, {} type changed ({} files, {} dirs, {:.1} MB hashed in {:.2} s) against baseline generation {} of {}",
                    counts["added"],
                    counts["removed"],
                    counts["changed"],
                    counts["type_changed"],
                    r.files,
                    r.dirs,
                    r.bytes as f64 / 1e6,
                    secs,
                    db.header.generation,
                    palisade_wire::Timestamp(db.header.created_ns),
                )?;
            }
            OutputFormat::Json => {
                let mut v = summary.clone();
                v["findings"] = json!(r.findings.iter().map(|f| f.to_json()).collect::<Vec<_>>());
                v["problem_list"] = json!(r
                    .problems
                    .iter()
                    .map(|p| json!({"path": p.path, "what": p.what, "error": p.error}))
                    .collect::<Vec<_>>());
                writeln!(out, "{v}")?;
            }
            OutputFormat::Ndjson => {
                for f in &r.findings {
                    let protect = ctx.config.integrity.paths.get(f.root).map(|p| p.protect);
                    let e = events::finding(
                        &ctx.agent_id,
                        f,
                        protect.unwrap_or_default(),
                        events::Detection::Verify,
                        None,
                    );
                    out.write_all(&e.to_json())?;
                    out.write_all(b"\n")?;
                }
                eprintln!("{summary}");
            }
        }
        Ok(())
    })();
    match result {
        Err(e) if !is_broken_pipe(&e) => Err(fail(2, format!("cannot write output: {e}"))),
        _ => Ok(()),
    }
}

/// `publish --from STAGING --to DEST [--delete]`: the legitimate way to change a protected
/// tree while the agent guards it. The running monitor holds off on DEST while the lock file
/// exists; the copy is then checked (every finding under DEST must be something publish
/// wrote or removed), accepted into the baseline and the known-good store, and the lock lifted.
pub fn publish(
    config: &Path,
    from: &Path,
    to: &Path,
    delete: bool,
    approved_by: Option<String>,
    format: OutputFormat,
) -> Result<u8, CommandError> {
    let ctx = load(config)?;
    let c = integrity(&ctx);
    let from = std::path::absolute(from).map_err(|e| fail(2, e.to_string()))?;
    let to = std::path::absolute(to).map_err(|e| fail(2, e.to_string()))?;
    if !from.is_dir() {
        return Err(fail(
            2,
            format!("--from {} is not a directory", from.display()),
        ));
    }
    let roots = Root::all(c).map_err(|e| fail(EXIT_CONFIG, e))?;
    if walk::root_of(&roots, &to).is_none() {
        return Err(fail(
            EXIT_CONFIG,
            format!(
                "--to {} is not under any [[integrity.paths]] root",
                to.display()
            ),
        ));
    }
    let old = super::open_baseline(c, &ctx.layout)?;
    let lock = ctx.layout.publish_lock();
    std::fs::write(&lock, format!("{}\n{}\n", to.display(), std::process::id()))
        .map_err(|e| fail(2, format!("cannot write {}: {e}", lock.display())))?;
    let result = publish_locked(&ctx, &old, &roots, &from, &to, delete, approved_by);
    let _ = std::fs::remove_file(&lock);
    let (outcome, accepted, copied) = result?;
    let b = &outcome.baseline;
    to_inbox(
        &ctx,
        &[events::baseline(
            &ctx.agent_id,
            b,
            "publish",
            Some(&accepted),
        )],
    );
    let counts = accepted.counts();
    match format {
        OutputFormat::Text => {
            for f in &accepted.findings {
                println!("published {}", f.text());
            }
            println!(
                "publish {} -> {}: {} files copied; {} added, {} removed, {} changed; baseline generation {}",
                from.display(),
                to.display(),
                copied,
                counts["added"],
                counts["removed"],
                counts["changed"] + counts["type_changed"],
                b.header.generation
            );
        }
        _ => print_json(&json!({
            "from": from, "to": to, "copied": copied, "counts": counts,
            "generation": b.header.generation, "digest": b.digest,
            "changes": accepted.findings.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
        }))?,
    }
    Ok(0)
}

type Published = (super::BaselineOutcome, Report, u64);

fn publish_locked(
    ctx: &Ctx,
    old: &super::db::Baseline,
    roots: &[Root],
    from: &Path,
    to: &Path,
    delete: bool,
    approved_by: Option<String>,
) -> Result<Published, CommandError> {
    let c = integrity(ctx);
    let mut written: std::collections::HashMap<PathBuf, Option<[u8; 32]>> = Default::default();
    let copied = mirror(from, to, delete, &mut written).map_err(|e| {
        fail(
            2,
            format!(
                "publish copy failed (the agent will restore {}): {e}",
                to.display()
            ),
        )
    })?;
    let opts = WalkOptions {
        threads: c.thread_count(),
        hash: true,
        progress: None,
    };
    let report = verify::verify_paths(old, roots, &[to.to_path_buf()], &|_| true, opts)
        .map_err(|e| fail(EXIT_BASELINE, e.to_string()))?;
    // Every difference must be publish's own doing, with the content publish wrote.
    for f in &report.findings {
        let ours = match written.get(&f.path) {
            Some(Some(h)) => f.new.as_ref().and_then(|e| e.hash()) == Some(h),
            Some(None) => true,
            None => false,
        };
        if !ours {
            return Err(fail(
                2,
                format!(
                    "{} changed during the publish by someone else ({}); nothing accepted, the agent will restore the tree",
                    f.path.display(),
                    f.change.name()
                ),
            ));
        }
    }
    let outcome = super::update_paths(
        c,
        &ctx.layout,
        old,
        &[to.to_path_buf()],
        &format!("publish {}", to.display()),
        Some(approver(approved_by)),
    )?;
    Ok((outcome, report, copied))
}

/// Copies the tree `from` into `to` (files through a temporary name and a rename, with mode
/// and mtime), removing what `from` lacks when `delete`. Records what it wrote (path -> hash,
/// `None` for directories, links and removals).
fn mirror(
    from: &Path,
    to: &Path,
    delete: bool,
    written: &mut std::collections::HashMap<PathBuf, Option<[u8; 32]>>,
) -> std::io::Result<u64> {
    let mut copied = 0;
    let m = std::fs::symlink_metadata(from)?;
    if !to.exists() {
        std::fs::create_dir_all(to)?;
        written.insert(to.to_path_buf(), None);
    }
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
    let mut names: Vec<_> = std::fs::read_dir(from)?
        .map(|d| d.map(|d| d.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in &names {
        let src = from.join(name);
        let dst = to.join(name);
        let sm = std::fs::symlink_metadata(&src)?;
        let dm = std::fs::symlink_metadata(&dst).ok();
        let same_type = dm.as_ref().is_some_and(|d| d.file_type() == sm.file_type());
        if dm.is_some() && !same_type {
            if dm.as_ref().is_some_and(|d| d.is_dir()) {
                std::fs::remove_dir_all(&dst)?;
            } else {
                std::fs::remove_file(&dst)?;
            }
        }
        if sm.is_dir() {
            copied += mirror(&src, &dst, delete, written)?;
            written.insert(dst, None);
        } else if sm.file_type().is_symlink() {
            let tmp = super::store::temp_beside(&dst);
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &tmp)?;
            std::fs::rename(&tmp, &dst)?;
            written.insert(dst, None);
        } else if sm.is_file() {
            let data = std::fs::read(&src)?;
            let hash = *blake3::hash(&data).as_bytes();
            let unchanged = same_type
                && std::fs::read(&dst).is_ok_and(|d| d == data)
                && dm.as_ref().is_some_and(|d| d.mode() == sm.mode());
            if !unchanged {
                let tmp = super::store::temp_beside(&dst);
                std::fs::write(&tmp, &data)?;
                let f = std::fs::File::open(&tmp)?;
                f.set_permissions(std::fs::Permissions::from_mode(sm.mode() & 0o7777))?;
                f.set_times(std::fs::FileTimes::new().set_modified(sm.modified()?))?;
                std::fs::rename(&tmp, &dst)?;
                copied += 1;
            }
            written.insert(dst, Some(hash));
        }
    }
    if delete {
        let keep: std::collections::HashSet<_> = names.into_iter().collect();
        for d in std::fs::read_dir(to)? {
            let d = d?;
            if !keep.contains(&d.file_name()) {
                let p = d.path();
                if d.file_type()?.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
                written.insert(p, None);
            }
        }
    }
    Ok(copied)
}

/// Files under `paths` (recursively, not following symlinks), sorted.
#[cfg(feature = "yara")]
fn files_under(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut stack: Vec<PathBuf> = paths.iter().rev().cloned().collect();
    while let Some(p) = stack.pop() {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(&p) {
                Ok(rd) => {
                    let mut children: Vec<PathBuf> =
                        rd.filter_map(Result::ok).map(|d| d.path()).collect();
                    children.sort();
                    stack.extend(children.into_iter().rev());
                }
                Err(e) => errors.push(format!("{}: {e}", p.display())),
            },
            Ok(m) if m.is_file() => files.push(p),
            Ok(_) => {}
            Err(e) => errors.push(format!("{}: {e}", p.display())),
        }
    }
    (files, errors)
}

/// `scan PATH…`: YARA-X over files, printing a malware event per matching file.
#[cfg(feature = "yara")]
pub fn scan(
    paths: &[PathBuf],
    config: Option<&Path>,
    rules: Option<&Path>,
    quarantine: bool,
    format: OutputFormat,
) -> Result<u8, CommandError> {
    use super::malware::{FileScanner, Verdict};
    let ctx = config.map(load).transpose()?;
    let mut mc = ctx
        .as_ref()
        .map(|c| c.config.integrity.malware.clone())
        .unwrap_or_default();
    if let Some(r) = rules {
        mc.dir = r.to_path_buf();
    }
    mc.watch = false;
    let agent_id = ctx
        .as_ref()
        .map_or_else(crate::sources::hostname, |c| c.agent_id.clone());
    let q = if quarantine {
        let dir = ctx.as_ref().map(|c| c.layout.quarantine()).ok_or_else(|| {
            fail(
                EXIT_CONFIG,
                "--quarantine needs --config (where the quarantine is)",
            )
        })?;
        Some(super::quarantine::Quarantine::open(&dir).map_err(|e| fail(2, e.to_string()))?)
    } else {
        None
    };
    let mut scanner = FileScanner::new(&mc).map_err(|e| fail(EXIT_CONFIG, e.to_string()))?;
    let (files, errors) = files_under(paths);
    for e in &errors {
        eprintln!("scan: warning: {e}");
    }
    let started = Instant::now();
    let mut w = palisade_wire::output::EventWriter::new(std::io::stdout().lock(), format)
        .map_err(|e| fail(2, e.to_string()))?;
    let (mut matched, mut too_large, mut failed, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut max_ms = 0f64;
    let mut taken = Vec::new();
    for f in &files {
        let s = scanner.scan(f);
        bytes += s.size;
        max_ms = max_ms.max(s.elapsed.as_secs_f64() * 1e3);
        match &s.verdict {
            Verdict::TooLarge(n) => {
                too_large += 1;
                eprintln!(
                    "scan: {}: not scanned, {n} bytes is over max_file_bytes",
                    f.display()
                );
            }
            Verdict::Failed(why) => {
                failed += 1;
                eprintln!("scan: {}: {why}", f.display());
            }
            _ => {}
        }
        let action = if quarantine {
            super::config::MalwareAction::Quarantine
        } else {
            super::config::MalwareAction::Alert
        };
        let response = super::malware::act(&s, action, q.as_ref());
        if let Some(ev) = super::malware::event(&agent_id, &s, response.as_ref()) {
            matched += 1;
            if response.as_ref().is_some_and(Result::is_ok) {
                taken.push(ev.clone());
            }
            if let Err(e) = w.write_event(&ev) {
                if is_broken_pipe(&e) {
                    return Ok(0);
                }
                return Err(fail(2, format!("cannot write output: {e}")));
            }
        }
    }
    if let Err(e) = w.finish() {
        if !is_broken_pipe(&e) {
            return Err(fail(2, format!("cannot write output: {e}")));
        }
    }
    if let (Some(ctx), false) = (&ctx, taken.is_empty()) {
        to_inbox(ctx, &taken);
    }
    eprintln!(
        "scan: {} files, {} matched, {} too large, {} failed, {:.1} MB in {:.2} s (slowest file {:.1} ms) with {} rules",
        files.len(),
        matched,
        too_large,
        failed,
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        max_ms,
        scanner.rule_count()
    );
    Ok(if matched > 0 { 0 } else { 1 })
}

/// `quarantine list`.
pub fn quarantine_list(config: &Path, format: OutputFormat) -> Result<u8, CommandError> {
    let ctx = load(config)?;
    let q = super::quarantine::Quarantine::open(&ctx.layout.quarantine())
        .map_err(|e| fail(2, e.to_string()))?;
    let items = q.list().map_err(|e| fail(2, e.to_string()))?;
    let mut out = std::io::stdout().lock();
    let mut n = 0;
    let result = (|| -> std::io::Result<()> {
        if format == OutputFormat::Json {
            let v: Vec<_> = items
                .iter()
                .map(|i| match i {
                    Ok(i) => json!(i),
                    Err(e) => json!({ "error": e.to_string() }),
                })
                .collect();
            n = v.len();
            return writeln!(out, "{}", serde_json::Value::Array(v));
        }
        for i in &items {
            n += 1;
            match (i, format) {
                (Ok(i), OutputFormat::Ndjson) => writeln!(out, "{}", json!(i))?,
                (Ok(i), _) => writeln!(
                    out,
                    "{}  {}  {:<12} {:>9}  {}{}",
                    i.id,
                    i.quarantined_at,
                    i.reason,
                    i.size,
                    i.original_path.display(),
                    if i.rules.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", i.rules.join(","))
                    }
                )?,
                (Err(e), _) => eprintln!("quarantine: {e}"),
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        if !is_broken_pipe(&e) {
            return Err(fail(2, format!("cannot write output: {e}")));
        }
    }
    Ok(if n > 0 { 0 } else { 1 })
}

/// `quarantine restore ID`.
pub fn quarantine_restore(
    config: &Path,
    id: &str,
    to: Option<&Path>,
    force: bool,
) -> Result<u8, CommandError> {
    let ctx = load(config)?;
    let q = super::quarantine::Quarantine::open(&ctx.layout.quarantine())
        .map_err(|e| fail(2, e.to_string()))?;
    let item = q.get(id).map_err(|e| fail(1, e.to_string()))?;
    let dest = q
        .restore(id, to, force)
        .map_err(|e| fail(2, e.to_string()))?;
    let e = events::notice(
        &ctx.agent_id,
        "palisade.fim.quarantine_restored",
        "File restored from quarantine",
        palisade_wire::Severity::Medium,
        format!(
            "quarantined item {id} restored to {} by {}",
            dest.display(),
            approver(None)
        ),
        json!({ "item": item, "restored_to": dest }),
    );
    to_inbox(&ctx, &[e]);
    println!("{}: restored to {}", id, dest.display());
    Ok(0)
}
