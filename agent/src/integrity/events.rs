//! Integrity findings, baseline changes and monitor notices as wire events (ECS `file.*`,
//! `rule.*`, `palisade.integrity` / `palisade.baseline`).

use palisade_wire::event::Rule;
use palisade_wire::{Event, EventKind, Severity};
use serde_json::json;

use super::config::Protect;
use super::db::Baseline;
use super::verify::{Change, Finding, Report};

/// How a finding was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// A realtime (inotify) event.
    Realtime,
    /// The periodic full verify.
    Scheduled,
    /// A rescan after the realtime queue overflowed.
    Rescan,
    /// Periodic scanning of directories realtime could not watch.
    Polling,
    /// `palisade-agent verify --report`.
    Verify,
}

impl Detection {
    /// Name in events.
    pub fn name(self) -> &'static str {
        match self {
            Detection::Realtime => "realtime",
            Detection::Scheduled => "scheduled",
            Detection::Rescan => "rescan",
            Detection::Polling => "polling",
            Detection::Verify => "verify",
        }
    }
}

fn rule(id: &str, name: &str) -> Rule {
    Rule {
        id: Some(id.to_string()),
        name: Some(name.to_string()),
        category: Some("file".to_string()),
        ruleset: Some("palisade-fim".to_string()),
    }
}

/// The event of one finding. `response` is what anti-tamper did (`Ok("restored")`) or why it
/// could not (`Err`), `None` outside protected trees.
pub fn finding(
    agent_id: &str,
    f: &Finding,
    protect: Protect,
    detection: Detection,
    response: Option<&Result<String, String>>,
) -> Event {
    let severity = match (protect, f.change) {
        (Protect::Restore, _) => Severity::High,
        (_, Change::Changed) if f.attrs.names() == ["mtime"] => Severity::Low,
        _ => Severity::Medium,
    };
    let mut e = Event::new(agent_id, EventKind::Integrity, severity);
    let (id, name, ecs_type) = match f.change {
        Change::Added => ("palisade.fim.added", "File added", "creation"),
        Change::Removed => ("palisade.fim.removed", "File removed", "deletion"),
        Change::Changed => ("palisade.fim.changed", "File changed", "change"),
        Change::TypeChanged => (
            "palisade.fim.type_changed",
            "File replaced by another type",
            "change",
        ),
    };
    e.rule = Some(rule(id, name));
    e.event.category = vec!["file".into(), "intrusion_detection".into()];
    e.event.kind_type = vec![ecs_type.into()];
    e.event.action = Some(format!("file-{}", f.change.name().replace('_', "-")));
    e.file = f
        .new
        .as_ref()
        .or(f.old.as_ref())
        .map(|entry| entry.file_info(&f.path));
    e.host = Some(palisade_wire::event::Host {
        name: crate::sources::hostname(),
        uptime: None,
    });
    let mut details = f.to_json();
    details["protect"] = json!(match protect {
        Protect::Alert => "alert",
        Protect::Restore => "restore",
    });
    details["detected_by"] = json!(detection.name());
    let mut message = f.text();
    if let Some(r) = response {
        match r {
            Ok(done) => {
                details["restored"] = json!(true);
                details["response"] = json!(done);
                message.push_str(&format!(" — {done}"));
            }
            Err(why) => {
                details["restored"] = json!(false);
                details["response_error"] = json!(why);
                e.event.severity = Severity::Critical;
                message.push_str(&format!(" — NOT restored: {why}"));
            }
        }
    }
    e.message = Some(message.split_whitespace().collect::<Vec<_>>().join(" "));
    e.palisade = Some(json!({ "integrity": details }));
    e
}

/// The audit event of a new or updated baseline (who approved which changes), carrying the
/// public key and digest the collector uses to recognise this baseline later.
pub fn baseline(agent_id: &str, b: &Baseline, action: &str, accepted: Option<&Report>) -> Event {
    let mut e = Event::new(agent_id, EventKind::Integrity, Severity::Info);
    e.event.category = vec!["file".into(), "configuration".into()];
    e.event.kind_type = vec!["change".into()];
    e.event.action = Some(action.to_string());
    let h = &b.header;
    let mut details = json!({
        "digest": b.digest,
        "public_key": b.public_key,
        "generation": h.generation,
        "reason": h.reason,
        "approved_by": h.approved_by,
        "files": h.files,
        "dirs": h.dirs,
        "roots": h.roots,
    });
    if let Some(r) = accepted {
        details["accepted"] = json!(r.counts());
        details["accepted_paths"] = json!(r
            .findings
            .iter()
            .take(100)
            .map(|f| format!("{} {}", f.change.name(), f.path.display()))
            .collect::<Vec<_>>());
    }
    e.message = Some(format!(
        "{action}: generation {} ({} files, {} dirs){}",
        h.generation,
        h.files,
        h.dirs,
        h.approved_by
            .as_deref()
            .map(|a| format!(", approved by {a}"))
            .unwrap_or_default()
    ));
    e.palisade = Some(json!({ "baseline": details }));
    e
}

/// A notice from the monitor itself (rescan after overflow, watch limit reached, baseline
/// refused, …).
pub fn notice(
    agent_id: &str,
    rule_id: &str,
    rule_name: &str,
    severity: Severity,
    message: String,
    details: serde_json::Value,
) -> Event {
    let mut e = Event::new(agent_id, EventKind::Integrity, severity);
    e.rule = Some(rule(rule_id, rule_name));
    e.event.category = vec!["file".into()];
    e.event.kind_type = vec!["info".into()];
    e.event.action = Some(rule_id.rsplit('.').next().unwrap_or(rule_id).to_string());
    e.message = Some(message);
    e.palisade = Some(json!({ "integrity": details }));
    e
}
