//! `palisade-agent`: every event enters the durable [`spool`] first; the [`ship`]per sends
//! batches over mutual TLS and deletes only what the collector acknowledged. [`sources`] produce
//! events (heartbeats, live capture, the integrity monitor); commands run beside a
//! running agent hand their events over through the [`inbox`].

pub mod capture;
pub mod cli;
pub mod config;
pub mod decode;
pub mod demo;
pub mod detect;
pub mod flow;
pub mod gencap;
pub mod inbox;
pub mod integrity;
pub mod live;
pub mod loadgen;
pub mod packet;
pub mod pipeline;
pub mod reassembly;
pub mod replay;
pub mod run;
pub mod ship;
pub mod sources;
pub mod spool;
pub mod tls_hello;
pub mod watch;
#[cfg(feature = "yara")]
pub mod yara_rules;
