//! `palisade-collector rules test`: every rule carries test events that must make it fire and
//! events that must not. Cases live in `<rules_dir>/tests/*.yml`:
//!
//! ```yaml
//! cases:
//!   - name: 25 failed logins then a success from one address
//!     fire: [pal-auth-bruteforce-success]
//!     not_fire: [pal-auth-failed-burst-other]
//!     events:
//!       - "@timestamp": 2026-11-22T10:00:00Z
//!         event.dataset: palisade.auth
//!         event.outcome: failure
//!         source.ip: 203.0.113.7
//!         repeat: 25            # optional: this event n times, one second apart
//! ```
//!
//! Keys may be dotted or nested. Missing envelope fields get defaults (agent `test-agent`,
//! dataset `palisade.synthetic`, severity info, sequence in order, time one second after the
//! previous event). Each case runs on a fresh engine over the whole rule set, in event time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use palisade_wire::Event;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::event::SigmaEvent;
use super::rules::{RuleError, RuleSet};
use super::{limits, origin_of, CorrelationSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    fire: Vec<String>,
    #[serde(default)]
    not_fire: Vec<String>,
    events: Vec<Value>,
}

/// One case's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    /// File of the case.
    pub file: PathBuf,
    /// Case name.
    pub name: String,
    /// Passed?
    pub passed: bool,
    /// Rules that had to fire and did not.
    pub missing: Vec<String>,
    /// Rules that must not fire and did.
    pub unexpected: Vec<String>,
    /// Every rule that fired.
    pub fired: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TestReport {
    /// Rules loaded.
    pub rules: usize,
    /// Each case.
    pub cases: Vec<CaseResult>,
    /// Rules no case expects to fire.
    pub without_fire_case: Vec<String>,
    /// Rules no case expects not to fire.
    pub without_not_fire_case: Vec<String>,
    /// Case files that do not load.
    pub errors: Vec<RuleError>,
}

impl TestReport {
    /// Everything passed and every rule is covered both ways.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
            && self.cases.iter().all(|c| c.passed)
            && self.without_fire_case.is_empty()
            && self.without_not_fire_case.is_empty()
    }
}

/// Sets `path` (dotted) in `obj`, creating objects on the way.
fn set_path(obj: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        Some((head, rest)) if head != "@timestamp" => {
            let child = obj
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(m) = child {
                set_path(m, rest, v);
            }
        }
        _ => {
            obj.insert(path.to_string(), v);
        }
    }
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            _ => {
                set_path(into, k, v.clone());
            }
        }
    }
}

/// Builds test events from a case's entries: (typed event, its JSON line).
pub fn build_events(entries: &[Value]) -> Result<Vec<(Event, Vec<u8>)>, String> {
    let mut out = Vec::new();
    // Events without a time start here, one second apart.
    let mut t = palisade_wire::Timestamp(1_767_225_600_000_000_000); // 2026-01-01T00:00:00Z
    for (i, entry) in entries.iter().enumerate() {
        let Value::Object(given) = entry else {
            return Err(format!("event {} is not a mapping", i + 1));
        };
        let mut given = given.clone();
        let repeat = match given.remove("repeat") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=100_000).contains(n))
                .ok_or_else(|| format!("event {}: repeat must be 1..=100000", i + 1))?,
        };
        let explicit = match given.remove("@timestamp") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| format!("event {}: @timestamp must be a string", i + 1))?
                    .parse::<palisade_wire::Timestamp>()
                    .map_err(|e| format!("event {}: @timestamp: {e}", i + 1))?,
            ),
        };
        for copy in 0..repeat {
            let mut obj = Map::new();
            set_path(&mut obj, "agent.id", Value::from("test-agent"));
            set_path(&mut obj, "event.dataset", Value::from("palisade.synthetic"));
            set_path(&mut obj, "event.severity", Value::from(1));
            let mut expanded = Map::new();
            for (k, v) in &given {
                set_path(&mut expanded, k, v.clone());
            }
            merge(&mut obj, &expanded);
            t = match (explicit, copy) {
                (Some(x), 0) => x,
                _ if out.is_empty() => t,
                _ => palisade_wire::Timestamp(t.nanos() + 1_000_000_000),
            };
            obj.insert("@timestamp".into(), Value::from(t.to_string()));
            set_path(
                &mut obj,
                "event.sequence",
                Value::from(out.len() as u64 + 1),
            );
            let dataset = obj
                .get("event")
                .and_then(|e| e.get("dataset"))
                .cloned()
                .unwrap_or(Value::Null);
            let kind: palisade_wire::EventKind = serde_json::from_value(dataset)
                .map_err(|e| format!("event {}: event.dataset: {e}", i + 1))?;
            set_path(&mut obj, "event.kind", Value::from(kind.ecs_kind().name()));
            let value = Value::Object(obj);
            let typed: Event = serde_json::from_value(value.clone())
                .map_err(|e| format!("event {}: {e}", i + 1))?;
            let raw = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
            out.push((typed, raw));
        }
    }
    Ok(out)
}

/// Runs every case under `<dir>/tests` against the rule set in `dir`.
pub fn run(dir: &Path) -> Result<TestReport, RuleError> {
    let set = RuleSet::load_dir(dir)?;
    let settings = CorrelationSettings {
        rules_dir: dir.to_path_buf(),
        suppress_secs: 0,
        ..CorrelationSettings::default()
    };
    let mut report = TestReport {
        rules: set.rules.len(),
        ..TestReport::default()
    };
    let mut fire_cov = BTreeSet::new();
    let mut not_fire_cov = BTreeSet::new();
    let tests_dir = dir.join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for file in files {
        let err = |reason: String| RuleError {
            file: file.clone(),
            line: 0,
            reason,
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                report.errors.push(err(format!("cannot read: {e}")));
                continue;
            }
        };
        let cases: CaseFile = match yaml_serde::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                report.errors.push(err(e.to_string()));
                continue;
            }
        };
        for case in cases.cases {
            for id in case.fire.iter().chain(&case.not_fire) {
                if set.info(id).is_none() {
                    report.errors.push(err(format!(
                        "case {:?} names rule {id:?}, which is not loaded",
                        case.name
                    )));
                }
            }
            let events = match build_events(&case.events) {
                Ok(e) => e,
                Err(e) => {
                    report
                        .errors
                        .push(err(format!("case {:?}: {e}", case.name)));
                    continue;
                }
            };
            let mut engine = set.correlator(limits(&settings))?;
            let mut fired = BTreeSet::new();
            for (typed, raw) in &events {
                let se = SigmaEvent::new(typed, raw);
                let ts = typed.timestamp.nanos().div_euclid(1_000_000_000);
                let out = engine.process(&se, origin_of(typed), ts);
                for r in &out.detections {
                    fired.insert(
                        r.header
                            .rule_id
                            .clone()
                            .unwrap_or_else(|| r.header.rule_title.clone()),
                    );
                }
                for hit in &out.correlations {
                    let c = engine.rule(hit.corr);
                    fired.insert(c.id.clone().unwrap_or_else(|| c.title.clone()));
                }
            }
            let missing: Vec<String> = case
                .fire
                .iter()
                .filter(|id| !fired.contains(*id))
                .cloned()
                .collect();
            let unexpected: Vec<String> = case
                .not_fire
                .iter()
                .filter(|id| fired.contains(*id))
                .cloned()
                .collect();
            fire_cov.extend(case.fire.iter().cloned());
            not_fire_cov.extend(case.not_fire.iter().cloned());
            report.cases.push(CaseResult {
                file: file.clone(),
                name: case.name,
                passed: missing.is_empty() && unexpected.is_empty(),
                missing,
                unexpected,
                fired: fired.into_iter().collect(),
            });
        }
    }
    for r in &set.rules {
        if !fire_cov.contains(&r.id) {
            report.without_fire_case.push(r.id.clone());
        }
        if !not_fire_cov.contains(&r.id) {
            report.without_not_fire_case.push(r.id.clone());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_fails_when_its_rule_does_not_fire_and_coverage_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.yml"),
            "title: Failed login\nid: t-fail\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    event.dataset: palisade.auth\n    event.outcome: failure\n  condition: sel\nlevel: low\n---\ntitle: Brute force\nid: t-brute\ncorrelation:\n  type: event_count\n  rules:\n    - t-fail\n  group-by:\n    - source.ip\n  timespan: 5m\n  condition:\n    gte: 10\nlevel: high\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(
            dir.path().join("tests/r.yml"),
            "cases:\n  - name: ten failures\n    fire: [t-fail, t-brute]\n    events:\n      - event.dataset: palisade.auth\n        event.outcome: failure\n        source.ip: 192.0.2.1\n        repeat: 10\n  - name: nine failures\n    not_fire: [t-brute]\n    fire: [t-brute]\n    events:\n      - event.dataset: palisade.auth\n        event.outcome: failure\n        source.ip: 192.0.2.1\n        repeat: 9\n",
        )
        .unwrap();
        let r = run(dir.path()).unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.cases[0].passed, "{:?}", r.cases[0]);
        assert!(!r.cases[1].passed);
        assert_eq!(r.cases[1].missing, vec!["t-brute".to_string()]);
        assert_eq!(r.without_not_fire_case, vec!["t-fail".to_string()]);
        assert!(!r.ok());
    }

    #[test]
    fn the_shipped_rules_pass_their_own_cases() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../signatures/sigma");
        let r = run(&dir).unwrap();
        let failed: Vec<_> = r.cases.iter().filter(|c| !c.passed).collect();
        assert!(
            r.ok(),
            "errors {:?}, failed {failed:?}, no fire case {:?}, no not-fire case {:?}",
            r.errors,
            r.without_fire_case,
            r.without_not_fire_case
        );
        assert!(r.cases.len() >= 60, "{} cases", r.cases.len());
        // Building blocks of generate:false correlations raise no alerts of their own.
        let set = crate::correlate::rules::RuleSet::load_dir(&dir).unwrap();
        assert!(
            set.quiet.contains("pal-flow-established"),
            "{:?}",
            set.quiet
        );
        assert!(set.quiet.contains("pal-bb-portscan"), "{:?}", set.quiet);
        assert!(!set.quiet.contains("pal-net-portscan"), "{:?}", set.quiet);
    }

    #[test]
    fn dotted_and_nested_keys_build_the_same_event() {
        let a = build_events(&[
            serde_json::json!({"source.ip": "192.0.2.1", "event.dataset": "palisade.flow"}),
        ])
        .unwrap();
        let b = build_events(&[serde_json::json!({"source": {"ip": "192.0.2.1"}, "event": {"dataset": "palisade.flow"}})]).unwrap();
        assert_eq!(a[0].0, b[0].0);
        assert_eq!(a[0].0.agent.id, "test-agent");
    }
}
