//! Thin binary: parse flags, set up logging, call the library.

use std::process::ExitCode;

use clap::Parser;
use palisade_replicator::cli::{run, Cli};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(e) => {
            let hint = if e.retryable() {
                " (retrying later may help)"
            } else {
                ""
            };
            eprintln!(
                "palisade-replicator: error: {:#}{hint}",
                anyhow::Error::from(e)
            );
            ExitCode::from(2)
        }
    }
}
