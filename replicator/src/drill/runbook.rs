//! The runbook file: TOML with `[drill]` metadata, `[params.NAME]`, and ordered `[[steps]]`,
//! `[[on_failure]]` and `[[always]]` step lists. Parsing is strict (unknown keys, actions and
//! parameters are refused) and every error names the file, the step and the field.
//!
//! Parameters are substituted as `{name}` in every string of the steps and the scope before the
//! steps are decoded, so a step field that is exactly `"{size_mb}"` becomes an integer when the
//! parameter's value is one.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `[drill]`: what the drill is, who owns it, where it may act, and its targets.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Short name, used in report file names and the drill event.
    pub name: String,
    /// Who answers for the drill (team or person).
    pub owner: String,
    /// What the drill exercises.
    #[serde(default)]
    pub description: String,
    /// Paths (prefixes, or globs with `*`) the drill may touch; `{param}` is substituted.
    pub scope: Vec<String>,
    /// Must be `true`: the safety flag that says this file is a drill meant to break things.
    #[serde(default)]
    pub drill: bool,
    /// Recovery point objective, seconds (the age of the recovery point at the failure).
    #[serde(default)]
    pub rpo_target_secs: Option<f64>,
    /// Recovery time objective, seconds (failure to the end of the last successful verify).
    #[serde(default)]
    pub rto_target_secs: Option<f64>,
}

/// `[params.NAME]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDef {
    /// The value when `--param NAME=...` is not given (string, integer or boolean).
    #[serde(default)]
    pub default: Option<toml::Value>,
    /// What the parameter means.
    #[serde(default)]
    pub description: String,
    /// `temp-dir`: an empty value becomes a fresh temporary directory; `port`: an empty or
    /// `0` value becomes a free loopback port.
    #[serde(default)]
    pub fresh: Option<Fresh>,
}

/// Values the runner makes up when a parameter is left empty.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Fresh {
    /// A new directory under the system temp dir.
    TempDir,
    /// A free TCP port on 127.0.0.1.
    Port,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunbook {
    drill: Meta,
    #[serde(default)]
    params: BTreeMap<String, ParamDef>,
    #[serde(default)]
    steps: Vec<toml::Table>,
    #[serde(default)]
    on_failure: Vec<toml::Table>,
    #[serde(default)]
    always: Vec<toml::Table>,
}

/// Which list a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `[[steps]]`.
    Steps,
    /// `[[on_failure]]`: run when a step failed.
    OnFailure,
    /// `[[always]]`: run at the end, whatever happened.
    Always,
}

impl Phase {
    /// The TOML table name.
    pub fn table(self) -> &'static str {
        match self {
            Phase::Steps => "steps",
            Phase::OnFailure => "on_failure",
            Phase::Always => "always",
        }
    }
}

/// One step, decoded.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Its name in the runbook.
    pub name: String,
    /// The list it is in.
    pub phase: Phase,
    /// 1-based position in that list.
    pub index: usize,
    /// Seconds the step may take.
    pub timeout_secs: u64,
    /// What it does.
    pub action: Action,
}

/// Default step timeout.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// A runbook with parameters resolved.
#[derive(Clone, Debug, Serialize)]
pub struct Runbook {
    /// The file it came from.
    pub file: PathBuf,
    /// `[drill]`, scope resolved.
    pub meta: Meta,
    /// Resolved parameter values.
    pub params: BTreeMap<String, String>,
    /// Parameters made up by the runner (fresh temp dirs, ports): name → value.
    pub fresh: BTreeMap<String, String>,
    /// `[[steps]]`.
    pub steps: Vec<Step>,
    /// `[[on_failure]]`.
    pub on_failure: Vec<Step>,
    /// `[[always]]`.
    pub always: Vec<Step>,
}

impl Runbook {
    /// Every step, in list order.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .chain(self.on_failure.iter())
            .chain(self.always.iter())
    }
}

/// How fresh values are made: for real (run) or as placeholders (validate, dry run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// Create temp dirs and pick ports.
    Real,
    /// Placeholders that still name a path inside the scope.
    Placeholder,
}

/// Reads, resolves and checks a runbook: parameters, actions, fields, and the scope of every
/// path a step names.
pub fn load(file: &Path, overrides: &[(String, String)], resolve: Resolve) -> Result<Runbook> {
    let text = std::fs::read_to_string(file).map_err(Error::io("read runbook", file))?;
    parse(&text, file, overrides, resolve)
}

fn bad(file: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Usage(format!("runbook {}: {msg}", file.display()))
}

/// [`load`] on text already read.
pub fn parse(
    text: &str,
    file: &Path,
    overrides: &[(String, String)],
    resolve: Resolve,
) -> Result<Runbook> {
    let raw: RawRunbook = toml::from_str(text).map_err(|e| bad(file, e))?;
    if !raw.drill.drill {
        return Err(bad(
            file,
            "[drill] lacks `drill = true`; refusing to run a file not marked as a drill",
        ));
    }
    if raw.drill.scope.is_empty() {
        return Err(bad(
            file,
            "[drill] scope is empty; a drill must declare where it may act",
        ));
    }
    let mut params = BTreeMap::new();
    let mut fresh = BTreeMap::new();
    for (name, def) in &raw.params {
        if !valid_name(name) {
            return Err(bad(
                file,
                format!("[params.{name}]: a parameter name is a-z 0-9 _"),
            ));
        }
        let v = match &def.default {
            None => String::new(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(toml::Value::Integer(i)) => i.to_string(),
            Some(toml::Value::Boolean(b)) => b.to_string(),
            Some(toml::Value::Float(f)) => f.to_string(),
            Some(other) => {
                return Err(bad(
                    file,
                    format!(
                        "[params.{name}] default: a string, integer or boolean, not {}",
                        other.type_str()
                    ),
                ))
            }
        };
        params.insert(name.clone(), v);
    }
    for (k, v) in overrides {
        if !params.contains_key(k) {
            let known: Vec<&str> = params.keys().map(String::as_str).collect();
            return Err(bad(
                file,
                format!(
                    "--param {k}: unknown parameter (this runbook has: {})",
                    known.join(", ")
                ),
            ));
        }
        params.insert(k.clone(), v.clone());
    }
    for (name, def) in &raw.params {
        let Some(kind) = def.fresh else { continue };
        let v = params.get(name).cloned().unwrap_or_default();
        if !(v.is_empty() || (kind == Fresh::Port && v == "0")) {
            continue;
        }
        let made = match (kind, resolve) {
            (Fresh::TempDir, Resolve::Real) => fresh_temp_dir(&raw.drill.name),
            (Fresh::TempDir, Resolve::Placeholder) => std::env::temp_dir()
                .join(format!("palisade-drill-{}-XXXXXX", raw.drill.name))
                .display()
                .to_string(),
            (Fresh::Port, Resolve::Real) => free_port()
                .map_err(|e| bad(file, format!("[params.{name}]: no free port: {e}")))?
                .to_string(),
            (Fresh::Port, Resolve::Placeholder) => "0".to_string(),
        };
        fresh.insert(name.clone(), made.clone());
        params.insert(name.clone(), made);
    }

    let mut meta = raw.drill.clone();
    for (i, s) in meta.scope.iter_mut().enumerate() {
        *s = substitute_str(s, &params)
            .map_err(|e| bad(file, format!("[drill] scope[{i}]: {e}")))?;
        let p = normalize(Path::new(s.as_str()));
        if p == Path::new("/") || s.trim().is_empty() {
            return Err(bad(
                file,
                format!("[drill] scope[{i}] = {s:?} is the whole filesystem; refused"),
            ));
        }
    }
    let scope = Scope::new(&meta.scope).map_err(|e| bad(file, e))?;

    let decode_list = |phase: Phase, list: &[toml::Table]| -> Result<Vec<Step>> {
        let mut out = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let step = decode_step(phase, i + 1, t, &params).map_err(|e| bad(file, e))?;
            for (field, p) in step.action.paths() {
                scope.check(&p).map_err(|e| {
                    bad(
                        file,
                        format!(
                            "[[{}]] #{} {:?}: field `{field}`: {e}",
                            phase.table(),
                            i + 1,
                            step.name
                        ),
                    )
                })?;
            }
            out.push(step);
        }
        Ok(out)
    };
    let steps = decode_list(Phase::Steps, &raw.steps)?;
    if steps.is_empty() {
        return Err(bad(file, "no [[steps]]"));
    }
    let on_failure = decode_list(Phase::OnFailure, &raw.on_failure)?;
    let always = decode_list(Phase::Always, &raw.always)?;
    let rb = Runbook {
        file: file.to_path_buf(),
        meta,
        params,
        fresh,
        steps,
        on_failure,
        always,
    };
    check_references(&rb).map_err(|e| bad(file, e))?;
    if resolve == Resolve::Real {
        for (name, def) in &raw.params {
            if def.fresh == Some(Fresh::TempDir) {
                if let Some(dir) = rb.fresh.get(name) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        bad(file, format!("[params.{name}]: cannot create {dir}: {e}"))
                    })?;
                }
            }
        }
    }
    Ok(rb)
}

/// Labels and site names a step uses must be defined by an earlier step.
fn check_references(rb: &Runbook) -> std::result::Result<(), String> {
    let mut labels: Vec<String> = Vec::new();
    let mut sites: Vec<String> = Vec::new();
    let mut writers: Vec<String> = Vec::new();
    for s in rb.all_steps() {
        let at = format!("[[{}]] #{} {:?}", s.phase.table(), s.index, s.name);
        let need = |what: &str, name: &str, have: &[String]| {
            if have.iter().any(|h| h == name) {
                Ok(())
            } else {
                Err(format!(
                    "{at}: {what} {name:?} is not defined by an earlier step"
                ))
            }
        };
        match &s.action {
            Action::Snapshot(a) => labels.push(a.label.clone().unwrap_or_else(|| s.name.clone())),
            Action::StartSite(a) => sites.push(a.site.clone()),
            Action::StartWriter(a) => writers.push(a.writer.clone()),
            Action::StopSite(a) => need("site", &a.site, &sites)?,
            Action::StopWriter(a) => need("writer", &a.writer, &writers)?,
            Action::Promote(a) => need("writer", &a.writer, &writers)?,
            Action::Restore(a) => {
                if let Some(l) = a.snapshot.strip_prefix('@') {
                    need("snapshot label", l, &labels)?;
                }
            }
            Action::Verify(a) => {
                if let Some(l) = &a.against {
                    need("snapshot label", l.trim_start_matches('@'), &labels)?;
                }
                if let Some(w) = &a.writer {
                    need("writer", w, &writers)?;
                }
                if let Some(x) = &a.site {
                    need("site", x, &sites)?;
                }
            }
            Action::WaitUntil(a) => {
                if let Some(w) = &a.writer {
                    need("writer", w, &writers)?;
                }
                if let Some(x) = &a.site {
                    need("site", x, &sites)?;
                }
            }
            Action::Assert(a) => {
                if let Some(w) = &a.writer {
                    need("writer", w, &writers)?;
                }
                if let Some(x) = &a.site {
                    need("site", x, &sites)?;
                }
                if let Some(l) = &a.against {
                    need("snapshot label", l.trim_start_matches('@'), &labels)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A new temp dir's path (created only once the whole runbook is valid, so a refused runbook
/// leaves nothing behind).
fn fresh_temp_dir(name: &str) -> String {
    let now = palisade_wire::event::Timestamp::now().nanos();
    std::env::temp_dir()
        .join(format!(
            "palisade-drill-{name}-{}-{:x}",
            std::process::id(),
            now
        ))
        .display()
        .to_string()
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Replaces `{name}` by parameter values; `{x}` with `x` not a parameter is an error.
pub fn substitute_str(
    s: &str,
    params: &BTreeMap<String, String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if valid_name(&after[..close]) => {
                let name = &after[..close];
                let v = params.get(name).ok_or_else(|| {
                    format!(
                        "{{{name}}} is not a parameter of this runbook (declare [params.{name}])"
                    )
                })?;
                out.push_str(v);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn substitute(
    v: &mut toml::Value,
    params: &BTreeMap<String, String>,
) -> std::result::Result<(), String> {
    match v {
        toml::Value::String(s) => {
            let whole = s
                .strip_prefix('{')
                .and_then(|x| x.strip_suffix('}'))
                .filter(|x| valid_name(x))
                .and_then(|x| params.get(x));
            if let Some(val) = whole {
                if let Ok(i) = val.parse::<i64>() {
                    *v = toml::Value::Integer(i);
                    return Ok(());
                }
                if let Ok(b) = val.parse::<bool>() {
                    *v = toml::Value::Boolean(b);
                    return Ok(());
                }
            }
            *s = substitute_str(s, params)?;
        }
        toml::Value::Array(a) => {
            for x in a {
                substitute(x, params)?;
            }
        }
        toml::Value::Table(t) => {
            for (_, x) in t.iter_mut() {
                substitute(x, params)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn decode_step(
    phase: Phase,
    index: usize,
    table: &toml::Table,
    params: &BTreeMap<String, String>,
) -> std::result::Result<Step, String> {
    let mut t = table.clone();
    let name = match t.remove("name") {
        Some(toml::Value::String(s)) => s,
        Some(_) => {
            return Err(format!(
                "[[{}]] #{index}: `name` must be a string",
                phase.table()
            ))
        }
        None => {
            return Err(format!(
                "[[{}]] #{index}: missing field `name`",
                phase.table()
            ))
        }
    };
    let at = format!("[[{}]] #{index} {name:?}", phase.table());
    for (k, v) in t.iter_mut() {
        substitute(v, params).map_err(|e| format!("{at}: field `{k}`: {e}"))?;
    }
    let action = match t.remove("action") {
        Some(toml::Value::String(s)) => s,
        Some(_) => return Err(format!("{at}: `action` must be a string")),
        None => return Err(format!("{at}: missing field `action`")),
    };
    let timeout_secs = match t.remove("timeout_secs") {
        None => DEFAULT_TIMEOUT_SECS,
        Some(toml::Value::Integer(i)) if i > 0 => i as u64,
        Some(v) => {
            return Err(format!(
                "{at}: field `timeout_secs`: a positive integer, not {v}"
            ))
        }
    };
    let action = Action::decode(&action, t).map_err(|e| format!("{at}: {e}"))?;
    action.check().map_err(|e| format!("{at}: {e}"))?;
    Ok(Step {
        name,
        phase,
        index,
        timeout_secs,
        action,
    })
}

/// The paths a drill may touch.
#[derive(Clone, Debug)]
pub struct Scope {
    prefixes: Vec<PathBuf>,
    globs: Vec<(String, globset::GlobMatcher)>,
}

impl Scope {
    /// From the `[drill] scope` entries (already substituted).
    pub fn new(entries: &[String]) -> std::result::Result<Scope, String> {
        let mut prefixes = Vec::new();
        let mut globs = Vec::new();
        for e in entries {
            if e.contains(['*', '?', '[']) {
                let g = globset::Glob::new(&normalize(Path::new(e)).display().to_string())
                    .map_err(|err| format!("[drill] scope {e:?}: {err}"))?;
                globs.push((e.clone(), g.compile_matcher()));
            } else {
                prefixes.push(normalize(Path::new(e)));
            }
        }
        Ok(Scope { prefixes, globs })
    }

    /// Whether `path` (made absolute and normalized, symlinks of existing ancestors resolved) is
    /// inside the scope.
    pub fn check(&self, path: &str) -> std::result::Result<(), String> {
        let p = normalize(Path::new(path));
        let real = resolve_existing(&p);
        for cand in [&p, &real] {
            let inside = self
                .prefixes
                .iter()
                .any(|pre| cand.starts_with(pre) || cand.starts_with(resolve_existing(pre)))
                || self
                    .globs
                    .iter()
                    .any(|(_, g)| cand.ancestors().any(|a| g.is_match(a)));
            if !inside {
                let declared: Vec<String> = self
                    .prefixes
                    .iter()
                    .map(|p| p.display().to_string())
                    .chain(self.globs.iter().map(|(s, _)| s.clone()))
                    .collect();
                return Err(format!(
                    "{} is outside the drill's scope [{}]",
                    cand.display(),
                    declared.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// Absolute, with `.` and `..` folded lexically.
pub fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(x) => out.push(x),
            _ => {}
        }
    }
    out
}

/// The longest existing ancestor canonicalized, with the rest appended.
fn resolve_existing(p: &Path) -> PathBuf {
    let mut tail = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for t in tail.iter().rev() {
                out.push(t);
            }
            return out;
        }
        match (cur.file_name().map(|f| f.to_os_string()), cur.parent()) {
            (Some(f), Some(parent)) => {
                tail.push(f);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

pub use super::actions::Action;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const HEAD: &str = "[drill]\nname = \"t\"\nowner = \"o\"\ndrill = true\nscope = [\"/tmp/drill-unit/{zone}\"]\n\
                        [params.zone]\ndefault = \"a\"\n[params.size]\ndefault = 3\n";

    fn parse_str(body: &str, overrides: &[(&str, &str)]) -> Result<Runbook> {
        let o: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(
            &format!("{HEAD}{body}"),
            Path::new("t.toml"),
            &o,
            Resolve::Placeholder,
        )
    }

    #[test]
    fn params_substitute_with_their_type_and_overrides_win() {
        let rb = parse_str(
            "[[steps]]\nname = \"g\"\naction = \"generate\"\ndir = \"/tmp/drill-unit/{zone}/d\"\nsize_mb = \"{size}\"\n",
            &[("size", "7"), ("zone", "b")],
        )
        .unwrap();
        match &rb.steps[0].action {
            Action::Generate(g) => {
                assert_eq!(g.size_mb, 7);
                assert_eq!(g.dir, "/tmp/drill-unit/b/d");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rb.meta.scope, vec!["/tmp/drill-unit/b".to_string()]);
        assert_eq!(rb.steps[0].timeout_secs, DEFAULT_TIMEOUT_SECS);
    }

    #[test]
    fn unknown_param_action_field_and_reference_are_named() {
        let e = parse_str(
            "[[steps]]\nname = \"f\"\naction = \"fail\"\n",
            &[("nope", "1")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--param nope: unknown parameter"), "{e}");
        let e = parse_str(
            "[[steps]]\nname = \"x\"\naction = \"fail\"\nnote = \"{missing}\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("{missing} is not a parameter"), "{e}");
        let e = parse_str("[[steps]]\nname = \"x\"\naction = \"teleport\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[[steps]] #1 \"x\"") && e.contains("unknown action"),
            "{e}"
        );
        let e = parse_str(
            "[[steps]]\nname = \"r\"\naction = \"restore\"\nrepo = \"/tmp/drill-unit/a/r\"\nto = \"/tmp/drill-unit/a/t\"\nsnapshot = \"@nightly\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("snapshot label \"nightly\" is not defined"),
            "{e}"
        );
        let e = parse_str(
            "[[steps]]\nname = \"c\"\naction = \"corrupt\"\nmode = \"flip\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing field `file`"), "{e}");
    }

    #[test]
    fn paths_outside_the_scope_are_refused_at_load() {
        let e = parse_str(
            "[[steps]]\nname = \"w\"\naction = \"destroy\"\npath = \"/tmp/drill-unit/a/../b/x\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("field `path`") && e.contains("/tmp/drill-unit/b/x is outside"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_the_drill_flag_or_with_a_root_scope_is_refused() {
        let e = parse(
            "[drill]\nname = \"t\"\nowner = \"o\"\nscope = [\"/tmp/x\"]\n[[steps]]\nname = \"f\"\naction = \"fail\"\n",
            Path::new("t.toml"),
            &[],
            Resolve::Placeholder,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("drill = true"), "{e}");
        let e = parse(
            "[drill]\nname = \"t\"\nowner = \"o\"\ndrill = true\nscope = [\"/tmp/..\"]\n[[steps]]\nname = \"f\"\naction = \"fail\"\n",
            Path::new("t.toml"),
            &[],
            Resolve::Placeholder,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("whole filesystem"), "{e}");
    }

    #[test]
    fn globs_in_the_scope_match_paths_below_them() {
        let s = Scope::new(&["/srv/drill-*/data".to_string()]).unwrap();
        assert!(s.check("/srv/drill-7/data/x/y").is_ok());
        assert!(s.check("/srv/prod/data/x").is_err());
    }
}
