//! End-to-end tests: real binaries, real certificates, real sled files, loopback only.
//! One test binary so cargo runs the scenarios in parallel.

// Test helpers outside #[test] fns may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod api_abuse;
mod backup_crash;
mod clock;
mod correlation;
mod delivery;
mod disk_full;
mod drills;
mod incident_crash;
mod integrity;
mod kills;
mod listing;
mod lossy;
mod network;
mod refusals;
mod replication;
mod replication_report;
mod serve_crash;
mod situation;
mod sync;
