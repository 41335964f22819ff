//! End-to-end tests: real binaries, real certificates, real sled files, loopback only.
//! One test binary so cargo runs the scenarios in parallel.

mod delivery;
mod listing;
mod refusals;
