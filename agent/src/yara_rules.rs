//! YARA-X rule sets loaded from a directory (`signatures/yara/` by default), shared by the network
//! payload detector and the host file scanner.
//!
//! Every `*.yar` / `*.yara` file in the directory (not recursively, in name order) is compiled into
//! one [`yara_x::Rules`], each file in its own namespace (its file stem), so two files may use the
//! same rule name. A file that does not compile is an error naming `file:line:column` and the
//! reason; the caller keeps the rule set it had. Slow patterns (ones yara-x would have to verify
//! at almost every offset) are refused rather than warned about: on a probe they would stall the
//! packet path.
//!
//! Rule metadata the agent reads (all optional): `id` (stable rule id for alerts, default
//! `namespace.rule`), `description`, `severity` (`info|low|medium|high|critical`, default
//! `high`), `category` (e.g. `sqli`, `webshell`), `scope` (`network|file|any`, default `any`: which
//! scanner may report the rule, see [`Scope`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_wire::Severity;

/// Why a rule directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The directory is missing or unreadable.
    #[error("YARA rule directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A rule file could not be read.
    #[error("cannot read YARA rule file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A rule file does not compile.
    #[error("{path}:{line}:{column}: {reason}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// 1-based line of the first error.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The compiler's message.
        reason: String,
    },
    /// A rule's metadata is invalid.
    #[error("{path}: rule {rule}: {reason}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// The rule.
        rule: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where a rule applies: meta `scope = "network" | "file" | "any"` (default any).
///
/// Network and file rules share one directory and one compiled set; each scanner reports only
/// the rules that cover what it scans (an SQL injection rule would flag every PHP file that builds
/// a query, and a webshell-source rule every download of a PHP file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scope {
    /// Payloads and files.
    #[default]
    Any,
    /// Payloads on the wire only (the network detector).
    Network,
    /// Files on disk only (the host file scanner).
    File,
}

impl Scope {
    /// True when the network detector reports the rule.
    pub fn covers_network(self) -> bool {
        matches!(self, Scope::Any | Scope::Network)
    }

    /// True when the host file scanner reports the rule.
    pub fn covers_files(self) -> bool {
        matches!(self, Scope::Any | Scope::File)
    }

    /// The meta value naming this scope.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Any => "any",
            Scope::Network => "network",
            Scope::File => "file",
        }
    }

    fn from_meta(value: &str) -> Option<Scope> {
        [Scope::Any, Scope::Network, Scope::File]
            .into_iter()
            .find(|s| s.name() == value)
    }
}

/// What an alert says about a matching rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// Stable id (`meta: id`, else `namespace.rule`).
    pub id: String,
    /// The rule's identifier.
    pub name: String,
    /// The namespace (file stem).
    pub namespace: String,
    /// `meta: description`.
    pub description: Option<String>,
    /// `meta: severity`, default high.
    pub severity: Severity,
    /// `meta: category`.
    pub category: Option<String>,
    /// `meta: scope`, default any.
    pub scope: Scope,
}

/// A compiled rule set and what the agent knows about each rule.
pub struct RuleSet {
    rules: yara_x::Rules,
    /// Rule info by (namespace, identifier).
    info: Vec<RuleInfo>,
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.info.len())
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// True for a file the loader compiles.
pub fn is_rule_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e == "yar" || e == "yara")
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// `(path, text)` of every rule file in `dir`, sorted by path.
fn read_sources(dir: &Path) -> Result<Vec<(PathBuf, String)>, RulesError> {
    let dir_err = |source| RulesError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(dir_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_rule_file(p) && p.is_file())
        .collect();
    files.sort();
    let mut sources = Vec::with_capacity(files.len());
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.clone(),
            source,
        })?;
        sources.push((path.clone(), text));
    }
    Ok(sources)
}

impl RuleSet {
    /// Compiles every rule file in `dir`. An empty directory gives an empty rule set.
    pub fn load_dir(dir: &Path) -> Result<Self, RulesError> {
        Self::compile(&read_sources(dir)?)
    }

    /// Compiles every rule file in `dir` (so an error anywhere is reported), then keeps only
    /// the files with a rule whose scope covers `want`: the network detector does not spend
    /// scan time on file-only rules, nor the file scanner on network-only ones.
    pub fn load_dir_for(dir: &Path, want: Scope) -> Result<Self, RulesError> {
        let mut sources = read_sources(dir)?;
        let all = Self::compile(&sources)?;
        let covers = |s: Scope| match want {
            Scope::Network => s.covers_network(),
            Scope::File => s.covers_files(),
            Scope::Any => true,
        };
        let before = sources.len();
        sources.retain(|(p, _)| {
            let ns = p.file_stem().and_then(|s| s.to_str()).unwrap_or("default");
            all.info
                .iter()
                .any(|i| i.namespace == ns && covers(i.scope))
        });
        if sources.len() == before {
            return Ok(all);
        }
        Self::compile(&sources)
    }

    /// Compiles `(path, text)` sources, each in the namespace of its file stem.
    pub fn compile(sources: &[(PathBuf, String)]) -> Result<Self, RulesError> {
        let mut compiler = yara_x::Compiler::new();
        compiler.error_on_slow_pattern(true);
        compiler.colorize_errors(false);
        for (path, text) in sources {
            let namespace = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("default")
                .to_string();
            compiler.new_namespace(&namespace);
            let src =
                yara_x::SourceCode::from(text.as_str()).with_origin(path.display().to_string());
            if let Err(e) = compiler.add_source(src) {
                let offset = e.labels().next().map_or(0, |l| l.span().range().start);
                let (line, column) = line_col(text, offset);
                let mut reason = e.title().to_string();
                if let Some(label) = e.labels().next() {
                    if !label.text().is_empty() && label.text() != reason {
                        reason = format!("{reason}: {}", label.text());
                    }
                }
                return Err(RulesError::Compile {
                    path: path.clone(),
                    line,
                    column,
                    reason,
                });
            }
        }
        let rules = compiler.build();
        let mut info = Vec::new();
        for rule in rules.iter() {
            info.push(rule_info(&rule).map_err(|reason| {
                RulesError::Meta {
                    path: sources
                        .iter()
                        .find(|(p, _)| {
                            p.file_stem().and_then(|s| s.to_str()) == Some(rule.namespace())
                        })
                        .map_or_else(PathBuf::new, |(p, _)| p.clone()),
                    rule: rule.identifier().to_string(),
                    reason,
                }
            })?);
        }
        Ok(RuleSet {
            rules,
            info,
            files: sources.iter().map(|(p, _)| p.clone()).collect(),
        })
    }

    /// The compiled rules, for a [`yara_x::Scanner`].
    pub fn rules(&self) -> &yara_x::Rules {
        &self.rules
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.info.len()
    }

    /// True when there is no rule.
    pub fn is_empty(&self) -> bool {
        self.info.is_empty()
    }

    /// What the agent knows about rule `identifier` in `namespace`.
    pub fn info(&self, namespace: &str, identifier: &str) -> Option<&RuleInfo> {
        self.info
            .iter()
            .find(|i| i.namespace == namespace && i.name == identifier)
    }

    /// The files compiled.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

fn rule_info(rule: &yara_x::Rule<'_, '_>) -> Result<RuleInfo, String> {
    let mut info = RuleInfo {
        id: format!("{}.{}", rule.namespace(), rule.identifier()),
        name: rule.identifier().to_string(),
        namespace: rule.namespace().to_string(),
        description: None,
        severity: Severity::High,
        category: None,
        scope: Scope::Any,
    };
    for (key, value) in rule.metadata() {
        let text = match value {
            yara_x::MetaValue::String(s) => Some(s.to_string()),
            // yara-x hands back a string with an escape (`\"`) as bytes.
            yara_x::MetaValue::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_string),
            _ => None,
        };
        match (key, text) {
            ("id", Some(t)) => info.id = t,
            ("description", Some(t)) => info.description = Some(t),
            ("category", Some(t)) => info.category = Some(t),
            ("severity", Some(t)) => {
                info.severity = t.parse().map_err(|_| {
                    format!("severity {t:?} is not one of info, low, medium, high, critical")
                })?;
            }
            ("scope", Some(t)) => {
                info.scope = Scope::from_meta(&t)
                    .ok_or_else(|| format!("scope {t:?} is not one of network, file, any"))?;
            }
            ("id" | "description" | "category" | "severity" | "scope", None) => {
                return Err(format!("meta {key} must be a string"));
            }
            _ => {}
        }
    }
    Ok(info)
}

/// One matched string of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedString {
    /// The pattern's identifier (`$a`).
    pub pattern: String,
    /// Byte range in the scanned buffer.
    pub range: std::ops::Range<usize>,
    /// Up to 64 bytes of the matched data, printable ASCII with other bytes as `\xNN`.
    pub data: String,
}

/// One rule that matched a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// The rule.
    pub rule: RuleInfo,
    /// Up to 4 matched strings.
    pub strings: Vec<MatchedString>,
}

/// How a scan ended other than with results.
#[derive(Debug, thiserror::Error)]
pub enum ScanFailure {
    /// The per-scan time bound passed.
    #[error("scan timed out")]
    Timeout,
    /// Any other scanner error.
    #[error("scan failed: {0}")]
    Other(String),
}

/// Escapes bytes for an event: printable ASCII as is, the rest as `\xNN`, at most `max` input
/// bytes.
pub fn escape_bytes(data: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in data.iter().take(max) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if data.len() > max {
        s.push('…');
    }
    s
}

/// Scans `data` with `scanner` (built on `set`'s rules) and returns the matching rules.
pub fn scan(
    set: &RuleSet,
    scanner: &mut yara_x::Scanner<'_>,
    data: &[u8],
) -> Result<Vec<RuleMatch>, ScanFailure> {
    let results = scanner.scan(data).map_err(|e| match e {
        yara_x::errors::ScanError::Timeout => ScanFailure::Timeout,
        other => ScanFailure::Other(other.to_string()),
    })?;
    let mut out = Vec::new();
    for rule in results.matching_rules() {
        let Some(info) = set.info(rule.namespace(), rule.identifier()) else {
            continue;
        };
        let mut strings = Vec::new();
        'patterns: for pattern in rule.patterns() {
            for m in pattern.matches() {
                if strings.len() == 4 {
                    break 'patterns;
                }
                strings.push(MatchedString {
                    pattern: pattern.identifier().to_string(),
                    range: m.range(),
                    data: escape_bytes(m.data(), 64),
                });
            }
        }
        out.push(RuleMatch {
            rule: info.clone(),
            strings,
        });
    }
    Ok(out)
}

/// A rule set shared between threads.
pub type SharedRules = Arc<RuleSet>;

/// Entry point for the `yara_rules` fuzz target, which has a crate of its own (`fuzz/yara/`): the
/// other targets build without YARA-X (see `fuzz/Cargo.toml`).
#[doc(hidden)]
pub mod fuzzing {
    use std::path::PathBuf;

    /// Largest source compiled: YARA-X compiles to WebAssembly, which takes milliseconds even
    /// for small rules, so bigger inputs would only slow the search down.
    pub const MAX_SOURCE_BYTES: usize = 4096;

    /// Compiles arbitrary text as one rule file, as the agent loads its rule directory (the
    /// error's line and column included, and every rule's metadata read); rules that compile
    /// then scan the source text itself, with the match reporting the detectors use.
    pub fn yara_rules(data: &[u8]) {
        if data.len() > MAX_SOURCE_BYTES {
            return;
        }
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let sources = [(PathBuf::from("fuzz.yar"), text.to_string())];
        match super::RuleSet::compile(&sources) {
            Ok(set) => {
                let mut scanner = yara_x::Scanner::new(set.rules());
                scanner.set_timeout(std::time::Duration::from_secs(1));
                let _ = super::scan(&set, &mut scanner, data);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<RuleSet, RulesError> {
        RuleSet::compile(&[(PathBuf::from("/r/web.yar"), text.to_string())])
    }

    #[test]
    fn compiles_reads_meta_and_matches() {
        let set = compile(
            r#"
rule sqli_union {
  meta:
    id = "PAL-T-1"
    severity = "critical"
    category = "sqli"
    description = "UNION SELECT"
  strings:
    $a = "union select" nocase
  condition:
    $a
}
rule no_meta { strings: $b = "zzz" condition: $b }
"#,
        )
        .unwrap();
        assert_eq!(set.len(), 2);
        let mut scanner = yara_x::Scanner::new(set.rules());
        let m = scan(&set, &mut scanner, b"GET /?q=1 UNION SELECT pass").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].rule.id, "PAL-T-1");
        assert_eq!(m[0].rule.severity, Severity::Critical);
        assert_eq!(m[0].rule.category.as_deref(), Some("sqli"));
        assert_eq!(
            m[0].strings,
            vec![MatchedString {
                pattern: "$a".into(),
                range: 10..22,
                data: "UNION SELECT".into()
            }]
        );
        let m = scan(&set, &mut scanner, b"zzz").unwrap();
        assert_eq!(m[0].rule.id, "web.no_meta");
        assert_eq!(m[0].rule.severity, Severity::High);
        assert!(scan(&set, &mut scanner, b"harmless").unwrap().is_empty());
    }

    #[test]
    fn compile_error_names_file_line_and_column() {
        let err = compile("rule ok { condition: true }\n\nrule bad {\n  condition: $nope\n}\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/r/web.yar:4:14: "), "{err}");
        assert!(err.contains("unknown pattern"), "{err}");
    }

    #[test]
    fn slow_patterns_and_bad_meta_are_refused() {
        let err = compile(r#"rule slow { strings: $a = /a.*/ condition: $a }"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/r/web.yar:1:"), "{err}");
        let err = compile(r#"rule m { meta: severity = "urgent" condition: true }"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("rule m: severity \"urgent\""), "{err}");
    }

    #[test]
    fn scope_meta_is_read_and_an_unknown_scope_is_refused() {
        let set = compile(
            r#"
rule on_wire { meta: scope = "network" condition: true }
rule on_disk { meta: scope = "file" condition: true }
rule both { meta: scope = "any" description = "eval(x,\"unsafe\")" condition: true }
rule unsaid { condition: true }
"#,
        )
        .unwrap();
        let scope = |name| set.info("web", name).unwrap().scope;
        assert_eq!(scope("on_wire"), Scope::Network);
        assert_eq!(scope("on_disk"), Scope::File);
        assert_eq!(scope("both"), Scope::Any);
        assert_eq!(scope("unsaid"), Scope::Any);
        // An escaped quote makes yara-x return the value as bytes; it is still a string.
        assert_eq!(
            set.info("web", "both").unwrap().description.as_deref(),
            Some("eval(x,\"unsafe\")")
        );
        assert!(Scope::Network.covers_network() && !Scope::Network.covers_files());
        assert!(Scope::File.covers_files() && !Scope::File.covers_network());
        assert!(Scope::Any.covers_network() && Scope::Any.covers_files());
        assert_eq!(Scope::File.name(), "file");

        let err = compile(r#"rule typo { meta: scope = "files" condition: true }"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/r/web.yar: rule typo: scope \"files\" is not one of network, file, any"
        );
        let err = compile(r#"rule num { meta: scope = 1 condition: true }"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rule num: meta scope must be a string"),
            "{err}"
        );
    }

    #[test]
    fn load_dir_uses_file_stems_as_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yar"),
            "rule same { strings: $x = \"aaa\" condition: $x }",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.yara"),
            "rule same { strings: $x = \"bbb\" condition: $x }",
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "not a rule").unwrap();
        let set = RuleSet::load_dir(dir.path()).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.files().len(), 2);
        let mut scanner = yara_x::Scanner::new(set.rules());
        let m = scan(&set, &mut scanner, b"bbb").unwrap();
        assert_eq!(m[0].rule.id, "b.same");
        let missing = RuleSet::load_dir(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    /// What a case's input is: a payload (the default) or a file's content.
    #[derive(serde::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[serde(rename_all = "lowercase")]
    enum CaseScope {
        #[default]
        Network,
        File,
    }

    impl CaseScope {
        fn reports(self, rule: &RuleInfo) -> bool {
            match self {
                CaseScope::Network => rule.scope.covers_network(),
                CaseScope::File => rule.scope.covers_files(),
            }
        }
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Case {
        name: String,
        #[serde(default)]
        scope: CaseScope,
        input: Option<String>,
        input_hex: Option<String>,
        expect: Vec<String>,
    }

    #[derive(serde::Deserialize)]
    struct Cases {
        case: Vec<Case>,
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn shipped_rules_pass_their_own_cases() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../signatures/yara");
        let set = RuleSet::load_dir(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join("tests/cases.toml")).unwrap();
        let cases: Cases = toml::from_str(&text).unwrap();
        let mut scanner = yara_x::Scanner::new(set.rules());
        let mut covered = std::collections::BTreeSet::new();
        let mut failures = Vec::new();
        for case in &cases.case {
            let input = match (&case.input, &case.input_hex) {
                (Some(t), None) => t.as_bytes().to_vec(),
                (None, Some(h)) => unhex(h),
                _ => panic!("case {:?}: give exactly one of input, input_hex", case.name),
            };
            // A network case is judged by what the network detector would report, a file case
            // by what the file scanner would.
            let mut got: Vec<String> = scan(&set, &mut scanner, &input)
                .unwrap()
                .into_iter()
                .filter(|m| case.scope.reports(&m.rule))
                .map(|m| m.rule.id)
                .collect();
            got.sort();
            let mut want = case.expect.clone();
            want.sort();
            if got != want {
                failures.push(format!(
                    "{} ({:?}): expected {want:?}, got {got:?}",
                    case.name, case.scope
                ));
            }
            covered.extend(want);
        }
        assert!(
            failures.is_empty(),
            "failing cases:\n{}",
            failures.join("\n")
        );
        // Every shipped rule has at least one must-match case.
        let all: std::collections::BTreeSet<String> =
            set.info.iter().map(|i| i.id.clone()).collect();
        let untested: Vec<_> = all.difference(&covered).collect();
        assert!(
            untested.is_empty(),
            "rules without a must-match case: {untested:?}"
        );
    }

    #[test]
    fn a_consumer_compiles_only_the_files_with_rules_for_it() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../signatures/yara");
        let net = RuleSet::load_dir_for(&dir, Scope::Network).unwrap();
        let file = RuleSet::load_dir_for(&dir, Scope::File).unwrap();
        assert!(net.info.iter().all(|i| i.scope.covers_network()), "{net:?}");
        assert!(file.info.iter().all(|i| i.scope.covers_files()), "{file:?}");
        assert!(!net.is_empty() && !file.is_empty());
        assert_eq!(
            net.len() + file.len(),
            RuleSet::load_dir(&dir).unwrap().len(),
            "every shipped rule is network-only or file-only"
        );
    }

    #[test]
    fn escapes_bytes_for_events() {
        assert_eq!(escape_bytes(b"a\x00b\\", 10), "a\\x00b\\x5c");
        assert_eq!(escape_bytes(b"abcdef", 3), "abc…");
    }
}
