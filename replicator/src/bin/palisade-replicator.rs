//! Thin binary: parse flags, set up logging, call the library.

use std::process::ExitCode;

use clap::Parser;
use palisade_replicator::cli::{run, Cli};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    palisade_wire::process::init_logging(&cli.log, "warn");
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
