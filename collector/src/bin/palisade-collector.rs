//! Thin binary: parse flags, set up logging, call the library.

use std::process::ExitCode;

use clap::Parser;
use palisade_collector::cli::{run, Cli};

// The correlator allocates per event (group keys, field values, alerts): with glibc's malloc
// that was a third of its time under load; mimalloc's thread-local free lists cut it (figures
// in docs/benchmarks.md). The `system-alloc` feature leaves malloc in place, for heaptrack.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    palisade_wire::process::init_logging(&cli.log, "info");
    match run(cli) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(e) => {
            eprintln!("palisade-collector: error: {:#}", anyhow::Error::from(e));
            ExitCode::from(2)
        }
    }
}
