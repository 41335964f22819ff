//! The collector's TOML configuration. Unknown keys are rejected; relative paths are resolved
//! against the directory of the config file; command-line flags override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use palisade_wire::config::ConfigError;

/// `[tls]`: the collector's certificate and the CA its clients must be signed by.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate (PEM) that signs agents, analysts and admins.
    pub ca: PathBuf,
    /// The collector's server certificate chain (PEM).
    pub cert: PathBuf,
    /// The collector's private key (PEM).
    pub key: PathBuf,
    /// Certificate revocation list (PEM) written by `pki revoke`; re-read when it changes.
    #[serde(default)]
    pub crl: Option<PathBuf>,
}

/// `[ingest]`: limits on what agents may send and on the write queue.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest accepted batch frame on the wire (compressed), in bytes. Larger: HTTP 413.
    pub max_batch_bytes: usize,
    /// Largest accepted decompressed payload, in bytes. Larger: HTTP 413.
    pub max_batch_raw_bytes: usize,
    /// Most events in one batch. More: HTTP 413.
    pub max_batch_events: usize,
    /// Batches waiting for the writer; when full, agents get 503 with Retry-After.
    pub write_queue_batches: usize,
    /// Most events the writer commits (one flush) in one group.
    pub max_group_events: usize,
    /// Seconds agents are told to wait (Retry-After) when the write queue is full.
    pub retry_after_secs: u64,
    /// Free space to leave on the store's disk: below it batches are refused (HTTP 500 naming
    /// the directory and the free bytes; agents keep them and retry) before anything is
    /// written. sled stays failed after it meets a full disk until the collector restarts, so
    /// this reserve is what lets ingest resume by itself when space returns. 0: no check.
    pub min_free_bytes: u64,
    /// Page cache of the event store's index (redb or sled), bytes. redb's resident memory for
    /// the index stays at about this once it is full (sled's at two to three times it, plus
    /// ~16 bytes per segment ever written). Queries and the writer work on the newest pages.
    pub index_cache_bytes: u64,
    /// The engine a new event index (`<data_dir>/store`) is created with: redb (the default)
    /// or sled (collectors before 2026-12-07; kept to compare the two under the same load). A
    /// store that already has an index keeps its engine; `migrate-store` converts sled.
    pub index_backend: crate::incidents::Backend,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_batch_bytes: 4 << 20,
            max_batch_raw_bytes: 16 << 20,
            max_batch_events: 20_000,
            write_queue_batches: 64,
            max_group_events: 50_000,
            retry_after_secs: 1,
            min_free_bytes: 64 << 20,
            index_cache_bytes: 16 << 20,
            index_backend: crate::incidents::Backend::default(),
        }
    }
}

/// `[server]`: connection handling.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Most concurrent client connections; further connections wait in the listen backlog.
    pub max_connections: usize,
    /// Seconds a client has to finish the TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds a client has to send a request's headers (slow-loris defence).
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's whole body once its headers are in (the
    /// slow-body variant of slow-loris: without it a client trickling a batch holds a
    /// connection slot for ever). Late: 408 and the connection is closed.
    pub body_read_timeout_secs: u64,
    /// Seconds between checks of the CRL file for changes.
    pub crl_reload_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            handshake_timeout_secs: 10,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            crl_reload_secs: 2,
        }
    }
}

/// Shortest retention accepted without `--allow-short-retention` (GB/T 22239-2019 8.1.5.4 d and
/// the Cybersecurity Law art. 21: network logs kept at least six months).
pub const MIN_RETENTION_DAYS: u32 = 180;

/// `[retention]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days of events kept; older day-trees are dropped. MLPS requires at least 180.
    pub days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { days: 180 }
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Address to listen on (`127.0.0.1:7443`; port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory of the sled store.
    pub data_dir: PathBuf,
    /// TLS material.
    pub tls: TlsConfig,
    /// Ingest limits.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Connection handling.
    #[serde(default)]
    pub server: ServerConfig,
    /// Retention.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Copies of stored events to other tools (`[forward.syslog]`); none by default.
    #[serde(default)]
    pub forward: crate::forward::ForwardConfig,
    /// Prometheus scrape listener (`[metrics]`); absent = off.
    #[serde(default)]
    pub metrics: Option<crate::metrics::MetricsConfig>,
    /// Audit log anchoring (`[audit]`); the log itself is always on, in `<data_dir>/audit/`.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// Sigma correlation.
    #[serde(default)]
    pub correlation: crate::correlate::CorrelationSettings,
    /// Live tail ring for `follow` (`[tail]`).
    #[serde(default)]
    pub tail: crate::tail::TailConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}

impl CollectorConfig {
    /// Reads, parses and checks `path`; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        palisade_wire::config::load_toml(path, |c: &mut CollectorConfig, base| {
            let mut paths = vec![
                &mut c.data_dir,
                &mut c.tls.ca,
                &mut c.tls.cert,
                &mut c.tls.key,
            ];
            paths.push(&mut c.correlation.rules_dir);
            if let Some(crl) = c.tls.crl.as_mut() {
                paths.push(crl);
            }
            if let Some(syslog) = c.forward.syslog.as_mut() {
                paths.extend(syslog.paths_mut());
            }
            palisade_wire::config::resolve_paths(base, paths);
            c.check()
        })
    }

    /// Range checks that serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        let i = &self.ingest;
        if i.max_batch_bytes == 0 || i.max_batch_raw_bytes == 0 || i.max_batch_events == 0 {
            return Err("ingest limits must be greater than 0".into());
        }
        if i.write_queue_batches == 0 {
            return Err("ingest.write_queue_batches must be at least 1".into());
        }
        if self.server.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
        }
        // A zero deadline would refuse every handshake or request.
        for (key, v) in [
            ("handshake_timeout_secs", self.server.handshake_timeout_secs),
            (
                "header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            ("body_read_timeout_secs", self.server.body_read_timeout_secs),
        ] {
            if v == 0 {
                return Err(format!("server.{key} must be at least 1"));
            }
        }
        if self.retention.days == 0 {
            return Err("retention.days must be at least 1".into());
        }
        self.forward.check()?;
        self.audit.check()?;
        self.tail.check()?;
        if let Some(m) = &self.metrics {
            m.check()?;
        }
        Ok(())
    }

    /// MLPS grade 3 keeps network logs at least 180 days: a shorter `retention.days` is refused
    /// unless the operator says so (`--allow-short-retention`, for labs and tests), and then
    /// logged as a warning.
    pub fn check_retention(&self, allow_short: bool) -> Result<(), String> {
        if self.retention.days >= MIN_RETENTION_DAYS {
            return Ok(());
        }
        if !allow_short {
            return Err(format!(
                "retention.days = {} is below the {MIN_RETENTION_DAYS} days MLPS grade 3 requires \
                 for network logs; raise it, or pass --allow-short-retention if this collector \
                 is not the record of an assessed system",
                self.retention.days
            ));
        }
        tracing::warn!(
            days = self.retention.days,
            "retention below the {MIN_RETENTION_DAYS} days MLPS grade 3 requires for network logs \
             (allowed by --allow-short-retention)"
        );
        Ok(())
    }
}

/// Entry point for the `config_files` fuzz target.
#[doc(hidden)]
pub mod fuzzing {
    /// Loads arbitrary bytes as a collector config file, as `serve --config` does.
    pub fn collector_config(data: &[u8]) {
        let path = palisade_wire::fuzzing::scratch_file("collector.toml", data);
        let _ = super::CollectorConfig::load(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_retention_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "data_dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[retention]\ndays = 30\n",
        )
        .unwrap();
        let mut c = CollectorConfig::load(&p).unwrap();
        let e = c.check_retention(false).unwrap_err();
        assert!(
            e.contains("retention.days = 30") && e.contains("--allow-short-retention"),
            "{e}"
        );
        c.check_retention(true).unwrap();
        c.retention.days = 180;
        c.check_retention(false).unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected_with_a_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "data_dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[ingest]\nmax_batch_byte = 3\n",
        )
        .unwrap();
        let err = CollectorConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("max_batch_byte"), "{err}");
        assert!(err.contains("line 7"), "{err}");
    }

    #[test]
    fn the_example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/collector.example.toml");
        let c = CollectorConfig::load(&p).unwrap();
        assert_eq!(c.retention.days, 180);
        assert_eq!(
            c.ingest.max_batch_bytes,
            IngestConfig::default().max_batch_bytes
        );
        assert_eq!(
            c.ingest.index_cache_bytes,
            IngestConfig::default().index_cache_bytes
        );
        assert_eq!(
            c.ingest.index_backend,
            IngestConfig::default().index_backend
        );
        assert!(c.tls.crl.is_some());
        let d = crate::correlate::CorrelationSettings::default();
        assert_eq!(
            c.correlation.rules_dir,
            PathBuf::from("/etc/palisade/sigma")
        );
        assert_eq!(c.correlation.max_state_entries, d.max_state_entries);
        assert_eq!(c.correlation.incident_window_secs, d.incident_window_secs);
        assert_eq!(c.correlation.incident_backend, d.incident_backend);
        assert_eq!(c.correlation.incident_cache_bytes, d.incident_cache_bytes);
        assert!(c.correlation.enabled);
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "data_dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"/b\"\nkey = \"c\"\n",
        )
        .unwrap();
        let c = CollectorConfig::load(&p).unwrap();
        assert_eq!(c.data_dir, dir.path().join("d"));
        assert_eq!(c.tls.cert, PathBuf::from("/b"));
        assert_eq!(c.retention.days, 180);
    }
}
