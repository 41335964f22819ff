//! `drill`: run or check a DR drill runbook.

use std::path::{Path, PathBuf};

use clap::Args;
use palisade_wire::output::OutputFormat;

use super::{print, reporter, Cli, Outcome};
use crate::drill::{self, Resolve, Verdict};
use crate::error::{Error, Result};

const EXAMPLES: &str = "\
Exit status: 0 every target met; 1 a target missed; 2 a step failed or the runbook is invalid.

Examples:
  palisade-replicator drill validate runbooks/offsite-restore.toml
  palisade-replicator drill runbooks/offsite-restore.toml --dry-run
  palisade-replicator drill runbooks/offsite-restore.toml --param size_mb=1024 --report-dir /srv/drills
  palisade-replicator --collector https://soc:7443 --pki-dir pki drill runbooks/ransomware-tamper.toml";

/// `drill` flags.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct DrillArgs {
    /// `validate` to check a runbook without running it, or the runbook to run.
    pub runbook: String,
    /// With `validate`: the runbook to check.
    pub validate_target: Option<String>,
    /// Set a runbook parameter (repeatable): `--param size_mb=1024`.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Print the resolved plan; do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow `exec` steps (shell commands are outside the scope checks).
    #[arg(long)]
    pub allow_exec: bool,
    /// Where the Markdown and HTML reports go (default: the current directory).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
}

fn overrides(a: &DrillArgs) -> Result<Vec<(String, String)>> {
    a.params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| Error::Usage(format!("--param {p:?}: expected NAME=VALUE")))
        })
        .collect()
}

/// Runs `drill`.
pub fn run(cli: &Cli, a: &DrillArgs) -> Result<Outcome> {
    let params = overrides(a)?;
    if a.runbook == "validate" {
        let file = a
            .validate_target
            .as_deref()
            .ok_or_else(|| Error::Usage("drill validate RUNBOOK: give the runbook".into()))?;
        let rb = drill::load(Path::new(file), &params, Resolve::Placeholder)?;
        let execs = rb.all_steps().filter(|s| s.action.name() == "exec").count();
        let summary = serde_json::json!({
            "runbook": file, "valid": true, "name": rb.meta.name, "steps": rb.steps.len(),
            "on_failure": rb.on_failure.len(), "always": rb.always.len(), "exec_steps": execs,
            "scope": rb.meta.scope,
        });
        print(cli, &summary, |w| {
            writeln!(
                w,
                "{file}: valid drill {:?}: {} steps, {} on_failure, {} always; scope [{}]{}",
                rb.meta.name,
                rb.steps.len(),
                rb.on_failure.len(),
                rb.always.len(),
                rb.meta.scope.join(", "),
                if execs > 0 {
                    format!("; {execs} exec steps need --allow-exec")
                } else {
                    String::new()
                }
            )
        })?;
        return Ok(Outcome::Ok);
    }
    if a.validate_target.is_some() {
        return Err(Error::Usage(format!(
            "unexpected argument {:?} (only `drill validate RUNBOOK` takes two)",
            a.validate_target.as_deref().unwrap_or_default()
        )));
    }
    let file = Path::new(&a.runbook);
    if a.dry_run {
        let rb = drill::load(file, &params, Resolve::Placeholder)?;
        print(cli, &rb, |w| {
            writeln!(
                w,
                "drill {} (owner {}): {}\nscope: {}\ntargets: RPO ≤ {} s, RTO ≤ {} s\nparameters:",
                rb.meta.name,
                rb.meta.owner,
                rb.meta.description,
                rb.meta.scope.join(", "),
                rb.meta
                    .rpo_target_secs
                    .map_or("-".into(), |t| t.to_string()),
                rb.meta
                    .rto_target_secs
                    .map_or("-".into(), |t| t.to_string()),
            )?;
            for (k, v) in &rb.params {
                let fresh = if rb.fresh.contains_key(k) {
                    " (made fresh at run time)"
                } else {
                    ""
                };
                writeln!(w, "  {k} = {v}{fresh}")?;
            }
            for s in rb.all_steps() {
                let mut v = serde_json::to_value(&s.action).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.retain(|k, x| !x.is_null() && k != "action");
                }
                let fields = v.to_string();
                writeln!(
                    w,
                    "[{} {}] {} — {} (timeout {} s) {fields}",
                    s.phase.table(),
                    s.index,
                    s.name,
                    s.action.name(),
                    s.timeout_secs
                )?;
            }
            Ok(())
        })?;
        return Ok(Outcome::Ok);
    }
    let rb = drill::load(file, &params, Resolve::Real)?;
    let report = drill::run(
        &rb,
        &drill::RunOptions {
            allow_exec: a.allow_exec,
            key_file: cli.key_file.clone(),
            progress_to_stderr: cli.output_format != OutputFormat::Text,
        },
    )
    .map_err(|e| Error::Usage(format!("drill {}: {e}", rb.meta.name)))?;

    // Reports for the record.
    let dir = a.report_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = format!("drill-{}-{stamp}", rb.meta.name);
    let md = dir.join(format!("{base}.md"));
    let html = dir.join(format!("{base}.html"));
    std::fs::write(&md, report.markdown()).map_err(Error::io("write", &md))?;
    std::fs::write(&html, report.html()).map_err(Error::io("write", &html))?;

    if let Some(r) = reporter(cli) {
        match r.report(drill::drill_event(&report)) {
            Ok(crate::report::Delivery::Sent(_)) => {}
            Ok(crate::report::Delivery::Queued(n)) => eprintln!(
                "palisade-replicator: collector unreachable; {n} report(s) kept for the next run"
            ),
            Err(e) => eprintln!("palisade-replicator: cannot record the drill event: {e}"),
        }
    }
    print(cli, &report, |w| {
        write!(w, "{}", report.text())?;
        writeln!(w, "  reports: {} {}", md.display(), html.display())
    })?;
    // Leave no fresh temp dir behind when the drill passed; keep it for a post-mortem otherwise.
    if report.verdict == Verdict::Passed {
        for v in rb.fresh.values() {
            if Path::new(v).is_absolute() && v.contains("palisade-drill-") {
                let _ = drill::data::remove_all(Path::new(v));
            }
        }
    }
    match report.verdict {
        Verdict::Passed => Ok(Outcome::Ok),
        Verdict::TargetMissed => {
            eprintln!(
                "palisade-replicator: drill {}: {}",
                rb.meta.name,
                report.missed().join("; ")
            );
            Ok(Outcome::NotFound)
        }
        Verdict::Failed => Err(Error::Usage(format!(
            "drill {} failed at step {}: {}",
            rb.meta.name,
            report.failed_step.clone().unwrap_or_default(),
            report
                .steps
                .iter()
                .find(|s| s.status == drill::output::StepStatus::Failed)
                .map(|s| s.detail.clone())
                .unwrap_or_default()
        ))),
    }
}
