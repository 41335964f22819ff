//! Exports of stored events to tools a SOC already runs. Each output is a
//! [`CommitSink`](crate::ingest::CommitSink): it sees every batch once the store made it durable,
//! never blocks the store writer (bounded queue, drop and count), and exposes its counters as a
//! [`MetricsSource`](crate::metrics::MetricsSource).
//!
//! - [`syslog`]: RFC 5424 messages over TCP or TLS with octet-counting framing (RFC 6587 /
//!   RFC 5425), the format every SIEM ingests.

pub mod syslog;

use std::sync::Arc;

use serde::Deserialize;

use crate::ingest::CommitSink;
use crate::metrics::MetricsSource;

pub use syslog::{ForwardError, SyslogConfig, SyslogForwarder};

/// `[forward]`: where stored events are copied to. Every output is optional; none is the default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// `[forward.syslog]`: RFC 5424 syslog to a SIEM over TCP or TLS.
    #[serde(default)]
    pub syslog: Option<SyslogConfig>,
}

impl ForwardConfig {
    /// Range checks that serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        match &self.syslog {
            Some(s) => s.check(),
            None => Ok(()),
        }
    }
}

/// The outputs running for one collector.
#[derive(Debug, Default)]
pub struct Forwarders {
    /// The syslog forwarder, when configured.
    pub syslog: Option<Arc<SyslogForwarder>>,
}

impl Forwarders {
    /// Starts every configured output (each on its own thread). Fails on unusable configuration
    /// (bad TLS material); an unreachable SIEM is not an error, the output retries with back-off.
    pub fn start(config: &ForwardConfig) -> Result<Self, ForwardError> {
        let syslog = match &config.syslog {
            Some(c) => Some(Arc::new(SyslogForwarder::start(c.clone())?)),
            None => None,
        };
        Ok(Forwarders { syslog })
    }

    /// Adds the running outputs to the store writer's sinks.
    pub fn add_sinks(&self, sinks: &mut Vec<Arc<dyn CommitSink>>) {
        if let Some(s) = &self.syslog {
            sinks.push(s.clone());
        }
    }

    /// Adds the running outputs' counters to the metrics registry.
    pub fn add_metrics(&self, sources: &mut Vec<Arc<dyn MetricsSource>>) {
        if let Some(s) = &self.syslog {
            sources.push(s.clone());
        }
    }

    /// Stops every output, giving each up to `grace` to deliver what it holds. Blocks.
    pub fn close(&self, grace: std::time::Duration) {
        if let Some(s) = &self.syslog {
            s.close(grace);
        }
    }
}
