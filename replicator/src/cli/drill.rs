//! `drill`: run or check a DR drill runbook. STUB: replaced by the drill work.

use clap::Args;

use super::{Cli, Outcome};
use crate::error::{Error, Result};

/// `drill` flags.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// `validate` to check a runbook without running it, or the runbook to run.
    pub runbook: String,
}

/// Runs `drill`.
pub fn run(_cli: &Cli, _a: &DrillArgs) -> Result<Outcome> {
    Err(Error::Usage("drill: not built yet".into()))
}
