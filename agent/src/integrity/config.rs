//! `[integrity]`: which trees are baselined and watched, what is compared, what happens on a
//! change (alert, or restore for a web root), and YARA-X scanning of new and changed files.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What the agent does when a file under a path differs from the baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protect {
    /// Report the change (an integrity event).
    #[default]
    Alert,
    /// Report it and put the known-good version back (web anti-tamper, 网页防篡改): changed and
    /// deleted files are restored from the agent's content-addressed store, added files are
    /// moved into quarantine.
    Restore,
}

/// One attribute compared between the baseline and the live tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attr {
    /// blake3 of the content (regular files).
    Content,
    /// Size in bytes (regular files).
    Size,
    /// Permission bits, setuid/setgid/sticky.
    Mode,
    /// Owner (uid).
    Owner,
    /// Group (gid).
    Group,
    /// Last content change.
    Mtime,
    /// Last metadata change.
    Ctime,
    /// Inode number.
    Inode,
    /// Where a symlink points.
    Target,
    /// Extended attributes (`security.*`, `user.*`, `trusted.*`).
    Xattrs,
}

impl Attr {
    /// Every attribute, in report order.
    pub const ALL: [Attr; 10] = [
        Attr::Content,
        Attr::Size,
        Attr::Mode,
        Attr::Owner,
        Attr::Group,
        Attr::Mtime,
        Attr::Ctime,
        Attr::Inode,
        Attr::Target,
        Attr::Xattrs,
    ];

    /// Name as written in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Attr::Content => "content",
            Attr::Size => "size",
            Attr::Mode => "mode",
            Attr::Owner => "owner",
            Attr::Group => "group",
            Attr::Mtime => "mtime",
            Attr::Ctime => "ctime",
            Attr::Inode => "inode",
            Attr::Target => "target",
            Attr::Xattrs => "xattrs",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`Attr`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AttrSet(u16);

impl AttrSet {
    /// Everything.
    pub fn all() -> Self {
        Self::from_attrs(&Attr::ALL)
    }

    /// The given attributes.
    pub fn from_attrs(attrs: &[Attr]) -> Self {
        AttrSet(attrs.iter().fold(0, |acc, a| acc | a.bit()))
    }

    /// Whether `a` is in the set.
    pub fn contains(self, a: Attr) -> bool {
        self.0 & a.bit() != 0
    }

    /// Adds `a`.
    pub fn insert(&mut self, a: Attr) {
        self.0 |= a.bit();
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The intersection.
    pub fn and(self, other: AttrSet) -> AttrSet {
        AttrSet(self.0 & other.0)
    }

    /// Names, in report order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Attr::name).collect()
    }

    /// The attributes, in report order.
    pub fn iter(self) -> impl Iterator<Item = Attr> {
        Attr::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

/// `[[integrity.paths]]`: one tree to baseline and watch.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    /// The tree's root (absolute; relative paths are taken from the config file's directory).
    pub path: PathBuf,
    /// `alert` (default) or `restore` (web anti-tamper).
    #[serde(default)]
    pub protect: Protect,
    /// Glob patterns on the full path; when non-empty only matching files are recorded
    /// (directories are always descended). `**` crosses directories.
    #[serde(default)]
    pub include: Vec<String>,
    /// Glob patterns on the full path of files and directories to leave out entirely.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Follow symlinks to directories and files (loops are detected); default records the link.
    #[serde(default)]
    pub follow_symlinks: bool,
    /// Descend into other filesystems mounted below the root.
    #[serde(default)]
    pub cross_filesystems: bool,
    /// Attributes compared for files and symlinks. Default: all of them, except `inode` and
    /// `ctime` under `protect = "restore"` (a restore writes a new inode, so they would differ
    /// from the baseline forever after the first restore).
    #[serde(default)]
    pub check: Option<Vec<Attr>>,
}

impl PathConfig {
    /// Attributes compared for files and symlinks.
    pub fn file_checks(&self) -> AttrSet {
        match &self.check {
            Some(list) => AttrSet::from_attrs(list),
            None if self.protect == Protect::Restore => AttrSet::from_attrs(&[
                Attr::Content,
                Attr::Size,
                Attr::Mode,
                Attr::Owner,
                Attr::Group,
                Attr::Mtime,
                Attr::Target,
                Attr::Xattrs,
            ]),
            None => AttrSet::all(),
        }
    }

    /// Attributes compared for directories: their size, times and inode change whenever an
    /// entry is added or removed, which is reported on the entry itself (AIDE's usual `DIR`
    /// group does the same).
    pub fn dir_checks(&self) -> AttrSet {
        self.file_checks().and(AttrSet::from_attrs(&[
            Attr::Mode,
            Attr::Owner,
            Attr::Group,
            Attr::Xattrs,
        ]))
    }
}

/// What to do with a file the malware scan matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MalwareAction {
    /// Report it (a malware event).
    #[default]
    Alert,
    /// Report it and move it into the 0700 quarantine store (`palisade-agent quarantine`).
    Quarantine,
}

/// `[integrity.malware]`: YARA-X over new and changed files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MalwareConfig {
    /// Scan new and changed files under the integrity paths.
    pub enabled: bool,
    /// Directory of `*.yar` rules; rules with meta `scope = "network"` are not used on files.
    pub dir: PathBuf,
    /// Files larger than this are not scanned (the event says so).
    pub max_file_bytes: u64,
    /// `alert` or `quarantine`.
    pub action: MalwareAction,
    /// Time bound of one scan, in seconds.
    pub scan_timeout_secs: u64,
    /// Recompile the rules when files in `dir` change.
    pub watch: bool,
}

impl Default for MalwareConfig {
    fn default() -> Self {
        MalwareConfig {
            enabled: true,
            dir: PathBuf::from("signatures/yara"),
            max_file_bytes: 32 << 20,
            action: MalwareAction::Alert,
            scan_timeout_secs: 5,
            watch: true,
        }
    }
}

/// `[integrity]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// Where the baseline, its signing key, the known-good store and the quarantine live.
    /// Default: `<data_dir>/integrity`.
    pub dir: Option<PathBuf>,
    /// The trees.
    pub paths: Vec<PathConfig>,
    /// Watch the trees with inotify (through `notify`) while `palisade-agent run` runs.
    pub realtime: bool,
    /// Seconds between full verifies in `run` (catch what realtime missed); 0 disables them.
    pub full_scan_interval_secs: u64,
    /// Milliseconds a burst of changes is collected before it is checked.
    pub debounce_ms: u64,
    /// Seconds between verifies of directories realtime could not watch (inotify watch limit).
    pub poll_interval_secs: u64,
    /// Hashing threads (0: one per core).
    pub threads: usize,
    /// Ed25519 public key (hex) the baseline must be signed with; pinning it here (the collector
    /// has it from the `baseline` event) means a baseline re-signed with another key is refused.
    pub public_key: Option<String>,
    /// Most differences remembered as already reported (each is reported once until it
    /// changes again); beyond it the oldest are forgotten and counted.
    pub max_reported: usize,
    /// Malware scanning.
    pub malware: MalwareConfig,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            dir: None,
            paths: Vec::new(),
            realtime: true,
            full_scan_interval_secs: 3600,
            debounce_ms: 100,
            poll_interval_secs: 60,
            threads: 0,
            public_key: None,
            max_reported: 100_000,
            malware: MalwareConfig::default(),
        }
    }
}

impl IntegrityConfig {
    /// The integrity state dir under `data_dir` unless set.
    pub fn state_dir(&self, data_dir: &Path) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| data_dir.join("integrity"))
    }

    /// Hashing threads to use.
    pub fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }

    /// Checks serde cannot express: absolute, distinct, non-nested roots and valid globs.
    pub fn check(&self) -> Result<(), String> {
        for (i, p) in self.paths.iter().enumerate() {
            if !p.path.is_absolute() {
                return Err(format!(
                    "integrity.paths[{i}].path {} must be absolute",
                    p.path.display()
                ));
            }
            for g in p.include.iter().chain(&p.exclude) {
                globset::Glob::new(g)
                    .map_err(|e| format!("integrity.paths[{i}]: bad glob {g:?}: {e}"))?;
            }
            for (j, q) in self.paths.iter().enumerate() {
                if i != j && p.path.starts_with(&q.path) {
                    return Err(format!(
                        "integrity.paths[{i}] {} lies inside integrity.paths[{j}] {}; give one root with include/exclude instead",
                        p.path.display(),
                        q.path.display()
                    ));
                }
            }
        }
        if self.debounce_ms > 10_000 {
            return Err("integrity.debounce_ms must be at most 10000".into());
        }
        if let Some(k) = &self.public_key {
            super::sign::parse_public_key(k).map_err(|e| format!("integrity.public_key: {e}"))?;
        }
        Ok(())
    }
}
