//! Thin binary: parse flags, set up logging, call the library.

use std::process::ExitCode;

use clap::Parser;
use palisade_agent::cli::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    palisade_wire::process::init_logging(&cli.log, "info");
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("palisade-agent: error: {:#}", anyhow::Error::from(e));
            ExitCode::from(code)
        }
    }
}
