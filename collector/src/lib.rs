//! `palisade-collector`: receives agents' event batches over mutual TLS ([`server`], [`ingest`]),
//! stores them durably ([`store`]), and answers analysts ([`api`], [`cli`]). [`pki`] is the
//! certificate authority every identity comes from.

/// Tests `name(engine)` of a module whose scope has `Backend`, once on each engine of the
/// databases (sled and redb): `mod on_sled { #[test] fn name() }` and `mod on_redb { … }`.
#[cfg(test)]
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(#[test]
            fn $name() {
                super::$name(super::Backend::Sled)
            })*
        }
        mod on_redb {
            $(#[test]
            fn $name() {
                super::$name(super::Backend::Redb)
            })*
        }
    };
}

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
