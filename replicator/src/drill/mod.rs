//! DR drills from runbooks (`palisade-replicator drill RUNBOOK`): a TOML file declares the
//! failure, the recovery and the checks; the runner performs them against local sites, measures
//! the real RPO (age of the recovery point at the failure) and RTO (failure to the end of the
//! last successful verify), compares them with the runbook's targets and reports the result
//! (text/JSON, Markdown and HTML files, and a `palisade.drill` event to the collector).
//!
//! - [`runbook`]: the format, parameters, strict parsing and the scope guard.
//! - [`actions`]: the built-in actions and their fields.
//! - [`runner`]: running the steps and measuring.
//! - [`sites`]: child processes of our stack and the acknowledged-write writer.
//! - [`data`]: test data, manifests, tampering, corruption, shipping and repair.
//! - [`output`]: the report and the drill event.
//!
//! The format is documented in `docs/drills.md`.

pub mod actions;
pub mod data;
pub mod output;
pub mod runbook;
pub mod runner;
pub mod sites;

pub use output::{drill_event, DrillReport, Verdict};
pub use runbook::{load, Resolve, Runbook};
pub use runner::{run, RunOptions};
