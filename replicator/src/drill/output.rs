//! The drill report: what an assessor reads (text, JSON, Markdown, HTML), and the
//! `palisade.drill` event sent to the collector.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use palisade_wire::event::{Event, EventKind, Severity};
use serde::Serialize;

use super::runbook::Phase;

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Done.
    Ok,
    /// Failed: the drill stops (on-failure and always steps run).
    Failed,
    /// An RPO/RTO assert that missed its target (the drill goes on).
    Missed,
    /// Not run (an earlier step failed).
    Skipped,
}

impl StepStatus {
    fn word(self) -> &'static str {
        match self {
            StepStatus::Ok => "ok",
            StepStatus::Failed => "FAILED",
            StepStatus::Missed => "MISSED",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// One step's record.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// Which list.
    pub phase: Phase,
    /// 1-based position in the whole run.
    pub number: usize,
    /// Step name.
    pub name: String,
    /// Action.
    pub action: String,
    /// Result.
    pub status: StepStatus,
    /// Seconds.
    pub duration_secs: f64,
    /// What it did or why it failed.
    pub detail: String,
}

/// The recovery point used.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryPoint {
    /// What it is (snapshot id and repository, or the writer's last acknowledged write).
    pub source: String,
    /// Its time, RFC 3339.
    pub time: String,
    /// ns since the epoch.
    pub time_ns: i64,
}

/// A target and whether it was met.
#[derive(Clone, Debug, Serialize)]
pub struct TargetRecord {
    /// `rpo` or `rto`.
    pub target: String,
    /// The runbook's figure.
    pub target_secs: f64,
    /// What the drill measured.
    pub measured_secs: Option<f64>,
    /// Met.
    pub met: bool,
}

/// One verification.
#[derive(Clone, Debug, Serialize)]
pub struct VerificationRecord {
    /// The step.
    pub step: String,
    /// What was checked.
    pub check: String,
    /// It passed.
    pub ok: bool,
    /// Figures.
    pub detail: String,
}

/// Cleanup.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cleanup {
    /// Every cleanup step succeeded and every child is gone.
    pub ok: bool,
    /// on_failure steps run.
    pub on_failure_steps: usize,
    /// always steps run.
    pub always_steps: usize,
    /// Children still running at the end, killed.
    pub children_killed: usize,
    /// Writers stopped at the end.
    pub writers_stopped: usize,
}

/// The drill's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every step ran and every target was met.
    Passed,
    /// Every step ran; a target was missed.
    TargetMissed,
    /// A step failed.
    Failed,
}

/// Everything a drill reports.
#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    /// Drill name.
    pub drill: String,
    /// Owner.
    pub owner: String,
    /// Description.
    pub description: String,
    /// Runbook file.
    pub runbook: String,
    /// Host.
    pub host: String,
    /// Start, RFC 3339.
    pub started: String,
    /// End, RFC 3339.
    pub finished: String,
    /// Seconds.
    pub duration_secs: f64,
    /// Parameters used.
    pub params: BTreeMap<String, String>,
    /// Steps.
    pub steps: Vec<StepRecord>,
    /// The failure instant, RFC 3339.
    pub failure_at: Option<String>,
    /// The recovery point used.
    pub recovery_point: Option<RecoveryPoint>,
    /// Real RPO: failure instant − recovery point time.
    pub rpo_secs: Option<f64>,
    /// Real RTO: failure instant → end of the last successful verify step.
    pub rto_secs: Option<f64>,
    /// Targets.
    pub targets: Vec<TargetRecord>,
    /// Verifications.
    pub verifications: Vec<VerificationRecord>,
    /// Cleanup.
    pub cleanup: Cleanup,
    /// Verdict.
    pub verdict: Verdict,
    /// The step that failed.
    pub failed_step: Option<String>,
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "not measured".into(), |s| format!("{s:.2} s"))
}

impl DrillReport {
    /// Targets missed, as `rto 31.20 s > 30 s`.
    pub fn missed(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter(|t| !t.met)
            .map(|t| {
                format!(
                    "{} target missed: measured {} (target {} s)",
                    t.target.to_uppercase(),
                    secs(t.measured_secs),
                    t.target_secs
                )
            })
            .collect()
    }

    /// Plain text for the terminal.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\ndrill {} ({}) on {}: {}",
            self.drill,
            self.runbook,
            self.host,
            match self.verdict {
                Verdict::Passed => "PASSED — all targets met".to_string(),
                Verdict::TargetMissed => format!("TARGET MISSED — {}", self.missed().join("; ")),
                Verdict::Failed => format!(
                    "FAILED at step {}",
                    self.failed_step.clone().unwrap_or_default()
                ),
            }
        );
        let _ = writeln!(
            s,
            "  started   {}  finished {}  ({:.2} s)",
            self.started, self.finished, self.duration_secs
        );
        let _ = writeln!(
            s,
            "  failure   {}",
            self.failure_at.as_deref().unwrap_or("none")
        );
        match &self.recovery_point {
            Some(rp) => {
                let _ = writeln!(s, "  recovery point  {} at {}", rp.source, rp.time);
            }
            None => {
                let _ = writeln!(s, "  recovery point  none");
            }
        }
        let _ = writeln!(
            s,
            "  real RPO  {}   real RTO  {}",
            secs(self.rpo_secs),
            secs(self.rto_secs)
        );
        for t in &self.targets {
            let _ = writeln!(
                s,
                "  target {} ≤ {} s: {} ({})",
                t.target.to_uppercase(),
                t.target_secs,
                if t.met { "met" } else { "MISSED" },
                secs(t.measured_secs)
            );
        }
        for v in &self.verifications {
            let _ = writeln!(
                s,
                "  verify [{}] {}: {} — {}",
                v.step,
                v.check,
                if v.ok { "ok" } else { "FAILED" },
                v.detail
            );
        }
        let _ = writeln!(
            s,
            "  cleanup: {} ({} on-failure, {} always steps; {} children killed, {} writers stopped)",
            if self.cleanup.ok { "ok" } else { "INCOMPLETE" },
            self.cleanup.on_failure_steps,
            self.cleanup.always_steps,
            self.cleanup.children_killed,
            self.cleanup.writers_stopped
        );
        s
    }

    /// Markdown, for the record.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# DR drill report: {}\n", self.drill);
        let _ = writeln!(s, "| | |\n|---|---|");
        let verdict = match self.verdict {
            Verdict::Passed => "**PASSED** (all targets met)".to_string(),
            Verdict::TargetMissed => format!("**TARGET MISSED**: {}", self.missed().join("; ")),
            Verdict::Failed => format!(
                "**FAILED** at {}",
                self.failed_step.clone().unwrap_or_default()
            ),
        };
        for (k, v) in [
            ("Verdict", verdict),
            ("Owner", self.owner.clone()),
            ("Description", self.description.clone()),
            ("Runbook", format!("`{}`", self.runbook)),
            ("Host", self.host.clone()),
            ("Started", self.started.clone()),
            (
                "Finished",
                format!("{} ({:.2} s)", self.finished, self.duration_secs),
            ),
            (
                "Failure instant",
                self.failure_at.clone().unwrap_or_else(|| "none".into()),
            ),
            (
                "Recovery point",
                self.recovery_point
                    .as_ref()
                    .map_or_else(|| "none".into(), |r| format!("{} at {}", r.source, r.time)),
            ),
            ("Real RPO", secs(self.rpo_secs)),
            ("Real RTO", secs(self.rto_secs)),
        ] {
            let _ = writeln!(s, "| {k} | {} |", v.replace('|', "\\|"));
        }
        let _ = writeln!(
            s,
            "\n## Targets\n\n| Target | Objective | Measured | Result |\n|---|---|---|---|"
        );
        for t in &self.targets {
            let _ = writeln!(
                s,
                "| {} | ≤ {} s | {} | {} |",
                t.target.to_uppercase(),
                t.target_secs,
                secs(t.measured_secs),
                if t.met { "met" } else { "**missed**" }
            );
        }
        let _ = writeln!(s, "\n## Steps\n\n| # | Phase | Step | Action | Result | Seconds | Detail |\n|---|---|---|---|---|---|---|");
        for st in &self.steps {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} | {} |",
                st.number,
                st.phase.table(),
                st.name.replace('|', "\\|"),
                st.action,
                st.status.word(),
                st.duration_secs,
                st.detail.replace('|', "\\|").replace('\n', " ")
            );
        }
        let _ = writeln!(
            s,
            "\n## Verifications\n\n| Step | Check | Result | Detail |\n|---|---|---|---|"
        );
        for v in &self.verifications {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                v.step,
                v.check,
                if v.ok { "ok" } else { "**failed**" },
                v.detail.replace('|', "\\|")
            );
        }
        let _ = writeln!(
            s,
            "\n## Cleanup\n\n{}: {} on-failure and {} always steps run, {} child processes killed, {} writers stopped.",
            if self.cleanup.ok { "Complete" } else { "**Incomplete**" },
            self.cleanup.on_failure_steps,
            self.cleanup.always_steps,
            self.cleanup.children_killed,
            self.cleanup.writers_stopped
        );
        let _ = writeln!(s, "\n## Parameters\n");
        for (k, v) in &self.params {
            let _ = writeln!(s, "- `{k}` = `{v}`");
        }
        s
    }

    /// HTML, for the record (self-contained, no scripts).
    pub fn html(&self) -> String {
        let e = |x: &str| {
            x.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let mut s = String::new();
        let _ = write!(
            s,
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>DR drill {}</title>\
             <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #999;padding:4px 8px;text-align:left}}.bad{{color:#b00;font-weight:bold}}\
             .ok{{color:#070}}</style></head><body>\n<h1>DR drill report: {}</h1>\n<table>\n",
            e(&self.drill),
            e(&self.drill)
        );
        let verdict = match self.verdict {
            Verdict::Passed => "<span class=\"ok\">PASSED (all targets met)</span>".to_string(),
            Verdict::TargetMissed => format!(
                "<span class=\"bad\">TARGET MISSED: {}</span>",
                e(&self.missed().join("; "))
            ),
            Verdict::Failed => format!(
                "<span class=\"bad\">FAILED at {}</span>",
                e(&self.failed_step.clone().unwrap_or_default())
            ),
        };
        let rows = [
            ("Owner", e(&self.owner)),
            ("Description", e(&self.description)),
            ("Runbook", e(&self.runbook)),
            ("Host", e(&self.host)),
            ("Started", e(&self.started)),
            (
                "Finished",
                format!("{} ({:.2} s)", e(&self.finished), self.duration_secs),
            ),
            (
                "Failure instant",
                e(self.failure_at.as_deref().unwrap_or("none")),
            ),
            (
                "Recovery point",
                e(&self
                    .recovery_point
                    .as_ref()
                    .map_or_else(|| "none".into(), |r| format!("{} at {}", r.source, r.time))),
            ),
            ("Real RPO", secs(self.rpo_secs)),
            ("Real RTO", secs(self.rto_secs)),
        ];
        let _ = writeln!(s, "<tr><th>Verdict</th><td>{verdict}</td></tr>");
        for (k, v) in rows {
            let _ = writeln!(s, "<tr><th>{k}</th><td>{v}</td></tr>");
        }
        let _ = writeln!(s, "</table>\n<h2>Targets</h2>\n<table><tr><th>Target</th><th>Objective</th><th>Measured</th><th>Result</th></tr>");
        for t in &self.targets {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>≤ {} s</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                t.target.to_uppercase(),
                t.target_secs,
                secs(t.measured_secs),
                if t.met { "ok" } else { "bad" },
                if t.met { "met" } else { "missed" }
            );
        }
        let _ = writeln!(s, "</table>\n<h2>Steps</h2>\n<table><tr><th>#</th><th>Phase</th><th>Step</th><th>Action</th><th>Result</th><th>Seconds</th><th>Detail</th></tr>");
        for st in &self.steps {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{:.2}</td><td>{}</td></tr>",
                st.number,
                st.phase.table(),
                e(&st.name),
                st.action,
                if matches!(st.status, StepStatus::Ok) { "ok" } else { "bad" },
                st.status.word(),
                st.duration_secs,
                e(&st.detail)
            );
        }
        let _ = writeln!(s, "</table>\n<h2>Verifications</h2>\n<table><tr><th>Step</th><th>Check</th><th>Result</th><th>Detail</th></tr>");
        for v in &self.verifications {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                e(&v.step),
                e(&v.check),
                if v.ok { "ok" } else { "bad" },
                if v.ok { "ok" } else { "failed" },
                e(&v.detail)
            );
        }
        let _ = writeln!(
            s,
            "</table>\n<h2>Cleanup</h2>\n<p>{}: {} on-failure and {} always steps run, {} child processes killed, {} writers stopped.</p>\n<h2>Parameters</h2>\n<ul>",
            if self.cleanup.ok { "Complete" } else { "Incomplete" },
            self.cleanup.on_failure_steps,
            self.cleanup.always_steps,
            self.cleanup.children_killed,
            self.cleanup.writers_stopped
        );
        for (k, v) in &self.params {
            let _ = writeln!(s, "<li><code>{}</code> = <code>{}</code></li>", e(k), e(v));
        }
        let _ = writeln!(s, "</ul>\n</body></html>");
        s
    }
}

/// The `palisade.drill` event for a report: the verdict, RPO/RTO against the targets, and the
/// figures under `palisade.drill`.
pub fn drill_event(r: &DrillReport) -> Event {
    let severity = match r.verdict {
        Verdict::Passed => Severity::Info,
        Verdict::TargetMissed => Severity::Medium,
        Verdict::Failed => Severity::High,
    };
    let outcome = match r.verdict {
        Verdict::Passed => "success",
        _ => "failure",
    };
    let message = format!(
        "drill {}: {} (RPO {}, RTO {})",
        r.drill,
        match r.verdict {
            Verdict::Passed => "passed, all targets met".to_string(),
            Verdict::TargetMissed => r.missed().join("; "),
            Verdict::Failed => format!("failed at {}", r.failed_step.clone().unwrap_or_default()),
        },
        secs(r.rpo_secs),
        secs(r.rto_secs)
    );
    let mut e = Event::new("replicator", EventKind::Drill, severity)
        .with_message(message)
        .with_details(serde_json::json!({ "drill": {
            "name": r.drill, "owner": r.owner, "runbook": r.runbook, "outcome": outcome,
            "verdict": r.verdict, "started": r.started, "finished": r.finished,
            "failure_at": r.failure_at, "recovery_point": r.recovery_point,
            "rpo_secs": r.rpo_secs, "rto_secs": r.rto_secs, "targets": r.targets,
            "failed_step": r.failed_step, "steps": r.steps.len(),
            "verifications": r.verifications.iter().filter(|v| v.ok).count(),
            "cleanup_ok": r.cleanup.ok,
        }}));
    e.event.action = Some(r.drill.clone());
    e.event.outcome = Some(outcome.to_string());
    e
}
