//! `palisade-collector`: receives agents' event batches over mutual TLS ([`server`], [`ingest`]),
//! stores them durably ([`store`]), and answers analysts ([`api`], [`cli`]). [`pki`] is the
//! certificate authority every identity comes from.

pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod correlate;
pub mod forward;
pub mod incidents;
pub mod ingest;
pub mod metrics;
pub mod pki;
pub mod query;
pub mod server;
pub mod store;
pub mod tail;

// Unit tests run on the allocator the binary uses, so the figures the benchmark tests print
// (`incidents::tests::storm`) are the program's.
#[cfg(test)]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
