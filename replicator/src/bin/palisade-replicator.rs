//! Thin binary: parse flags, call the library.

use clap::{Parser, Subcommand};

/// Palisade replicator: verified delta shipping for off-site backup and active-active sites.
#[derive(Debug, Parser)]
#[command(name = "palisade-replicator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Say what this build can do.
    Status,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Status => println!("{}", palisade_replicator::capabilities()),
    }
}
