//! The built-in actions a step can name, with their fields. Each field struct refuses unknown
//! keys; [`Action::paths`] lists every path a step touches so the scope is checked before the
//! step does anything.

use serde::{Deserialize, Serialize};

/// What a step does.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Deterministic test data.
    Generate(Generate),
    /// Back up a directory into a repository (records a recovery point).
    Snapshot(Snapshot),
    /// Copy the snapshots and blobs an off-site repository lacks.
    Ship(Ship),
    /// A PKI (`palisade-collector pki init`) and certificates.
    Pki(Pki),
    /// Start a process of our own stack.
    StartSite(StartSite),
    /// Stop one.
    StopSite(StopSite),
    /// Mark the failure instant.
    Fail(Fail),
    /// `rm -rf` a path and mark the failure instant.
    Destroy(Destroy),
    /// Bit rot and lost packs.
    Corrupt(Corrupt),
    /// Ransomware: files overwritten or encrypted in place.
    Tamper(Tamper),
    /// Restore a snapshot.
    Restore(Restore),
    /// Make the standby primary: the writer moves to it.
    Promote(Promote),
    /// A check whose success ends the RTO clock.
    Verify(Verify),
    /// Re-fetch damaged blobs from the other site's repository.
    Repair(Repair),
    /// Poll a condition.
    WaitUntil(WaitUntil),
    /// A shell command (only with --allow-exec).
    Exec(Exec),
    /// A check; RPO/RTO asserts are targets.
    Assert(Assert),
    /// A writer that keeps writing files and records the acknowledged ones.
    StartWriter(StartWriter),
    /// Stop a writer.
    StopWriter(StopWriter),
}

/// Names of every action, for messages.
pub const ACTIONS: &[&str] = &[
    "generate",
    "snapshot",
    "ship",
    "pki",
    "start-site",
    "stop-site",
    "fail",
    "destroy",
    "corrupt",
    "tamper",
    "restore",
    "promote",
    "verify",
    "repair",
    "wait-until",
    "exec",
    "assert",
    "start-writer",
    "stop-writer",
];

fn one() -> u64 {
    1
}
fn latest() -> String {
    "latest".into()
}
fn files_default() -> u64 {
    64
}
fn interval_default() -> u64 {
    100
}

/// `generate`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    /// Directory to fill (created).
    pub dir: String,
    /// Total size, MiB.
    pub size_mb: u64,
    /// Number of files (spread over sub-directories).
    #[serde(default = "files_default")]
    pub files: u64,
    /// Seed: the same seed gives the same bytes.
    #[serde(default)]
    pub seed: u64,
}

/// `snapshot`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The directory backed up.
    pub source: String,
    /// The repository (created when missing).
    pub repo: String,
    /// Name later steps use (`restore snapshot = "@label"`, `verify against`); default: the
    /// step's name.
    #[serde(default)]
    pub label: Option<String>,
}

/// `ship`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ship {
    /// Source repository (a directory).
    pub from: String,
    /// Off-site repository: a directory, or a `serve` peer's `https://host:port` (created with
    /// the source's config when missing, so blobs are interchangeable between the two).
    pub to: String,
    /// With an `https://` peer: the PKI directory.
    #[serde(default)]
    pub pki_dir: Option<String>,
    /// With an `https://` peer: this side's certificate name.
    #[serde(default)]
    pub identity: Option<String>,
}

/// `pki`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pki {
    /// The PKI directory (`pki init` when it has no CA yet).
    pub dir: String,
    /// Certificates to issue.
    #[serde(default)]
    pub issue: Vec<Issue>,
}

/// One certificate.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Issue {
    /// CN.
    pub name: String,
    /// OU (`agent`, `analyst`, `replicator`, …).
    pub role: String,
    /// Subject alternative name (a server's address).
    #[serde(default)]
    pub san: Option<String>,
}

/// Processes `start-site` knows.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SiteKind {
    /// `palisade-replicator serve`.
    Serve,
    /// `palisade-replicator sync`.
    Sync,
    /// `palisade-collector serve`.
    Collector,
    /// `palisade-agent run` with synthetic events.
    Agent,
}

impl SiteKind {
    /// The name used in runbooks.
    pub fn name(self) -> &'static str {
        match self {
            SiteKind::Serve => "serve",
            SiteKind::Sync => "sync",
            SiteKind::Collector => "collector",
            SiteKind::Agent => "agent",
        }
    }
}

/// `start-site`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartSite {
    /// Handle for later steps (and the sync site name / agent certificate name).
    pub site: String,
    /// Which program.
    pub kind: SiteKind,
    /// serve: the repository; sync: the directory; collector/agent: its data directory.
    pub dir: String,
    /// PKI directory.
    pub pki_dir: String,
    /// Listen address (`127.0.0.1:0` by default; sync needs a fixed port).
    #[serde(default)]
    pub listen: Option<String>,
    /// Certificate name (default: the site handle; `palisade-collector` for a collector).
    #[serde(default)]
    pub identity: Option<String>,
    /// sync: the peer's URL; agent: the collector's site handle.
    #[serde(default)]
    pub peer: Option<String>,
    /// sync: state directory.
    #[serde(default)]
    pub state_dir: Option<String>,
    /// agent: synthetic events to produce.
    #[serde(default)]
    pub events: Option<u64>,
    /// agent: synthetic events per second.
    #[serde(default)]
    pub rate_per_sec: Option<u64>,
}

/// Signals `stop-site` sends.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StopSignal {
    /// SIGKILL: the site is lost without warning.
    #[default]
    Kill,
    /// SIGTERM: an orderly stop.
    Term,
}

/// `stop-site`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StopSite {
    /// The handle given to `start-site`.
    pub site: String,
    /// `kill` (default) or `term`.
    #[serde(default)]
    pub signal: StopSignal,
    /// This stop is the failure (marks the failure instant).
    #[serde(default)]
    pub failure: bool,
}

/// `fail`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    /// What failed, for the report.
    #[serde(default)]
    pub note: Option<String>,
}

/// `destroy`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Destroy {
    /// Removed recursively.
    pub path: String,
}

/// Kinds of damage.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CorruptMode {
    /// Flip one bit in `count` data blobs of `repo`.
    FlipBlob,
    /// Delete the pack holding the first data blob of `repo`.
    DeletePack,
    /// Flip one byte in the middle of `file`.
    Flip,
    /// Truncate `file` to half.
    Truncate,
}

/// `corrupt`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Corrupt {
    /// What to do.
    pub mode: CorruptMode,
    /// The repository (flip-blob, delete-pack).
    #[serde(default)]
    pub repo: Option<String>,
    /// The file (flip, truncate).
    #[serde(default)]
    pub file: Option<String>,
    /// How many blobs (flip-blob).
    #[serde(default = "one")]
    pub count: u64,
}

/// Kinds of tampering.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TamperMode {
    /// XOR with a key stream, as ransomware does (same size, unreadable).
    #[default]
    Encrypt,
    /// Overwrite with a ransom note.
    Overwrite,
    /// Delete.
    Delete,
}

/// `tamper`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tamper {
    /// The protected directory.
    pub dir: String,
    /// What happens to each file hit.
    #[serde(default)]
    pub mode: TamperMode,
    /// Hit every Nth file (1 = all).
    #[serde(default = "one")]
    pub every: u64,
    /// Rename hit files with this suffix (`.locked`).
    #[serde(default)]
    pub suffix: Option<String>,
}

/// `restore`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Restore {
    /// The repository: a directory, or a `serve` peer's `https://host:port`.
    pub repo: String,
    /// With an `https://` peer: the PKI directory.
    #[serde(default)]
    pub pki_dir: Option<String>,
    /// With an `https://` peer: this side's certificate name.
    #[serde(default)]
    pub identity: Option<String>,
    /// `latest`, `before-failure` (the newest snapshot taken before the failure instant),
    /// `@label`, an id prefix or a time.
    #[serde(default = "latest")]
    pub snapshot: String,
    /// Target directory.
    pub to: String,
    /// Remove what the target holds that the snapshot does not.
    #[serde(default)]
    pub delete: bool,
}

/// `promote`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// The writer that moves.
    pub writer: String,
    /// The standby's directory, primary from now on.
    pub dir: String,
    /// Where the writer's files must appear to count as acknowledged (the new peer).
    pub check_dir: String,
}

/// `verify`: one of a manifest check (`dir` + `against`), a repository check (`repo`), a
/// writer check (`writer` + `new_writes`), or a collector check (`site` + `events`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// Directory to compare with a snapshot step's manifest.
    #[serde(default)]
    pub dir: Option<String>,
    /// The snapshot label whose manifest `dir` must equal.
    #[serde(default)]
    pub against: Option<String>,
    /// Repository to verify.
    #[serde(default)]
    pub repo: Option<String>,
    /// Re-read every stored byte.
    #[serde(default)]
    pub read_data: bool,
    /// The writer whose new writes prove the service is back.
    #[serde(default)]
    pub writer: Option<String>,
    /// How many writes stored at the writer's (promoted) site after this step started.
    #[serde(default)]
    pub new_writes: Option<u64>,
    /// A collector site (its handle) that must store `events` events (of `kind`).
    #[serde(default)]
    pub site: Option<String>,
    /// With `site`: events the collector must hold (polled until the step's timeout).
    #[serde(default)]
    pub events: Option<u64>,
    /// With `site`: event kind (`synthetic`, …).
    #[serde(default)]
    pub kind: Option<String>,
    /// The check must find damage (detection steps); such a step does not end the RTO clock.
    #[serde(default)]
    pub expect_damage: bool,
}

/// `repair`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Repair {
    /// The damaged repository.
    pub repo: String,
    /// A healthy copy (same repository config, e.g. made by `ship`).
    pub from: String,
}

/// Conditions `wait-until` and `assert` know.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// `path` exists.
    FileExists,
    /// Files `a` and `b` have equal bytes.
    FilesEqual,
    /// Directories `a` and `b` hold the same files with the same bytes (sync converged).
    DirsEqual,
    /// The collector `site` stores at least `count` events (of `kind` when given).
    CollectorEvents,
    /// The writer has at least `count` acknowledged writes.
    WriterAcked,
    /// Real RPO ≤ the runbook's target.
    Rpo,
    /// Real RTO so far ≤ the runbook's target.
    Rto,
    /// Every write in the writer's ledger is in each of `dirs` with its bytes.
    NoAckedWriteLost,
    /// `dir` equals the manifest of snapshot label `against`.
    Manifest,
}

/// `wait-until`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WaitUntil {
    /// What to wait for.
    pub condition: Condition,
    /// file-exists.
    #[serde(default)]
    pub path: Option<String>,
    /// files-equal / dirs-equal: first.
    #[serde(default)]
    pub a: Option<String>,
    /// files-equal / dirs-equal: second.
    #[serde(default)]
    pub b: Option<String>,
    /// collector-events, writer-acked.
    #[serde(default)]
    pub count: Option<u64>,
    /// collector-events: the collector's handle.
    #[serde(default)]
    pub site: Option<String>,
    /// collector-events: event kind (`synthetic`, `drill`, …).
    #[serde(default)]
    pub kind: Option<String>,
    /// writer-acked.
    #[serde(default)]
    pub writer: Option<String>,
}

/// `exec`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    /// Run with `sh -c`.
    pub command: String,
}

/// `assert`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Assert {
    /// What must hold.
    pub check: Condition,
    /// file-exists.
    #[serde(default)]
    pub path: Option<String>,
    /// files-equal / dirs-equal: first.
    #[serde(default)]
    pub a: Option<String>,
    /// files-equal / dirs-equal: second.
    #[serde(default)]
    pub b: Option<String>,
    /// collector-events, writer-acked.
    #[serde(default)]
    pub count: Option<u64>,
    /// collector-events: the collector's handle.
    #[serde(default)]
    pub site: Option<String>,
    /// collector-events: event kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// writer-acked, no-acked-write-lost.
    #[serde(default)]
    pub writer: Option<String>,
    /// no-acked-write-lost: directories that must each hold every acknowledged write.
    #[serde(default)]
    pub dirs: Vec<String>,
    /// manifest: the directory.
    #[serde(default)]
    pub dir: Option<String>,
    /// manifest: the snapshot label.
    #[serde(default)]
    pub against: Option<String>,
}

/// `start-writer`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartWriter {
    /// Handle.
    pub writer: String,
    /// Where it writes (the primary's directory).
    pub dir: String,
    /// Where a write must appear, byte-identical, to be acknowledged (the peer's directory).
    pub check_dir: String,
    /// The ledger of acknowledged writes (one line each).
    pub ledger: String,
    /// Milliseconds between writes.
    #[serde(default = "interval_default")]
    pub interval_ms: u64,
}

/// `stop-writer`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StopWriter {
    /// Handle.
    pub writer: String,
}

fn from<T: serde::de::DeserializeOwned>(t: toml::Table) -> Result<T, String> {
    toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

impl Action {
    /// Decodes the fields left once `name`, `action` and `timeout_secs` are taken.
    pub fn decode(action: &str, t: toml::Table) -> Result<Action, String> {
        Ok(match action {
            "generate" => Action::Generate(from(t)?),
            "snapshot" => Action::Snapshot(from(t)?),
            "ship" => Action::Ship(from(t)?),
            "pki" => Action::Pki(from(t)?),
            "start-site" => Action::StartSite(from(t)?),
            "stop-site" => Action::StopSite(from(t)?),
            "fail" => Action::Fail(from(t)?),
            "destroy" => Action::Destroy(from(t)?),
            "corrupt" => Action::Corrupt(from(t)?),
            "tamper" => Action::Tamper(from(t)?),
            "restore" => Action::Restore(from(t)?),
            "promote" => Action::Promote(from(t)?),
            "verify" => Action::Verify(from(t)?),
            "repair" => Action::Repair(from(t)?),
            "wait-until" => Action::WaitUntil(from(t)?),
            "exec" => Action::Exec(from(t)?),
            "assert" => Action::Assert(from(t)?),
            "start-writer" => Action::StartWriter(from(t)?),
            "stop-writer" => Action::StopWriter(from(t)?),
            other => {
                return Err(format!(
                    "field `action`: unknown action {other:?} (known: {})",
                    ACTIONS.join(", ")
                ))
            }
        })
    }

    /// The action's name.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Generate(_) => "generate",
            Action::Snapshot(_) => "snapshot",
            Action::Ship(_) => "ship",
            Action::Pki(_) => "pki",
            Action::StartSite(_) => "start-site",
            Action::StopSite(_) => "stop-site",
            Action::Fail(_) => "fail",
            Action::Destroy(_) => "destroy",
            Action::Corrupt(_) => "corrupt",
            Action::Tamper(_) => "tamper",
            Action::Restore(_) => "restore",
            Action::Promote(_) => "promote",
            Action::Verify(_) => "verify",
            Action::Repair(_) => "repair",
            Action::WaitUntil(_) => "wait-until",
            Action::Exec(_) => "exec",
            Action::Assert(_) => "assert",
            Action::StartWriter(_) => "start-writer",
            Action::StopWriter(_) => "stop-writer",
        }
    }

    /// Every path the step touches: (field, path).
    pub fn paths(&self) -> Vec<(&'static str, String)> {
        let mut v: Vec<(&'static str, String)> = Vec::new();
        // Peer URLs are not paths: the scope is about this machine's files.
        let mut opt = |f: &'static str, p: &Option<String>| {
            if let Some(p) = p.as_ref().filter(|p| !p.starts_with("https://")) {
                v.push((f, p.clone()));
            }
        };
        match self {
            Action::Generate(a) => opt("dir", &Some(a.dir.clone())),
            Action::Snapshot(a) => {
                opt("source", &Some(a.source.clone()));
                opt("repo", &Some(a.repo.clone()));
            }
            Action::Ship(a) => {
                opt("from", &Some(a.from.clone()));
                opt("to", &Some(a.to.clone()));
                opt("pki_dir", &a.pki_dir);
            }
            Action::Pki(a) => opt("dir", &Some(a.dir.clone())),
            Action::StartSite(a) => {
                opt("dir", &Some(a.dir.clone()));
                opt("pki_dir", &Some(a.pki_dir.clone()));
                opt("state_dir", &a.state_dir);
            }
            Action::Destroy(a) => opt("path", &Some(a.path.clone())),
            Action::Corrupt(a) => {
                opt("repo", &a.repo);
                opt("file", &a.file);
            }
            Action::Tamper(a) => opt("dir", &Some(a.dir.clone())),
            Action::Restore(a) => {
                opt("repo", &Some(a.repo.clone()));
                opt("to", &Some(a.to.clone()));
                opt("pki_dir", &a.pki_dir);
            }
            Action::Promote(a) => {
                opt("dir", &Some(a.dir.clone()));
                opt("check_dir", &Some(a.check_dir.clone()));
            }
            Action::Verify(a) => {
                opt("dir", &a.dir);
                opt("repo", &a.repo);
            }
            Action::Repair(a) => {
                opt("repo", &Some(a.repo.clone()));
                opt("from", &Some(a.from.clone()));
            }
            Action::WaitUntil(a) => {
                opt("path", &a.path);
                opt("a", &a.a);
                opt("b", &a.b);
            }
            Action::Assert(a) => {
                opt("path", &a.path);
                opt("a", &a.a);
                opt("b", &a.b);
                opt("dir", &a.dir);
                for d in &a.dirs {
                    v.push(("dirs", d.clone()));
                }
            }
            Action::StartWriter(a) => {
                opt("dir", &Some(a.dir.clone()));
                opt("check_dir", &Some(a.check_dir.clone()));
                opt("ledger", &Some(a.ledger.clone()));
            }
            Action::StopSite(_) | Action::Fail(_) | Action::Exec(_) | Action::StopWriter(_) => {}
        }
        v
    }

    /// Field combinations serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        let need = |ok: bool, msg: &str| if ok { Ok(()) } else { Err(msg.to_string()) };
        let peer = |url: &str, pki: &Option<String>, id: &Option<String>| {
            if url.starts_with("https://") {
                need(
                    pki.is_some(),
                    "missing field `pki_dir` (with an https:// peer)",
                )?;
                need(
                    id.is_some(),
                    "missing field `identity` (with an https:// peer)",
                )
            } else {
                Ok(())
            }
        };
        match self {
            Action::Ship(a) => peer(&a.to, &a.pki_dir, &a.identity),
            Action::Restore(a) => peer(&a.repo, &a.pki_dir, &a.identity),
            Action::Corrupt(a) => match a.mode {
                CorruptMode::FlipBlob | CorruptMode::DeletePack => need(
                    a.repo.is_some(),
                    "missing field `repo` (mode flip-blob / delete-pack)",
                ),
                CorruptMode::Flip | CorruptMode::Truncate => need(
                    a.file.is_some(),
                    "missing field `file` (mode flip / truncate)",
                ),
            },
            Action::Verify(a) => {
                let kinds = [
                    a.dir.is_some(),
                    a.repo.is_some(),
                    a.writer.is_some(),
                    a.site.is_some(),
                ]
                .iter()
                .filter(|x| **x)
                .count();
                need(
                    kinds == 1,
                    "give exactly one of `dir` (with `against`), `repo`, `writer` (with `new_writes`), or `site` (with `events`)",
                )?;
                if a.site.is_some() {
                    need(a.events.is_some(), "missing field `events` (with `site`)")?;
                }
                if a.dir.is_some() {
                    need(a.against.is_some(), "missing field `against` (with `dir`)")?;
                }
                if a.writer.is_some() {
                    need(
                        a.new_writes.is_some(),
                        "missing field `new_writes` (with `writer`)",
                    )?;
                }
                Ok(())
            }
            Action::StartSite(a) => match a.kind {
                SiteKind::Sync => {
                    need(a.peer.is_some(), "missing field `peer` (kind sync)")?;
                    need(a.listen.is_some(), "missing field `listen` (kind sync)")
                }
                SiteKind::Agent => need(
                    a.peer.is_some(),
                    "missing field `peer` (kind agent: the collector's site)",
                ),
                _ => Ok(()),
            },
            Action::WaitUntil(w) => check_condition(
                w.condition,
                &w.path,
                &w.a,
                &w.b,
                w.count,
                &w.site,
                &w.writer,
                &None,
                &None,
                &[],
            ),
            Action::Assert(w) => check_condition(
                w.check, &w.path, &w.a, &w.b, w.count, &w.site, &w.writer, &w.dir, &w.against,
                &w.dirs,
            ),
            _ => Ok(()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_condition(
    c: Condition,
    path: &Option<String>,
    a: &Option<String>,
    b: &Option<String>,
    count: Option<u64>,
    site: &Option<String>,
    writer: &Option<String>,
    dir: &Option<String>,
    against: &Option<String>,
    dirs: &[String],
) -> Result<(), String> {
    let need = |ok: bool, f: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("missing field `{f}` (condition {c:?})"))
        }
    };
    match c {
        Condition::FileExists => need(path.is_some(), "path"),
        Condition::FilesEqual | Condition::DirsEqual => {
            need(a.is_some(), "a")?;
            need(b.is_some(), "b")
        }
        Condition::CollectorEvents => {
            need(site.is_some(), "site")?;
            need(count.is_some(), "count")
        }
        Condition::WriterAcked => {
            need(writer.is_some(), "writer")?;
            need(count.is_some(), "count")
        }
        Condition::NoAckedWriteLost => {
            need(writer.is_some(), "writer")?;
            need(!dirs.is_empty(), "dirs")
        }
        Condition::Manifest => {
            need(dir.is_some(), "dir")?;
            need(against.is_some(), "against")
        }
        Condition::Rpo | Condition::Rto => Ok(()),
    }
}
