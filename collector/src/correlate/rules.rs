//! Loading a Sigma rule directory: every `*.yml`/`*.yaml` under it (except `tests/`), each
//! document parsed on its own so that an error names the file and the line its document starts
//! on. A rule set is all-or-nothing: one bad document and the whole new set is refused, so the
//! running correlator keeps the set it had (see `Correlator::reload`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rsigma_eval::{CorrelationConfig, CorrelationEngine};

use super::engine::{Correlations, Limits};
use rsigma_parser::{parse_sigma_yaml, Level, SigmaCollection};

/// A problem in one rule file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line the offending document starts on (0 when the problem is not in one file).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
        }
    }
}

impl std::error::Error for RuleError {}

/// Where a rule was defined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleInfo {
    /// Rule id (Sigma `id`, or the title when a rule has none).
    pub id: String,
    /// Title.
    pub title: String,
    /// `detection` or the correlation type (`event_count`, `temporal`, …).
    pub kind: String,
    /// Sigma level.
    pub level: String,
    /// File it came from.
    pub file: PathBuf,
    /// Line its document starts on.
    pub line: usize,
}

/// A parsed, checked rule set.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// Every rule and correlation, merged.
    pub collection: SigmaCollection,
    /// What each rule is and where it lives.
    pub rules: Vec<RuleInfo>,
    /// Non-fatal remarks from the parser.
    pub warnings: Vec<RuleError>,
    /// Identity of the files loaded (paths, sizes, mtimes), to notice changes.
    pub fingerprint: u64,
    /// Detection rules that raise no alert of their own (Sigma's `generate: false`, the
    /// default): every correlation that refers to them leaves `generate` unset or false.
    pub quiet: std::collections::BTreeSet<String>,
}

/// The Sigma level as our severity.
pub fn severity_of(level: Option<Level>) -> palisade_wire::Severity {
    use palisade_wire::Severity;
    match level {
        Some(Level::Critical) => Severity::Critical,
        Some(Level::High) => Severity::High,
        Some(Level::Medium) => Severity::Medium,
        Some(Level::Low) => Severity::Low,
        Some(Level::Informational) | None => Severity::Info,
    }
}

fn level_name(level: Option<Level>) -> String {
    level
        .map(|l| l.as_str().to_string())
        .unwrap_or_else(|| "informational".into())
}

/// The rule files under `dir`, sorted, skipping the `tests` folder and hidden entries.
pub fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, RuleError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| RuleError {
            file: d.clone(),
            line: 0,
            reason: format!("cannot read rule directory: {e}"),
        })?;
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                if name != "tests" {
                    stack.push(p);
                }
            } else if name.ends_with(".yml") || name.ends_with(".yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Fingerprint of the files' names, sizes and modification times: cheap to recompute every
/// couple of seconds, changes whenever a rule file is added, removed or rewritten.
pub fn fingerprint(dir: &Path) -> u64 {
    let mut h = blake3::Hasher::new();
    if let Ok(files) = rule_files(dir) {
        for f in files {
            h.update(f.as_os_str().as_encoded_bytes());
            if let Ok(m) = std::fs::metadata(&f) {
                h.update(&m.len().to_le_bytes());
                if let Ok(t) = m.modified() {
                    if let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) {
                        h.update(&d.as_nanos().to_le_bytes());
                    }
                }
            }
        }
    }
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Splits YAML text into documents at `---` lines: (first line number, text).
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            if !cur.trim().is_empty() {
                docs.push((start, std::mem::take(&mut cur)));
            }
            cur.clear();
            start = i + 2;
            continue;
        }
        if cur.is_empty() && line.trim().is_empty() {
            start = i + 2;
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    if !cur.trim().is_empty() {
        docs.push((start, cur));
    }
    docs
}

/// Only comments?
fn blank(doc: &str) -> bool {
    doc.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

/// Parses one file's text into `into`, recording where each rule is.
pub fn parse_text(
    file: &Path,
    text: &str,
    into: &mut SigmaCollection,
    infos: &mut Vec<RuleInfo>,
    warnings: &mut Vec<RuleError>,
) -> Result<(), RuleError> {
    for (line, doc) in documents(text) {
        if blank(&doc) {
            continue;
        }
        let err = |reason: String| RuleError {
            file: file.to_path_buf(),
            line,
            reason,
        };
        let parsed = parse_sigma_yaml(&doc).map_err(|e| err(e.to_string()))?;
        let produced = parsed.rules.len() + parsed.correlations.len();
        if produced == 0 {
            let reason = if parsed.errors.is_empty() {
                "document is neither a Sigma rule nor a correlation".to_string()
            } else {
                parsed.errors.join("; ")
            };
            return Err(err(reason));
        }
        for w in parsed.errors {
            warnings.push(err(w));
        }
        for r in &parsed.rules {
            if r.id.is_none() {
                return Err(err(format!(
                    "rule {:?} has no id (correlations and tests refer to rules by id)",
                    r.title
                )));
            }
            infos.push(RuleInfo {
                id: r.id.clone().unwrap_or_else(|| r.title.clone()),
                title: r.title.clone(),
                kind: "detection".into(),
                level: level_name(r.level),
                file: file.to_path_buf(),
                line,
            });
        }
        for c in &parsed.correlations {
            if c.id.is_none() {
                return Err(err(format!("correlation {:?} has no id", c.title)));
            }
            infos.push(RuleInfo {
                id: c.id.clone().unwrap_or_else(|| c.title.clone()),
                title: c.title.clone(),
                kind: c.correlation_type.as_str().to_string(),
                level: level_name(c.level),
                file: file.to_path_buf(),
                line,
            });
        }
        into.rules.extend(parsed.rules);
        into.correlations.extend(parsed.correlations);
        into.filters.extend(parsed.filters);
    }
    Ok(())
}

/// The ids of detection rules referenced only by correlations with `generate: false` (Sigma's
/// default: a rule a correlation is built on is a building block, not an alert). A rule
/// referenced by at least one correlation with `generate: true`, or by none, raises alerts.
pub fn quiet_rules(c: &SigmaCollection) -> std::collections::BTreeSet<String> {
    use std::collections::{BTreeSet, HashMap};
    // Correlations may refer to a rule by id or by name.
    let mut id_of: HashMap<&str, &str> = HashMap::new();
    for r in &c.rules {
        if let Some(id) = r.id.as_deref() {
            id_of.insert(id, id);
            if let Some(n) = r.name.as_deref() {
                id_of.insert(n, id);
            }
        }
    }
    let mut silent = BTreeSet::new();
    let mut loud = BTreeSet::new();
    for corr in &c.correlations {
        for reference in &corr.rules {
            let Some(id) = id_of.get(reference.as_str()) else {
                continue;
            };
            if corr.generate {
                loud.insert(id.to_string());
            } else {
                silent.insert(id.to_string());
            }
        }
    }
    silent.difference(&loud).cloned().collect()
}

impl RuleSet {
    /// No rules.
    pub fn empty() -> RuleSet {
        RuleSet {
            collection: SigmaCollection::new(),
            rules: Vec::new(),
            warnings: Vec::new(),
            fingerprint: 0,
            quiet: Default::default(),
        }
    }

    /// Loads and checks every rule file under `dir`: parse errors, duplicate ids, correlations
    /// referring to rules that do not exist. The first problem found is returned.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleError> {
        let fp = fingerprint(dir);
        let mut texts = Vec::new();
        for file in rule_files(dir)? {
            let text = std::fs::read_to_string(&file).map_err(|e| RuleError {
                file: file.clone(),
                line: 0,
                reason: format!("cannot read: {e}"),
            })?;
            texts.push((file, text));
        }
        RuleSet::from_texts(fp, &texts)
    }

    /// [`RuleSet::load_dir`] on files already read: `(path, text)` in load order.
    pub fn from_texts(fp: u64, texts: &[(PathBuf, String)]) -> Result<RuleSet, RuleError> {
        let mut collection = SigmaCollection::new();
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        for (file, text) in texts {
            parse_text(file, text, &mut collection, &mut rules, &mut warnings)?;
        }
        let quiet = quiet_rules(&collection);
        let set = RuleSet {
            collection,
            rules,
            warnings,
            fingerprint: fp,
            quiet,
        };
        set.check()?;
        Ok(set)
    }

    /// Duplicate ids, dangling references, and whatever the engine refuses to compile.
    pub fn check(&self) -> Result<(), RuleError> {
        let mut seen: HashMap<&str, &RuleInfo> = HashMap::new();
        for r in &self.rules {
            if let Some(first) = seen.insert(&r.id, r) {
                return Err(RuleError {
                    file: r.file.clone(),
                    line: r.line,
                    reason: format!(
                        "rule id {:?} is already used at {}:{}",
                        r.id,
                        first.file.display(),
                        first.line
                    ),
                });
            }
        }
        let names: HashMap<&str, ()> = self
            .collection
            .rules
            .iter()
            .filter_map(|r| r.name.as_deref())
            .chain(
                self.collection
                    .correlations
                    .iter()
                    .filter_map(|c| c.name.as_deref()),
            )
            .map(|n| (n, ()))
            .collect();
        for c in &self.collection.correlations {
            let at = self.locate(c.id.as_deref().unwrap_or(&c.title));
            for referenced in &c.rules {
                if !seen.contains_key(referenced.as_str())
                    && !names.contains_key(referenced.as_str())
                {
                    return Err(RuleError {
                        file: at.0,
                        line: at.1,
                        reason: format!(
                            "correlation {:?} refers to rule {referenced:?}, which no loaded file defines",
                            c.title
                        ),
                    });
                }
            }
        }
        self.engine(CorrelationConfig::default())?;
        self.correlator(super::limits(&super::CorrelationSettings::default()))
            .map(|_| ())
    }

    fn locate(&self, id: &str) -> (PathBuf, usize) {
        self.rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| (r.file.clone(), r.line))
            .unwrap_or_default()
    }

    /// A fresh rsigma engine over this set (the reference the checks and the differential
    /// test use; the correlator runs [`RuleSet::correlator`]).
    pub fn engine(&self, config: CorrelationConfig) -> Result<CorrelationEngine, RuleError> {
        let mut engine = CorrelationEngine::new(config);
        engine.add_collection(&self.collection).map_err(|e| {
            let reason = e.to_string();
            // Point at the rule the message names, or else find it by compiling one at a time.
            let at = self
                .rules
                .iter()
                .find(|r| reason.contains(&r.id) || reason.contains(&r.title))
                .map(|r| (r.file.clone(), r.line))
                .or_else(|| self.culprit().map(|id| self.locate(&id)))
                .unwrap_or_default();
            let reason = match self.info_at(&at) {
                Some(r) => format!("rule {}: {reason}", r.id),
                None => reason,
            };
            RuleError {
                file: at.0,
                line: at.1,
                reason,
            }
        })?;
        Ok(engine)
    }

    /// The engine the correlator runs: rsigma for detection, our store for correlations.
    pub fn correlator(&self, limits: Limits) -> Result<Correlations, RuleError> {
        Correlations::new(&self.collection, limits).map_err(|e| {
            let at = e
                .rule
                .as_deref()
                .map(|id| self.locate(id))
                .unwrap_or_default();
            let reason = match &e.rule {
                Some(id) => format!("rule {id}: {}", e.reason),
                None => e.reason,
            };
            RuleError {
                file: at.0,
                line: at.1,
                reason,
            }
        })
    }

    fn info_at(&self, at: &(PathBuf, usize)) -> Option<&RuleInfo> {
        self.rules.iter().find(|r| r.file == at.0 && r.line == at.1)
    }

    /// The id of the first rule (then correlation) the engine refuses on its own.
    fn culprit(&self) -> Option<String> {
        for r in &self.collection.rules {
            let mut one = SigmaCollection::new();
            one.rules.push(r.clone());
            if CorrelationEngine::new(CorrelationConfig::default())
                .add_collection(&one)
                .is_err()
            {
                return r.id.clone();
            }
        }
        for c in &self.collection.correlations {
            let mut with = SigmaCollection::new();
            with.rules = self.collection.rules.clone();
            with.correlations.push(c.clone());
            if CorrelationEngine::new(CorrelationConfig::default())
                .add_collection(&with)
                .is_err()
            {
                return c.id.clone();
            }
        }
        None
    }

    /// Rule id → info.
    pub fn info(&self, id: &str) -> Option<&RuleInfo> {
        self.rules.iter().find(|r| r.id == id)
    }
}

/// Entry point for the `sigma_rules` fuzz target.
#[doc(hidden)]
pub mod fuzzing {
    /// Loads arbitrary text as one rule file, as `serve` and `rules check` do: every YAML
    /// document parsed as a Sigma rule or correlation, the set checked (ids, references) and
    /// compiled into both engines.
    pub fn sigma_rules(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let _ = super::RuleSet::from_texts(0, &[("fuzz.yml".into(), text.to_string())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "title: Scan\nid: t-scan\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    rule.id: pal.scan\n  condition: sel\nlevel: high\n";

    #[test]
    fn errors_name_the_file_and_the_line_of_the_document() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yml"), GOOD).unwrap();
        let first = GOOD.replace("t-scan", "t-other");
        let bad = format!("{first}---\n# second\ntitle: Broken\nid: t-broken\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    rule.id: x\n  condition: sel and nothere\n");
        std::fs::write(dir.path().join("b.yml"), bad).unwrap();
        let err = RuleSet::load_dir(dir.path()).unwrap_err();
        assert!(err.file.ends_with("b.yml"), "{err}");
        assert_eq!(err.line, 11, "{err}");
        assert!(err.to_string().contains("nothere"), "{err}");
    }

    #[test]
    fn duplicate_ids_and_dangling_correlations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yml"), GOOD).unwrap();
        std::fs::write(dir.path().join("b.yml"), GOOD).unwrap();
        let err = RuleSet::load_dir(dir.path()).unwrap_err();
        assert!(err.reason.contains("already used"), "{err}");

        std::fs::remove_file(dir.path().join("b.yml")).unwrap();
        std::fs::write(
            dir.path().join("c.yml"),
            "title: Many\nid: t-many\ncorrelation:\n  type: event_count\n  rules:\n    - t-nope\n  group-by:\n    - source.ip\n  timespan: 5m\n  condition:\n    gte: 3\nlevel: high\n",
        )
        .unwrap();
        let err = RuleSet::load_dir(dir.path()).unwrap_err();
        assert!(err.reason.contains("t-nope"), "{err}");
        assert!(err.file.ends_with("c.yml"), "{err}");
    }

    #[test]
    fn the_tests_folder_is_not_rules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yml"), GOOD).unwrap();
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(dir.path().join("tests/a.yml"), "cases: []\n").unwrap();
        let set = RuleSet::load_dir(dir.path()).unwrap();
        assert_eq!(set.rules.len(), 1);
        assert_eq!(set.rules[0].id, "t-scan");
    }
}
