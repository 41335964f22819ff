//! The command line: one function per subcommand, each a thin layer over the library.

pub mod drill;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use palisade_wire::event::Severity;
use palisade_wire::output::{is_broken_pipe, OutputFormat};
use serde::Serialize;

use crate::backup::{self, BackupOptions};
use crate::chunk::ChunkerParams;
use crate::error::{Error, Result};
use crate::prune::{self, PruneOptions};
use crate::repo::keys::Keys;
use crate::repo::snapshot::{self, KeepPolicy};
use crate::repo::{self as repository, InitOptions, Repository, Store};
use crate::report::{self, Reporter};
use crate::restore::{self, RestoreOptions};
use crate::transport::peer::{self, PeerOptions, PeerStore, ServeOptions};
use crate::transport::PeerTls;

const EXAMPLES: &str = "\
Examples:
  palisade-replicator init /srv/backup/repo
  palisade-replicator backup /var/www --to /srv/backup/repo
  palisade-replicator -r /srv/backup/repo snapshots
  palisade-replicator -r /srv/backup/repo restore latest --to /tmp/www
  palisade-replicator -r /srv/backup/repo restore 2h --to /tmp/www --path html/index.html
  palisade-replicator -r /srv/backup/repo verify --read-data
  palisade-replicator -r /srv/backup/repo prune --keep-daily 7 --keep-weekly 4
  palisade-replicator -r /srv/offsite serve --listen 0.0.0.0:7600 --pki-dir pki
  palisade-replicator backup /var/www --to https://offsite:7600 --pki-dir pki --identity site-a";

/// Palisade replicator: verified, deduplicated, compressed delta shipping for off-site backup
/// and active-active sites.
#[derive(Debug, Parser)]
#[command(name = "palisade-replicator", version, after_help = EXAMPLES)]
pub struct Cli {
    /// The repository: a directory, or a peer's `https://host:port`.
    #[arg(short = 'r', long, global = true, env = "PALISADE_REPO")]
    pub repo: Option<String>,
    /// Key file of an encrypted repository (64 hex digits; `init --encrypt` creates it).
    #[arg(long, global = true, env = "PALISADE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// PKI directory with ca.crt and IDENTITY.crt/.key (peers and the collector).
    #[arg(long, global = true, env = "PALISADE_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,
    /// This replicator's certificate name in --pki-dir.
    #[arg(
        long,
        global = true,
        env = "PALISADE_REPLICATOR_IDENTITY",
        default_value = "palisade-replicator"
    )]
    pub identity: String,
    /// Collector URL to report runs to (with --pki-dir); nothing is reported without it.
    #[arg(long, global = true, env = "PALISADE_COLLECTOR")]
    pub collector: Option<String>,
    /// Output: text, json or ndjson.
    #[arg(long, global = true, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
    /// Log filter (tracing syntax).
    #[arg(long, global = true, env = "PALISADE_LOG", default_value = "warn")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a repository (a directory, or at a peer).
    Init(InitArgs),
    /// Back up a directory into the repository or to a peer.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots,
    /// Show what changed between two snapshots.
    Diff {
        /// Older snapshot (id, prefix, `latest` or a time).
        a: String,
        /// Newer snapshot.
        b: String,
    },
    /// Restore a snapshot (by id, prefix, `latest`, or a time for point-in-time) into a directory.
    Restore(RestoreArgs),
    /// Check the repository; --read-data re-hashes every stored byte.
    Verify {
        /// Read and check every blob (and, with the key, its content).
        #[arg(long)]
        read_data: bool,
    },
    /// Forget snapshots outside the keep policy and reclaim space (two-phase, lock-free).
    Prune(PruneArgs),
    /// Serve the repository to peers over mutual TLS.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7600")]
        listen: String,
    },
    /// Keep a directory in step with a peer site (active-active).
    Sync(SyncArgs),
    /// Run a DR drill from a runbook (or `drill validate RUNBOOK`).
    Drill(drill::DrillArgs),
    /// Say what this build can do.
    Status,
}

/// `init` flags.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where (overrides --repo).
    pub path: Option<String>,
    /// Encrypt at rest with --key-file (created when missing).
    #[arg(long)]
    pub encrypt: bool,
    /// zstd level for new blobs (0 = none).
    #[arg(long, default_value_t = 3)]
    pub compression_level: i32,
    /// Average chunk size in KiB (min = avg/4, max = avg*4).
    #[arg(long, default_value_t = 64)]
    pub chunk_kib: u32,
}

/// `backup` flags.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The directory to back up.
    pub source: PathBuf,
    /// Repository directory or peer URL (overrides --repo).
    #[arg(long)]
    pub to: Option<String>,
    /// Host name recorded in the snapshot.
    #[arg(long)]
    pub host: Option<String>,
    /// Site name recorded in the snapshot.
    #[arg(long)]
    pub site: Option<String>,
    /// Tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Parent snapshot for change detection (default: newest of this host and source).
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, even unchanged ones.
    #[arg(long)]
    pub force: bool,
    /// Reader threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Upload cap to a peer, bytes per second (suffixes k, m).
    #[arg(long)]
    pub limit_rate: Option<String>,
    /// Test-only fault injection: flip a bit in the Nth blob sent to a peer (it must be refused
    /// and sent again).
    #[arg(long, hide = true)]
    pub fault_flip_in_transit: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `restore` flags.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot: id, id prefix, `latest`, or a time (`2026-12-04T10:00:00Z`, `2h` ago).
    pub snapshot: String,
    /// Target directory.
    #[arg(long)]
    pub to: PathBuf,
    /// Only this path inside the snapshot.
    #[arg(long)]
    pub path: Option<String>,
    /// Restore symlinks that point outside the target.
    #[arg(long)]
    pub allow_symlink_escape: bool,
    /// Remove what the target holds that the snapshot does not (back to exactly the recovery
    /// point, e.g. after a tamper that dropped files).
    #[arg(long)]
    pub delete: bool,
    /// Writer threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `prune` flags.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep the newest N snapshots.
    #[arg(long, default_value_t = 0)]
    pub keep_last: usize,
    /// Keep one per hour for N hours.
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: usize,
    /// Keep one per day for N days.
    #[arg(long, default_value_t = 0)]
    pub keep_daily: usize,
    /// Keep one per week for N weeks.
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: usize,
    /// Keep one per month for N months.
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: usize,
    /// Keep one per year for N years.
    #[arg(long, default_value_t = 0)]
    pub keep_yearly: usize,
    /// Keep everything younger than this (`30d`, `12h`).
    #[arg(long)]
    pub keep_within: Option<String>,
    /// Seconds a mark must age before its packs are deleted (longer than any backup runs).
    #[arg(long, default_value_t = 86_400)]
    pub grace_secs: u64,
    /// Say what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `sync` flags.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The directory kept in step.
    #[arg(long)]
    pub dir: PathBuf,
    /// This site's name.
    #[arg(long)]
    pub site: String,
    /// Address to listen on for the peer.
    #[arg(long)]
    pub listen: String,
    /// The peer's URL.
    #[arg(long)]
    pub peer: String,
    /// State directory (version vectors).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub run_secs: Option<u64>,
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (found something).
    Ok,
    /// Nothing found / a check failed.
    NotFound,
    /// Done, but some entries could not be read (restic's exit 3).
    Partial,
}

impl Outcome {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::NotFound => 1,
            Outcome::Partial => 3,
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<Outcome> {
    match &cli.command {
        Command::Init(a) => init(&cli, a),
        Command::Backup(a) => backup_cmd(&cli, a),
        Command::Snapshots => snapshots(&cli),
        Command::Diff { a, b } => diff_cmd(&cli, a, b),
        Command::Restore(a) => restore_cmd(&cli, a),
        Command::Verify { read_data } => verify_cmd(&cli, *read_data),
        Command::Prune(a) => prune_cmd(&cli, a),
        Command::Serve { listen } => {
            let path = cli
                .repo
                .clone()
                .ok_or_else(|| Error::Usage("serve needs --repo DIR".into()))?;
            peer::serve(
                &ServeOptions {
                    repo: PathBuf::from(path),
                    listen: listen.clone(),
                },
                &tls(&cli)?,
            )?;
            Ok(Outcome::Ok)
        }
        Command::Sync(a) => {
            crate::sync::run(
                &crate::sync::SyncOptions {
                    dir: a.dir.clone(),
                    site: a.site.clone(),
                    listen: a.listen.clone(),
                    peer: a.peer.clone(),
                    state_dir: a.state_dir.clone(),
                    run_secs: a.run_secs,
                    reporter: reporter(&cli),
                },
                &tls(&cli)?,
            )?;
            Ok(Outcome::Ok)
        }
        Command::Drill(a) => drill::run(&cli, a),
        Command::Status => {
            println!(
                "palisade-replicator {}: repository (FastCDC, keyed blake3, zstd, \
                 XChaCha20-Poly1305), backup, restore, verify, prune, diff, serve, sync, drill",
                env!("CARGO_PKG_VERSION")
            );
            Ok(Outcome::Ok)
        }
    }
}

fn tls(cli: &Cli) -> Result<PeerTls> {
    let dir = cli
        .pki_dir
        .as_ref()
        .ok_or_else(|| Error::Usage("talking to a peer needs --pki-dir".into()))?;
    Ok(PeerTls::from_pki_dir(dir, &cli.identity))
}

/// An opened store: a local repository or a peer.
enum Opened {
    Local(Box<Repository>),
    Peer(PeerStore),
}

impl Opened {
    fn store(&self) -> &dyn Store {
        match self {
            Opened::Local(r) => r.as_ref(),
            Opened::Peer(p) => p,
        }
    }
}

fn open(cli: &Cli, location: Option<&str>, opts: PeerOptions) -> Result<Opened> {
    let loc = location.or(cli.repo.as_deref()).ok_or_else(|| {
        Error::Usage("give the repository with --repo (or -r, PALISADE_REPO)".into())
    })?;
    if loc.starts_with("https://") {
        Ok(Opened::Peer(PeerStore::connect(loc, &tls(cli)?, opts)?))
    } else {
        Ok(Opened::Local(Box::new(Repository::open(Path::new(loc))?)))
    }
}

fn keys_of(cli: &Cli, store: &dyn Store) -> Result<Keys> {
    store
        .config()
        .keys(cli.key_file.as_deref())?
        .ok_or_else(|| {
            Error::Key(format!(
                "{} is encrypted; give --key-file (or PALISADE_KEY_FILE)",
                store.location()
            ))
        })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn print<T: Serialize>(
    cli: &Cli,
    value: &T,
    text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let r = match cli.output_format {
        OutputFormat::Text => text(&mut out),
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, value)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out)),
        OutputFormat::Ndjson => serde_json::to_writer(&mut out, value)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out)),
    };
    match r {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        r => r.map_err(Error::io("write", Path::new("stdout"))),
    }
}

fn reporter(cli: &Cli) -> Option<Reporter> {
    let collector = cli.collector.clone()?;
    let tls = tls(cli).ok()?;
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    Some(Reporter {
        collector,
        name: cli.identity.clone(),
        tls,
        outbox: base
            .join("palisade-replicator")
            .join(format!("outbox-{}", cli.identity)),
    })
}

/// Sends a run report when a collector is configured; a failure to report is a warning, never
/// the run's failure (the event waits in the outbox).
fn send_report(
    cli: &Cli,
    action: &str,
    severity: Severity,
    message: String,
    details: serde_json::Value,
) {
    let Some(r) = reporter(cli) else { return };
    match r.report(report::replication_event(
        action, severity, message, details,
    )) {
        Ok(report::Delivery::Sent(_)) => {}
        Ok(report::Delivery::Queued(n)) => {
            eprintln!("palisade-replicator: collector unreachable; {n} run report(s) kept for the next run")
        }
        Err(e) => eprintln!("palisade-replicator: cannot record the run report: {e}"),
    }
}

fn init(cli: &Cli, a: &InitArgs) -> Result<Outcome> {
    let loc = a
        .path
        .as_deref()
        .or(cli.repo.as_deref())
        .ok_or_else(|| Error::Usage("init needs a path or --repo".into()))?;
    if a.encrypt && cli.key_file.is_none() {
        return Err(Error::Usage(
            "--encrypt needs --key-file (created when missing)".into(),
        ));
    }
    let avg = a.chunk_kib.saturating_mul(1024);
    let mut chunker = ChunkerParams::new_random();
    chunker.avg_bytes = avg;
    chunker.min_bytes = avg / 4;
    chunker.max_bytes = avg.saturating_mul(4);
    let opts = InitOptions {
        key_file: if a.encrypt {
            cli.key_file.clone()
        } else {
            None
        },
        compression_level: a.compression_level,
        chunker,
    };
    let config = repository::new_config(&opts)?;
    if loc.starts_with("https://") {
        PeerStore::init(loc, &tls(cli)?, &config)?;
    } else {
        Repository::init(Path::new(loc), &config)?;
    }
    print(cli, &config.id, |w| {
        writeln!(
            w,
            "created repository {} at {loc}{}",
            config.id,
            if a.encrypt {
                " (encrypted; keep the key file safe: without it the data is lost)"
            } else {
                ""
            }
        )
    })?;
    Ok(Outcome::Ok)
}

fn parse_rate(s: &str) -> Result<u64> {
    let (num, mult) = match s.to_ascii_lowercase().chars().last() {
        Some('k') => (&s[..s.len() - 1], 1024),
        Some('m') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>().map(|n| n * mult).map_err(|_| {
        Error::Usage(format!(
            "--limit-rate {s:?}: expected bytes per second, e.g. 500k or 10m"
        ))
    })
}

fn backup_cmd(cli: &Cli, a: &BackupArgs) -> Result<Outcome> {
    let opts = PeerOptions {
        limit_bytes_per_sec: a.limit_rate.as_deref().map(parse_rate).transpose()?,
        flip_in_transit: a.fault_flip_in_transit,
    };
    let opened = open(cli, a.to.as_deref(), opts)?;
    let store = opened.store();
    let keys = keys_of(cli, store)?;
    let result = backup::backup(
        store,
        &keys,
        &BackupOptions {
            source: a.source.clone(),
            host: a.host.clone().unwrap_or_else(hostname),
            site: a.site.clone(),
            tags: a.tags.clone(),
            parent: a.parent.clone(),
            force: a.force,
            threads: a.threads,
            progress: !a.quiet,
        },
    );
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            send_report(
                cli,
                "backup",
                Severity::High,
                format!(
                    "backup of {} to {} failed: {e}",
                    a.source.display(),
                    store.location()
                ),
                serde_json::json!({ "outcome": "failure", "source": a.source, "target": store.location() }),
            );
            return Err(e);
        }
    };
    let secs = r.duration_ms as f64 / 1000.0;
    send_report(
        cli,
        "backup",
        if r.errors.is_empty() {
            Severity::Info
        } else {
            Severity::Medium
        },
        format!(
            "backup {} of {} to {}: {} files, {} new bytes, {} sent in {secs:.1} s",
            &r.snapshot[..8],
            a.source.display(),
            store.location(),
            r.files,
            r.bytes_new,
            r.bytes_sent
        ),
        serde_json::json!({
            "outcome": "success", "snapshot": r.snapshot, "source": a.source, "target": store.location(),
            "bytes_new": r.bytes_new, "bytes_sent": r.bytes_sent, "duration_ms": r.duration_ms,
            "files": r.files, "errors": r.errors.len(), "lag_secs": 0,
        }),
    );
    print(cli, &r, |w| {
        for e in &r.errors {
            writeln!(w, "warning: {e}")?;
        }
        writeln!(
            w,
            "snapshot {} saved: {} files, {} dirs, {} ({} read, {} unchanged files)\n\
             new data {} stored as {}, sent {} in {secs:.2} s ({}/s)",
            &r.snapshot[..8],
            r.files,
            r.dirs,
            human(r.bytes_total),
            human(r.bytes_read),
            r.files_unchanged,
            human(r.bytes_new),
            human(r.bytes_stored),
            human(r.bytes_sent),
            human((r.bytes_read as f64 / secs.max(0.001)) as u64),
        )
    })?;
    Ok(if r.errors.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Partial
    })
}

/// Bytes for people.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[derive(Serialize)]
struct SnapshotLine<'a> {
    id: &'a str,
    #[serde(flatten)]
    snapshot: &'a repository::Snapshot,
    time: String,
}

fn snapshots(cli: &Cli) -> Result<Outcome> {
    let opened = open(cli, None, PeerOptions::default())?;
    let store = opened.store();
    let keys = store.config().keys(cli.key_file.as_deref())?;
    let snaps = snapshot::list(store, keys.as_ref())?;
    let lines: Vec<SnapshotLine<'_>> = snaps
        .iter()
        .map(|(id, s)| SnapshotLine {
            id,
            snapshot: s,
            time: s.time().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
        .collect();
    if cli.output_format == OutputFormat::Ndjson {
        let mut out = std::io::stdout().lock();
        for l in &lines {
            if let Err(e) = serde_json::to_writer(&mut out, l)
                .map_err(std::io::Error::other)
                .and_then(|_| writeln!(out))
            {
                if is_broken_pipe(&e) {
                    break;
                }
                return Err(Error::io("write", Path::new("stdout"))(e));
            }
        }
    } else {
        print(cli, &lines, |w| {
            writeln!(
                w,
                "{:<10} {:<20} {:<12} {:>8} {:>10}  source",
                "id", "time", "host", "files", "size"
            )?;
            for l in &lines {
                writeln!(
                    w,
                    "{:<10} {:<20} {:<12} {:>8} {:>10}  {}{}",
                    &l.id[..8],
                    l.time,
                    l.snapshot.host,
                    l.snapshot.files,
                    human(l.snapshot.bytes),
                    l.snapshot.source,
                    if l.snapshot.tags.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", l.snapshot.tags.join(","))
                    }
                )?;
            }
            Ok(())
        })?;
    }
    Ok(if lines.is_empty() {
        Outcome::NotFound
    } else {
        Outcome::Ok
    })
}

fn diff_cmd(cli: &Cli, a: &str, b: &str) -> Result<Outcome> {
    let opened = open(cli, None, PeerOptions::default())?;
    let store = opened.store();
    let keys = keys_of(cli, store)?;
    let snaps = snapshot::list(store, Some(&keys))?;
    let now = palisade_wire::event::Timestamp::now().nanos();
    let (_, sa) = snapshot::select(&snaps, a, now)?;
    let (_, sb) = snapshot::select(&snaps, b, now)?;
    let changes = crate::diff::diff(store, &keys, &sa.tree, &sb.tree)?;
    print(cli, &changes, |w| {
        for c in &changes {
            writeln!(w, "{}  {}", c.change, c.path)?;
        }
        let count = |ch| changes.iter().filter(|c| c.change == ch).count();
        writeln!(
            w,
            "{} added, {} removed, {} modified, {} metadata only",
            count('+'),
            count('-'),
            count('M'),
            count('U')
        )
    })?;
    Ok(if changes.is_empty() {
        Outcome::NotFound
    } else {
        Outcome::Ok
    })
}

fn restore_cmd(cli: &Cli, a: &RestoreArgs) -> Result<Outcome> {
    let opened = open(cli, None, PeerOptions::default())?;
    let store = opened.store();
    let keys = keys_of(cli, store)?;
    let snaps = snapshot::list(store, Some(&keys))?;
    let now = palisade_wire::event::Timestamp::now().nanos();
    let (id, snap) = snapshot::select(&snaps, &a.snapshot, now)?;
    let r = restore::restore(
        store,
        &keys,
        &id,
        &snap.tree,
        &RestoreOptions {
            target: a.to.clone(),
            path: a.path.clone(),
            allow_symlink_escape: a.allow_symlink_escape,
            delete: a.delete,
            threads: a.threads,
            progress: !a.quiet,
        },
    );
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            send_report(
                cli,
                "restore",
                Severity::High,
                format!("restore of {} failed: {e}", &id[..8]),
                serde_json::json!({"outcome": "failure", "snapshot": id}),
            );
            return Err(e);
        }
    };
    let age_secs = (now - snap.time_ns) / 1_000_000_000;
    send_report(
        cli,
        "restore",
        Severity::Info,
        format!(
            "restored snapshot {} ({} s old) to {}",
            &id[..8],
            age_secs,
            a.to.display()
        ),
        serde_json::json!({"outcome": "success", "snapshot": id, "target": a.to, "duration_ms": r.duration_ms, "snapshot_age_secs": age_secs}),
    );
    let secs = r.duration_ms as f64 / 1000.0;
    print(cli, &r, |w| {
        writeln!(
            w,
            "restored snapshot {} ({}) to {}: {} files, {} dirs, {} symlinks, {} in {secs:.2} s \
             ({} fetched and verified, {} reused from the target, {} files already identical)",
            &id[..8],
            snap.time()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            a.to.display(),
            r.files,
            r.dirs,
            r.symlinks,
            human(r.bytes),
            human(r.bytes_fetched),
            human(r.bytes_reused),
            r.files_unchanged
        )
    })?;
    Ok(Outcome::Ok)
}

fn verify_cmd(cli: &Cli, read_data: bool) -> Result<Outcome> {
    let loc = cli
        .repo
        .as_deref()
        .ok_or_else(|| Error::Usage("verify needs --repo DIR".into()))?;
    if loc.starts_with("https://") {
        return Err(Error::Usage(
            "verify runs where the repository is (run it on the peer's host)".into(),
        ));
    }
    let repo = Repository::open(Path::new(loc))?;
    let keys = repo.config().keys(cli.key_file.as_deref())?;
    let r = crate::verify::verify(&repo, keys.as_ref(), read_data)?;
    let sound = r.errors.is_empty();
    send_report(
        cli,
        "verify",
        if sound {
            Severity::Info
        } else {
            Severity::High
        },
        if sound {
            format!(
                "repository {loc} verified{}: {} snapshots, {} packs",
                if read_data { " (all data read)" } else { "" },
                r.snapshots,
                r.packs
            )
        } else {
            format!(
                "repository {loc} has {} problems: {}",
                r.errors.len(),
                r.errors.first().cloned().unwrap_or_default()
            )
        },
        serde_json::json!({"outcome": if sound {"success"} else {"failure"}, "repository": loc, "errors": r.errors.len(), "read_data": read_data, "damaged_blobs": r.damaged_blobs.len()}),
    );
    print(cli, &r, |w| {
        for e in &r.errors {
            writeln!(w, "error: {e}")?;
        }
        writeln!(
            w,
            "{}: {} snapshots, {} trees, {} blobs referenced, {} indexed in {} packs{}{}",
            if sound {
                "no errors"
            } else {
                "REPOSITORY DAMAGED"
            },
            r.snapshots,
            r.trees,
            r.blobs_referenced,
            r.blobs_indexed,
            r.packs,
            if read_data {
                format!(", {} read and re-hashed", human(r.bytes_read))
            } else {
                String::new()
            },
            if read_data && !r.content_checked {
                " (sealed: contents not opened without --key-file)"
            } else {
                ""
            },
        )
    })?;
    Ok(if sound {
        Outcome::Ok
    } else {
        Outcome::NotFound
    })
}

fn prune_cmd(cli: &Cli, a: &PruneArgs) -> Result<Outcome> {
    let loc = cli
        .repo
        .as_deref()
        .ok_or_else(|| Error::Usage("prune needs --repo DIR".into()))?;
    let repo = Repository::open(Path::new(loc))?;
    let keys = keys_of(cli, &repo)?;
    let within_secs = match &a.keep_within {
        None => 0,
        Some(s) => {
            let now = palisade_wire::event::Timestamp::now();
            let t = palisade_wire::event::parse_time_spec(s, now)
                .map_err(|e| Error::Usage(format!("--keep-within {s:?}: {e}")))?;
            u64::try_from((now.nanos() - t.nanos()) / 1_000_000_000).unwrap_or(0)
        }
    };
    let policy = KeepPolicy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within_secs,
    };
    let r = prune::prune(
        &repo,
        &keys,
        &PruneOptions {
            policy,
            grace_secs: a.grace_secs,
            dry_run: a.dry_run,
        },
    )?;
    if !a.dry_run {
        send_report(
            cli,
            "prune",
            Severity::Info,
            format!(
                "prune of {loc}: {} snapshots kept, {} forgotten, {} packs deleted",
                r.kept.len(),
                r.forgotten.len(),
                r.packs_deleted
            ),
            serde_json::json!({"outcome": "success", "repository": loc, "forgotten": r.forgotten.len(), "bytes_deleted": r.bytes_deleted}),
        );
    }
    print(cli, &r, |w| {
        let verb = if a.dry_run { "would " } else { "" };
        for (id, why) in &r.kept {
            writeln!(w, "keep   {}  ({})", &id[..8], why.join(", "))?;
        }
        for id in &r.forgotten {
            writeln!(w, "{verb}forget {}", &id[..8])?;
        }
        writeln!(
            w,
            "{verb}mark {} packs ({}) for deletion after {} s; {verb}delete {} packs ({}) marked earlier; \
             {} marked packs in use again kept; {} unused inside live packs",
            r.packs_marked,
            human(r.bytes_marked),
            a.grace_secs,
            r.packs_deleted,
            human(r.bytes_deleted),
            r.packs_kept_referenced,
            human(r.bytes_unused_in_live_packs)
        )
    })?;
    Ok(Outcome::Ok)
}
