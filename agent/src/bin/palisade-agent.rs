//! Thin binary: parse flags, set up logging, call the library.

use std::process::ExitCode;

use clap::Parser;
use palisade_agent::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("palisade-agent: error: {:#}", anyhow::Error::from(e));
            ExitCode::from(code)
        }
    }
}
