//! `palisade-agent` subcommands: `run`, `validate`, `loadgen`.

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
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

const EXAMPLES: &str = "Examples:
  palisade-agent run --config agent.toml
  palisade-agent validate --config agent.toml
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
    /// Benchmark a collector with simulated agents over real mutual TLS.
    #[command(
        after_long_help = "Each simulated agent NN needs <pki-dir>/<prefix>NN.crt/.key (role agent):\n  for i in $(seq -w 0 15); do palisade-collector pki issue --dir pki --role agent --name loadgen-$i; done\n  palisade-agent loadgen --collector https://127.0.0.1:7443 --pki-dir pki --agents 16"
    )]
    Loadgen(LoadgenArgs),
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
    /// Output format.
    #[arg(long, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

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
        Command::Loadgen(a) => {
            let report = runtime()?.block_on(crate::loadgen::run(LoadgenConfig {
                collector: a.collector,
                pki_dir: a.pki_dir,
                prefix: a.prefix,
                agents: a.agents,
                events_per_agent: a.events_per_agent,
                batch_events: a.batch_events,
                collector_pid: a.collector_pid,
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
                        "batches           {} ({} busy/503 retried)",
                        report.batches, report.busy
                    );
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
                }
                _ => println!("{}", serde_json::to_string(&report).unwrap_or_default()),
            }
            Ok(0)
        }
    }
}
