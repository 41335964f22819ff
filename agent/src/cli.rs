//! `palisade-agent` subcommands: `run`, `validate`, the network tools (`replay`, `gen-capture`,
//! `demo-capture`, `loadgen`) and the integrity tools (`baseline`, `verify`, `publish`, `scan`,
//! `quarantine`, implemented in [`crate::integrity::commands`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use palisade_wire::output::OutputFormat;

use crate::config::{AgentConfig, ConfigError};
use crate::loadgen::{LoadgenConfig, LoadgenError};
use crate::run::RunError;

/// CLI errors (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Config trouble.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Start-up trouble.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Load generator trouble.
    #[error(transparent)]
    Loadgen(#[from] LoadgenError),
    /// Replay trouble.
    #[error(transparent)]
    Replay(#[from] crate::replay::ReplayError),
    /// An integrity command failed (its own exit code).
    #[error(transparent)]
    Integrity(#[from] crate::integrity::commands::CommandError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The process exit code: 2, or the integrity command's own (17 config, 18 baseline).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Integrity(e) => e.code,
            _ => 2,
        }
    }
}

const EXAMPLES: &str = "Examples:
  palisade-agent run --config agent.toml
  palisade-agent validate --config agent.toml
  palisade-agent baseline --config agent.toml && palisade-agent verify --config agent.toml
  palisade-agent scan /var/www/html
  palisade-agent loadgen --collector https://127.0.0.1:7443 --pki-dir pki --agents 16 --events-per-agent 100000";

/// Palisade agent: spools events durably and ships them to the collector over mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "palisade-agent", version, after_long_help = EXAMPLES)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, global = true, env = "PALISADE_LOG", default_value = "info")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: spool, sources, shipper. Stops cleanly on SIGINT/SIGTERM.
    #[command(after_long_help = "Examples:\n  palisade-agent run --config agent.toml")]
    Run {
        /// The config file (TOML).
        #[arg(long, short, env = "PALISADE_AGENT_CONFIG")]
        config: PathBuf,
        /// Collector URL, overriding `collector`.
        #[arg(long)]
        collector: Option<String>,
    },
    /// Check a config file (and that the certificate fits it) without running.
    Validate {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the network pipeline over a pcap/pcapng file and print or ship what it finds.
    #[command(
        after_long_help = "Examples:\n  palisade-agent replay capture.pcap --output-format text\n  palisade-agent replay capture.pcapng --kind alert --output-format ndjson > alerts.ndjson\n  palisade-agent replay capture.pcap --config agent.toml          # spool and ship to the collector\n  palisade-agent replay capture.pcap --speed realtime --filter 'tcp port 80' --output-format text\n  palisade-agent replay capture.pcap --kind alert --disable yara,pii --output-format ndjson\n\nWindows and timeouts use the capture's own timestamps, so results are reproducible.\nA summary (packets, flows, alerts, packets/s, and detector work counters such as YARA-X scan\ntime) goes to stderr. Events filtered out by --kind are still counted in it.\nExit codes when printing: 0 events printed, 1 none, 2 error."
    )]
    Replay(ReplayArgs),
    /// Write a synthetic mixed capture for benchmarks (deterministic for a seed).
    #[command(
        after_long_help = "Examples:\n  palisade-agent gen-capture --out /tmp/mixed.pcap --bytes 1000000000 --flows 100000"
    )]
    GenCapture {
        /// Output pcap file.
        #[arg(long)]
        out: PathBuf,
        /// Approximate size of traffic to write, in bytes.
        #[arg(long, default_value_t = 1_000_000_000)]
        bytes: u64,
        /// Distinct client/server pairs cycled through.
        #[arg(long, default_value_t = 100_000)]
        flows: u64,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write the demo capture: ordinary traffic plus one of each attack the detectors find.
    #[command(
        after_long_help = "Examples:\n  palisade-agent demo-capture --out demo.pcap\n  palisade-agent replay demo.pcap --kind alert --output-format text\n  palisade-agent demo-capture --out clean.pcap --benign-only --start 2026-11-21T08:00:00Z"
    )]
    DemoCapture {
        /// Output pcap file.
        #[arg(long)]
        out: PathBuf,
        /// Capture start: an RFC 3339 time or an age such as 30m, 2h (before now).
        #[arg(long, default_value = "30m")]
        start: String,
        /// Only the ordinary traffic (a capture on which nothing may alert).
        #[arg(long)]
        benign_only: bool,
    },
    /// Benchmark a collector with simulated agents over real mutual TLS.
    #[command(
        after_long_help = "Each simulated agent NN needs <pki-dir>/<prefix>NN.crt/.key (role agent):\n  for i in $(seq -w 0 15); do palisade-collector pki issue --dir pki --role agent --name loadgen-$i; done\n  palisade-agent loadgen --collector https://127.0.0.1:7443 --pki-dir pki --agents 16"
    )]
    Loadgen(LoadgenArgs),
    /// Record the signed integrity baseline of the configured trees (or accept changes).
    #[command(after_long_help = BASELINE_HELP)]
    Baseline {
        /// The agent config (its [integrity] section).
        #[arg(long, short)]
        config: PathBuf,
        /// Accept the current state into the existing baseline (all of it, or --path only),
        /// recording who approved it.
        #[arg(long)]
        update: bool,
        /// With --update: accept only these files or subtrees.
        #[arg(long = "path")]
        paths: Vec<PathBuf>,
        /// Who approves (default: $SUDO_USER, else $USER).
        #[arg(long)]
        approver: Option<String>,
        /// Output format.
        #[arg(long, default_value_t = OutputFormat::Text)]
        output_format: OutputFormat,
    },
    /// Compare the live trees with the signed baseline.
    #[command(after_long_help = VERIFY_HELP)]
    Verify {
        /// The agent config.
        #[arg(long, short)]
        config: PathBuf,
        /// Only these files or subtrees.
        #[arg(long = "path")]
        paths: Vec<PathBuf>,
        /// Output format (ndjson: one ECS integrity event per finding).
        #[arg(long, default_value_t = OutputFormat::Text)]
        output_format: OutputFormat,
    },
    /// Publish new content into a protected web root (baseline and known-good copy together).
    #[command(after_long_help = PUBLISH_HELP)]
    Publish {
        /// The agent config.
        #[arg(long, short)]
        config: PathBuf,
        /// The staging tree to publish.
        #[arg(long)]
        from: PathBuf,
        /// Where it goes (inside a [[integrity.paths]] root).
        #[arg(long)]
        to: PathBuf,
        /// Remove files under --to that --from does not have.
        #[arg(long)]
        delete: bool,
        /// Who approves (default: $SUDO_USER, else $USER).
        #[arg(long)]
        approver: Option<String>,
        /// Output format.
        #[arg(long, default_value_t = OutputFormat::Text)]
        output_format: OutputFormat,
    },
    /// Scan files with the YARA-X rules (webshells, malware).
    #[cfg(feature = "yara")]
    #[command(after_long_help = SCAN_HELP)]
    Scan {
        /// Files or directories (recursively; symlinks are not followed).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Agent config: [integrity.malware] settings and the quarantine location.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Rules directory (default: [integrity.malware] dir, else ./signatures/yara).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Move matching files into the quarantine (needs --config).
        #[arg(long)]
        quarantine: bool,
        /// Output format.
        #[arg(long, default_value_t = OutputFormat::Text)]
        output_format: OutputFormat,
    },
    /// List or restore quarantined files.
    #[command(after_long_help = QUARANTINE_HELP)]
    Quarantine {
        /// The agent config.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: QuarantineAction,
    },
}

/// `quarantine` actions.
#[derive(Debug, Subcommand)]
pub enum QuarantineAction {
    /// List quarantined items (exit 1 when there are none).
    List {
        /// Output format.
        #[arg(long, default_value_t = OutputFormat::Text)]
        output_format: OutputFormat,
    },
    /// Put an item back where it came from (or --to elsewhere).
    Restore {
        /// Item id (from `quarantine list`).
        id: String,
        /// Restore to this path instead.
        #[arg(long)]
        to: Option<PathBuf>,
        /// Overwrite what is there.
        #[arg(long)]
        force: bool,
    },
}

const BASELINE_HELP: &str =
    "Walks every [[integrity.paths]] root (include/exclude globs, follow_symlinks,
cross_filesystems) and records per path: blake3 of the content, size, mode, owner, group,
mtime, ctime, inode, symlink target and xattrs. Hashing runs on every core. The baseline file is
signed with the agent's Ed25519 key (created on first use, 0600, in the integrity dir); its
public key and digest go to the collector in an audit event. Trees marked protect = \"restore\"
also get known-good copies for anti-tamper.

Examples:
  palisade-agent baseline --config agent.toml
  palisade-agent baseline --config agent.toml --update --approver alice
  palisade-agent baseline --config agent.toml --update --path /etc/nginx/nginx.conf

Exit codes: 0 written, 17 config error, 18 baseline unreadable or refused, 2 other errors.";

const VERIFY_HELP: &str =
    "Refuses a baseline that is unsigned, edited, or signed by another key than the agent's
(or the pinned integrity.public_key).

Examples:
  palisade-agent verify --config agent.toml
  palisade-agent verify --config agent.toml --output-format ndjson > findings.ndjson
  palisade-agent verify --config agent.toml --path /var/www/html

Exit codes (like AIDE's): the OR of 1 (added), 2 (removed), 4 (changed or type changed);
0 when nothing differs; 17 config error; 18 baseline missing, unreadable or refused.";

const PUBLISH_HELP: &str =
    "A running agent restores any change to a protect = \"restore\" tree. To change it on purpose,
publish from a staging copy: the agent holds off on --to while publish copies, checks that
every difference is its own, and accepts the result into the signed baseline and the
known-good store. A change made by anyone else meanwhile aborts the publish (and is restored).

Examples:
  palisade-agent publish --config agent.toml --from /srv/staging/site --to /var/www/html --delete";

#[cfg(feature = "yara")]
const SCAN_HELP: &str =
    "Uses the rules whose meta scope is \"file\" or unset; network-only rules are skipped.
Prints one malware event per matching file; a summary (files, time, slowest file) goes to stderr.

Examples:
  palisade-agent scan /var/www/html
  palisade-agent scan upload.php --rules signatures/yara --output-format ndjson
  palisade-agent scan /var/www/html --config agent.toml --quarantine

Exit codes: 0 something matched, 1 nothing matched, 2 error, 17 bad config or rules.";

const QUARANTINE_HELP: &str = "Examples:
  palisade-agent quarantine list --config agent.toml
  palisade-agent quarantine restore 1795400000000000000-3fa2b1c4 --config agent.toml --to /tmp/evidence.php";

/// `replay` flags.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The capture file (pcap or pcapng).
    pub file: PathBuf,
    /// `max` (as fast as possible) or `realtime` (the capture's pace).
    #[arg(long, default_value = "max")]
    pub speed: crate::replay::Speed,
    /// Print events to stdout in this format instead of shipping them.
    #[arg(long)]
    pub output_format: Option<OutputFormat>,
    /// Agent config: detector and flow settings, and where to ship when not printing.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// BPF filter applied to the file (tcpdump syntax).
    #[arg(long, default_value = "")]
    pub filter: String,
    /// Only print events of this kind (`alert`, `flow`).
    #[arg(long)]
    pub kind: Option<palisade_wire::EventKind>,
    /// Turn these detectors off (comma-separated or repeated: port_scan, flood, arp_spoof,
    /// beacon, dns_tunnel, ioc, pii, yara), overriding the config.
    #[arg(long, value_delimiter = ',')]
    pub disable: Vec<String>,
    /// Agent id stamped on events when printing without a config.
    #[arg(long, default_value = "replay")]
    pub agent_id: String,
}

/// `loadgen` flags.
#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// Collector URL.
    #[arg(long, default_value = "https://127.0.0.1:7443")]
    pub collector: String,
    /// PKI dir with ca.crt and the simulated agents' certificates.
    #[arg(long)]
    pub pki_dir: PathBuf,
    /// Certificate name prefix of the simulated agents.
    #[arg(long, default_value = "loadgen-")]
    pub prefix: String,
    /// Simulated agents.
    #[arg(long, default_value_t = 16)]
    pub agents: usize,
    /// Events each simulated agent sends.
    #[arg(long, default_value_t = 100_000)]
    pub events_per_agent: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 2_000)]
    pub batch_events: usize,
    /// Collector pid, to report its RSS.
    #[arg(long)]
    pub collector_pid: Option<u32>,
    /// What the events look like: `synthetic` (one kind, for the store), `security` (flows,
    /// logins and 15% detector alerts from many addresses, to load correlation: an alert storm)
    /// or `soc` (the same with 1% alerts, a SOC's everyday share).
    #[arg(long, default_value = "synthetic")]
    pub mix: crate::loadgen::Mix,
    /// With `--mix security`: distinct source addresses (and so correlation groups).
    #[arg(long, default_value_t = 100_000)]
    pub groups: u32,
    /// Steady mode (a soak): this many events per second across all agents, for
    /// `--duration-secs`, batches built as they go; `--events-per-agent` is then ignored.
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long steady mode runs.
    #[arg(long, default_value_t = 60, requires = "rate")]
    pub duration_secs: u64,
    /// Output format.
    #[arg(long, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    palisade_wire::process::runtime()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))
}

pub use palisade_wire::process::shutdown_signal;

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Run { config, collector } => {
            let mut c = AgentConfig::load(&config)?;
            if let Some(url) = collector {
                c.collector = url;
            }
            runtime()?.block_on(crate::run::run(c, shutdown_signal()))?;
            Ok(0)
        }
        Command::Validate { config } => {
            let c = AgentConfig::load(&config)?;
            let id = crate::run::agent_identity(&c)?;
            println!("{}: ok (agent id {id})", config.display());
            Ok(0)
        }
        Command::Replay(a) => replay(a),
        Command::Baseline {
            config,
            update,
            paths,
            approver,
            output_format,
        } => Ok(crate::integrity::commands::baseline(
            &config,
            update,
            &paths,
            approver,
            output_format,
        )?),
        Command::Verify {
            config,
            paths,
            output_format,
        } => Ok(crate::integrity::commands::verify(
            &config,
            &paths,
            output_format,
        )?),
        Command::Publish {
            config,
            from,
            to,
            delete,
            approver,
            output_format,
        } => Ok(crate::integrity::commands::publish(
            &config,
            &from,
            &to,
            delete,
            approver,
            output_format,
        )?),
        #[cfg(feature = "yara")]
        Command::Scan {
            paths,
            config,
            rules,
            quarantine,
            output_format,
        } => Ok(crate::integrity::commands::scan(
            &paths,
            config.as_deref(),
            rules.as_deref(),
            quarantine,
            output_format,
        )?),
        Command::Quarantine { config, action } => {
            let config = config.ok_or_else(|| {
                CliError::Other("quarantine needs --config (where the quarantine is)".into())
            })?;
            Ok(match action {
                QuarantineAction::List { output_format } => {
                    crate::integrity::commands::quarantine_list(&config, output_format)?
                }
                QuarantineAction::Restore { id, to, force } => {
                    crate::integrity::commands::quarantine_restore(
                        &config,
                        &id,
                        to.as_deref(),
                        force,
                    )?
                }
            })
        }
        Command::GenCapture {
            out,
            bytes,
            flows,
            seed,
        } => {
            let r = crate::gencap::generate(&out, bytes, flows, seed)
                .map_err(|e| CliError::Other(format!("cannot write {}: {e}", out.display())))?;
            println!(
                "{}: {} packets, {:.1} MB, {} TCP flows",
                out.display(),
                r.packets,
                r.bytes as f64 / 1e6,
                r.flows
            );
            Ok(0)
        }
        Command::DemoCapture {
            out,
            start,
            benign_only,
        } => {
            let t0 = palisade_wire::event::parse_time_spec(&start, palisade_wire::Timestamp::now())
                .map_err(|e| CliError::Other(format!("--start {start:?}: {e}")))?;
            crate::demo::write(&out, t0.0, !benign_only)
                .map_err(|e| CliError::Other(format!("cannot write {}: {e}", out.display())))?;
            println!("{}: demo capture written", out.display());
            Ok(0)
        }
        Command::Loadgen(a) => {
            let report = runtime()?.block_on(crate::loadgen::run(LoadgenConfig {
                collector: a.collector,
                pki_dir: a.pki_dir,
                prefix: a.prefix,
                agents: a.agents,
                events_per_agent: a.events_per_agent,
                batch_events: a.batch_events,
                collector_pid: a.collector_pid,
                mix: a.mix,
                groups: a.groups.max(1),
                rate: a.rate,
                duration: std::time::Duration::from_secs(a.duration_secs),
            }))?;
            match a.output_format {
                OutputFormat::Text => {
                    let mib = |v: Option<f64>| {
                        v.map(|m| format!("{m:.0} MiB"))
                            .unwrap_or_else(|| "n/a".into())
                    };
                    println!("agents            {}", report.agents);
                    println!(
                        "events acked      {} ({} duplicates)",
                        report.events_acked, report.duplicates
                    );
                    println!(
                        "batches           {} ({} busy/503, {} other 5xx and {} failed requests retried)",
                        report.batches, report.busy, report.refused, report.failed
                    );
                    for s in &report.stopped {
                        println!("stopped early     {s}");
                    }
                    println!(
                        "elapsed           {:.2} s (setup {:.2} s not counted)",
                        report.elapsed_secs, report.setup_secs
                    );
                    println!("durable events/s  {:.0}", report.events_per_sec);
                    println!(
                        "ack latency       p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                        report.p50_ms, report.p99_ms, report.max_ms
                    );
                    println!(
                        "collector RSS     {} (peak {})",
                        mib(report.collector_rss_mib),
                        mib(report.collector_peak_rss_mib)
                    );
                    for m in &report.minutes {
                        println!(
                            "minute {:>3}        {} events acked, ack p50 {:.1} ms  p99 {:.1} ms",
                            m.minute, m.acked, m.p50_ms, m.p99_ms
                        );
                    }
                    if a.rate.is_some() {
                        println!("behind schedule   {:.2} s at the end", report.behind_secs);
                    }
                }
                _ => println!("{}", serde_json::to_string(&report).unwrap_or_default()),
            }
            // A run some simulated agents could not finish is reported, then fails.
            Ok(if report.stopped.is_empty() { 0 } else { 1 })
        }
    }
}

/// Applies `--disable` to `detect`.
fn disable_detectors(
    detect: &mut crate::pipeline::DetectConfig,
    names: &[String],
) -> Result<(), CliError> {
    for name in names {
        detect
            .disable(name)
            .map_err(|e| CliError::Other(format!("--disable: {e}")))?;
    }
    Ok(())
}

fn replay(a: ReplayArgs) -> Result<u8, CliError> {
    use palisade_wire::output::{is_broken_pipe, EventWriter};
    let mut config = a.config.as_deref().map(AgentConfig::load).transpose()?;
    if let Some(c) = &mut config {
        disable_detectors(&mut c.detect, &a.disable)?;
    }
    let (flow, detect) = match &config {
        Some(c) => (c.flow.clone(), c.detect.clone()),
        None => {
            let mut detect = crate::pipeline::DetectConfig::default();
            disable_detectors(&mut detect, &a.disable)?;
            // Without a config the IOC lists come from ./signatures/net when it exists.
            if detect.ioc.enabled && !detect.ioc.dir.is_dir() {
                eprintln!(
                    "replay: no IOC lists at {} (give --config with [detect.ioc] dir); IOC matching is off",
                    detect.ioc.dir.display()
                );
                detect.ioc.enabled = false;
            }
            detect.ioc.watch = false;
            if detect.yara.enabled && !detect.yara.dir.is_dir() {
                eprintln!(
                    "replay: no YARA rules at {} (give --config with [detect.yara] dir); payload scanning is off",
                    detect.yara.dir.display()
                );
                detect.yara.enabled = false;
            }
            detect.yara.watch = false;
            (Default::default(), detect)
        }
    };
    let Some(format) = a.output_format else {
        let Some(config) = config else {
            return Err(CliError::Other(
                "replay needs --output-format (print) or --config (ship to the collector)".into(),
            ));
        };
        return replay_to_collector(a, config);
    };
    // Printing needs no certificate: the id comes from the config or --agent-id.
    let agent_id = config
        .as_ref()
        .and_then(|c| c.agent_id.clone())
        .unwrap_or_else(|| a.agent_id.clone());
    let stdout = std::io::stdout().lock();
    let mut w = EventWriter::new(stdout, format).map_err(|e| CliError::Other(e.to_string()))?;
    let mut printed = 0u64;
    // `replay` only hands over events of `--kind`; the check here is a second guard.
    let mut sink = |e: palisade_wire::Event| {
        if a.kind.is_some_and(|k| k != e.kind()) {
            return Ok(());
        }
        printed += 1;
        w.write_event(&e)
    };
    let result = crate::replay::replay(
        &a.file, &a.filter, a.speed, &flow, &detect, &agent_id, a.kind, &mut sink,
    );
    let report = match result {
        Ok(r) => r,
        Err(crate::replay::ReplayError::Sink(e)) if is_broken_pipe(&e) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    match w.finish() {
        Err(e) if !is_broken_pipe(&e) => {
            return Err(CliError::Other(format!("cannot write output: {e}")))
        }
        _ => {}
    }
    print_summary(&report);
    Ok(if printed > 0 { 0 } else { 1 })
}

fn print_summary(r: &crate::replay::ReplayReport) {
    if let Some(e) = &r.read_error {
        eprintln!(
            "replay: warning: the capture ended early ({e}); results cover the packets before it"
        );
    }
    eprintln!(
        "replay: {} packets ({} malformed), {:.1} MB, {} flows, {} alerts in {:.2} s: {:.0} packets/s, {:.2} Gbit/s; detectors: {}",
        r.packets,
        r.malformed,
        r.bytes as f64 / 1e6,
        r.flows,
        r.alerts,
        r.elapsed_secs,
        r.packets_per_sec,
        r.gbit_per_sec,
        r.detectors.join(", ")
    );
    for (name, summary) in &r.detector_summaries {
        eprintln!("replay: {name}: {summary}");
    }
}

fn replay_to_collector(a: ReplayArgs, config: AgentConfig) -> Result<u8, CliError> {
    let agent_id = crate::run::agent_identity(&config)?;
    let spool = crate::run::open_spool(&config, &agent_id)?;
    let mut pending = Vec::with_capacity(1000);
    let mut spool_err = None;
    let mut sink = |e: palisade_wire::Event| {
        if a.kind.is_some_and(|k| k != e.kind()) {
            return Ok(());
        }
        pending.push(e);
        if pending.len() >= 1000 {
            if let Err(err) = spool.append(std::mem::take(&mut pending)) {
                spool_err = Some(err.to_string());
                return Err(std::io::Error::other("spool append failed"));
            }
        }
        Ok(())
    };
    let result = crate::replay::replay(
        &a.file,
        &a.filter,
        a.speed,
        &config.flow,
        &config.detect,
        &agent_id,
        a.kind,
        &mut sink,
    );
    if let Some(e) = spool_err {
        return Err(CliError::Other(format!("cannot spool events: {e}")));
    }
    let report = result?;
    spool
        .append(pending)
        .map_err(|e| CliError::Other(format!("cannot spool events: {e}")))?;
    print_summary(&report);
    runtime()?.block_on(crate::run::drain(&config, spool, &agent_id))?;
    Ok(0)
}
