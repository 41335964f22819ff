//! The agent's TOML configuration. Unknown keys are rejected; relative paths are resolved against
//! the config file's directory; flags override the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use palisade_wire::config::ConfigError;

/// `[tls]`: the agent's certificate (role `agent`, CN = agent id) and the collector's CA.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// The agent's certificate (PEM).
    pub cert: PathBuf,
    /// The agent's private key (PEM).
    pub key: PathBuf,
}

/// `[spool]`: the on-disk queue every event enters first.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Cap on spooled event bytes; beyond it the oldest events are dropped and a `gap` event
    /// records how many. Events already acknowledged (kept for `retain_acked_secs`) count
    /// against it too and are dropped first, without a `gap` event: they were delivered.
    pub max_bytes: u64,
    /// Seconds acknowledged events are kept after their ack, so they can be sent again if the
    /// collector loses its store and comes back from an older backup (it answers with how far
    /// its store reaches). Keep it above the interval between the collector's backups; 0 keeps
    /// nothing.
    pub retain_acked_secs: u64,
    /// Free space to leave on the spool's disk: below it appends are refused (with an error
    /// saying so) before the spool writes anything, and events sources had to drop meanwhile
    /// are counted in a `gap` event once space returns. 0 turns the check off.
    pub min_free_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: 1 << 30,
            retain_acked_secs: 86_400,
            min_free_bytes: crate::spool::DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// `[ship]`: batching and retry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShipConfig {
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Most uncompressed event bytes in one batch.
    pub max_batch_bytes: usize,
    /// How long a partly filled batch waits for more events, in milliseconds.
    pub max_batch_delay_ms: u64,
    /// First retry delay after a failure, in milliseconds (doubles each failure, with jitter).
    pub initial_backoff_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub max_backoff_ms: u64,
    /// Seconds to wait for the collector's answer to one batch.
    pub request_timeout_secs: u64,
    /// zstd level for batches.
    pub zstd_level: i32,
    /// Seconds spent trying to empty the spool on shutdown.
    pub drain_timeout_secs: u64,
}

impl Default for ShipConfig {
    fn default() -> Self {
        ShipConfig {
            max_batch_events: 2_000,
            max_batch_bytes: 1 << 20,
            max_batch_delay_ms: 200,
            initial_backoff_ms: 100,
            max_backoff_ms: 5_000,
            request_timeout_secs: 30,
            zstd_level: 3,
            drain_timeout_secs: 5,
        }
    }
}

/// `[heartbeat]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// Seconds between heartbeats (0 disables them).
    pub interval_secs: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig { interval_secs: 10 }
    }
}

/// `[synthetic]`: a test source producing numbered events, for drills, soak and crash tests.
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// How many events to produce in total (0: none).
    pub events: u64,
    /// Events per second (0: as fast as the spool takes them).
    pub rate_per_sec: u64,
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Agent id; must equal the certificate's CN. Default: the CN.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Collector URL, `https://host:port`.
    pub collector: String,
    /// Directory for the spool.
    pub data_dir: PathBuf,
    /// TLS material.
    pub tls: TlsConfig,
    /// Spool.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Shipping.
    #[serde(default)]
    pub ship: ShipConfig,
    /// Heartbeats.
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    /// Synthetic test source.
    #[serde(default)]
    pub synthetic: SyntheticConfig,
    /// Live packet capture (off unless `interface` is set).
    #[serde(default)]
    pub capture: crate::capture::CaptureConfig,
    /// Flow table.
    #[serde(default)]
    pub flow: crate::flow::FlowConfig,
    /// Network detectors (`[detect.port_scan]`, `[detect.ioc]`, …).
    #[serde(default)]
    pub detect: crate::pipeline::DetectConfig,
    /// Host integrity: baselines, realtime watching, anti-tamper, malware scanning.
    #[serde(default)]
    pub integrity: crate::integrity::IntegrityConfig,
}

impl AgentConfig {
    /// Reads, parses and checks `path`; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        palisade_wire::config::load_toml(path, |c: &mut AgentConfig, base| {
            palisade_wire::config::resolve_paths(
                base,
                [
                    &mut c.data_dir,
                    &mut c.tls.ca,
                    &mut c.tls.cert,
                    &mut c.tls.key,
                    &mut c.detect.ioc.dir,
                ],
            );
            #[cfg(feature = "yara")]
            palisade_wire::config::resolve_paths(base, [&mut c.detect.yara.dir]);
            palisade_wire::config::resolve_paths(base, [&mut c.integrity.malware.dir]);
            palisade_wire::config::resolve_paths(base, c.integrity.dir.iter_mut());
            palisade_wire::config::resolve_paths(
                base,
                c.integrity.paths.iter_mut().map(|p| &mut p.path),
            );
            c.check()
        })
    }

    /// Range checks serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        if !self.collector.starts_with("https://") {
            return Err(format!(
                "collector {:?} must be an https:// URL",
                self.collector
            ));
        }
        let s = &self.ship;
        if s.max_batch_events == 0 || s.max_batch_bytes == 0 {
            return Err("ship.max_batch_events and ship.max_batch_bytes must be at least 1".into());
        }
        if s.initial_backoff_ms == 0 || s.max_backoff_ms < s.initial_backoff_ms {
            return Err("ship.initial_backoff_ms must be >= 1 and <= ship.max_backoff_ms".into());
        }
        if self.spool.max_bytes < 64 * 1024 {
            return Err("spool.max_bytes must be at least 65536".into());
        }
        self.integrity.check()?;
        if let Some(id) = &self.agent_id {
            if !palisade_wire::event::valid_agent_id(id) {
                return Err(format!("agent_id {id:?} must be 1-64 of A-Z a-z 0-9 . _ -"));
            }
        }
        Ok(())
    }
}

/// Entry point for the `config_files` fuzz target.
#[doc(hidden)]
pub mod fuzzing {
    /// Loads arbitrary bytes as an agent config file, as `palisade-agent run --config` does.
    pub fn agent_config(data: &[u8]) {
        let path = palisade_wire::fuzzing::scratch_file("agent.toml", data);
        let _ = super::AgentConfig::load(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/agent.example.toml");
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(
            c.ship.max_batch_events,
            ShipConfig::default().max_batch_events
        );
        assert_eq!(c.heartbeat.interval_secs, 10);
        assert_eq!(c.synthetic.events, 0);
    }

    #[test]
    fn example_parses_and_typos_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(
            &p,
            "collector = \"https://127.0.0.1:7443\"\ndata_dir = \"d\"\n[tls]\nca = \"ca.crt\"\ncert = \"a.crt\"\nkey = \"a.key\"\n[ship]\nmax_batch_events = 10\n",
        )
        .unwrap();
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.ship.max_batch_events, 10);
        assert_eq!(c.data_dir, dir.path().join("d"));
        std::fs::write(
            &p,
            "collector = \"https://x:1\"\ndata_dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[heartbeat]\ninterval = 3\n",
        )
        .unwrap();
        let err = AgentConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("interval") && err.contains("line 8"), "{err}");
    }
}
